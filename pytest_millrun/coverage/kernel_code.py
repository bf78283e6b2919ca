"""Runs in the host: the code that starts, saves and reads a kernel's measurement.

The functions run in the kernel are :mod:`pytest_millrun.inkernel.coverage_start`;
here they become source to send (run in a namespace of its own, leaving no name in
the user's) and the expressions later requests evaluate.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pytest_millrun.coverage.kernel_settings import KernelCoverage
from pytest_millrun.inkernel import coverage_start


@functools.cache
def _module_source() -> str:
    return Path(coverage_start.__file__).read_text(encoding="utf-8")


def start_code(settings: KernelCoverage, *, private: bool = False) -> str:
    """Statements that start measuring in the kernel (in a forked child or a silent request).

    ``private``: the kernel keeps its data file to itself and sends the lines back.
    """
    where = f"{settings.config!r}, {settings.topdir!r}, {settings.context!r}, {private!r}"
    call = f"\nstart_measuring({where})\n"
    return f"exec({_module_source() + call!r}, {{'__name__': 'millrun_coverage_start'}})"


def save_code() -> str:
    """Statements that save what the kernel measured so far (nothing if it measures nothing)."""
    state = coverage_start.STATE
    return f"getattr(__import__('sys').modules.get({state!r}), 'save', lambda: None)()"


def finish_expression(with_lines: bool) -> str:
    """An expression whose value is the kernel's report as JSON text (see ``finish_measuring``).

    ``with_lines`` adds the measured lines, for a run whose output keeps them (the cache).
    """
    state = coverage_start.STATE
    missing = '\'{"measured": false, "problems": ["coverage was never started"]}\''
    return (
        f"getattr(__import__('sys').modules.get({state!r}), 'finish', "
        f"lambda with_lines: {missing})({with_lines!r})"
    )
