"""What recording a notebook's reads costs, by mechanism, against no recording in the same run.

The cache's read sets (issue 32) are recorded inside the kernel.  Two ways can do it:
a PEP 578 audit hook that returns at once for events other than opens and listings,
or wrappers around ``open``, ``os.open``, ``os.listdir``, ``os.scandir``... (what
``pytest_millrun/inkernel/read_recorder.py`` does).  The hook is called for every audited
event, and ``copy.deepcopy`` raises one per object (``builtins.id``), unpickling one
per class; the wrappers cost only where a file is opened or a folder listed.

Each row runs one workload in a fresh ``python`` process (no kernel: the mechanism's
cost alone, without a kernel's start-up noise), ``--repeat`` times in rounds (the
modes in a rotating order), and reports the median CPU time of the workload itself
(the figure a busy machine distorts least), with its ratio to the same workload
unrecorded in the same rounds.  Workloads:

- **cells**: a cell-heavy loop that deep-copies and pickles nested objects and does
  some arithmetic (the issue's target: within 3% of unrecorded);
- **files**: opens and reads 2,000 small files and globs their folder (the recorder's
  cost per file opened).

Also timed: the recorder's start and end (``start`` + ``finish``) in a process with
IPython, numpy and pandas loaded, and, for the record, what a scan of every loaded
module's globals for references to ``open`` would cost there (not done: see the
recorder's docstring).

With ``--kernels``, the same two workloads as notebooks run by real (forked) kernels
through ``execute_run``, each row a fresh process, in rounds (:mod:`reads_kernel_rows`):
the 2,000 files without the cache (the baseline), with it cold and warm; the cells
with the cache off and on, cold (the target: within 3%).

    .venv/bin/python benchmarks/reads_bench.py [--repeat 5] [--files 2000] [--kernels]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDER = HERE.parent / "pytest_millrun" / "inkernel" / "read_recorder.py"
TARGET = 1.03

_SETUP = {
    "off": "",
    "audit hook": (
        "import sys\n"
        "_wanted = frozenset({'open', 'os.listdir', 'os.scandir', 'glob.glob', "
        "'sqlite3.connect'})\n"
        "_seen = []\n"
        "def _hook(event, args, _w=_wanted, _a=_seen.append):\n"
        "    if event in _w:\n"
        "        _a(args[0])\n"
        "sys.addaudithook(_hook)\n"
    ),
    "recorder": (
        "import os\n"
        "_ns = {'__name__': 'millrun_reads'}\n"
        "exec(compile(open(RECORDER).read(), '<millrun-reads>', 'exec'), _ns)\n"
        "_ns['start']({'roots': [os.getcwd()]})\n"
    ),
}

_CELLS = """
import copy, pickle
class Point:
    def __init__(self, i):
        self.i, self.tags, self.meta = i, [i, str(i), float(i)], {"k": (i, i + 1)}
state = {"points": [Point(i) for i in range(300)], "grid": [list(range(40)) for _ in range(30)]}
started = time.process_time()
total = 0
for step in range(ROUNDS):
    snapshot = copy.deepcopy(state)
    again = pickle.loads(pickle.dumps(snapshot))
    total += sum(p.i for p in again["points"]) + sum(sum(row) for row in again["grid"])
    total += sum(i * i % 7 for i in range(20000))
elapsed = time.process_time() - started
"""

_FILES = """
import glob
started = time.process_time()
size = 0
for name in sorted(glob.glob("data/*.txt")):
    with open(name) as handle:
        size += len(handle.read())
elapsed = time.process_time() - started
"""

_START_END = """
import IPython.core.interactiveshell, numpy, pandas
import os
_ns = {'__name__': 'millrun_reads'}
exec(compile(open(RECORDER).read(), '<millrun-reads>', 'exec'), _ns)
started = time.process_time()
_ns['start']({'roots': [os.getcwd()]})
_ns['finish']()
elapsed = time.process_time() - started
import builtins, io
targets = frozenset(map(id, (io.open, os.listdir, os.scandir, os.open)))
targets |= frozenset(map(id, (builtins.open,)))
started = time.process_time()
found = 0
for name, module in list(sys.modules.items()):
    values = getattr(module, "__dict__", None)
    if type(values) is dict and not targets.isdisjoint(map(id, values.values())):
        found += 1
scan = time.process_time() - started
"""


def run_once(setup: str, workload: str, folder: Path, rounds: int) -> dict[str, float]:
    code = (
        f"import json, sys, time\nRECORDER = {str(RECORDER)!r}\nROUNDS = {rounds}\n"
        + setup
        + workload
        + "print(json.dumps({'elapsed': elapsed, 'scan': globals().get('scan', 0.0)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=True
    )
    return {k: float(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=60, help="loop rounds of the cells")
    parser.add_argument(
        "--kernels", action="store_true", help="the workloads as notebooks, in real kernels"
    )
    parser.add_argument("--variations", type=int, default=2, help="with --kernels: per row")
    args = parser.parse_args()
    if args.kernels:
        from reads_kernel_rows import kernel_rows

        kernel_rows(_CELLS, args)
        return
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        (folder / "data").mkdir()
        for index in range(args.files):
            (folder / "data" / f"f{index:05d}.txt").write_text(f"{index}\n" * 20)
        times: dict[tuple[str, str], list[float]] = {}
        modes = list(_SETUP)
        for round_ in range(args.repeat):
            order = modes[round_ % len(modes) :] + modes[: round_ % len(modes)]
            for workload, code in (("cells", _CELLS), ("files", _FILES)):
                for mode in order:
                    found = run_once(_SETUP[mode], code, folder, args.rounds)
                    times.setdefault((workload, mode), []).append(found["elapsed"])
        start_end, scans = [], []
        for _ in range(args.repeat):
            found = run_once("", _START_END, folder, args.rounds)
            start_end.append(found["elapsed"])
            scans.append(found["scan"])
    print(f"median of {args.repeat} rounds, each row in a fresh process\n")
    print("| workload | recording | cpu s | x off |")
    print("|---|---|---:|---:|")
    for workload in ("cells", "files"):
        base = statistics.median(times[(workload, "off")])
        for mode in _SETUP:
            wall = statistics.median(times[(workload, mode)])
            print(f"| {workload} | {mode} | {wall:.3f} | {wall / base:.3f} |")
    cells = statistics.median(times[("cells", "recorder")])
    ratio = cells / statistics.median(times[("cells", "off")])
    per_file = (
        statistics.median(times[("files", "recorder")])
        - statistics.median(times[("files", "off")])
    ) / args.files
    print(
        f"\nrecorder on the cells: {ratio:.3f}x ({'meets' if ratio <= TARGET else 'MISSES'} "
        f"the target of {TARGET:.2f}x); {per_file * 1e6:.1f} us more per file opened"
    )
    print(
        f"recorder start + finish with IPython, numpy and pandas loaded: "
        f"{statistics.median(start_end) * 1e3:.2f} ms; a scan of every module's globals "
        f"for kept references (not done): {statistics.median(scans) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
