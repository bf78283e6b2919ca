"""``reads_bench.py --kernels``: the read sets' cost with real kernels, against no cache.

Two notebooks, each run through ``execute_run`` (forked kernels, one run after the
other) over ``--variations`` variations, each row in a fresh ``python`` process:

- **files**: a cell that globs ``data/*.txt`` and reads each of ``--files`` small files.
  Rows: without the cache (the baseline), with it cold (every variation runs, its reads
  are recorded, hashed and stamped) and warm (nothing changed: each file is hashed
  again, once per run, and no kernel starts).
- **cells**: reads_bench's cell-heavy loop (deep copies, pickling, arithmetic), cache
  off and cache on, both cold (the recorder installed in the kernel, the stamp after).

Each row's figures: the run's wall time, and the cells' own CPU time as the kernel
measures it (``time.process_time()`` around the loop, recorded as ``cpu``; summed over
the variations): the figure a loaded machine distorts least.  Medians of ``--repeat``
rounds, the rows' order rotating from round to round.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

TARGET = 1.03
ROWS = ("files off", "files cache cold", "files cache warm", "cells off", "cells cache cold")

_READ_FILES = """\
import glob, time
started = time.process_time()
size = 0
for name in sorted(glob.glob("data/*.txt")):
    with open(name) as handle:
        size += len(handle.read())
cpu = time.process_time() - started
"""

_RUN = """\
import json, sys, time
from pytest_millrun import execute_run
notebook, out, cache, count = sys.argv[1], sys.argv[2], sys.argv[3] == "on", int(sys.argv[4])
started = time.perf_counter()
results = execute_run(notebook, {"x": list(range(count))}, out, record=["cpu"], cache=cache,
                      kernel_start="fork")
wall = time.perf_counter() - started
failed = [str(r.error) for r in results if not r.passed]
print(json.dumps({
    "wall": wall, "failed": failed, "ran": sum(not r.cached for r in results),
    "cpu": sum(float(r.recorded.get("cpu", 0.0)) for r in results if not r.cached),
    "reads": len(results[0].read_set),
}))
"""


def _notebook(path: Path, code: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = new_code_cell("x = 0", metadata={"tags": ["parameters"]})
    nb = new_notebook(cells=[params, new_code_cell(code)])
    spec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = spec
    nbformat.write(nb, path)
    return path


def _run(notebook: Path, out: Path, cache: bool, variations: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(notebook), str(out), "on" if cache else "off",
         str(variations)],
        capture_output=True, text=True, cwd=notebook.parent,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{notebook.name} failed:\n{done.stdout}\n{done.stderr}")
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if found["failed"]:
        raise SystemExit(f"{notebook.name}: {found['failed']}")
    return found


def kernel_rows(cells_code: str, args: Any) -> None:
    """Build both notebooks, run every row ``args.repeat`` times, print the table."""
    load_before = os.getloadavg()
    n = args.variations
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        files = _notebook(root / "files" / "files.ipynb", _READ_FILES)
        (root / "files" / "data").mkdir()
        for index in range(args.files):
            (root / "files" / "data" / f"f{index:05d}.txt").write_text(f"{index}\n" * 20)
        heavy = f"import time\nROUNDS = {args.rounds * 5}\n{cells_code}\ncpu = elapsed\n"
        cells = _notebook(root / "cells" / "cells.ipynb", heavy)
        _run(cells, root / "warmup", False, 1)  # cold disk caches hit no row
        rows: dict[str, list[dict[str, Any]]] = {}

        def files_cold_and_warm(out: Path) -> None:
            rows.setdefault("files cache cold", []).append(_run(files, out, True, n))
            rows.setdefault("files cache warm", []).append(_run(files, out, True, n))

        steps = {
            "files off": lambda out: rows.setdefault("files off", []).append(
                _run(files, out, False, n)),
            "files cache": files_cold_and_warm,
            "cells off": lambda out: rows.setdefault("cells off", []).append(
                _run(cells, out, False, n)),
            "cells on": lambda out: rows.setdefault("cells cache cold", []).append(
                _run(cells, out, True, n)),
        }  # fmt: skip
        names = list(steps)
        for round_ in range(args.repeat):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                out = root / "out"
                shutil.rmtree(out, ignore_errors=True)
                steps[name](out)
    _print(rows, args, load_before, os.getloadavg())


def _print(
    rows: dict[str, list[dict[str, Any]]],
    args: Any,
    before: tuple[float, float, float],
    after: tuple[float, float, float],
) -> None:
    def median(row: str, what: str) -> float:
        return statistics.median(found[what] for found in rows[row])

    print(
        f"real kernels (fork), {args.variations} variations per row, median of {args.repeat} "
        f"rounds; load average {before[0]:.1f} before, {after[0]:.1f} after\n"
    )
    print("| workload | row | ran | reads | wall s | x baseline | cells cpu s | x off |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for workload, base in (("files", "files off"), ("cells", "cells off")):
        for row in (r for r in ROWS if r.startswith(workload)):
            ran = rows[row][0]["ran"]
            wall, cpu = median(row, "wall"), median(row, "cpu")
            cpu_words = f"{cpu:.3f} | {cpu / median(base, 'cpu'):.3f}" if ran else "- | -"
            print(
                f"| {workload} | {row[len(workload) + 1 :]} | {ran} | {rows[row][0]['reads']} "
                f"| {wall:.2f} | {wall / median(base, 'wall'):.2f} | {cpu_words} |"
            )
    ratio = median("cells cache cold", "cpu") / median("cells off", "cpu")
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"\ncells, cache on against off (kernel CPU): {ratio:.3f}x ({verdict} {TARGET:.2f}x)")
