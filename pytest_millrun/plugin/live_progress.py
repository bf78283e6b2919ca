"""Live progress in pytest's terminal: the running notebooks, their cell ``K/N`` and its age.

Drawn from the main thread only, through pytest's terminal reporter, after what the
reporter last wrote on the current line (the notebook's path, the dots of a run) and
erased before the reporter writes again, so pytest's own output is what it would be
without it:

* ``-n 0``: the notebook runs in this process, whose engine tells :class:`LiveProgress`
  (a :class:`~pytest_millrun.execution.progress_sink.ProgressSink`) each cell start,
  and ticks it about once a second on the main thread while a cell runs; the capture
  of the running item is suspended for each draw, as pytest's live logging does;
* ``-n 2``: the workers write a side channel (:class:`~pytest_millrun.execution.
  progress_sink.ChannelSink`, its folder handed over in ``workerinput``) and the
  controller reads it while it waits for its workers' events: xdist's
  ``DSession.loop_once`` blocks in ``queue.get(timeout=2.0)``, and that queue's
  ``get`` is wrapped for the run loop to return every event as before, polling the
  channel while none comes.

Only on a terminal; with the output redirected nothing is redrawn (no carriage
return, no escape sequence) and a plain line each minute names what still runs;
``-q`` shows neither.  With ``--millrun-log-output`` the cells' output lines are
printed as they come, each prefixed by its item's id, by this process alone.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_millrun.core.progress import (
    Heartbeat,
    OutputLines,
    RunningCell,
    heartbeat_line,
    status_line,
)

#: The ``workerinput`` keys that hand the channel to xdist workers.
CHANNEL_KEY = "millrun_progress"
LOG_OUTPUT_KEY = "millrun_log_output"
#: How often the xdist controller reads the channel while no worker event comes.
POLL_SECONDS = 0.5
#: Columns the status line needs at the least; on a fuller line it waits for a shorter one.
MIN_COLUMNS = 24


@dataclass(frozen=True)
class ItemSink:
    """One item's :class:`~pytest_millrun.execution.progress_sink.ProgressSink` in this process."""

    live: LiveProgress
    label: str

    @property
    def log_output(self) -> bool:
        return self.live.log_output

    def cell(self, label: str, cell: int, cells: int) -> None:
        self.live.cell(label, cell, cells)

    def output(self, label: str, stream: str, text: str) -> None:
        self.live.output(label, stream, text)

    def tick(self) -> None:
        self.live.show()

    def done(self, label: str) -> None:
        self.live.done(label)


