"""Runs in the process that draws (the xdist controller, the ``millrun`` command): progress in.

The reading end of the side channel that :class:`~pytest_millrun.execution.
progress_sink.ChannelSink` writes: a private folder made for the run, where each
executing thread keeps its running cell (``.json``) and appends its cell output
(``.log``).  Reading it is a directory listing and a few small reads, cheap enough
to do a few times a second between the draws.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

from pytest_millrun.core.progress import RunningCell
from pytest_millrun.execution.progress_sink import LOG_SUFFIX, STATE_SUFFIX

#: One piece of cell output: (label, stream, text).
Output = tuple[str, str, str]


def open_channel() -> Path:
    """A new private folder for one run's channel (removed by :func:`close_channel`)."""
    return Path(tempfile.mkdtemp(prefix="millrun-progress-"))


def close_channel(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class ChannelReader:
    """What the channel in ``folder`` says now: the running cells, and the output not yet read."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[Path, int] = {}

    def running(self) -> list[RunningCell]:
        found = []
        for path in self._files(STATE_SUFFIX):
            with contextlib.suppress(OSError):
                entry = RunningCell.from_json(path.read_text(encoding="utf-8"))
                if entry is not None:
                    found.append(entry)
        return found

    def outputs(self) -> list[Output]:
        """The pieces of output appended since the last call, whole lines of the logs only."""
        pieces: list[Output] = []
        for path in self._files(LOG_SUFFIX):
            offset = self._offsets.get(path, 0)
            try:
                with path.open("rb") as log:
                    log.seek(offset)
                    data = log.read()
            except OSError:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            for line in complete.decode("utf-8", "replace").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = json.loads(line)
                    pieces.append((str(record["label"]), str(record["stream"]),
                                   str(record["text"])))  # fmt: skip
        return pieces

    def _files(self, suffix: str) -> list[Path]:
        try:
            return sorted(self.folder.glob(f"*{suffix}"))
        except OSError:
            return []
