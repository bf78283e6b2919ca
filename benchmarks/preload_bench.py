"""Learned preloads: twelve numpy/pandas notebooks, a first run against a second, no --preload.

The first run knows nothing: every fork-mode kernel imports numpy and pandas itself.  It
records what they imported, and the second run's template imports them once per worker.
The ratios are against the first run of the same front end, measured in the same run; a
warm run with ``--millrun-preload none`` / ``--preload none`` in between shows what warmth
alone gives (disk caches, outputs already there), and a run with the modules named by hand
(``numpy,pandas``, learning off) what a user who knew would get.  Issue 34's target on 2
cores: the second run <= 0.8x the first.

    .venv/bin/python benchmarks/preload_bench.py [--notebooks 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import nbformat
from bench_timing import timed
from nbformat.v4 import new_code_cell, new_notebook

#: What each notebook does: the imports, and a little work with them.
CELLS = (
    "import numpy as np\nimport pandas as pd",
    "df = pd.DataFrame(np.random.default_rng(0).random((200, 4)), columns=list('abcd'))",
    "summary = df.describe()\nsummary",
    "df.groupby((df.a * 4).astype(int)).b.mean()",
)


def build(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        nb = new_notebook(cells=[new_code_cell(source) for source in CELLS])
        spec = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["kernelspec"] = spec
        nbformat.write(nb, str(folder / f"nb{index:02d}.ipynb"))


def front_ends() -> list[tuple[str, list[str], str]]:
    """(name, command, its preload option)."""
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"]
    pytest += ["-p", "no:hypothesispytest", "--millrun", "nbs", "-n", "2"]
    pytest += ["--millrun-kernel-start", "fork"]
    cli = [sys.executable, "-m", "pytest_millrun", "nbs", "params.json", "--workers", "2"]
    cli += ["--output-dir", "out", "--no-progress", "--kernel-start", "fork"]
    return [("pytest -n 2", pytest, "--millrun-preload"), ("millrun --workers 2", cli, "--preload")]


def one_round(root: Path) -> dict[str, float]:
    """Each front end's rows, from scratch: first, warm without learning, second, by hand."""
    found: dict[str, float] = {}
    for name, command, option in front_ends():
        for stale in (root / ".pytest_cache", root / ".millrun", root / "out"):
            shutil.rmtree(stale, ignore_errors=True)
        found[f"{name}, first run (nothing learned)"] = timed(command, root)
        found[f"{name}, second run (learned preloads)"] = timed(command, root)
        # last: the command and the API learn from the outputs, which this run rewrites
        found[f"{name}, again with {option} none"] = timed([*command, option, "none"], root)
        for stale in (root / ".pytest_cache", root / ".millrun", root / "out"):
            shutil.rmtree(stale, ignore_errors=True)
        found[f"{name}, {option} numpy,pandas by hand"] = timed(
            [*command, option, "numpy,pandas"], root
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=int, default=12, help="How many notebooks")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds; each row's median")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build(root / "nbs", args.notebooks)
        (root / "params.json").write_text("[{}]")
        load = os.getloadavg()
        rounds = [one_round(root) for _ in range(args.repeat)]
        after = os.getloadavg()
    print(f"{args.notebooks} notebooks importing numpy and pandas, 2 workers, fork mode; "
          f"median of {args.repeat}; 1-min load {load[0]:.1f} before, {after[0]:.1f} after\n")
    print("| row | wall s | x first |\n|---|---:|---:|")
    first = 0.0
    for row in rounds[0]:
        seconds = statistics.median(found[row] for found in rounds)
        if "first run" in row:
            first = seconds
        print(f"| {row} | {seconds:.1f} | {seconds / first:.2f} |")


if __name__ == "__main__":
    main()
