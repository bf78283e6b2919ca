"""Runs in the parent: a run's learned preloads, the one implementation every front end calls.

Why here: the command and the API learn from the last run's outputs, the plugin from
pytest's cache (:mod:`pytest_millrun.plugin.preload_memory`), but what they then do is
the same: in fork mode, unless ``--millrun-preload none``, the template also imports
what the notebooks imported last time (less the modules ``--cov`` measures and those
found unfit to fork), and each kernel records what it imports for the next run.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_millrun.core.learned_preloads import (
    learned_preloads,
    named_preloads,
    output_record,
    preloads_off,
)
from pytest_millrun.coverage.kernel_settings import KernelCoverage, measured_modules
from pytest_millrun.dispatch.jobs import Job, RunOptions
from pytest_millrun.execution.execute import resolve_kernel_start
from pytest_millrun.execution.import_recording import FOUND, IMPORTS_PART, ImportsPart
from pytest_millrun.execution.kernel_session import KernelSessionPart


def with_learned_preloads(
    options: RunOptions,
    preload: Sequence[str],
    imported: Iterable[Iterable[str]],
    unsafe: Mapping[str, str],
    coverage: KernelCoverage | None,
) -> RunOptions:
    """``options`` with the learned preloads and the part that records imports, in fork mode."""
    if preloads_off(preload) or resolve_kernel_start(options.kernel_start) != "fork":
        return options
    measured = measured_modules(coverage) if coverage is not None else frozenset()
    learned = learned_preloads(
        imported, unsafe, named=named_preloads(preload), measured=measured
    )
    part: Callable[[], KernelSessionPart] = functools.partial(ImportsPart, dict(unsafe))
    parts = (*options.session_parts, part)
    return dataclasses.replace(options, learned_preload=learned, session_parts=parts)


def outputs_records(jobs: Iterable[Job]) -> tuple[list[list[str]], dict[str, str]]:
    """What the last runs recorded: the first output found of each notebook (its variations
    import alike, and one read per notebook keeps a large sweep's plan cheap)."""
    imported: list[list[str]] = []
    unsafe: dict[str, str] = {}
    seen: set[Path] = set()
    for job in jobs:
        if job.notebook in seen:
            continue
        record = output_record(job.output)
        if record is not None:
            seen.add(job.notebook)
            imported.append(record[0])
            unsafe.update(record[1])
    return imported, unsafe


def found_unsafe(kernel_report: Any) -> dict[str, str]:
    """The modules an execution's process found unfit to preload this run, and why."""
    report = (kernel_report or {}).get(IMPORTS_PART) or {}
    return dict(report.get(FOUND) or {})


def unsafe_line(module: str, why: str) -> str:
    """What ``-v`` says, once, of a learned preload left out."""
    return (
        f"millrun: {module} is not preloaded by the fork template ({why}); kernels import it "
        "themselves, and later runs do not try it again"
    )
