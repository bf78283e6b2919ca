"""Runs in the host: what a kernel said about its measurement, as one warning per kind a run.

Why once: the same cause (coverage missing from the kernel's environment, a module
the fork template imported before coverage started) holds for every kernel of the
run; a warning per variation would bury the report.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

#: How many files a warning names before it says how many more there are.
_NAMED = 5


class KernelCoverageWarning(UserWarning):
    """The kernels' coverage misses something: lines that ran are not all in the report."""


_SAID: set[str] = set()
_SAID_LOCK = threading.Lock()


def kernel_notes(
    payload: Mapping[str, Any],
    *,
    topdir: str,
    forked: bool,
    preload: Sequence[str] = (),
    preload_option: str = "preload=",
    spawn_option: str = 'kernel_start="spawn"',
) -> list[str]:
    """The warnings a kernel's ``finish`` report calls for (none when all was measured)."""
    notes = [
        f"A notebook's kernel was not measured, so the lines it ran are not in the coverage "
        f"report: {problem}."
        for problem in payload.get("problems") or ()
    ]
    early = [_relative(path, topdir) for path in payload.get("already_imported") or ()]
    if early:
        more = f" and {len(early) - _NAMED} more" if len(early) > _NAMED else ""
        named = ", ".join(early[:_NAMED]) + more
        if forked and preload:
            why = (
                f"the fork template imported them ({preload_option} {', '.join(preload)}) before "
                f"coverage started in each kernel, so the lines they ran on import (their "
                f"definitions) are reported as missed. Leave them out of {preload_option} when "
                f"measuring coverage, or start kernels with {spawn_option}."
            )
        else:
            why = (
                "they were imported before coverage started in the kernel, so the lines they "
                "ran on import (their definitions) are reported as missed."
            )
        notes.append(f"Measured files imported too early: {named}: {why}")
    return notes


def warn_once(notes: Sequence[str]) -> None:
    """Each note as a :class:`KernelCoverageWarning`, the first time this process has it."""
    for note in notes:
        with _SAID_LOCK:
            if note in _SAID:
                continue
            _SAID.add(note)
        warnings.warn(KernelCoverageWarning(note), stacklevel=2)


def _relative(path: str, topdir: str) -> str:
    relative = os.path.relpath(os.path.join(topdir, path), topdir)
    return path if relative.startswith(os.pardir) else relative
