"""Running one notebook with one variation, and saying what happened.

This module knows nothing about pytest or the command line: it takes paths and
parameters, runs papermill, and returns an :class:`ExecutionResult` whose
:class:`Failure` is already phrased for a person.  The three front ends only
decide how to show it.

The papermill call is the ordinary one, tuned through papermill's and
nbclient's own extension points:

* a kernel manager class (``kernel_manager_class``) whose kernels listen on
  ZeroMQ ``ipc`` sockets in a private 0700 folder, so concurrent starts can
  never race for TCP ports, and whose stdout/stderr go to a log file instead of
  the user's terminal (the log's tail is quoted when a kernel dies);
* ``shutdown_kernel="immediate"``: the outputs are all in once the last cell
  replies, so waiting on the graceful handshake only costs time;
* the kernel's working directory set through nbclient's ``resources`` instead
  of papermill's process-wide ``chdir``, so nothing here touches global state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_millrun.core.data import (
    API_OPTION_NAMES,
    ExecutionInterrupted,
    ExecutionResult,
    Failure,
    KernelStart,
    OptionNames,
    Status,
)
from pytest_millrun.core.discovery import (
    OUTPUT_MARKER,
    NotebookError,
    absolute,
    is_output_notebook,
    read_notebook,
    read_notebook_json,
)
from pytest_millrun.core.naming import OutputPathError, check_output_folder, partial_path
from pytest_millrun.core.params import Variation
from pytest_millrun.core.text import cell_words
from pytest_millrun.execution import engine, expected_errors, failures, recording
from pytest_millrun.execution.failures import format_failure
from pytest_millrun.execution.kernel_requests import builtin_parts
from pytest_millrun.execution.kernel_session import KernelSession, KernelSessionPart
from pytest_millrun.execution.kernels import KernelSandbox, fork_broken
from pytest_millrun.execution.progress_sink import NotebookProgress, ProgressSink

#: The kernel of a notebook whose metadata names none (nbclient's and nbmake's choice too).
DEFAULT_KERNEL = "python3"


def resolve_kernel_start(mode: str) -> KernelStart:
    """``auto`` becomes ``$MILLRUN_KERNEL_START`` when set (a CI matrix knob), else fork."""
    if mode == "auto":
        mode = os.environ.get("MILLRUN_KERNEL_START", "fork") or "fork"
    if mode not in ("fork", "spawn"):
        raise ValueError(f"kernel start mode must be one of auto, fork, spawn, not {mode!r}")
    return "fork" if mode == "fork" else "spawn"


@contextlib.contextmanager
def kernels_ahead(kernel_start: str) -> Iterator[None]:
    """Around a run of many executions: in fork mode each kernel's start overlaps the last run.

    See :func:`pytest_millrun.forkserver.spare_kernels`; nothing happens in spawn mode.
    """
    if resolve_kernel_start(kernel_start) != "fork" or fork_broken.is_set():
        yield
        return
    from pytest_millrun import forkserver

    with forkserver.spare_kernels():
        yield


def expect_next_execution(
    notebook: Path | None, env_updates: Mapping[str, str] | None = None
) -> None:
    """Tell fork mode which notebook runs next (``None``: none), so its kernel is started ahead
    in the right folder with the right environment; see :func:`kernels_ahead`."""
    forkserver = sys.modules.get("pytest_millrun.forkserver")
    if forkserver is None:  # fork mode not in use in this process
        return
    if notebook is None:
        forkserver.expect_next_launch(last=True)
    else:
        forkserver.expect_next_launch(str(absolute(notebook).parent), env_updates)


class OverwriteError(ValueError):
    """Raised instead of writing over a file that is not an output of this tool."""


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: Variation,
    *,
    variation_id: str = "",
    kernel_name: str | None = None,
    cell_timeout: float | None = None,
    notebook_timeout: float | None = None,
    kernel_start: KernelStart = "auto",
    preload: Sequence[str] = (),
    learned_preload: Sequence[str] = (),
    option_names: OptionNames = API_OPTION_NAMES,
    record: Sequence[str] = (),
    session_parts: Sequence[Callable[[], KernelSessionPart]] = (),
    progress: ProgressSink | None = None,
    **papermill_kwargs: Any,
) -> ExecutionResult:
    """Run ``notebook`` with ``parameters`` through papermill and save it to ``output``.

    Never raises for a failure of the notebook or its kernel: that is the
    result's ``error``.  Raises :class:`ExecutionInterrupted` when SIGINT or
    SIGTERM stopped the run, after the partial output is saved and the kernel
    is gone, so the caller can stop everything else too.

    ``kernel_start`` picks how the kernel process starts: ``fork`` from a warm
    template (see :mod:`pytest_millrun.forkserver`) where the kernelspec runs
    ipykernel on this interpreter, ``spawn`` as papermill does, or ``auto``
    (``$MILLRUN_KERNEL_START`` if set, else fork where it can serve).
    ``preload`` names modules the fork template imports once; ``learned_preload``
    more, which the notebooks imported in their last runs, each left out if it proves
    unfit to fork (see :mod:`pytest_millrun.forkserver.template_registry`).  A notebook
    whose metadata names no kernel runs on :data:`DEFAULT_KERNEL` (the result
    notes it).  ``option_names`` are the calling front end's spellings of the
    options that a failure's advice names.  ``record`` names variables read
    after the last cell (see :mod:`pytest_millrun.execution.recording`).
    ``session_parts`` make the kernel session's parts of this execution besides
    the built-in ones and the recorder (see
    :mod:`pytest_millrun.execution.kernel_session`); what they return is the
    result's ``kernel_report``.  ``progress`` hears each code cell start, and with its
    ``log_output`` what the cells print (see :mod:`.progress_sink`).
    """
    run = _Run(
        absolute(notebook), Path(output), parameters, variation_id, recording.Recorder(record)
    )
    if progress is not None:
        run.progress = NotebookProgress(progress, progress.label or run.default_label)
    run.session = KernelSession(
        [*builtin_parts(), run.recorder, *(make() for make in session_parts)]
    )
    try:
        nb, kernel_name = _prepare(run, kernel_name, papermill_kwargs, option_names)
    except _NotRun as exc:
        return run.finish("failed", exc.failure)
    end = _run_papermill(
        run, nb, kernel_name, kernel_start, (tuple(preload), tuple(learned_preload)),
        cell_timeout, notebook_timeout, option_names, papermill_kwargs,
    )  # fmt: skip
    if end.retry:  # the fork template could not serve: run this one again the usual way
        again = execute_notebook(
            notebook, output, parameters, variation_id=variation_id, kernel_name=kernel_name,
            cell_timeout=cell_timeout, notebook_timeout=notebook_timeout, kernel_start="spawn",
            option_names=option_names, record=record, session_parts=session_parts,
            progress=progress, **papermill_kwargs,
        )  # fmt: skip
        return dataclasses.replace(again, notes=(*run.notes, *again.notes))
    return _outcome(run, end)


def _outcome(run: _Run, end: _End) -> ExecutionResult:
    """The result of a run papermill ended; raises :class:`ExecutionInterrupted` for a signal."""
    if end.interrupted:
        _collect_the_killed_cell()
        raise ExecutionInterrupted(
            run.finish("interrupted", Failure("interrupted", "Interrupted by a signal."))
        )
    error = end.error
    if error is None and (stopped := failures.early_exit_note(run.notebook, end.cells)):
        run.notes.append(stopped)
    if error is None and (problem := run.recorder.problem(run.notebook)):
        error = Failure("record", problem[1], ename="RecordError", evalue=problem[0])
    return run.finish("failed" if error else "passed", error, end.cells)


@dataclasses.dataclass
class _Run:
    """One execution's own state, from which its result is made however it ends."""

    notebook: Path
    output: Path
    parameters: Variation
    variation_id: str
    recorder: recording.Recorder
    session: KernelSession = dataclasses.field(default_factory=lambda: KernelSession([]))
    progress: NotebookProgress | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def default_label(self) -> str:
        """How progress names this run when its sink names none: ``calc.ipynb [x=1]``."""
        return f"{self.notebook.name} [{self.variation_id}]"

    def finish(
        self, status: Status, error: Failure | None = None, cells: Sequence[Any] = ()
    ) -> ExecutionResult:
        return ExecutionResult.ended(
            self.notebook, self.variation_id, self.parameters, self.output, status,
            time.monotonic() - self.started, error=error, notes=tuple(self.notes),
            recorded=self.recorder.values, record_notes=self.recorder.notes,
            kernel_report=dict(self.session.report), cell_seconds=cell_seconds(cells),
        )  # fmt: skip


