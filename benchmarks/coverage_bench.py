"""What measuring the kernels costs: ``pytest --cov`` against the same run without it.

Builds a project with a library module (``lib.py``: a function with a branch) and a
notebook that calls it in a loop (``--calls`` times per variation, default 20,000), then
runs ``pytest -n 0 --millrun-params ...`` over ``--variations`` variations (default 10)
without coverage (the baseline), with ``--cov=lib`` (kernels measure lines) and with
``--cov=lib --cov-branch``, in fork and spawn mode, in rounds (``--repeat``, default 3;
each row's median).  A coverage row whose report does not show ``lib.py`` as fully
covered is an error, not a figure.  Prints a Markdown table: wall seconds, the median
notebook's papermill duration (kernel start to end, one kernel's cost), and both as a
ratio to the baseline of the same mode.

    .venv/bin/python benchmarks/coverage_bench.py [--variations 10] [--calls 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

LIBRARY = """\
def step(i):
    if i % 3:
        return i * 2
    return -i
"""

ROWS = {
    "pytest -n 0": [],
    "pytest -n 0 --cov": ["--cov=lib", "--cov-report=json:cov.json"],
    "pytest -n 0 --cov --cov-branch": ["--cov=lib", "--cov-branch", "--cov-report=json:cov.json"],
}


def build(root: Path, variations: int, calls: int) -> None:
    (root / "lib.py").write_text(LIBRARY)
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = new_code_cell(f"seed = 0\ncalls = {calls}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        new_code_cell("import lib"),
        new_code_cell("total = 0\nfor i in range(seed, seed + calls):\n    total += lib.step(i)"),
    ]
    nbformat.write(nb, root / "loop.ipynb")
    (root / "params.json").write_text(json.dumps([{"seed": s} for s in range(variations)]))
    (root / "pytest.ini").write_text("[pytest]\n")


def run(root: Path, mode: str, extra: list[str]) -> tuple[float, float]:
    """One row: wall seconds and the median notebook duration; raises on a bad run."""
    out = root / ".millrun"
    shutil.rmtree(out, ignore_errors=True)
    (root / "cov.json").unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
        "-p", "no:hypothesispytest", "-p", "no:randomly", "--millrun-params", "params.json",
        "--millrun-kernel-start", mode, *extra, "loop.ipynb",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(extra) or 'plain'} {mode}: exit {done.returncode}\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")  # fmt: skip
    if extra:
        if not (root / "cov.json").exists():
            raise RuntimeError(f"{mode} {' '.join(extra)}: no coverage report (no data?)")
        report = json.loads((root / "cov.json").read_text())
        covered = report["files"].get("lib.py", {}).get("summary", {}).get("percent_covered")
        if covered != 100:
            raise RuntimeError(f"{mode} {' '.join(extra)}: lib.py {covered}% covered, not 100%")
    durations = [
        json.loads(path.read_text())["metadata"]["papermill"]["duration"]
        for path in out.rglob("*.ipynb")
    ]
    return wall, statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variations", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20_000, help="Library calls per variation")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds; each row's median")
    parser.add_argument("--modes", nargs="+", default=["fork", "spawn"])
    args = parser.parse_args()
    load = os.getloadavg()[0]
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build(root, args.variations, args.calls)
        for _ in range(args.repeat):  # in rounds, so load changes hit every row alike
            for mode in args.modes:
                for name, extra in ROWS.items():
                    found.setdefault((mode, name), []).append(run(root, mode, extra))
    print(
        f"{args.variations} variations x {args.calls} library calls, median of {args.repeat}, "
        f"load {load:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print("| mode | runner | wall s | x plain | notebook s | x plain |")
    print("|---|---|---|---|---|---|")
    for mode in args.modes:
        base_wall = statistics.median(w for w, _ in found[(mode, "pytest -n 0")])
        base_nb = statistics.median(n for _, n in found[(mode, "pytest -n 0")])
        for name in ROWS:
            wall = statistics.median(w for w, _ in found[(mode, name)])
            notebook = statistics.median(n for _, n in found[(mode, name)])
            print(
                f"| {mode} | {name} | {wall:.2f} | {wall / base_wall:.2f} | "
                f"{notebook:.3f} | {notebook / base_nb:.2f} |"
            )


if __name__ == "__main__":
    main()
