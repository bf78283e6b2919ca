"""What one execution produced, and why it failed: the data every layer above shares.

Why here, at the bottom: the execution that makes an :class:`ExecutionResult`, the
pool and Dask workers that carry it across processes, and the tables, reports and
snapshot checks that read it must all agree on one definition that imports none of
them (as nbmake keeps ``nb_result.py`` and syrupy ``data.py`` below their users).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_millrun.core.params import Variation
from pytest_millrun.core.text import cell_words, exception_words

KernelStart = Literal["auto", "fork", "spawn"]


Status = Literal["passed", "failed", "interrupted"]


KERNEL_START_MODES: tuple[KernelStart, ...] = ("auto", "fork", "spawn")
#: Which runs start first: the longest by the last run's durations, or as planned.
Order = Literal["longest-first", "collection"]


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one (notebook, variation) pair."""

    notebook: Path
    variation_id: str
    parameters: Variation
    #: The executed notebook: a path, or a URL (``s3://...``) for an output dir on object storage.
    output: Path | str | None
    status: Status
    duration: float
    error: Failure | None = None
    #: What a person should know about a run that is not a failure (the kernel it defaulted to).
    notes: tuple[str, ...] = ()
    #: name -> plain JSON value (nan/inf as floats); see :mod:`pytest_millrun.execution.recording`
    recorded: Mapping[str, Any] = field(default_factory=dict)
    #: name -> why that scrap or variable is not (exactly) recorded
    record_notes: Mapping[str, str] = field(default_factory=dict)
    #: part name -> what that kernel session part brought back from the kernel (plain data);
    #: see :mod:`pytest_millrun.execution.kernel_session`
    kernel_report: Mapping[str, Any] = field(default_factory=dict)
    #: Not run: the output of an earlier passing run with the same cache key answers for it.
    cached: bool = False
    #: With the cache on, why this variation ran (see :mod:`pytest_millrun.cache.verdicts`).
    cache_reasons: tuple[str, ...] = ()
    #: With the cache on, what the key holds the variation read (``-vv`` lists it): one
    #: line each, ``read data/prices.csv``, ``imported src/lib/core.py``, ``listed data/parts``,
    #: ``looked for data/new.csv (not found)``; paths relative to the notebook's folder
    #: where under it.  Empty when its kernel records no reads (another language) or its
    #: run kept no key.
    read_set: tuple[str, ...] = ()
    #: Each code cell that ran: its index in the output notebook, its seconds as papermill
    #: recorded them, and its first source line (a run that failed in a cell: none).
    cell_seconds: tuple[tuple[int, float, str], ...] = ()

    @property
    def cells_duration(self) -> float | None:
        """The seconds of the notebook's own work (its cells), without its kernel's start."""
        return sum(seconds for _, seconds, _ in self.cell_seconds) if self.cell_seconds else None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @classmethod
    def ended(
        cls,
        notebook: Path,
        variation_id: str,
        parameters: Variation,
        output: Path,
        status: Status,
        duration: float,
        **more: Any,
    ) -> ExecutionResult:
        """A run's result as it ended: its output named only when one was written."""
        written = output if output.exists() else None
        return cls(notebook, variation_id, dict(parameters), written, status, duration, **more)


class ExecutionInterrupted(KeyboardInterrupt):
    """A signal stopped the run while a notebook was executing; its partial output is saved."""

    def __init__(self, result: ExecutionResult) -> None:
        super().__init__(f"Interrupted while running {result.notebook} [{result.variation_id}]")
        self.result = result

    def __reduce__(self) -> tuple[type[ExecutionInterrupted], tuple[ExecutionResult]]:
        # rebuilt from its result, as a process pool's worker sends it to the parent
        return (type(self), (self.result,))


@dataclass(frozen=True)
class OptionNames:
    """How one front end spells the options that a failure's advice names."""

    timeout: str = "execution_timeout="
    notebook_timeout: str = "notebook_timeout="
    kernel: str = "kernel_name="
    output_dir: str = "output_dir="


#: The Python API's keyword arguments; the CLI and the plugin pass their own flags.
API_OPTION_NAMES = OptionNames()


@dataclass(frozen=True)
class Failure:
    """Why a variation failed, in the terms of papermill's ``PapermillExecutionError``.

    ``kind`` is one of ``cell`` (an exception in a cell), ``timeout``,
    ``kernel-died``, ``kernel-start``, ``interrupted`` or ``error``.  The cell
    fields are filled whenever the failure happened inside a cell.
    """

    kind: str
    message: str
    ename: str = ""
    evalue: str = ""
    cell_index: int | None = None
    exec_count: int | None = None
    source: str = ""
    traceback: tuple[str, ...] = ()
    #: The last lines the cell printed, quoted when its error has no text of its own.
    output: str = ""

    @property
    def headline(self) -> str:
        """The report's first line: ``ename: evalue``, with the cell where there is one."""
        if self.kind == "cell" and not self.ename:  # a kernel that names no exception (bash)
            return f"Error{cell_words(self.cell_index, self.exec_count)}: {self.unnamed_words()}"
        if self.kind == "cell":
            return exception_words(self.ename, self.evalue) + cell_words(
                self.cell_index, self.exec_count
            )
        if self.ename:  # the evalue of these already says where
            return exception_words(self.ename, self.evalue)
        return self.message.split(". ")[0].rstrip(".")

    def unnamed_words(self) -> str:
        """What a cell's error without an ``ename`` says: its evalue, else its last line."""
        last = next((line for line in reversed(self.traceback) if line.strip()), "")
        return self.evalue.strip() or last.strip() or "the cell failed"

    def summary_lines(self) -> list[str]:
        """The failure in a line or two under its notebook and cell, each said once."""
        if self.kind == "cell" and not self.ename:
            return [f"Error: {self.unnamed_words()}"]
        if self.kind == "cell":
            return [exception_words(self.ename, self.evalue)]
        if self.ename:
            return [exception_words(self.ename, self.evalue), self.message]
        return [self.message]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run; ``results`` holds what finished (and was cut short)."""

    def __init__(self, results: list[ExecutionResult], pending: int) -> None:
        super().__init__(f"Interrupted with {pending} notebook runs not finished")
        self.results = results
        self.pending = pending