class _NotRun(Exception):
    """The notebook cannot start: its input, output or kernel is wrong; ``failure`` says how."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclasses.dataclass(frozen=True)
class _End:
    """How papermill's run ended: an error, an interrupt, a retry in spawn mode, or its cells."""

    error: Failure | None = None
    interrupted: bool = False
    retry: bool = False
    cells: Sequence[Any] = ()


def _prepare(
    run: _Run, kernel_name: str | None, papermill_kwargs: dict[str, Any], names: OptionNames
) -> tuple[Any, str | None]:
    """The input notebook and the kernel it runs on; raises :class:`_NotRun` before any kernel.

    Sets papermill's ``language`` where the notebook names none (it needs one to write
    the parameters, and the kernel's spec knows it).
    """
    try:
        nb = _load_input(run.notebook, run.variation_id)
        check_output_target(run.notebook, run.output)
        check_output_folder(run.output.parent)
        run.output.parent.mkdir(parents=True, exist_ok=True)
    except (NotebookError, OverwriteError, OutputPathError) as exc:
        raise _NotRun(Failure("error", str(exc))) from None
    except OSError as exc:  # the folder changed since the plan: this run fails, not the others
        raise _NotRun(failures.output_folder_failure(exc, names)) from None
    language = _notebook_language(nb)
    if kernel_name is None and not nb.metadata.get("kernelspec", {}).get("name"):
        if not failures.is_python(language):  # a text notebook in bash, say
            raise _NotRun(failures.no_such_kernel(None, run.notebook, language, names))
        kernel_name = DEFAULT_KERNEL  # as nbclient and nbmake do
        run.notes.append(
            f"{run.notebook.name} names no kernel in its metadata, so it ran on the default "
            f"kernel {DEFAULT_KERNEL} (choose another with {names.kernel})."
        )
    if not papermill_kwargs.get("language") and not language:
        papermill_kwargs["language"] = _kernel_language(kernel_name)
    missing = failures.missing_kernel(
        kernel_name or nb.metadata.get("kernelspec", {}).get("name"),
        run.notebook,
        papermill_kwargs.get("language") or language,
        names,
    )
    if missing is not None:  # said before a kernel manager logs a traceback of its own
        raise _NotRun(missing)
    return nb, kernel_name


