"""What a live progress display says: the running cells, their ages, a minute's heartbeat.

Pure logic, apart from any terminal: the pytest plugin (its only process, or the
xdist controller) and the ``millrun`` command draw what this module phrases, and
the side channel between the processes that run notebooks and the one that draws
(:mod:`pytest_millrun.execution.progress_sink`, :mod:`pytest_millrun.execution.
progress_reader`) carries :class:`RunningCell` records in the JSON this module
writes and reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: How often a run whose output is not a terminal says what is still running (CI
#: systems stop jobs that print nothing for some minutes); ``$MILLRUN_HEARTBEAT_SECONDS``
#: changes it (the tests' knob).
HEARTBEAT_SECONDS = 60.0
#: The separator between the running notebooks of one status line.
SEPARATOR = " | "
#: ANSI escape sequences (colours, cursor moves) inside a notebook's output.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


@dataclass(frozen=True)
class RunningCell:
    """One running notebook: who runs it, its running code cell (``cell`` of ``cells``)."""

    label: str
    cell: int
    cells: int
    #: When the cell started (``time.time()``: the processes that draw are other processes).
    since: float

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunningCell | None:
        """The record, or None for text that is none (a file caught while it was replaced)."""
        try:
            data: Any = json.loads(text)
            return cls(str(data["label"]), int(data["cell"]), int(data["cells"]),
                       float(data["since"]))  # fmt: skip
        except (ValueError, TypeError, KeyError):
            return None


def elapsed_words(seconds: float) -> str:
    """``4s``, ``2m 05s``, ``1h 02m``: short enough for a status line, exact enough to see move."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def running_words(entry: RunningCell, now: float) -> str:
    """``nbs/slow.ipynb::slow[0] cell 4/5 9s``."""
    return f"{entry.label} cell {entry.cell}/{entry.cells} {elapsed_words(now - entry.since)}"


def status_line(entries: Sequence[RunningCell], now: float, width: int) -> str:
    """Every running notebook on one line of at most ``width`` characters, oldest cell first.

    What does not fit is cut, ending in ``...`` so nobody reads a cut name as a whole one.
    """
    if width <= 0 or not entries:
        return ""
    ordered = sorted(entries, key=lambda entry: (entry.since, entry.label))
    text = SEPARATOR.join(running_words(entry, now) for entry in ordered)
    if len(text) <= width:
        return text
    return text[: max(0, width - 3)] + "..." if width > 3 else text[:width]


def heartbeat_line(entries: Sequence[RunningCell], now: float) -> str:
    """The plain line printed once a minute when the output is not a terminal."""
    ordered = sorted(entries, key=lambda entry: (entry.since, entry.label))
    running = ", ".join(
        f"{e.label} (cell {e.cell}/{e.cells}, {elapsed_words(now - e.since)})" for e in ordered
    )
    return f"millrun: still running: {running}"


def heartbeat_seconds() -> float:
    """:data:`HEARTBEAT_SECONDS`, or ``$MILLRUN_HEARTBEAT_SECONDS`` when that is a number > 0."""
    try:
        seconds = float(os.environ.get("MILLRUN_HEARTBEAT_SECONDS", ""))
    except ValueError:
        return HEARTBEAT_SECONDS
    return seconds if seconds > 0 else HEARTBEAT_SECONDS


class Heartbeat:
    """When a plain "still running" line is due: every :data:`HEARTBEAT_SECONDS` of silence.

    Only while something runs: the clock starts again when nothing does, so the
    first line comes a full interval after a notebook started, not at once.
    """

    def __init__(self, start: float, every: float | None = None) -> None:
        self.every = heartbeat_seconds() if every is None else every
        self.last = start

    def due(self, now: float, running: bool) -> bool:
        if not running:
            self.last = now
            return False
        if now - self.last >= self.every:
            self.last = now
            return True
        return False


class OutputLines:
    """Cell output as it comes, in whole lines, each prefixed by who printed it.

    The kernel's stream messages cut text anywhere; a line is shown once its end
    came (or its notebook ended: :meth:`flush`), so two notebooks' halves never mix.
    """

    def __init__(self) -> None:
        self._partial: dict[tuple[str, str], str] = {}

    def add(self, label: str, stream: str, text: str) -> list[str]:
        key = (label, stream)
        pieces = (self._partial.pop(key, "") + text.replace("\r\n", "\n")).split("\n")
        if pieces[-1]:
            self._partial[key] = pieces[-1]
        return [_prefixed(label, stream, line) for line in pieces[:-1]]

    def labels(self) -> set[str]:
        """Who has an unfinished line held back."""
        return {label for label, _ in self._partial}

    def flush(self, label: str | None = None) -> list[str]:
        """The last unfinished lines (of ``label``'s notebook, or of all)."""
        keys = [key for key in self._partial if label is None or key[0] == label]
        return [_prefixed(*key, self._partial.pop(key)) for key in keys]


def _prefixed(label: str, stream: str, line: str) -> str:
    """``[nbs/a.ipynb::a[0]] text``; stderr's lines say so."""
    mark = " stderr:" if stream == "stderr" else ""
    return f"[{label}]{mark} {clean_text(line)}"


def clean_text(line: str) -> str:
    """A line without the control characters that would move the cursor or colour the screen
    (a progress bar inside a notebook redraws itself with ``\\r``: its last state is kept)."""
    line = _ANSI.sub("", line.rsplit("\r", 1)[-1])
    return "".join(ch for ch in line if ch == "\t" or (ch >= " " and ch != "\x7f"))
