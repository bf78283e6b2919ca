"""Writing output files whole or not at all, and naming them relative to a run's root.

Shared by the results table, the report and the snapshot files, which must never
leave a half-written file behind for the next run to trust.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pytest_millrun.core.data import ExecutionResult
from pytest_millrun.core.discovery import absolute


def relative(path: str | Path, root: Path | None) -> str:
    """``path`` relative to ``root`` when it lies under it, else as it is (a URL too)."""
    from pytest_millrun.core.storage import url_scheme

    if url_scheme(path) is not None:
        return str(path)  # Path() would make s3://b/k the path s3:/b/k
    path = Path(path)
    if root is not None:
        # where it sits first (a symlinked notebook is named where the link is), then resolved
        for mine, base in (
            (absolute(path), absolute(root)),
            (path.resolve(), Path(root).resolve()),
        ):
            with contextlib.suppress(ValueError):
                return mine.relative_to(base).as_posix()
    return str(path)


def common_root(results: Iterable[ExecutionResult]) -> Path | None:
    """The folder all the results' notebooks share (the API's default root)."""
    folders = [str(absolute(r.notebook).parent) for r in results]
    return Path(os.path.commonpath(folders)) if folders else None


def atomic_write(target: Path, text: str | bytes) -> None:
    """Replace ``target`` by ``text`` so that a reader sees the old file or the new, whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, _mode(target))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _mode(target: Path) -> int:
    """The mode the file had, or what a plain ``open`` would give (``mkstemp`` makes 0600)."""
    with contextlib.suppress(OSError):
        return target.stat().st_mode & 0o777
    mask = 0o022
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        mask = int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    return 0o666 & ~mask