def _run_papermill(
    run: _Run,
    nb: Any,
    kernel_name: str | None,
    kernel_start: KernelStart,
    preload: tuple[tuple[str, ...], tuple[str, ...]],
    cell_timeout: float | None,
    notebook_timeout: float | None,
    names: OptionNames,
    papermill_kwargs: Mapping[str, Any],
) -> _End:
    """papermill's run in a kernel sandbox, under the whole-notebook watchdog, however it ends.

    The partial output becomes the output once the run is over (see :func:`_keep_partial`).
    """
    import papermill

    partial = partial_path(run.output)
    mode = resolve_kernel_start(kernel_start)
    with KernelSandbox(mode, preload[0], run.session, learned=preload[1]) as sandbox:
        engine_kwargs: dict[str, Any] = {
            "engine_name": engine.register(),
            "progress_bar": False,
            "shutdown_kernel": "immediate",
            "resources": {"metadata": {"path": str(run.notebook.parent)}},
            **papermill_kwargs,
            "kernel_name": kernel_name,
            "kernel_manager_class": sandbox.kernel_manager_class(),
        }
        ours = engine_kwargs["engine_name"] == engine.ENGINE_NAME
        if ours:  # the paths papermill would record, and the kernel session
            engine_kwargs["millrun_paths"] = (str(run.notebook), str(run.output))
            engine_kwargs["millrun_session"] = run.session
        if run.progress is not None:
            engine_kwargs.update(run.progress.engine_kwargs(ours))
        if cell_timeout is not None:
            engine_kwargs["execution_timeout"] = cell_timeout
        watchdog = None
        if notebook_timeout is not None:
            watchdog = threading.Timer(notebook_timeout, sandbox.expire)
            watchdog.daemon = True
            watchdog.start()
        end = _End()
        try:
            done = papermill.execute_notebook(
                nb, str(partial), parameters=dict(run.parameters), **engine_kwargs
            )
            end = _End(cells=done.cells)
        except KeyboardInterrupt:
            end = _End(interrupted=True)
        except Exception as exc:
            end = _ended_by(exc, run, partial, sandbox, kernel_name, notebook_timeout, names)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if run.progress is not None:
                run.progress.done()
            _keep_partial(
                partial, run.output, checked=end.error is not None or end.interrupted or end.retry
            )
            if not ours and run.output.exists():  # another engine ran it: its scraps at least
                with contextlib.suppress(NotebookError):
                    run.recorder.finish(read_notebook_json(run.output))
    return end


def _ended_by(
    exc: Exception,
    run: _Run,
    partial: Path,
    sandbox: KernelSandbox,
    kernel_name: str | None,
    notebook_timeout: float | None,
    names: OptionNames,
) -> _End:
    """What an exception out of papermill means: a cell's error, a retry, a stop, or a fault."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        standing = expected_errors.settle(partial, exc)  # raises-exception cells may pass
        if standing is not None:
            return _End(error=failures.cell_failure(standing, partial))
        return _End(cells=failures.notebook_cells(partial))
    if sandbox.fork_failed(exc):
        return _End(retry=True)
    if sandbox.signalled(exc):
        return _End(interrupted=True)
    error = failures.explain(
        exc, notebook=run.notebook, partial=partial, kernel=sandbox, kernel_name=kernel_name,
        parameters=run.parameters, notebook_timeout=notebook_timeout, names=names,
    )  # fmt: skip
    return _End(error=error)


def cell_seconds(cells: Sequence[Any]) -> tuple[tuple[int, float, str], ...]:
    """Each code cell's (index, seconds, first source line), as papermill recorded them."""
    found: list[tuple[int, float, str]] = []
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        seconds = (cell.get("metadata", {}).get("papermill") or {}).get("duration")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            source = cell.get("source") or ""
            source = "".join(source) if isinstance(source, list) else str(source)
            line = next((text.strip() for text in source.splitlines() if text.strip()), "")
            found.append((index, round(float(seconds), 3), line[:80]))
    return tuple(found)


