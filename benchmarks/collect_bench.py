"""What finding text notebooks costs a pytest collection of a tree of plain Python files.

With notebooks on (``--millrun``), every file with a suffix jupytext reads is looked at
(its first bytes; jupytext only for one that mentions it) to tell a text notebook from a
module.  This times ``pytest --collect-only`` over a generated tree of plain test files
and modules (no notebooks), without the plugin switched on (the baseline) and with it, in
the same run, and prints a Markdown table with the ratio.

    .venv/bin/python benchmarks/collect_bench.py [--files 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(root: Path, files: int) -> None:
    for i in range(files):
        folder = root / f"pkg{i % 20}"
        folder.mkdir(exist_ok=True)
        (folder / f"test_m{i}.py").write_text(
            f"def test_{i}():\n    assert True\n" + "# a comment line\n" * 50
        )
        (folder / f"helper{i}.py").write_text("x = 1\n" * 60)


def collect(root: Path, *extra: str, source: str | None = None) -> float:
    env = dict(os.environ, PYTHONPATH=source) if source else None
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    subprocess.run(
        [*command, "-p", "no:hypothesispytest", "--rootdir", str(root), *extra, str(root)],
        check=True,
        capture_output=True,
        cwd=root,
        env=env,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="Test files (and as many modules)")
    parser.add_argument("--repeat", type=int, default=5, help="Rounds; each row's median")
    parser.add_argument(
        "--compare",
        metavar="SRC",
        help="Also time --millrun with the package from SRC (e.g. an older commit's "
        "git archive), put first on PYTHONPATH",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build(root, args.files)
        rows: dict[str, list[float]] = {"pytest --collect-only": [], "... --millrun": []}
        if args.compare:
            rows[f"... --millrun ({args.compare})"] = []
        for _ in range(args.repeat):  # in rounds, so load changes hit every row alike
            rows["pytest --collect-only"].append(collect(root))
            rows["... --millrun"].append(collect(root, "--millrun"))
            if args.compare:
                compared = collect(root, "--millrun", source=args.compare)
                rows[f"... --millrun ({args.compare})"].append(compared)
    load = os.getloadavg()[0]
    base = statistics.median(rows["pytest --collect-only"])
    print(f"{args.files} test files + {args.files} modules, median of {args.repeat}", end="")
    print(f", load {load:.1f}")
    print("| runner | wall s | x baseline |\n|---|---|---|")
    for name, times in rows.items():
        wall = statistics.median(times)
        print(f"| {name} | {wall:.2f} | {base / wall:.2f} |")


if __name__ == "__main__":
    main()
