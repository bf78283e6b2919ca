"""Runs in the host: kernel coverage as a kernel session part (issue 33).

Why a part: measuring a kernel is start code (coverage started with the host's
settings, saving after each cell from IPython's ``post_run_cell``, see
:mod:`pytest_millrun.inkernel.coverage_start`) and one end request (stop, save,
say what was measured) -- exactly what the kernel session protocol composes.  The
front end decides whether kernels are measured and adds the part to
``RunOptions.session_parts`` as ``functools.partial(CoveragePart, settings)``,
which pickles to pool and Dask workers.  The data files the kernels write beside
the host's data file are combined by the host's own tool (pytest-cov at the end of
the session, ``coverage combine`` after ``coverage run``).  A kernel on a Dask worker
cannot count on reaching that file: with ``lines_back`` it keeps its data to itself
and its lines travel back in the result, where :func:`write_returned_lines` writes
them beside the host's data file, remapped to the host's paths.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pytest_millrun.core.discovery import OUTPUT_MARKER
from pytest_millrun.coverage.kernel_code import finish_expression, start_code
from pytest_millrun.coverage.kernel_reports import kernel_notes
from pytest_millrun.coverage.kernel_settings import KernelCoverage
from pytest_millrun.coverage.stored_lines import COVERAGE_ENTRY, stored_entry, write_data_file
from pytest_millrun.execution.kernel_session import EndReply, KernelSessionPart

#: The part's key in ``ExecutionResult.kernel_report``.
COVERAGE_PART = "coverage"
#: In the part's report, the lines a ``lines_back`` kernel measured (as an output stores them).
RETURNED_LINES = "lines"


class CoveragePart(KernelSessionPart):
    """Measures one kernel as the host's coverage measures the host; reports what it missed."""

    name: ClassVar[str] = COVERAGE_PART

    def __init__(
        self,
        settings: KernelCoverage,
        *,
        keep_lines: bool = False,
        preload: tuple[str, ...] = (),
        lines_back: bool = False,
    ) -> None:
        self.settings = settings
        #: Whether the output keeps the measured lines (a cached run's record).
        self.keep_lines = keep_lines
        #: Whether the lines come back in the result instead of a data file beside the host's.
        self.lines_back = lines_back
        #: The fork template's preloaded modules, which a warning about early imports names.
        self.preload = preload
        self._stored: dict[str, Any] | None = None

    def start_code(self) -> str:
        return start_code(self.settings, private=self.lines_back)

    def end_code(self) -> str:
        with_lines = self.keep_lines or self.lines_back
        return f"payload = __import__('json').loads({finish_expression(with_lines)})"

    def read_end(self, reply: EndReply) -> dict[str, Any]:
        """``{"measured": bool, "notes": [warning text], ...}``: the notes for the front end."""
        if reply.error:
            return {
                "measured": False,
                "notes": [
                    "A notebook's kernel was not measured, so the lines it ran are not in the "
                    f"coverage report: its end request failed ({reply.error})."
                ],
            }
        payload = dict(reply.payload or {})
        if self.keep_lines or self.lines_back:
            lines = stored_entry(payload, self.settings)
            self._stored = lines if self.keep_lines else None
            if self.lines_back:
                payload[RETURNED_LINES] = lines
            payload.pop("files", None)
            payload.pop("tracers", None)
        payload["notes"] = kernel_notes(
            payload, topdir=self.settings.topdir, forked=bool(self.preload), preload=self.preload
        )
        return payload

    def notebook_done(self, nb: Any) -> None:
        """Keep the lines in the output (``metadata.millrun.coverage``) for a cached run;
        an output without them (a run whose kernel was not measured) is run again."""
        marker = nb.metadata.setdefault(OUTPUT_MARKER, {})
        if self._stored is not None:
            marker[COVERAGE_ENTRY] = self._stored
        else:
            marker.pop(COVERAGE_ENTRY, None)


def write_returned_lines(kernel_report: Any, settings: KernelCoverage) -> str | None:
    """Write the lines a ``lines_back`` kernel sent as a data file beside the host's; its path.

    ``settings`` are the host's (the item's context), so the names, relative to the
    project's folder where the kernel ran them under it, become the host's paths.
    """
    report = (kernel_report or {}).get(COVERAGE_PART) or {}
    lines = report.pop(RETURNED_LINES, None)
    if not lines:
        return None
    return write_data_file(lines, settings)


def coverage_notes(kernel_report: Any) -> list[str]:
    """The warnings an execution's kernel coverage calls for (none when it was not measured)."""
    report = (kernel_report or {}).get(COVERAGE_PART) or {}
    return list(report.get("notes") or ())
