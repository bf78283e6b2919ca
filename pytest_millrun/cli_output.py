"""What the ``millrun`` command prints as it runs: a bar or a line per run, and the summary.

Apart from :mod:`pytest_millrun.cli` (the options and the run) so the command's
words for a run are in one place: the progress line, why a run has no output,
why it ran although the cache was on, and the closing count.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

import click

from pytest_millrun.core.data import ExecutionResult
from pytest_millrun.core.progress import (
    Heartbeat,
    OutputLines,
    RunningCell,
    heartbeat_line,
    status_line,
)
from pytest_millrun.core.text import cell_words
from pytest_millrun.core.values import report_lines


def stale_line(message: str | None) -> None:
    if message:
        click.secho(f"\n{message}", fg="yellow")


def is_tty() -> bool:
    return sys.stderr.isatty()


#: How often the running cells are read from the progress channel.
WATCH_SECONDS = 0.5
#: The bar's columns besides the running cells (counts, rate, ETA, counters).
BAR_COLUMNS = 72


class Channel(Protocol):
    """What the progress side channel says now (see :mod:`pytest_millrun.pipeline.watching`)."""

    def running(self) -> list[RunningCell]: ...

    def outputs(self) -> list[tuple[str, str, str]]: ...


class Progress:
    """A live bar on a terminal (done, failed, running, ETA); one plain line per run elsewhere.

    With :meth:`watch`, also the running notebooks' cells (in the bar, or a plain
    line a minute without one) and, with ``log_output``, the cells' output lines.
    """

    def __init__(
        self, total: int, workers: int, *, bar: bool, stream: TextIO | None = None
    ) -> None:
        self.total = total
        self.workers = workers
        self.done = 0
        self.failed = 0
        self.cached = 0
        #: ``-v``: why each variation ran; ``-vv``: also what each one read.
        self.verbose = 0
        #: The learned preloads found unfit to fork that ``-v`` has told of.
        self.told: set[str] = set()
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.cells = ""  # the running cells, as the bar shows them
        self._lock = threading.RLock()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=self.stream, dynamic_ncols=True)
            self._postfix()

    def _postfix(self) -> None:
        running = min(self.workers, self.total - self.done)
        cached = f" cached={self.cached}" if self.cached else ""
        cells = f" | {self.cells}" if self.cells else ""
        self.bar.set_postfix_str(f"failed={self.failed}{cached} running={running}{cells}")

    def update(self, result: ExecutionResult) -> None:
        with self._lock:
            self._update(result)

    def _update(self, result: ExecutionResult) -> None:
        self.done += 1
        self.failed += not result.passed
        self.cached += result.cached
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()
            for line in self._said(result):
                self.bar.write(line, file=self.stream)
            return
        status = "CACHED" if result.cached else "PASSED" if result.passed else "FAILED"
        took = "" if result.cached else f" in {result.duration:.1f} s"
        click.echo(
            f"[{self.done}/{self.total}] {status} {result.notebook.name} [{result.variation_id}]"
            f"{took}{where_it_went(result)}",
            file=self.stream,
        )
        for line in self._said(result):
            click.echo(line, file=self.stream)

    def _said(self, result: ExecutionResult) -> list[str]:
        """What ``-v`` says under a run (why it ran, a learned preload left out), and ``-vv``
        (what it read)."""
        lines = [reason_line(result)] if self.verbose and result.cache_reasons else []
        if self.verbose > 1 and result.read_set:
            lines += read_set_lines(result)
        return lines + self._unsafe_lines(result)

    def _unsafe_lines(self, result: ExecutionResult) -> list[str]:
        """Under ``-v``, once each: the learned preloads a template left out, and why."""
        if not self.verbose or not result.kernel_report:
            return []
        from pytest_millrun.pipeline.preloading import found_unsafe, unsafe_line

        found = {k: v for k, v in found_unsafe(result.kernel_report).items() if k not in self.told}
        self.told.update(found)
        return [unsafe_line(module, why) for module, why in sorted(found.items())]

    def watch(self, reader: Channel) -> None:
        """Show what the progress channel says, from a thread, until :meth:`close`.

        A thread, as the main thread waits on the pool (or runs the notebook itself);
        what it writes goes through tqdm's lock and this object's.
        """
        lines = OutputLines()
        heartbeat = Heartbeat(time.monotonic())

        def watching() -> None:
            while not self._stop.wait(WATCH_SECONDS):
                self._show(reader, lines, heartbeat)
            self._show(reader, lines, heartbeat)
            self._say(lines.flush())

        self._watcher = threading.Thread(target=watching, name="millrun-progress", daemon=True)
        self._watcher.start()

    def _show(self, reader: Channel, lines: OutputLines, heartbeat: Heartbeat) -> None:
        for label, stream, text in reader.outputs():
            self._say(lines.add(label, stream, text))
        entries = reader.running()
        for label in lines.labels() - {entry.label for entry in entries}:
            self._say(lines.flush(label))
        if self.bar is None:
            if heartbeat.due(time.monotonic(), bool(entries)):
                self._say([heartbeat_line(entries, time.time())])
            return
        width = shutil.get_terminal_size().columns - BAR_COLUMNS
        with self._lock:
            self.cells = status_line(entries, time.time(), width)
            self._postfix()

    def _say(self, lines: Sequence[str]) -> None:
        with self._lock:
            for line in lines:
                if self.bar is not None:
                    self.bar.write(line, file=self.stream)
                else:
                    click.echo(line, file=self.stream)

    def close(self) -> None:
        if self._watcher is not None:
            self._stop.set()
            self._watcher.join()
            self._watcher = None
        if self.bar is not None:
            self.bar.close()


def where_it_went(result: ExecutionResult) -> str:
    """`` -> OUTPUT``, or why there is none (the notebook could not be read, say)."""
    if result.output is not None:
        return f" -> {result.output}"
    error = result.error
    if error is None:
        return ": no output written"
    reason = error.headline.replace(str(result.notebook), result.notebook.name)
    ran = error.cell_index is not None or error.kind not in ("error", "kernel-start")
    return f": {'no output written' if ran else 'not run'}: {reason}"


def reason_line(result: ExecutionResult) -> str:
    """Why a variation ran although the cache was on: ``calc [3]: code cell 4 changed``."""
    return f"  {result.notebook.name} [{result.variation_id}]: {'; '.join(result.cache_reasons)}"


def read_set_lines(result: ExecutionResult) -> list[str]:
    """A variation's read set, as ``-vv`` lists it: a heading, then a line per read."""
    count = len(result.read_set)
    heading = f"  {result.notebook.name} [{result.variation_id}] read set ({count}):"
    return [heading, *(f"    {line}" for line in result.read_set)]