def _collect_the_killed_cell() -> None:
    """Free nbclient's task of the cell whose kernel was killed now, and quietly.

    Why: that task ends in a ``DeadKernelError`` nobody awaits, and asyncio logs
    it ("Task exception was never retrieved") whenever the cyclic collector
    frees it.  On CPython 3.11, formatting that log parses source with ``ast``;
    when the collector happens to run inside pytest's own ``ast.parse`` (while
    it formats the KeyboardInterrupt), the nested parse breaks the outer one:
    ``SystemError: AST constructor recursion depth mismatch`` and exit status 1
    instead of 2 (2 runs in 6 of a SIGTERM test).  The cell's end is already in
    the report; the log line would only be noise.  A filter of its own for the
    collection, not a change of the logger's level: executions in several threads
    (a Dask worker's) may be interrupted at once, and the level one of them saved
    could be another's temporary one.
    """

    def not_the_killed_cell(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Task exception was never retrieved")

    logger = logging.getLogger("asyncio")
    logger.addFilter(not_the_killed_cell)
    try:
        gc.collect()
    finally:
        logger.removeFilter(not_the_killed_cell)


def _notebook_language(nb: Any) -> str | None:
    """The language papermill reads from a notebook (``language_info``, then the kernelspec)."""
    metadata = nb.metadata
    name = metadata.get("language_info", {}).get("name")
    return name or metadata.get("kernelspec", {}).get("language") or None


def _kernel_language(kernel_name: str | None) -> str | None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    if kernel_name is None:
        return None
    try:
        language: str = KernelSpecManager().get_kernel_spec(kernel_name).language
    except NoSuchKernel:
        return None  # the run then fails saying no such kernel is installed
    return language or None


def _keep_partial(partial: Path, output: Path, *, checked: bool) -> None:
    """Give the partial output its final name; after a failure, only if it is a whole notebook.

    A write cut short (a value that cannot be encoded, a full disk, a signal)
    leaves a truncated file, which would then block the next run as "not an
    output of millrun".
    """
    if not partial.is_file():
        return
    if checked:
        try:
            whole = is_output_notebook(read_notebook_json(partial))
        except NotebookError:
            whole = False
        if not whole:
            partial.unlink()
            return
    os.replace(partial, output)


def check_output_target(notebook: Path, output: Path) -> None:
    """Refuse to write over the input notebook or any file this tool did not write."""
    if output.resolve() == notebook.resolve():
        raise OverwriteError(
            f"The output path {output} is the input notebook itself. Choose an output "
            f"directory or prepend/append components so the names differ."
        )
    if output.exists():
        try:
            ours = is_output_notebook(read_notebook_json(output))
        except NotebookError:
            ours = False
        if not ours:
            raise OverwriteError(
                f"The output path {output} already holds a file that is not an output of "
                f"millrun (an input notebook?); it is left untouched. Choose another output "
                f"directory or other prepend/append components."
            )


def _load_input(notebook: Path, variation_id: str) -> Any:
    """Read the notebook and mark it, so every save of its output says it is an output.

    A text notebook is read by jupytext into the same notebook node papermill
    would read from an ``.ipynb`` (papermill has no reader of its own for one);
    its output's ``metadata.papermill.input_path`` still names the text file.
    """
    import nbformat

    if not notebook.exists():
        raise NotebookError(f"Notebook {notebook} does not exist (was it moved or deleted?).")
    if notebook.suffix != ".ipynb":
        nb = nbformat.from_dict(read_notebook(notebook))  # type: ignore[no-untyped-call]
    else:
        read_notebook_json(notebook)  # a clear message for broken JSON, before nbformat's
        try:
            nb = nbformat.read(str(notebook), as_version=4)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise NotebookError(f"Notebook {notebook} is not a valid notebook: {exc}") from None
    nb.metadata[OUTPUT_MARKER] = {"input": str(notebook), "variation": variation_id}
    return nb


__all__ = [
    "ExecutionInterrupted",
    "ExecutionResult",
    "Failure",
    "OptionNames",
    "OverwriteError",
    "cell_words",
    "check_output_target",
    "execute_notebook",
    "format_failure",
]