class LiveProgress:
    """The plugin (``-n 0``, or the xdist controller) that shows what runs; see the module."""

    def __init__(self, config: pytest.Config, log_output: bool) -> None:
        self.config = config
        self.log_output = log_output
        self.reporter: Any = None
        self.live = False  # redrawn in place on a terminal
        self.heartbeat: Heartbeat | None = None  # else a line a minute (not with -q)
        self.running: dict[str, RunningCell] = {}
        self.lines = OutputLines()
        self.channel: Path | None = None
        self._reader: Any = None
        self._column: int | None = None  # where the drawn status starts, while drawn
        self._polled = 0.0

    # ------------------------------------------------------------- set-up

    @pytest.hookimpl(tryfirst=True)  # before xdist's, which configures the workers
    def pytest_sessionstart(self) -> None:
        """The reporter exists now: decide what to show (nothing, without a reporter)."""
        self.reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if self.reporter is None or self.config.get_verbosity() < 0:
            return
        if self.reporter.isatty():
            self.live = True
        else:
            self.heartbeat = Heartbeat(time.monotonic())

    @property
    def active(self) -> bool:
        shown = self.live or self.heartbeat is not None or self.log_output
        return self.reporter is not None and shown

    def sink_for(self, label: str) -> ItemSink | None:
        """What an item running in this process reports to (``-n 0``), if anything is shown."""
        return ItemSink(self, label) if self.active else None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: each worker gets the channel's folder (made for the first one)."""
        if not self.active:
            return
        if self.channel is None:
            from pytest_millrun.execution.progress_reader import ChannelReader, open_channel

            self.channel = open_channel()
            self._reader = ChannelReader(self.channel)
            self.config.add_cleanup(self._close_channel)
        node.workerinput[CHANNEL_KEY] = str(self.channel)
        node.workerinput[LOG_OUTPUT_KEY] = self.log_output

    def _close_channel(self) -> None:
        from pytest_millrun.execution.progress_reader import close_channel

        if self.channel is not None:
            close_channel(self.channel)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, Any, None]:
        """xdist's controller: poll the channel while it waits for its workers."""
        dsession = self.config.pluginmanager.get_plugin("dsession")
        events = getattr(dsession, "queue", None)
        if not self.active or not isinstance(events, queue.Queue):
            yield
            return
        events.get = _polling(events.get, self)  # type: ignore[method-assign]
        try:
            yield
        finally:
            del events.get  # the instance's own attribute: Queue.get again
            self.poll(draw=False)
            self._say_all(self.lines.flush())
            self.erase()

    # ------------------------------------------------------------- what runs

    def cell(self, label: str, cell: int, cells: int) -> None:
        self.running[label] = RunningCell(label, cell, cells, time.time())
        self.show()

    def output(self, label: str, stream: str, text: str) -> None:
        self._say_all(self.lines.add(label, stream, text))

    def done(self, label: str) -> None:
        self.running.pop(label, None)
        self._say_all(self.lines.flush(label))
        self.erase()

    def poll(self, *, draw: bool = True) -> None:
        """The xdist controller: what the channel says now, shown."""
        self._polled = time.monotonic()
        if self._reader is None:
            return
        for label, stream, text in self._reader.outputs():
            self.output(label, stream, text)
        self.running = {entry.label: entry for entry in self._reader.running()}
        for label in self.lines.labels() - set(self.running):
            self._say_all(self.lines.flush(label))
        if draw:
            self.show()

    # ------------------------------------------------------------- the terminal

    def show(self) -> None:
        """The status line redrawn (a terminal), or the minute's line when it is due."""
        entries = list(self.running.values())
        if self.heartbeat is not None and self.heartbeat.due(time.monotonic(), bool(entries)):
            self._say_all([heartbeat_line(entries, time.time())])
        if not self.live:
            return
        if not entries:
            self.erase()
            return
        writer = self.reporter._tw
        column = self._column if self._column is not None else writer.width_of_current_line
        gap = 1 if column else 0
        with self._terminal():  # (the width too: a captured item's stdout is no terminal)
            width = writer.fullwidth - column - gap - 1
            if width < MIN_COLUMNS:
                return
            text = status_line(entries, time.time(), width)
            writer.write_raw(f"\x1b[{column + 1}G\x1b[K{' ' * gap}{text}", flush=True)
        self._column = column

    def erase(self) -> None:
        """The status line gone, the cursor back where the reporter left it."""
        if self._column is None:
            return
        with self._terminal():
            self.reporter._tw.write_raw(f"\x1b[{self._column + 1}G\x1b[K", flush=True)
        self._column = None

    def _say_all(self, lines: list[str]) -> None:
        if not lines or self.reporter is None:
            return
        self.erase()
        with self._terminal():
            for line in lines:
                self.reporter.write_line(line)

    @contextlib.contextmanager
    def _terminal(self) -> Iterator[None]:
        """The real terminal, even while a running item's output is captured."""
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            yield


def _polling(get: Callable[..., Any], live: LiveProgress) -> Callable[..., Any]:
    """``Queue.get`` that polls the channel every :data:`POLL_SECONDS` while it waits.

    Every event is returned as the plain ``get`` returns it, after the status line is
    erased (the event's handlers may write); ``Empty`` comes when the caller's own
    timeout is over, as before.
    """

    def polling_get(block: bool = True, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SECONDS if deadline is None else deadline - time.monotonic()
            try:
                event = get(block, max(0.0, min(POLL_SECONDS, left)))
            except queue.Empty:
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    raise
                live.poll()
                continue
            if time.monotonic() - live._polled > 2 * POLL_SECONDS:
                live.poll(draw=False)  # output lines keep coming while events do
            live.erase()
            return event

    return polling_get


def register(config: pytest.Config, log_output: bool) -> LiveProgress:
    """The drawer of this process (``-n 0`` or the xdist controller), as a plugin."""
    live = LiveProgress(config, log_output)
    config.pluginmanager.register(live, "millrun-live-progress")
    return live