def summary(results: Sequence[ExecutionResult], seconds: float, planned: int | None = None) -> None:
    """Each failure, then each interrupted run; the last line accounts for every planned run.

    ``planned`` is given when the run was interrupted: the runs without a result
    never started.
    """
    failures = [r for r in results if r.status == "failed"]
    cut = [r for r in results if r.status == "interrupted"]
    cached = sum(1 for r in results if r.cached)
    passed = len(results) - len(failures) - len(cut) - cached
    if failures:
        click.secho(f"\n{len(failures)} failed:", fg="red", bold=True)
        for r in failures:
            error = r.error
            where = cell_words(error.cell_index, error.exec_count) if error else ""
            click.echo(f"  {r.notebook} [{r.variation_id}]{where}")
            for line in error.summary_lines() if error is not None else ():
                click.echo(f"    {line}")
            click.echo(f"    output: {r.output or 'none written'}")
            for line in report_lines(r.recorded, r.record_notes):
                click.echo(f"    {line.strip()}")
    for note in sorted({note for r in results for note in r.notes}):
        click.secho(f"note: {note}", fg="yellow")
    parts = [
        f"{passed} passed",
        *([f"{cached} cached"] if cached else []),
        f"{len(failures)} failed",
    ]
    if planned is not None:
        not_run = planned - len(results)
        click.secho(
            f"\nInterrupted: {len(cut)} cut short (partial outputs saved), {not_run} not run.",
            fg="yellow",
            bold=True,
        )
        for r in cut:
            click.echo(f"  {r.notebook} [{r.variation_id}]")
            click.echo(f"    output: {r.output or 'none written'}")
        parts += [f"{len(cut)} interrupted", f"{not_run} not run"]
    color = "red" if failures or planned is not None else "green"
    click.secho(f"{', '.join(parts)} in {seconds:.1f}s", fg=color, bold=True)
