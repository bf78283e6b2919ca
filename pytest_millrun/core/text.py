"""Small text helpers for messages: a sentence, a first line, an indented block, a log's tail.

Pure and dependency-free so the fork server's parent side, the execution and the
front ends phrase things the same way without importing one another.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytest_millrun.core.params import Variation


def exception_words(ename: str, evalue: str) -> str:
    """``ValueError: bad``, or just ``AssertionError`` for an exception without a message."""
    return f"{ename}: {evalue}" if evalue.strip() else ename


def cell_words(cell_index: int | None, exec_count: int | None) -> str:
    """`` in cell [3]``: the execution count, as Jupyter shows it beside the cell.

    :func:`~pytest_millrun.execution.failures.running_cell`
    fills in the count a started cell had or was about to
    get, so one cell is always named the same way; the index is the fallback
    for a cell that never started.
    """
    if cell_index is None:
        return ""
    if exec_count is None:
        return f" in cell index {cell_index}"
    return f" in cell [{exec_count}]"


def crash_lines(log: str, lines: int = 8, frames: int = 12) -> str:
    """What to quote of a dead kernel's log: its last lines, or the heart of a crash dump.

    A faulthandler dump (``Fatal Python error: ...``) lists every thread, the
    crashing one (``Current thread``) wherever it falls among them, so its last
    lines are the bottom of some stack: quote the error line and the crashing
    thread's innermost frames instead.
    """
    all_lines = log.strip().splitlines()
    starts = [i for i, line in enumerate(all_lines) if line.startswith("Fatal Python error")]
    if not starts:
        return "\n".join(all_lines[-lines:])
    dump = all_lines[starts[-1] :]
    current = next((i for i, line in enumerate(dump) if line.startswith("Current thread")), None)
    if current is None:
        return "\n".join(dump[: frames + 2])
    block = dump[current : current + frames + 1]
    if "" in block:
        block = block[: block.index("")]
    return "\n".join([dump[0], "", *block])


def sentence(text: str) -> str:
    """Text to go inside a sentence of ours: no full stop of its own at the end."""
    return text.rstrip().rstrip(".")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def quote_log(path: Path, intro: str, lines: int = 8) -> str:
    """`` {intro}:`` and the log's last lines (or a crash dump's heart), or "" without any."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    if not text:
        return ""
    return f" {intro}:\n{indent(crash_lines(text, lines))}"


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def short_params(parameters: Variation, limit: int = 200) -> str:
    try:
        text = json.dumps(parameters, default=repr, sort_keys=False)
    except (RecursionError, ValueError):  # too deep or circular to show
        text = "{" + ", ".join(f'"{key}": ...' for key in parameters) + "}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
