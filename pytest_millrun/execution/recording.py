"""Recorded values: what a variation computed, as a flat mapping of names to JSON values.

Two sources, merged in this order (a later one wins for the same name):

* scraps, scrapbook's ``glue`` protocol: display outputs whose mimetype is
  ``application/scrapbook.scrap.<encoder>+json`` (papermill's older
  ``application/papermill.record+json`` too), read from the executed notebook
  without importing scrapbook, which is not a dependency.  The ``json`` and
  ``text`` encoders are recorded; others (pandas, arrow, display-only scraps)
  are named in a note.  The last glue of a name wins, as in scrapbook;
* variables the user names (``--millrun-record``, ``--record``, ``record=``),
  read after the last cell in the same kernel by one silent user expression
  (:mod:`pytest_millrun.kernel_record`), so no cell is added and no
  ``execution_count`` changes.

In memory a value is plain JSON data in which ``float('nan')`` and the
infinities may appear.  Written out (the notebook's ``metadata.millrun``, the
results table), standard JSON has no form for those, so :func:`encode` writes
them as ``{"$float": "nan"}``, ``{"$float": "inf"}`` and ``{"$float": "-inf"}``
(a user's dict that looks like one of these tags is wrapped in
``{"$dict": ...}``); :func:`decode` undoes it.
"""

from __future__ import annotations

import ast
import functools
import json
import keyword
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .discovery import OUTPUT_MARKER

SCRAP_PREFIX = "application/scrapbook.scrap."
PAPERMILL_RECORD = "application/papermill.record+json"
#: Scrapbook encoders whose payload is the value itself.
PLAIN_ENCODERS = ("json", "text")

_FLOAT_TAG = "$float"
_DICT_TAG = "$dict"


class RecordNameError(ValueError):
    """A name to record that cannot name a variable; a usage error."""


def parse_names(
    text: str | Sequence[str] | None, option: str = "--millrun-record"
) -> tuple[str, ...]:
    """Names to record from ``a,b`` text or a sequence, each a Python identifier, no repeats."""
    if text is None:
        return ()
    parts = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise RecordNameError(f"{option}: names to record must be strings, not {part!r}.")
        name = part.strip()
        if not name:
            continue
        if not name.isidentifier() or keyword.iskeyword(name):
            raise RecordNameError(
                f"{option}: {name!r} is not a variable name. Give the names of variables "
                f"the notebooks define, separated by commas (e.g. rmse,accuracy)."
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def encode(value: Any) -> Any:
    """Plain JSON data as standard JSON data: non-finite floats tagged (see module docs)."""
    if isinstance(value, float):
        if math.isnan(value):
            return {_FLOAT_TAG: "nan"}
        if math.isinf(value):
            return {_FLOAT_TAG: "inf" if value > 0 else "-inf"}
        return value
    if isinstance(value, dict):
        encoded = {str(key): encode(item) for key, item in value.items()}
        if len(encoded) == 1 and next(iter(encoded)) in (_FLOAT_TAG, _DICT_TAG):
            return {_DICT_TAG: encoded}
        return encoded
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    return value


def decode(value: Any) -> Any:
    """Undo :func:`encode`."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, item),) = value.items()
            if key == _FLOAT_TAG and item in ("nan", "inf", "-inf"):
                return float(item)
            if key == _DICT_TAG and isinstance(item, dict):
                return {k: decode(v) for k, v in item.items()}
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def dumps(value: Any) -> str:
    """Compact standard JSON text of plain JSON data (non-finite floats tagged)."""
    return json.dumps(encode(value), ensure_ascii=False, separators=(",", ":"), default=repr)


def read_scraps(nb: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The values glued in a notebook's outputs, and notes on the scraps that are not recorded.

    Never raises for a strange output: what cannot be read is a note.
    """
    values: dict[str, Any] = {}
    notes: dict[str, str] = {}
    displayed: list[str] = []
    for cell in _items(nb.get("cells")):
        for output in _items(cell.get("outputs")) if isinstance(cell, Mapping) else ():
            if not isinstance(output, Mapping):
                continue
            data = output.get("data")
            for mimetype, payload in data.items() if isinstance(data, Mapping) else ():
                for name, value, note in _scraps_of(mimetype, payload):
                    if note is None:
                        values[name] = value
                        notes.pop(name, None)
                    else:
                        values.pop(name, None)
                        notes[name] = note
            displayed += _display_names(output)
    for name in displayed:
        if name not in values and name not in notes:
            notes[name] = "a display-only scrap: glued for display, no data recorded"
    return values, notes


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _scraps_of(mimetype: str, payload: Any) -> Iterable[tuple[str, Any, str | None]]:
    if mimetype == PAPERMILL_RECORD:
        if isinstance(payload, Mapping):
            for name, value in payload.items():
                yield str(name), _normal(value), None
        return
    if not (mimetype.startswith(SCRAP_PREFIX) and mimetype.endswith("+json")):
        return
    encoder = mimetype[len(SCRAP_PREFIX) : -len("+json")]
    if not isinstance(payload, Mapping) or not isinstance(payload.get("name"), str):
        return  # scrapbook itself could not load it either; nothing to name
    name = payload["name"]
    if encoder not in PLAIN_ENCODERS:
        yield (
            name,
            None,
            (
                f"a scrap with the {encoder!r} encoder is not recorded (only json and text "
                f"scraps are); glue a JSON value, or record a variable instead"
            ),
        )
        return
    value = payload.get("data")
    yield name, (value if encoder == "json" else str(value)), None


def _display_names(output: Mapping[str, Any]) -> list[str]:
    metadata = output.get("metadata")
    if not isinstance(metadata, Mapping):
        return []
    for key in ("scrapbook", "papermill"):
        entry = metadata.get(key)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        if key == "papermill" or entry.get("display"):
            return [entry["name"]]
    return []


def _normal(value: Any) -> Any:
    """A JSON value as read from a notebook, unchanged but for tuples (never there anyway)."""
    return [_normal(item) for item in value] if isinstance(value, tuple) else value


def kernel_expression(names: Sequence[str]) -> str:
    """One Python expression that evaluates, in the kernel, to the variables as JSON text.

    It runs the source of :mod:`pytest_millrun.kernel_record` in a namespace of
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
    from . import kernel_record

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


def recorded_from_notebook(nb: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """What an output notebook says it recorded (its ``metadata.millrun``)."""
    marker = nb.get("metadata", {}).get(OUTPUT_MARKER, {})
    values = marker.get("recorded")
    if not isinstance(values, dict):
        return read_scraps(nb)
    return decode(values), dict(marker.get("recorded_notes", {}))


def report_lines(
    values: Mapping[str, Any], notes: Mapping[str, str], *, limit: int = 8, width: int = 60
) -> list[str]:
    """The recorded values for a failure report: shown when there are few of them."""
    lines: list[str] = []
    if values and len(values) <= limit:
        shown = []
        for name, value in values.items():
            text = dumps(value)
            shown.append(f"{name}={text if len(text) <= width else text[: width - 3] + '...'}")
        lines.append(f"Recorded:  {', '.join(shown)}")
    elif values:
        lines.append(f"Recorded:  {len(values)} values (see the output notebook)")
    if notes and len(notes) <= limit:
        lines += [f"           {name}: {note}" for name, note in notes.items()]
    return lines
