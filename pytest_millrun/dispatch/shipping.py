"""Runs on the client: ships each Dask task's files to workers that do not see them.

Why: the clusters people get (Kubernetes, cloud VMs, Coiled, a colleague's
workstation) share no file system with the client.  Before submitting, every
worker is asked whether it sees the run's files at the client's paths with the
client's content (:func:`~pytest_millrun.dispatch.ship_worker.sees_same_files`:
digests, never a path merely existing); when all do, the run goes as it always
did.  Otherwise each distinct file is scattered once (``Client.scatter(...,
hash=True)``: content-addressed, so two notebooks beside one helper module send
it once), and each task gets a manifest, ``{client path: scattered content}``,
that Dask resolves on the worker that runs it; a worker that did see the files
runs the job at home and ignores it.

Why not distributed's ``UploadDirectory``/``UploadFile`` plugins: they copy one
folder (zipped) or one file into every worker's local directory, once per
registration and under the folder's base name, and never remove it; a task
needs its own folder, laid out at the client's absolute paths, with the files
of its own notebook and read set, removed when it ends.

The recorder of what notebooks read is attached to every shipped job (the next
run ships what this one read), whether or not the cache is on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_millrun.dispatch.jobs import Job
from pytest_millrun.dispatch.ship_manifest import (
    ShipSettings,
    check_size,
    job_files,
    read_set_files,
    tree_files,
)

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class Shipment:
    """What the tasks of a run carry, by job: files (scattered content) and import folders."""

    files_of: list[dict[str, Any]]
    import_roots_of: list[tuple[str, ...]]
    #: The workers that see every file at home: they run the jobs there, as without shipping.
    shared: frozenset[str]


def prepare(
    client: Client, jobs: Sequence[Job], settings: ShipSettings
) -> tuple[list[Job], Shipment | None]:
    """The jobs to submit and what they carry; None when every worker sees the files.

    Raises :class:`~pytest_millrun.dispatch.ship_manifest.ShipLimitError` when the files
    to ship exceed the limit.
    """
    from pytest_millrun.cache.keys import file_digest
    from pytest_millrun.cache.read_sets import last_read_set
    from pytest_millrun.dispatch.ship_worker import sees_same_files

    outputs = {
        os.path.abspath(job.output.parent)
        for job in jobs
        if job.output.parent.resolve() != job.notebook.parent.resolve()
    }
    trees: dict[Path, list[str]] = {}
    files_of: list[list[str]] = []
    roots_of: list[tuple[str, ...]] = []
    for job in jobs:
        folder = job.notebook.parent.resolve()
        if folder not in trees:
            trees[folder] = tree_files(folder, [Path(path) for path in outputs])
        read_set = last_read_set(job.output, folder) if job.output_url is None else {}
        read = read_set_files(read_set)
        files_of.append(job_files(job.notebook, trees[folder], read, settings.exclude))
        roots_of.append(import_roots(read_set.get("modules", ()), folder))
    distinct = sorted({path for files in files_of for path in files})
    digests = {path: file_digest(Path(path)) for path in distinct}
    answers = client.run(sees_same_files, digests, on_error="return")
    shared = frozenset(worker for worker, same in answers.items() if same is True)
    if shared == set(answers):
        return list(jobs), None
    check_size({path: os.path.getsize(path) for path in distinct}, settings)
    first_of = {digests[path]: path for path in reversed(distinct)}  # one file per content
    scattered = client.scatter([Path(path).read_bytes() for path in first_of.values()], hash=True)
    future_of = dict(zip(first_of, scattered, strict=True))
    shipment = Shipment(
        [{path: future_of[digests[path]] for path in files} for files in files_of],
        roots_of,
        shared,
    )
    return [recording_reads(job) for job in jobs], shipment


def import_roots(modules: Sequence[str], notebook_dir: Path) -> tuple[str, ...]:
    """The folders on ``sys.path`` that the last run's imported modules came from.

    A module's folder, or the folder above its package (``src/`` for
    ``src/mylib/core.py``); the notebook's own folder is on the path anyway.
    """
    found: dict[str, None] = {}
    for module in modules:
        folder = os.path.dirname(module)
        while os.path.isfile(os.path.join(folder, "__init__.py")):
            folder = os.path.dirname(folder)
        if folder != os.path.abspath(notebook_dir):
            found[folder] = None
    return tuple(found)


def recording_reads(job: Job) -> Job:
    """The job with its reads recorded, for the next run to ship (the cache's settings if on)."""
    if job.cache_key is not None and job.cache_key.reads is not None:
        return job
    from pytest_millrun.cache.reads import read_settings

    folder = job.notebook.parent.resolve()
    settings = read_settings(folder, base=folder, exclude=[job.output])
    return dataclasses.replace(job, record_reads=settings.as_json())


def write_output(output: Path, content: bytes) -> None:
    """Write an output that came back from a worker at the client's path, by a rename."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
