"""What the ``millrun`` command prints under each run at ``-v`` and ``-vv``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pytest_millrun.cli_output import Progress
from pytest_millrun.core.data import ExecutionResult

READS = ("read data.csv", "imported helper.py", "listed more")


def printed(verbose: int, **result: Any) -> list[str]:
    stream = io.StringIO()
    progress = Progress(1, 1, bar=False, stream=stream)
    progress.verbose = verbose
    done = ExecutionResult(Path("nbs/calc.ipynb"), "0", {}, None, "passed", 1.0, **result)
    progress.update(done)
    return stream.getvalue().splitlines()[1:]


def test_v_says_why_each_ran_and_vv_also_lists_its_read_set() -> None:
    ran = {"cache_reasons": ("read data.csv changed",), "read_set": READS}
    assert printed(0, **ran) == []
    assert printed(1, **ran) == ["  calc.ipynb [0]: read data.csv changed"]
    assert printed(2, **ran) == [
        "  calc.ipynb [0]: read data.csv changed",
        "  calc.ipynb [0] read set (3):",
        "    read data.csv",
        "    imported helper.py",
        "    listed more",
    ]


def test_vv_lists_a_cached_runs_read_set_and_nothing_without_one() -> None:
    assert printed(2, cached=True, read_set=READS)[0] == "  calc.ipynb [0] read set (3):"
    assert printed(2, cache_reasons=("no output",)) == ["  calc.ipynb [0]: no output"]
