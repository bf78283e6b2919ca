"""What the small benchmarks share: one command timed in a subprocess, stopping on a failure.

Imported by ``order_bench.py``, ``preload_bench.py`` and ``corpus_bench.py`` (run as scripts,
so this folder is on ``sys.path``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def timed(command: list[str], cwd: Path, *, tail: int | None = None) -> float:
    """Wall seconds of ``command`` in ``cwd``; a failure ends the benchmark with its output
    (its last ``tail`` characters of each stream, for runs whose output is long)."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        out, err = (done.stdout, done.stderr) if tail is None else (
            done.stdout[-tail:], done.stderr[-tail:]
        )
        sys.exit(f"{' '.join(command)} failed:\n{out}\n{err}")
    return took
