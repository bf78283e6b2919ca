"""Runs in the host: reads the named variables out of a live kernel after the last cell.

The values' encoding and the scraps' parsing are pure and live in
:mod:`pytest_millrun.core.values`; the source sent into the kernel is
:mod:`pytest_millrun.inkernel.record`.  This module is the host's side of that
exchange: one silent ``user_expressions`` request, no added cell.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_millrun.core.discovery import OUTPUT_MARKER
from pytest_millrun.core.values import encode, read_scraps


def kernel_expression(names: Sequence[str]) -> str:
    """One Python expression that evaluates, in the kernel, to the variables as JSON text.

    It runs the source of :mod:`pytest_millrun.inkernel.record` in a namespace of
    its own, reading the user's through ``globals()``, so nothing is left behind.
    """
    source = _kernel_source() + "\n_millrun_out = Text(read(_millrun_user, _millrun_names))\n"
    # builtins reached through the module, so a notebook's own `compile` or `exec` is no matter
    return (
        "(lambda b, ns: (b.exec(b.compile(ns['_millrun_src'], '<millrun-record>', 'exec'), ns), "
        "ns['_millrun_out'])[1])"
        f"(__import__('builtins'), {{'_millrun_src': {source!r}, "
        f"'_millrun_names': {list(names)!r}, '_millrun_user': __import__('builtins').globals(), "
        "'__name__': 'millrun_record'})"
    )


@functools.cache
def _kernel_source() -> str:
    """The kernel module's code without its docstrings: less to send and compile each time."""
    from pytest_millrun.inkernel import record as kernel_record

    tree = ast.parse(Path(kernel_record.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


class Recorder:
    """The recorded values of one execution, gathered inside millrun's papermill engine.

    The engine calls :meth:`read_variables` after the last cell when every cell
    ran (the kernel is still up), and :meth:`finish` with the notebook just
    before its last save, which puts the values in ``metadata.millrun``.
    """

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.names = tuple(names)
        self.values: dict[str, Any] = {}
        self.notes: dict[str, str] = {}
        self.missing: list[str] = []
        self.kernel_error = ""
        self.variables: dict[str, Any] = {}
        self.asked = False
        self.finished = False

    def read_variables(self, client: Any) -> None:
        """Ask the kernel for the named variables with one silent request (no cell, no count)."""
        if not self.names:
            return
        self.asked = True
        msg_id = client.kc.execute(
            "",
            silent=True,
            store_history=False,
            user_expressions={"millrun": kernel_expression(self.names)},
            allow_stdin=False,
        )
        reply = client.wait_for_reply(msg_id)
        content = (reply or {}).get("content", {})
        result = content.get("user_expressions", {}).get("millrun")
        if not result or result.get("status") != "ok":
            source = result or content
            self.kernel_error = (
                f"{source.get('ename', 'no reply')}: {source.get('evalue', '')}".strip(": ")
            )
            return
        text = result.get("data", {}).get("text/plain", "")
        try:
            found = json.loads(text)
        except ValueError:
            self.kernel_error = f"unreadable reply {text[:200]!r}"
            return
        self.variables = dict(found.get("values", {}))
        self.notes.update(found.get("notes", {}))
        self.missing = list(found.get("missing", []))

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
