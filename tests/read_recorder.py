"""Runs the in-kernel read recorder as a kernel would (its source exec'd), in a plain python.

Shared by the recorder's tests and the cache's: no kernel, one ``python -c`` per call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from pytest_millrun.inkernel import reads

_DRIVER = """
import json, os, sys
_ns = {{"__name__": "millrun_reads"}}
exec(compile(open({source!r}).read(), "<millrun-reads>", "exec"), _ns)
{before}
_ns["start"]({settings!r})
{code}
print("PAYLOAD" + json.dumps(_ns["finish"]()))
"""


def recorded(
    folder: Path, code: str, *, before: str = "", **settings: Any
) -> dict[str, Any]:
    """What the recorder reports after ``code`` ran in a fresh python in ``folder``."""
    settings.setdefault("roots", [str(folder)])
    script = _DRIVER.format(
        source=reads.__file__,
        before=textwrap.dedent(before),
        settings=settings,
        code=textwrap.dedent(code),
    )
    env = {**os.environ, "PYTHONPATH": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("PAYLOAD"))
    payload: dict[str, Any] = json.loads(line.removeprefix("PAYLOAD"))
    return payload
