"""Runs inside the notebook's kernel: turns the named variables into plain data at the end.

Its source is the record part's end code in the kernel session's end request (see
:func:`pytest_millrun.execution.recording.record_code`), so it may use the
standard library only, must run on any Python 3 a kernel has, and must not
leave a name behind in the user's namespace.  The host imports it too, to test
the conversion without a kernel.

The conversion, documented in docs/results.md: ``None``, ``bool``, ``int``,
``float`` (``nan`` and ``inf`` kept as such) and ``str`` stay as they are;
tuples become lists; dicts with str (or number, bool, None) keys stay dicts,
with their keys as ``json.dumps`` writes them; numpy scalars and arrays become
Python numbers and (nested) lists; a pandas ``Series`` becomes
``{"name", "index", "data"}``, a ``DataFrame`` ``{"columns", "index", "data"}``
(``data`` a list of rows), an ``Index`` a list, ``NaT``/``NA`` ``None``; dates
and times their ISO text.  Anything else is recorded as its ``repr``, with a note.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

#: Containers nested deeper than this are recorded as their repr (guards against cycles too).
MAX_DEPTH = 64
#: Longer reprs are cut, so an unconvertible object cannot flood the notebook's metadata.
MAX_REPR = 2000


def to_plain(value: Any) -> tuple[Any, str | None]:
    """``value`` as plain JSON-compatible data, and a note when part of it is only a repr."""
    notes: list[str] = []
    try:
        plain = _convert(value, notes, 0)
    except _TooDeep:
        notes = []
        plain = _repr(value, notes, "nested too deeply, or holds itself")
    return plain, ("; ".join(dict.fromkeys(notes)) if notes else None)


def _convert(value: Any, notes: list[str], depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (datetime.date, datetime.time)):
        if type(value).__name__ == "NaTType":
            return None
        return value.isoformat()
    if depth >= MAX_DEPTH:
        raise _TooDeep
    module = type(value).__module__.split(".")[0]
    if module == "numpy" and hasattr(value, "tolist"):
        if getattr(getattr(value, "dtype", None), "kind", "") in ("m", "M"):
            value = value.astype(str)  # datetime64/timedelta64: ISO text, not raw ticks
        converted = value.tolist()  # an array's nested lists, or a scalar's Python value
        if isinstance(converted, (bool, int, float, str, list)) or converted is None:
            return _convert(converted, notes, depth + 1)
        return _repr(value, notes, f"numpy {type(value).__name__} has no JSON form")
    if module == "pandas":
        return _pandas(value, notes, depth)
    if isinstance(value, (list, tuple)):
        return [_convert(item, notes, depth + 1) for item in value]
    if isinstance(value, dict):
        items = [(_key(key), item) for key, item in value.items()]
        if any(key is None for key, _ in items):
            return _repr(value, notes, "a dict with keys JSON cannot hold")
        return {key: _convert(item, notes, depth + 1) for key, item in items}
    return _repr(value, notes, f"{_type_name(value)} is not JSON")


class _TooDeep(Exception):
    pass


def _pandas(value: Any, notes: list[str], depth: int) -> Any:
    kind = type(value).__name__
    if kind in ("NAType", "NaTType"):
        return None
    if kind == "DataFrame":
        split = value.to_dict(orient="split")
        return {
            "columns": _convert(split["columns"], notes, depth + 1),
            "index": _convert(split["index"], notes, depth + 1),
            "data": _convert(split["data"], notes, depth + 1),
        }
    if kind == "Series":
        return {
            "name": _convert(value.name, notes, depth + 1),
            "index": _convert(value.index.tolist(), notes, depth + 1),
            "data": _convert(value.tolist(), notes, depth + 1),
        }
    if hasattr(value, "tolist"):  # an Index, a Categorical, an extension array
        return _convert(value.tolist(), notes, depth + 1)
    if kind == "Timedelta":
        return value.isoformat()
    return _repr(value, notes, f"{_type_name(value)} is not JSON")


def _key(key: Any) -> str | None:
    """A dict key as ``json.dumps`` would write it, or None if JSON has no form for it."""
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, (bool, int, float)):
        text = json.dumps(key)
        return text.strip('"')
    return None


def _repr(value: Any, notes: list[str], why: str) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<{_type_name(value)}: repr failed with {type(exc).__name__}>"
    if len(text) > MAX_REPR:
        text = text[: MAX_REPR - 3] + "..."
        why += ", repr shortened"
    notes.append(f"recorded as its repr ({why})")
    return text


def _type_name(value: Any) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def read(namespace: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The named variables, converted (the session sends them as JSON, ``NaN`` allowed).

    ``{"values": {name: value}, "notes": {name: note}, "missing": [name, ...]}``
    """
    values: dict[str, Any] = {}
    notes: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        if name not in namespace:
            missing.append(name)
            continue
        values[name], note = to_plain(namespace[name])
        if note:
            notes[name] = note
    return {"values": values, "notes": notes, "missing": missing}
