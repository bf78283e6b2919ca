"""Longest first: ten short notebooks and one long one named last, a first run against a second.

The first run knows no durations, so the long notebook starts last, after the short ones;
a later run knows them and starts it first, beside the short ones.  The ratios are against
the first run of the same front end, measured in the same run; a run in between with
``--millrun-order`` / ``--order collection`` is warm too but keeps the first run's order,
so it shows what warmth alone gives.  Issue 34's target on 2 cores: <= 0.8x the first run.

    .venv/bin/python benchmarks/order_bench.py [--short 10] [--short-s 0.8] [--long-s 8]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from bench_timing import timed
from nbformat.v4 import new_code_cell, new_notebook


def build(folder: Path, short: int, short_s: float, long_s: float) -> None:
    """``nb00..`` of ``short_s`` seconds, and ``z_long`` of ``long_s``: collected last."""
    folder.mkdir(parents=True)
    sleeps = {f"nb{i:02d}": short_s for i in range(short)} | {"z_long": long_s}
    for name, seconds in sleeps.items():
        nb = new_notebook(cells=[new_code_cell(f"import time\ntime.sleep({seconds})")])
        spec = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["kernelspec"] = spec
        nbformat.write(nb, str(folder / f"{name}.ipynb"))


def rows(root: Path) -> list[tuple[str, float, float]]:
    """(row, seconds, x first run of its front end)."""
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"]
    pytest += ["-p", "no:hypothesispytest", "--millrun", "nbs", "-n", "2"]
    cli = [sys.executable, "-m", "pytest_millrun", "nbs", "params.json", "--workers", "2"]
    cli += ["--output-dir", "out", "--no-progress"]
    (root / "params.json").write_text("[{}]")
    found: list[tuple[str, float, float]] = []
    front_ends = [("pytest -n 2", pytest, "--millrun-order")]
    front_ends.append(("millrun --workers 2", cli, "--order"))
    for name, command, off in front_ends:
        for stale in (root / ".pytest_cache", root / ".millrun", root / "out"):
            shutil.rmtree(stale, ignore_errors=True)
        first = timed(command, root)
        collection = timed([*command, off, "collection"], root)  # warm, in collection order
        second = timed(command, root)
        found += [
            (f"{name}, first run (nothing known)", first, 1.0),
            (f"{name}, again with {off} collection", collection, collection / first),
            (f"{name}, again, longest first", second, second / first),
        ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=10, help="Short notebooks")
    parser.add_argument("--short-s", type=float, default=0.8, help="Seconds of each short one")
    parser.add_argument("--long-s", type=float, default=8.0, help="Seconds of the long one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build(root / "nbs", args.short, args.short_s, args.long_s)
        work = args.short * args.short_s + args.long_s
        print(f"{args.short} notebooks of {args.short_s} s and one of {args.long_s} s named last; "
              f"floor on 2 workers: {max(work / 2, args.long_s):.1f} s of cells\n")
        print("| row | wall s | x first |\n|---|---:|---:|")
        for row, seconds, ratio in rows(root):
            print(f"| {row} | {seconds:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
