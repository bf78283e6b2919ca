"""The cache's entries of outputs on object storage: a small JSON object beside each output.

Why a sidecar, when a local output carries its key in its own metadata
(:mod:`.verdicts`): the check reads that whole notebook, and on object storage that
is a download of every whole output (its figures and tables) per warm run.  Why not
the object's own metadata (S3 user metadata, GCS custom metadata): fsspec has no one
interface for it (``memory://``, ``az://`` differ), S3 caps it at 2 KiB and a key
with its read set is often larger.  Why not a byte range of the notebook: where the
entry sits among its metadata is no fixed offset.

A sidecar holds the output's cache entry as stamped in the notebook, what a hit
reports without the notebook (its recorded values, its kernel coverage lines), and
the output object's version as uploaded (fsspec's checksum: S3's ETag): an output
replaced since, by hand or by a run that could not write its sidecar, no longer
matches it, so its variation runs.  It is written after the output's upload and
removed when the output no longer answers for a key (a failed or interrupted run).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pytest_millrun.cache.keys import run_memo
from pytest_millrun.core.storage import (
    StorageOptions,
    folder_versions,
    read_bytes,
    read_many,
    remove,
    write_bytes,
)

#: What follows ``.`` and the output's name in its sidecar's name (hidden beside it).
SUFFIX = ".millrun-key.json"
#: The sidecar's field that holds the output object's version as uploaded.
VERSION = "object"


def sidecar_url(url: str) -> str:
    """Where the entry of the output at ``url`` is kept: ``.NAME.millrun-key.json`` beside it."""
    folder, _, name = url.rpartition("/")
    return f"{folder}/.{name}{SUFFIX}"


def is_sidecar(url: str) -> bool:
    name = url.rpartition("/")[2]
    return name.startswith(".") and name.endswith(SUFFIX)


def prefetch(urls: Sequence[str], storage_options: StorageOptions | None) -> None:
    """Fetch, at once, the sidecars of the outputs at ``urls`` for this run's checks.

    Why: one small request per output, one after another, costs a round trip each;
    fetched together (fsspec's concurrent ``cat``) they cost about one.  Kept until
    :func:`~pytest_millrun.cache.keys.forget` starts the next run.
    """
    memo = run_memo("sidecars")
    wanted = [sidecar_url(url) for url in urls if sidecar_url(url) not in memo]
    found = read_many(wanted, storage_options)
    for url in wanted:
        memo[url] = found.get(url)


def read_sidecar(url: str, storage_options: StorageOptions | None) -> dict[str, Any] | None:
    """The entry kept for the output at ``url``; None when there is none or it is no entry.

    Raises OSError when the storage cannot be read (the verdict says so and runs it).
    """
    memo = run_memo("sidecars")
    where = sidecar_url(url)
    data = memo.pop(where) if where in memo else read_bytes(where, storage_options)
    if data is None:
        return None
    try:
        entry = json.loads(data)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def current_version(url: str, storage_options: StorageOptions | None) -> str | None:
    """The version of the output at ``url`` now (``""``: unknown), None when there is none.

    Each folder is listed once a run (S3 lists 1,000 objects a request), not looked up
    object by object.
    """
    folder, _, name = url.rpartition("/")
    memo = run_memo("object versions")
    if folder not in memo:
        memo[folder] = folder_versions(folder, storage_options)
    found: str | None = memo[folder].get(name)
    return found


def write_sidecar(url: str, entry: dict[str, Any], storage_options: StorageOptions | None) -> None:
    text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    write_bytes(sidecar_url(url), text.encode("utf-8"), storage_options)


def remove_sidecar(url: str, storage_options: StorageOptions | None) -> None:
    remove(sidecar_url(url), storage_options)
