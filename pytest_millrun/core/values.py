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
  (:mod:`pytest_millrun.inkernel.record`), so no cell is added and no
  ``execution_count`` changes.

In memory a value is plain JSON data in which ``float('nan')`` and the
infinities may appear.  Written out (the notebook's ``metadata.millrun``, the
results table), standard JSON has no form for those, so :func:`encode` writes
them as ``{"$float": "nan"}``, ``{"$float": "inf"}`` and ``{"$float": "-inf"}``
(a user's dict that looks like one of these tags is wrapped in
``{"$dict": ...}``); :func:`decode` undoes it.
"""

from __future__ import annotations

import json
import keyword
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_millrun.core.discovery import OUTPUT_MARKER
from pytest_millrun.core.globs import glob_match

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


@dataclass(frozen=True)
class RecordSpec:
    """The names a run records: for every notebook, and for the notebooks a glob matches.

    From the command line's ``a,b,GLOB:c`` (see :func:`parse_record`).  A notebook records
    its suite section's ``record`` names and then these, each name once: the command line
    adds names, it never takes a suite's away.
    """

    names: tuple[str, ...] = ()
    by_glob: tuple[tuple[str, str], ...] = ()

    def for_notebook(self, relative: str, own: Sequence[str] = ()) -> tuple[str, ...]:
        """The names for the notebook at ``relative`` (``/``-separated, from the suite's
        folder) whose suite section records ``own``.

        A glob without ``/`` matches the file name, one with ``/`` the path, as a suite's
        notebooks globs do.
        """
        name = relative.rsplit("/", 1)[-1]
        chosen = [*own, *self.names]
        for glob, wanted in self.by_glob:
            if glob_match(glob, relative if "/" in glob else name):
                chosen.append(wanted)
        return tuple(dict.fromkeys(chosen))

    def __bool__(self) -> bool:
        return bool(self.names or self.by_glob)


def parse_record(text: str | Sequence[str] | None, option: str = "--millrun-record") -> RecordSpec:
    """``a,b`` names for every notebook, ``GLOB:name`` for the notebooks GLOB matches."""
    if text is None:
        return RecordSpec()
    parts = text.split(",") if isinstance(text, str) else list(text)
    plain: list[str] = []
    by_glob: list[tuple[str, str]] = []
    for part in parts:
        if isinstance(part, str) and ":" in part:
            glob, _, name = part.strip().rpartition(":")
            if not glob.strip():
                raise RecordNameError(
                    f"{option}: {part.strip()!r} has no glob before its ':'. Write "
                    f"GLOB:name (e.g. fit*.ipynb:rmse), or the name alone for every notebook."
                )
            by_glob += [(glob.strip(), checked) for checked in parse_names([name], option)]
        else:
            plain.append(part)
    return RecordSpec(parse_names(plain, option), tuple(dict.fromkeys(by_glob)))


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
