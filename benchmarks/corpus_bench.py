"""A folder of real notebooks: pytest -n 2 first and second run (learned preloads), nbmake -n 2,
and the floor (the notebooks' own cell time over two workers).

The corpus is not bundled: pass a folder of notebooks that pass (with what they read beside
them); ``handbook_corpus.py`` builds the one measured in ``benchmarks/README.md``. The first run
learns what the notebooks import; the second preloads it. The ratios are against the first run,
all measured in the same run; the floor is the sum of the second run's cell times (papermill's
per-cell durations in its outputs) divided by the two workers. Issue 34's targets on 2 cores:
the second run <= 0.8x the first, and within 10% of the floor. Needs nbmake (``pip install
nbmake``) for its row.

    .venv/bin/python benchmarks/corpus_bench.py CORPUS_DIR [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_timing import timed


def cell_seconds(outputs: Path) -> float:
    """The cells' own time in every output under ``outputs``, as papermill recorded it."""
    total = 0.0
    for output in outputs.rglob("*.ipynb"):
        nb = json.loads(output.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
            if isinstance(duration, (int, float)):
                total += duration
    return total


def one_round(root: Path) -> dict[str, float]:
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"]
    pytest += ["-p", "no:hypothesispytest"]
    millrun = [*pytest, "--millrun", "nbs", "-n", "2", "--millrun-kernel-start", "fork"]
    for stale in (root / ".pytest_cache", root / ".millrun"):
        shutil.rmtree(stale, ignore_errors=True)
    found = {"pytest -n 2, first run (nothing learned)": timed(millrun, root, tail=3000)}
    found["pytest -n 2, second run (learned preloads)"] = timed(millrun, root, tail=3000)
    found["floor: cell time of the second run / 2"] = cell_seconds(root / ".millrun") / 2
    found["pytest --nbmake -n 2"] = timed([*pytest, "--nbmake", "nbs", "-n", "2"], root, tail=3000)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="A folder of notebooks that pass")
    parser.add_argument("--repeat", type=int, default=1, help="Rounds; each row's median")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        shutil.copytree(args.corpus, root / "nbs")
        count = len(list((root / "nbs").glob("*.ipynb")))
        load = os.getloadavg()
        rounds = [one_round(root) for _ in range(args.repeat)]
        after = os.getloadavg()
    print(f"{count} notebooks of {args.corpus.name}, 2 workers; median of {args.repeat}; "
          f"1-min load {load[0]:.1f} before, {after[0]:.1f} after\n")
    print("| row | wall s | x first | x floor |\n|---|---:|---:|---:|")
    rows = {row: statistics.median(found[row] for found in rounds) for row in rounds[0]}
    first = rows["pytest -n 2, first run (nothing learned)"]
    floor = rows["floor: cell time of the second run / 2"]
    for row, seconds in rows.items():
        print(f"| {row} | {seconds:.1f} | {seconds / first:.2f} | {seconds / floor:.2f} |")


if __name__ == "__main__":
    main()
