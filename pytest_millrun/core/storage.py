"""Output folders given as URLs (``s3://bucket/prefix``, ``gs://``, ``memory://``): told apart
from local paths and checked before anything runs.

Why here, before planning: ``Path("s3://runs/sweep")`` is the local path ``s3:/runs/sweep``,
so a papermill user's habit silently wrote a local folder named ``s3:``.  A URL is never
made a path: its scheme must have an fsspec filesystem installed, and until outputs are
uploaded to object storage (issue 35, part 2) the run is refused with one paragraph saying
so.  ``fsspec`` is imported only for a URL.
"""

from __future__ import annotations

import re
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
    """The URL as messages may show it: a user and password in it become ``***``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
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
    """Refuse, before anything runs, an output folder given as a URL; raises StorageError.

    A scheme without a filesystem names the package to install; one with a filesystem
    is refused too, for now: outputs are written to local folders only.
    """
    scheme = url_scheme(url)
    assert scheme is not None
    shown = redacted(url)
    missing = missing_filesystem(scheme)
    if missing is not None:
        raise StorageError(
            f"{option} {shown} is a URL, and fsspec cannot open {scheme}:// here: {missing}. "
            f"Install what this names, or give a local folder. Nothing ran, and no local "
            f"folder named '{scheme}:' was made."
        )
    raise StorageError(
        f"{option} {shown} is a URL: writing outputs to object storage ({scheme}://) is not "
        f"supported yet, so nothing ran. Give a local folder, and copy the outputs "
        f"afterwards (e.g. with fsspec's put or your storage's own tool)."
    )
