"""Runs where notebooks run (this process, an xdist worker, a pool or Dask worker): progress out.

What an execution tells whoever draws the progress: which code cell of how many
started, each cell's stdout/stderr as it comes (``log_output``), a tick about once
a second while a cell runs, and the notebook's end.  The receiving end is a
:class:`ProgressSink`: the pytest plugin's own drawer when the notebook runs in the
process that draws (``pytest -n 0``), else a :class:`ChannelSink`, which writes
files that the drawing process reads (:mod:`.progress_reader`): a side channel,
since xdist's controller dispatches its workers' events by name and would crash
on one of ours, and a pool worker has no channel to its parent but its result.

Progress never fails a run: whatever a sink raises is dropped here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pytest_millrun.core.progress import RunningCell

#: The suffixes of the channel's files: one running-cell record, one output log.
STATE_SUFFIX = ".json"
LOG_SUFFIX = ".log"


class ProgressSink(Protocol):
    """Who hears an execution's progress; ``label`` names the run (None: its notebook's)."""

    @property
    def label(self) -> str | None: ...

    @property
    def log_output(self) -> bool: ...

    def cell(self, label: str, cell: int, cells: int) -> None: ...

    def output(self, label: str, stream: str, text: str) -> None: ...

    def tick(self) -> None: ...

    def done(self, label: str) -> None: ...


@dataclass(frozen=True)
class ChannelSink:
    """Progress as files in ``folder``, one pair per executing thread (picklable).

    ``NAME.json`` holds the running cell (replaced whole, so a reader never sees
    half of it; removed when the notebook ends); ``NAME.log`` gets one JSON line
    per piece of cell output, appended.
    """

    folder: str
    label: str | None = None
    log_output: bool = False

    def _path(self, suffix: str) -> Path:
        return Path(self.folder, f"{os.getpid()}-{threading.get_ident()}{suffix}")

    def cell(self, label: str, cell: int, cells: int) -> None:
        path = self._path(STATE_SUFFIX)
        record = RunningCell(label, cell, cells, time.time()).to_json()
        with contextlib.suppress(OSError):  # a folder gone (the run ends): nothing to tell
            temporary = path.with_suffix(".tmp")
            temporary.write_text(record, encoding="utf-8")
            os.replace(temporary, path)

    def output(self, label: str, stream: str, text: str) -> None:
        line = json.dumps({"label": label, "stream": stream, "text": text}) + "\n"
        with contextlib.suppress(OSError), self._path(LOG_SUFFIX).open("a") as log:
            log.write(line)

    def tick(self) -> None:
        """Nothing: the reader ages the cell from its start time."""

    def done(self, label: str) -> None:
        with contextlib.suppress(OSError):
            self._path(STATE_SUFFIX).unlink(missing_ok=True)

    def for_label(self, label: str) -> ChannelSink:
        return dataclasses.replace(self, label=label)


@dataclass(frozen=True)
class NotebookProgress:
    """One execution's side of a sink, its label bound; what millrun's engine calls."""

    sink: ProgressSink
    label: str

    def cell(self, cell: int, cells: int) -> None:
        _quietly(self.sink.cell, self.label, cell, cells)

    def output(self, stream: str, text: str) -> None:
        _quietly(self.sink.output, self.label, stream, text)

    def tick(self) -> None:
        _quietly(self.sink.tick)

    def done(self) -> None:
        _quietly(self.sink.done, self.label)

    def engine_kwargs(self, ours: bool) -> dict[str, Any]:
        """papermill's keywords: the cell output streams (``log_output``), and this object for
        millrun's engine, which alone knows when a cell starts."""
        kwargs: dict[str, Any] = {"millrun_progress": self} if ours else {}
        if _quietly(lambda: self.sink.log_output):
            kwargs["stdout_file"] = OutputStream(self, "stdout")
            kwargs["stderr_file"] = OutputStream(self, "stderr")
        return kwargs


@dataclass(frozen=True)
class OutputStream:
    """A file for papermill's ``stdout_file`` / ``stderr_file``: what the cells print, passed on."""

    progress: NotebookProgress
    stream: str

    def write(self, text: str) -> int:
        self.progress.output(self.stream, text)
        return len(text)

    def flush(self) -> None:
        """Nothing held back here (the drawing side keeps unfinished lines)."""


def _quietly(call: Any, *args: Any) -> Any:
    """``call(*args)``, or None when it raised: a progress display never fails a notebook."""
    try:
        return call(*args)
    except Exception:
        return None
