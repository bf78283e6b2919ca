"""Runs in the host: the lines a run executed, kept in its output so a cached variation counts.

Why: a variation served from its output (``--millrun-cache``) starts no kernel, so
nothing would measure it, and a warm CI run would report less coverage than a cold
one.  A passing run with coverage on keeps what its kernel measured in the output's
``metadata.millrun.coverage`` (as it keeps its cache key): the files, relative to the
project's folder where they are under it, their lines (or arcs with branch coverage),
and the digest of the settings they were measured with.  A hit whose digest matches
writes them back as a data file of its own beside the host's, which the host's
combine then takes like a kernel's; a hit with another digest, or none, runs again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pytest_millrun.coverage.kernel_settings import KernelCoverage

#: The entry of ``metadata.millrun`` that holds what a run's kernel measured.
COVERAGE_ENTRY = "coverage"


def stored_entry(payload: Mapping[str, Any], settings: KernelCoverage) -> dict[str, Any] | None:
    """What an output keeps of its kernel's measurement (the kernel's ``finish`` JSON).

    None when the kernel measured nothing to keep (coverage did not start there).
    """
    files = payload.get("files")
    if not payload.get("measured") or not isinstance(files, Mapping):
        return None
    tracers = payload.get("tracers") or {}
    return {
        "settings": settings.digest,
        "branch": bool(payload.get("branch")),
        "files": {_portable(path, settings): lines for path, lines in sorted(files.items())},
        "tracers": {_portable(path, settings): name for path, name in sorted(tracers.items())},
    }


def unusable(entry: Any, settings: KernelCoverage) -> str | None:
    """Why an output's stored lines cannot stand for a run now, or None when they can."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("files"), Mapping):
        return "no coverage lines stored"
    if entry.get("settings") != settings.digest:
        return "coverage lines stored with other coverage settings"
    return None


def write_data_file(entry: Mapping[str, Any], settings: KernelCoverage) -> str:
    """Write stored lines as a data file of their own beside the host's; returns its path.

    Under the settings' context, with coverage's parallel suffix, so it is combined
    like a kernel's file and never overwrites one.
    """
    from coverage import CoverageData

    data = CoverageData(basename=settings.data_file, suffix=True)
    try:
        data.set_context(settings.context)
        files = {_local(path, settings): values for path, values in entry["files"].items()}
        if entry.get("branch"):
            data.add_arcs({path: [tuple(arc) for arc in arcs] for path, arcs in files.items()})
        else:
            data.add_lines(files)
        tracers = entry.get("tracers") or {}
        if tracers:
            data.add_file_tracers({_local(path, settings): name for path, name in tracers.items()})
        data.touch_files(files)
        data.write()
    finally:
        data.close()
    return data.data_filename()


def _portable(path: str, settings: KernelCoverage) -> str:
    """A measured file's name relative to the project folder (``/``-separated) if under it."""
    absolute = os.path.join(settings.topdir, path)
    relative = os.path.relpath(absolute, settings.topdir)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return absolute
    return relative.replace(os.sep, "/")


def _local(path: str, settings: KernelCoverage) -> str:
    """A stored name as this run's coverage writes it: relative, or absolute in ``topdir``."""
    if os.path.isabs(path) or settings.relative_files:
        return path if os.path.isabs(path) else path.replace("/", os.sep)
    return os.path.join(settings.topdir, path.replace("/", os.sep))
