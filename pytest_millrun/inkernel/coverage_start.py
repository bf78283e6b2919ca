"""Runs inside the notebook's kernel: measures the lines it executes, as the host's coverage does.

Why in the kernel: the kernel is a process of its own, which nothing of the host's
coverage measures (pytest-cov 7 dropped measuring subprocesses, and millrun's kernels
are ended by SIGKILL, so coverage's own start-up hook would never save).  The host
sends this module's source at the kernel's start with its coverage configuration
(``CoverageConfig.serialize()``, the form coverage itself hands to subprocesses): the
kernel measures with the same source, include, omit, branch and context settings and
writes a data file of its own beside the host's (``<data_file>.<host>.pid<pid>.X...x``,
coverage's parallel suffix), which the host's combine picks up (pytest-cov's at the end
of the session, ``coverage combine`` after ``coverage run``).  The data is saved after
every cell, so what ran before a kernel is killed still counts.

Standard library and coverage only, no name of the package: the source is executed in a
namespace of its own; what later requests need lives in ``sys.modules[STATE]``.
"""

from __future__ import annotations

from typing import Any

#: The ``sys.modules`` entry holding this kernel's measurement (its ``Coverage`` and notes).
STATE = "_millrun_coverage"
#: coverage's warnings that say nothing in a kernel: one notebook seldom runs every module.
QUIET_WARNINGS = ("no-data-collected", "module-not-imported", "module-not-measured")


def start_measuring(config: str, topdir: str, context: str | None, private: bool = False) -> None:
    """Start coverage with the host's configuration, saving after each cell; once per kernel.

    ``topdir`` is the folder the host's relative settings (include and omit patterns,
    ``relative_files``) mean; coverage reads them at its start, so it starts there.
    ``private``: the data file goes in a temporary folder of the kernel's own, removed
    when it finishes, because the host's data file is out of reach (a Dask worker) and
    the lines travel back in the end reply instead.
    Problems are kept for the host (see :func:`finish_measuring`), never raised: a
    notebook runs the same with or without coverage.
    """
    import os
    import sys
    import tempfile
    import types
    import warnings

    if STATE in sys.modules:
        return
    state: Any = types.ModuleType(STATE)
    state.cov, state.problems, state.already_imported, state.private = None, [], [], None
    state.save, state.finish = save_measured, finish_measuring
    sys.modules[STATE] = state
    try:
        import coverage
    except ImportError as exc:
        state.problems.append(f"coverage could not be imported in the kernel ({exc})")
        return
    if private:
        state.private = tempfile.mkdtemp(prefix="millrun-coverage-")
    here = os.getcwd()
    try:
        os.chdir(topdir)
        cov = coverage.Coverage(
            config_file=":data:" + config, data_suffix=True, check_preimported=True
        )
        if state.private:  # the serialised configuration ignores a ``data_file`` argument
            cov.set_option("run:data_file", os.path.join(state.private, ".coverage"))
        omit = list(cov.get_option("run:omit") or [])  # type: ignore[arg-type]
        cov.set_option("run:omit", [*omit, _cell_files()])
        quiet = list(cov.get_option("run:disable_warnings") or [])  # type: ignore[arg-type]
        cov.set_option("run:disable_warnings", [*quiet, *QUIET_WARNINGS])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cov.start()
    except Exception as exc:
        state.problems.append(f"coverage did not start in the kernel: {type(exc).__name__}: {exc}")
        return
    finally:
        os.chdir(here)
    state.already_imported = _already_imported([str(w.message) for w in caught])
    if context:
        cov.switch_context(context)
    state.cov = cov
    if not state.private:  # a private file is read only at the end: saving it earlier is waste
        _save_after_each_cell()


def _cell_files() -> str:
    """ipykernel compiles each cell to a file in its temporary folder: not code under test."""
    import os
    import tempfile

    return os.path.join(tempfile.gettempdir(), "ipykernel_*", "*")


def _already_imported(messages: list[str]) -> list[str]:
    """The files coverage found imported before it started (its ``already-imported`` warning)."""
    head, slug = "Already imported a file that will be measured: ", " (already-imported)"
    return [
        message[len(head) : message.index(slug)]
        for message in messages
        if message.startswith(head) and slug in message
    ]


def _save_after_each_cell() -> None:
    """Save after every notebook cell (IPython's ``post_run_cell``, also after a failing one)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.events.register("post_run_cell", lambda *_result: save_measured())


def save_measured() -> None:
    """Write what was measured so far to this kernel's data file; coverage goes on measuring."""
    import sys

    state: Any = sys.modules.get(STATE)
    if state is None or state.cov is None:
        return
    try:
        state.cov.save()
    except Exception as exc:
        problem = f"coverage could not save its data: {type(exc).__name__}: {exc}"
        if problem not in state.problems:
            state.problems.append(problem)


def finish_measuring(with_lines: bool) -> str:
    """Stop, save, and say (as JSON) what was measured, for the host to keep or report.

    ``{"measured": bool, "branch": bool, "files": {path: lines or arcs}, "tracers":
    {path: plugin}, "already_imported": [path], "problems": [text]}``; the files only
    when ``with_lines`` (a cached run's record of what it executed).
    """
    import json
    import sys

    state: Any = sys.modules.get(STATE)
    if state is None:
        return json.dumps({"measured": False, "problems": ["coverage was never started"]})
    found: dict[str, Any] = {
        "measured": state.cov is not None,
        "already_imported": state.already_imported,
        "problems": state.problems,
    }
    if state.cov is None:
        _remove_private(state)
        return json.dumps(found)
    try:
        state.cov.stop()
    except Exception as exc:
        state.problems.append(f"coverage did not stop: {type(exc).__name__}: {exc}")
    save_measured()
    if with_lines or state.private:
        try:
            found.update(_measured(state.cov.get_data()))
        except Exception as exc:
            state.problems.append(f"coverage data unreadable: {type(exc).__name__}: {exc}")
    _remove_private(state)
    return json.dumps(found)


def _remove_private(state: Any) -> None:
    """The kernel's own data folder goes once its lines are read: nothing is left behind."""
    import shutil

    if state.private:
        shutil.rmtree(state.private, ignore_errors=True)


def _measured(data: Any) -> dict[str, Any]:
    branch = bool(data.has_arcs())
    files: dict[str, Any] = {}
    tracers: dict[str, str] = {}
    for path in data.measured_files():
        files[path] = sorted(data.arcs(path) or ()) if branch else sorted(data.lines(path) or ())
        tracer = data.file_tracer(path)
        if tracer:
            tracers[path] = tracer
    return {"branch": branch, "files": files, "tracers": tracers}
