"""Runs in the host: reads the named variables out of a live kernel after the last cell.

The values' encoding and the scraps' parsing are pure and live in
:mod:`pytest_millrun.core.values`; the source sent into the kernel is
:mod:`pytest_millrun.inkernel.record`.  This module is the host's side of that
exchange: the :class:`Recorder` is a part of the kernel session
(:mod:`pytest_millrun.execution.kernel_session`), read by its one end request.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_millrun.core.discovery import OUTPUT_MARKER
from pytest_millrun.core.values import encode, read_scraps
from pytest_millrun.execution.kernel_session import EndReply, KernelSessionPart, kernel_source


def record_code(names: Sequence[str]) -> str:
    """The end code that reads the named variables, converted, from the user's namespace.

    It runs the source of :mod:`pytest_millrun.inkernel.record` in the part's own
    namespace, so nothing is left behind in the user's.
    """
    from pytest_millrun.inkernel import record as kernel_record

    return kernel_source(kernel_record) + f"\npayload = read(user_namespace, {list(names)!r})\n"


class Recorder(KernelSessionPart):
    """The recorded values of one execution: a kernel session part, read at the end.

    The session's end request reads the variables after the last cell when every
    cell ran (the kernel is still up: :meth:`read_end`), and :meth:`finish` takes
    the notebook just before its last save and puts the values in
    ``metadata.millrun``.
    """

    name = "record"
    end_after_failure = False  # values of a notebook that did not run to its end mean nothing

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.names = tuple(names)
        self.values: dict[str, Any] = {}
        self.notes: dict[str, str] = {}
        self.missing: list[str] = []
        self.kernel_error = ""
        self.variables: dict[str, Any] = {}
        self.asked = False
        self.finished = False

    def end_code(self) -> str | None:
        return record_code(self.names) if self.names else None

    def read_end(self, reply: EndReply) -> None:
        """The variables the end request read (the report holds them as ``recorded``)."""
        self.asked = True
        if reply.error:
            self.kernel_error = reply.error
            return
        found = reply.payload if isinstance(reply.payload, dict) else {}
        self.variables = dict(found.get("values", {}))
        self.notes.update(found.get("notes", {}))
        self.missing = list(found.get("missing", []))

    def notebook_done(self, nb: Any) -> None:
        self.finish(nb)

    def finish(self, nb: Any) -> None:
        """Merge scraps and variables, and store them in the notebook's metadata."""
        scraps, notes = read_scraps(nb)
        self.values = {**scraps, **self.variables}
        self.notes = {
            name: note
            for name, note in {**notes, **self.notes}.items()
            if name not in self.values or name in self.variables
        }
        marker = nb.setdefault("metadata", {}).setdefault(OUTPUT_MARKER, {})
        marker["recorded"] = encode(self.values)
        if self.notes:
            marker["recorded_notes"] = dict(self.notes)
        self.finished = True

    def problem(self, notebook: Path) -> tuple[str, str] | None:
        """``(evalue, message)`` when a named variable could not be read, else None."""
        if not self.names:
            return None
        if self.kernel_error:
            return (
                f"reading the recorded variables failed: {self.kernel_error}",
                f"Reading the variables to record ({', '.join(self.names)}) after the last "
                f"cell of {notebook.name} failed in the kernel: {self.kernel_error}. "
                f"Recording variables needs a Python (IPython) kernel; glue values with "
                f"scrapbook in other kernels.",
            )
        if not self.asked:
            return (
                "the variables to record were not read",
                f"The variables to record ({', '.join(self.names)}) were not read from "
                f"{notebook.name}: recording variables needs millrun's papermill engine, "
                f"so leave engine_name unset.",
            )
        if self.missing:
            listed = ", ".join(repr(name) for name in self.missing)
            plural = "s" if len(self.missing) > 1 else ""
            return (
                f"{listed} not defined at the end of {notebook.name}",
                f"Variable{plural} {listed}, named to be recorded (--millrun-record / "
                f"--record / record=), {'are' if plural else 'is'} not defined after the "
                f"last cell of {notebook.name}. Define {'them' if plural else 'it'} in the "
                f"notebook, or leave {'them' if plural else 'it'} out of the names to record.",
            )
        return None
