"""Runs in the parent: a planned run whose executions report their progress to this process.

The command's way of seeing what its pool workers (or this process) run: a side
channel (:mod:`pytest_millrun.execution.progress_sink` writes it where the notebooks
run, :mod:`pytest_millrun.execution.progress_reader` reads it here), made for the
run and removed after it, so the front end never reaches into the execution.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from pytest_millrun.execution.progress_reader import ChannelReader, close_channel, open_channel
from pytest_millrun.execution.progress_sink import ChannelSink
from pytest_millrun.pipeline.runner import PlannedRun


@contextlib.contextmanager
def watched(planned: PlannedRun, *, log_output: bool) -> Iterator[tuple[PlannedRun, ChannelReader]]:
    """``planned`` with its executions telling their cells (and, with ``log_output``, what the
    cells print) to the channel the reader reads, while the context lasts."""
    channel = open_channel()
    try:
        sink = ChannelSink(str(channel), log_output=log_output)
        options = dataclasses.replace(planned.options, progress=sink)
        yield dataclasses.replace(planned, options=options), ChannelReader(channel)
    finally:
        close_channel(channel)
