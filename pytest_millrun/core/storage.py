"""Output folders given as URLs (``s3://bucket/prefix``, ``gs://``, ``memory://``): told apart
from local paths and checked before anything runs.

Why here, before planning: ``Path("s3://runs/sweep")`` is the local path ``s3:/runs/sweep``,
so a papermill user's habit silently wrote a local folder named ``s3:``.  A URL is never
made a path: its scheme must have an fsspec filesystem installed (else one paragraph names
the package, before anything runs), each notebook executes to a local file as always and
is then uploaded with fsspec: one storage stack for every scheme, not papermill's own
handlers for some.  ``fsspec`` is imported only for a URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: ``scheme://`` as fsspec and papermill read it; a single letter is a Windows drive (``C:``).
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://")

FSSPEC_HINT = "pip install 'pytest-millrun[fsspec]'"


class StorageError(ValueError):
    """An output URL that cannot be used; the message says why and what to install or do."""


def url_scheme(text: object) -> str | None:
    """The scheme of an output given as a URL (``"s3"``), None for a local path."""
    if not isinstance(text, str):
        return None
    match = _URL.match(text)
    return match.group("scheme").lower() if match else None


def redacted(url: str) -> str:
    """The URL as messages, results and reports may show it: a user and password in it become
    ``***`` (a user alone, as ``sftp://me@host``, stays)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc or ":" not in parts.netloc.rpartition("@")[0]:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


def missing_filesystem(scheme: str) -> str | None:
    """Why fsspec cannot open ``scheme`` here (what to install), or None when it can."""
    try:
        import fsspec
    except ImportError:
        return (
            f"fsspec is not installed: {FSSPEC_HINT}, and the package of the filesystem for "
            f"{scheme}:// (such as s3fs, gcsfs or adlfs)"
        )
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        return str(exc)
    except ValueError:
        return (
            "no filesystem is registered for it (fsspec's known implementations list the "
            "packages that bring one)"
        )
    return None


def check_output_url(url: str, option: str) -> None:
    """Refuse, before anything runs, an output URL fsspec cannot open here; raises StorageError
    naming what to install."""
    scheme = url_scheme(url)
    assert scheme is not None
    missing = missing_filesystem(scheme)
    if missing is not None:
        raise StorageError(
            f"{option} {redacted(url)} is a URL, and fsspec cannot open {scheme}:// here: "
            f"{missing}. Install what this names, or give a local folder. Nothing ran, and no "
            f"local folder named '{scheme}:' was made."
        )


def output_url(root: str, relative: str) -> str:
    """Where an output whose path under the run's output folder is ``relative`` goes."""
    return f"{root.rstrip('/')}/{relative.lstrip('/')}"


#: fsspec's keywords for a filesystem (the API's ``storage_options``): credentials among them.
StorageOptions = Mapping[str, Any]


def _filesystem(url: str, storage_options: StorageOptions | None) -> tuple[Any, str]:
    """fsspec's filesystem for ``url`` (an instance fsspec caches per options) and its path."""
    import fsspec.core

    filesystem, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    return filesystem, str(path)


def _failed(what: str, url: str, exc: Exception) -> OSError:
    """A filesystem's own error (botocore, aiohttp...) as an OSError naming the URL, redacted."""
    return OSError(f"could not {what} {redacted(url)}: {exc}")


def upload(local: Path, url: str, storage_options: StorageOptions | None = None) -> None:
    """Copy one executed notebook to its URL with fsspec (its usual credentials and config).

    Raises OSError (fsspec's and the filesystem's errors) with the URL, credentials hidden.
    """
    try:
        filesystem, path = _filesystem(url, storage_options)
        filesystem.put_file(str(local), path)
    except Exception as exc:  # any filesystem's own errors (botocore, aiohttp...)
        raise OSError(f"could not upload {local.name} to {redacted(url)}: {exc}") from None


def read_bytes(url: str, storage_options: StorageOptions | None = None) -> bytes | None:
    """The whole object at ``url``, or None when there is none; OSError when it cannot be read."""
    try:
        filesystem, path = _filesystem(url, storage_options)
        return bytes(filesystem.cat_file(path))
    except FileNotFoundError:
        return None
    except Exception as exc:
        raise _failed("read", url, exc) from None


def write_bytes(url: str, data: bytes, storage_options: StorageOptions | None = None) -> None:
    """Write (replace) the object at ``url``; OSError naming the URL when it cannot."""
    try:
        filesystem, path = _filesystem(url, storage_options)
        filesystem.pipe_file(path, data)
    except Exception as exc:
        raise _failed("write", url, exc) from None


def remove(url: str, storage_options: StorageOptions | None = None) -> bool:
    """Remove the object at ``url``: whether there was one; OSError when it cannot."""
    try:
        filesystem, path = _filesystem(url, storage_options)
        filesystem.rm_file(path)
    except FileNotFoundError:
        return False
    except Exception as exc:
        raise _failed("remove", url, exc) from None
    return True


#: The fields of an object's info that change with each version written, best first: S3's and
#: Azure's ETag, GCS's generation, then times (``memory://``, local files).
_VERSION_FIELDS = ("ETag", "etag", "generation", "md5Hash", "mtime", "created", "LastModified")


def version_of(info: Mapping[str, Any]) -> str | None:
    """What tells this version of an object from any other, from its info as a listing or a
    lookup gives it (the same for both); None when the filesystem says nothing that would."""
    for name in _VERSION_FIELDS:
        value = info.get(name)
        if value not in (None, ""):
            if hasattr(value, "timestamp"):  # a listing's float, a lookup's datetime (memory://)
                value = value.timestamp()
            return f"{name}={value} size={info.get('size')}"
    return None


def version(url: str, storage_options: StorageOptions | None = None) -> str | None:
    """:func:`version_of` the object at ``url``, asked afresh; None when there is none."""
    try:
        filesystem, path = _filesystem(url, storage_options)
        filesystem.invalidate_cache(path)
        return version_of(filesystem.info(path))
    except FileNotFoundError:
        return None
    except Exception as exc:
        raise _failed("read", url, exc) from None


def folder_versions(folder: str, storage_options: StorageOptions | None = None) -> dict[str, str]:
    """Each file directly in ``folder``, by name: its :func:`version_of` (``""`` when unknown).

    One listing (S3: a request per 1,000 objects) instead of one lookup per object.
    """
    try:
        filesystem, path = _filesystem(folder, storage_options)
        filesystem.invalidate_cache(path)
        entries = filesystem.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:
        raise _failed("list", folder, exc) from None
    return {
        str(entry["name"]).rstrip("/").rpartition("/")[2]: version_of(entry) or ""
        for entry in entries
        if entry.get("type") == "file"
    }


def read_many(
    urls: Sequence[str], storage_options: StorageOptions | None = None
) -> dict[str, bytes]:
    """The objects at ``urls`` that exist, by URL, fetched at once (fsspec's concurrent ``cat``
    where the filesystem is asynchronous, as s3fs, gcsfs and adlfs are)."""
    if not urls:
        return {}
    try:
        filesystem, _ = _filesystem(urls[0], storage_options)
        paths = {filesystem._strip_protocol(url): url for url in urls}
        found = filesystem.cat(list(paths), on_error="omit")
    except FileNotFoundError:
        return {}
    except Exception as exc:
        raise _failed("read", urls[0], exc) from None
    if not isinstance(found, dict):  # one path: its bytes
        found = {next(iter(paths)): found}
    return {paths[path]: bytes(data) for path, data in found.items() if path in paths}


def staging_folder() -> Path:
    """A new local folder name (not made yet) for a run's outputs before their upload."""
    import tempfile
    import uuid

    return Path(tempfile.gettempdir(), f"millrun-upload-{uuid.uuid4().hex[:12]}")


def remove_staging(staging: Path) -> None:
    """The staging folder's empty folders, once the run is over; an output whose upload
    failed stays, as its failure says."""
    import contextlib
    import os

    for folder, _, _ in sorted(os.walk(staging), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            os.rmdir(folder)
