"""A papermill engine that writes the output notebook once per cell instead of twice.

Why: papermill's own engine rewrites the whole output notebook at the start
of the run, at the start *and* the end of every cell, and once more when the
run ends, after which ``papermill.execute_notebook`` writes it yet again: 2n + 3
full serialisations (validation, deep copy, JSON, file write) for n cells,
quadratic in the notebook's size.  Half of them are followed at once, with no
cell running in between, by another write of a superset of the same content.

This engine drops exactly those: the write when a cell completes (the next
cell's start, or the end of the run, writes it a moment later), the write at
the start (the first cell's start follows once the kernel is up) and, when
the run ends normally, the end-of-run write (papermill's final write follows).
What a reader of the file sees at any cell boundary, and the final file, are
what papermill's engine gives; so is what is saved when a kernel dies, a
timeout fires or the run is interrupted -- then the end-of-run write stays.
Papermill's time-based autosave during a long cell is untouched.

The manager also tells a progress object (``millrun_progress``, see
:mod:`pytest_millrun.execution.progress_sink`) which code cell starts, and the client
ticks it about once a second while a cell runs, on the thread running the cell.

Two things papermill's engine gets wrong for a run that stops early, and for
the way millrun calls it, are put right here, before the first write:

* a run stopped by a timeout, a dead kernel or a signal marks the cell that was
  running as failed (``exception``, status ``failed``), as papermill marks a
  cell that raised; the cells after it stay ``pending`` instead of being
  marked ``completed`` by papermill's clean-up;
* ``metadata.papermill.input_path`` / ``output_path`` are the paths the caller
  names (``millrun_paths``), not the notebook object millrun passes in nor the
  hidden partial file it writes to.

Registered with papermill's engine registry under :data:`ENGINE_NAME` the first
time it is asked for; used unless the caller names an engine of their own.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Final

ENGINE_NAME: Final = "millrun"
#: How often a running cell's progress ticks (its elapsed time redrawn, a heartbeat checked).
TICK_SECONDS: Final = 1.0


@functools.cache
def register() -> str:
    """Make the engine known to papermill (once per process); return its name."""
    from papermill.engines import papermill_engines

    papermill_engines.register(ENGINE_NAME, _engine_class())
    return ENGINE_NAME


def _manager_class() -> type:
    """papermill's execution manager, writing once per cell (see the module's docstring)."""
    from papermill.engines import NotebookExecutionManager

    class OncePerCellManager(NotebookExecutionManager):  # type: ignore[misc]
        deferring = False
        ended_normally = False
        started_index: int | None = None
        #: Who hears which code cell starts (a NotebookProgress), if anybody.
        progress: Any = None
        code_numbers: dict[int, tuple[int, int]] | None = None

        def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
            self.started_index = cell_index
            super().cell_start(cell, cell_index, **kwargs)
            if self.progress is not None and cell_index is not None:
                if self.code_numbers is None:  # index -> (K of N code cells), once
                    code = [i for i, c in enumerate(self.nb.cells) if c.cell_type == "code"]
                    self.code_numbers = {i: (k, len(code)) for k, i in enumerate(code, 1)}
                if cell_index in self.code_numbers:
                    self.progress.cell(*self.code_numbers[cell_index])

        def mark_stopped_cell(self) -> None:
            """The run stopped inside a cell without an error of the cell's own: fail it."""
            index = self.started_index
            if index is None:
                return
            cell = self.nb.cells[index]
            if cell.metadata.papermill.get("status") != self.FAILED:
                self.cell_exception(cell, cell_index=index)

        def save(self, **kwargs: Any) -> None:
            if kwargs.get("nb") is not None:
                self.nb = kwargs["nb"]
            if not self.deferring:
                super().save()

        def notebook_start(self, **kwargs: Any) -> None:
            self._deferred(super().notebook_start, **kwargs)

        def cell_complete(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
            self._deferred(super().cell_complete, cell, cell_index, **kwargs)

        def notebook_complete(self, **kwargs: Any) -> None:
            if self.ended_normally:
                self._deferred(super().notebook_complete, **kwargs)
            else:
                super().notebook_complete(**kwargs)

        def _deferred(self, hook: Any, *args: Any, **kwargs: Any) -> None:
            self.deferring = True
            try:
                hook(*args, **kwargs)
            finally:
                self.deferring = False

    return OncePerCellManager


def _engine_class() -> type:
    from papermill.engines import NBClientEngine

    OncePerCellManager = _manager_class()

    class OncePerCellEngine(NBClientEngine):  # type: ignore[misc]
        @classmethod
        def execute_notebook(
            cls,
            nb: Any,
            kernel_name: str | None,
            output_path: str | None = None,
            progress_bar: bool = True,
            log_output: bool = False,
            autosave_cell_every: int = 30,
            millrun_paths: tuple[str, str] | None = None,
            millrun_progress: Any = None,
            **kwargs: Any,
        ) -> Any:
            if millrun_paths is not None:
                nb.metadata.papermill["input_path"], nb.metadata.papermill["output_path"] = (
                    millrun_paths
                )
            # papermill's Engine.execute_notebook with this manager, which also learns
            # whether the run ended normally
            nb_man = OncePerCellManager(
                nb,
                output_path=output_path,
                progress_bar=progress_bar,
                log_output=log_output,
                autosave_cell_every=autosave_cell_every,
            )
            nb_man.progress = millrun_progress
            session = kwargs.pop("millrun_session", None)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(
                    nb_man, kernel_name, log_output=log_output, session=session, **kwargs
                )
                nb_man.ended_normally = True  # papermill.execute_notebook writes it next
            except BaseException:
                nb_man.mark_stopped_cell()
                raise
            finally:
                nb_man.cleanup_pbar()
                if session is not None:  # in the metadata of every later save
                    session.notebook_done(nb_man.nb)
                nb_man.notebook_complete()
            return nb_man.nb

        @classmethod
        def execute_managed_notebook(
            cls, nb_man: Any, kernel_name: str | None, session: Any = None, **kwargs: Any
        ) -> Any:
            if (session is None or not session.needs_engine) and nb_man.progress is None:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            # papermill's own body, with a client that serves the kernel session and progress
            return _session_client(nb_man, kernel_name, session, **kwargs).execute()

    return OncePerCellEngine


def _session_client(
    nb_man: Any,
    kernel_name: str | None,
    session: Any,
    log_output: bool = False,
    stdout_file: Any = None,
    stderr_file: Any = None,
    start_timeout: float = 60,
    execution_timeout: float | None = None,
    **kwargs: Any,
) -> Any:
    """papermill's ``NBClientEngine.execute_managed_notebook`` client, serving the kernel session
    (if any has work for it) and the progress (which ticks about once a second while a cell runs).

    The session's cell hooks are nbclient's own; after the last cell, or the cell
    that raised, the session's end request goes before the kernel shuts down
    (see :class:`pytest_millrun.execution.kernel_session.KernelSession`).  A run
    stopped by a timeout, a dead kernel or a signal has no end request: its kernel
    is busy or gone.
    """
    from papermill.engines import logger
    from papermill.utils import merge_kwargs, remove_args

    serving = session is not None and session.needs_engine
    client_class = _client_class(session if serving else None, nb_man.progress)

    kwargs = remove_args(["input_path"], **kwargs)
    safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
    final_kwargs = merge_kwargs(
        safe_kwargs,
        timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
        startup_timeout=start_timeout,
        kernel_name=kernel_name,
        log=logger,
        log_output=log_output,
        stdout_file=stdout_file,
        stderr_file=stderr_file,
    )
    client = client_class(nb_man, **final_kwargs)
    if serving:
        session.install_cell_hooks(client)
    return client


def _client_class(session: Any, progress: Any) -> Any:
    """papermill's client, ending the kernel ``session`` (if any) after the last cell and
    ticking ``progress`` (if any) while each cell runs."""
    from nbclient.util import run_sync
    from papermill.clientwrap import PapermillNotebookClient

    class SessionClient(PapermillNotebookClient):  # type: ignore[misc]
        def papermill_execute_cells(self) -> None:
            super().papermill_execute_cells()  # a cell's error ends it without raising
            if session is not None:
                failed = bool(self.nb.metadata.get("papermill", {}).get("exception"))
                session.end(self, failed=failed)

        async def async_execute_cell(self, *args: Any, **kwargs: Any) -> Any:
            if progress is None:
                return await super().async_execute_cell(*args, **kwargs)
            ticking = asyncio.ensure_future(_ticking(progress))
            try:
                return await super().async_execute_cell(*args, **kwargs)
            finally:
                ticking.cancel()

        execute_cell = run_sync(async_execute_cell)  # nbclient's, of this class's coroutine

    return SessionClient


async def _ticking(progress: Any) -> None:
    """While a cell runs, on the thread that runs it (the one that may draw): a tick a second."""
    while True:
        await asyncio.sleep(TICK_SECONDS)
        progress.tick()
