"""Runs inside a Dask worker: a job whose files were shipped, run in a private folder.

Why a module of its own: it is what a worker without the client's file system
does with a task (:func:`run_shipped`), and what every worker answers before a
run (:func:`sees_same_files`), apart from the client's side
(:mod:`pytest_millrun.dispatch.shipping`).

The task's files arrive as ``{client path: content}``; each is written at its
client path below a private folder (``<folder>/home/me/project/nb.ipynb``), so
what the notebook reads relative to its folder (``../data/x.csv``, a helper
module beside it) resolves as at home.  The job runs there, its reads recorded
under the folder and named as the client's paths; its output comes back as bytes
(the client writes it at its own path), then the folder is removed, with
whatever else the notebook wrote in it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_millrun.core.data import ExecutionInterrupted, ExecutionResult
from pytest_millrun.execution.kernel_session import KernelSessionPart

if TYPE_CHECKING:
    from pytest_millrun.dispatch.jobs import Job, RunOptions


def sees_same_files(digests: Mapping[str, str]) -> bool:
    """Whether this worker sees every file at its client path with the client's content.

    Called with ``Client.run`` before a run; a path that merely exists is not enough
    (another checkout, an older copy), the content digest decides.
    """
    from pytest_millrun.cache.keys import file_digest

    return all(file_digest(Path(path)) == digest for path, digest in digests.items())


class SysPathPart(KernelSessionPart):
    """Puts the shipped folders the notebook imported from (an editable ``src/``) first on
    the kernel's ``sys.path``, where at home an install or ``.pth`` file put them."""

    name = "shipped_paths"

    def __init__(self, folders: Sequence[str]) -> None:
        self.folders = list(folders)

    def start_code(self) -> str | None:
        if not self.folders:
            return None
        return f"import sys\nsys.path[:0] = {self.folders!r}\n"


def run_shipped(
    job: Job, options: RunOptions, files: Mapping[str, bytes], import_roots: Sequence[str]
) -> tuple[ExecutionResult, bytes | None]:
    """Run ``job`` in a private folder holding ``files``: its result, named with the client's
    paths, and its output's content (None when none was written, or it went to a URL)."""
    from pytest_millrun.dispatch.jobs import run_job

    folder = os.path.realpath(tempfile.mkdtemp(prefix="millrun-task-"))
    try:
        for path, data in files.items():
            target = folder + path
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(data)
        away = moved(job, folder)
        away.output.parent.mkdir(parents=True, exist_ok=True)
        roots = tuple(folder + root for root in import_roots)
        parts: tuple[Callable[[], KernelSessionPart], ...] = (
            *moved_parts(options.session_parts, folder),
            functools.partial(SysPathPart, roots),
        )
        away = dataclasses.replace(away, session_parts=moved_parts(away.session_parts, folder))
        try:
            result = run_job(away, dataclasses.replace(options, session_parts=parts))
        except ExecutionInterrupted as exc:
            result = exc.result
        content: bytes | None = None
        if job.output_url is None and away.output.is_file():
            content = away.output.read_bytes()
        return homeward(result, job, folder), content
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def moved(job: Job, folder: str) -> Job:
    """The job as it runs below ``folder``: its paths and its read settings moved there."""
    key = job.cache_key
    if key is not None and key.reads is not None:
        key = dataclasses.replace(key, reads=moved_settings(key.reads, folder))
    reads = job.record_reads
    return dataclasses.replace(
        job,
        notebook=Path(folder + os.path.abspath(job.notebook)),
        output=Path(folder + os.path.abspath(job.output)),
        cache_key=key,
        record_reads=moved_settings(reads, folder) if reads is not None else None,
        moved_from=folder,
    )


def moved_parts(
    parts: Sequence[Callable[[], KernelSessionPart]], folder: str
) -> tuple[Callable[[], KernelSessionPart], ...]:
    """The session parts for a run below ``folder``: kernel coverage measures the files
    there, as its settings name them at home (the lines come back as the client's)."""
    from pytest_millrun.execution.coverage_part import CoveragePart

    return tuple(
        functools.partial(part.func, part.args[0].moved_under(folder), *part.args[1:],
                          **part.keywords)
        if isinstance(part, functools.partial) and part.func is CoveragePart and part.args
        else part
        for part in parts
    )  # fmt: skip


def moved_settings(settings: Mapping[str, Any], folder: str) -> dict[str, Any]:
    """Read settings (JSON) for a run below ``folder``: every file there counts (it lies in
    the temp folder), the exclusions and ignored paths are the client's, moved there."""
    prefix = re.escape(folder.replace(os.sep, "/"))
    return {
        **settings,
        "roots": [folder, *(folder + root for root in settings.get("roots", ()))],
        "exclude": [folder + path for path in settings.get("exclude", ())],
        "ignore": [prefix + regex for regex in settings.get("ignore", ())],
    }


def homeward(result: ExecutionResult, job: Job, folder: str) -> ExecutionResult:
    """The result as the client knows it: its paths and its failure's words the client's."""
    output = result.output
    if isinstance(output, Path) and str(output).startswith(folder):
        output = job.output
    error = result.error
    if error is not None:
        error = dataclasses.replace(
            error,
            message=error.message.replace(folder, ""),
            evalue=error.evalue.replace(folder, ""),
            traceback=tuple(line.replace(folder, "") for line in error.traceback),
            output=error.output.replace(folder, ""),
        )
    report = _unmoved(dict(result.kernel_report), folder)  # read records name the client's paths
    return dataclasses.replace(
        result, notebook=job.notebook, output=output, error=error, kernel_report=report
    )


def _unmoved(value: Any, folder: str) -> Any:
    """``value`` (plain JSON) with every path below ``folder`` named as the client's."""
    if isinstance(value, str):
        return value[len(folder) :] if value.startswith(folder + os.sep) else value
    if isinstance(value, dict):
        return {_unmoved(key, folder): _unmoved(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [_unmoved(item, folder) for item in value]
    return value
