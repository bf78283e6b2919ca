"""The results table: one row per (notebook, variation), what it was given and what it computed.

Columns: ``notebook`` (relative to the run's root), ``variation``, ``status``
(``passed``, ``failed``, ``interrupted``, ``skipped``), ``cached`` (true when
the cache answered for the variation instead of a run), ``duration_s``,
``output``, ``error`` (the failure's headline), then ``param.<key>`` for every
parameter and ``value.<name>`` for every recorded value, the union over all
rows in first-seen order, empty where a row has none.  The format follows the
file's suffix: ``.csv``, ``.json`` (a list of row objects) or ``.jsonl`` (one
row object per line).  JSON cells hold JSON values, non-finite floats tagged
as in :mod:`pytest_millrun.execution.recording`; a CSV cell holds text, a nested value
as compact JSON, ``nan``/``inf``/``-inf`` as such and ``None`` as nothing.

The file is replaced atomically (a temporary name in the same folder, then a
rename), so a reader never sees half a table.  The three front ends share
:func:`write_results`; the pytest plugin builds rows on the workers
(:meth:`ResultRow.to_json` travels in the test report) and writes on the
controller.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_millrun.core.files import atomic_write, common_root, relative
from pytest_millrun.core.values import decode, dumps, encode

if TYPE_CHECKING:
    from pytest_millrun.core.data import ExecutionResult

FORMATS = (".csv", ".json", ".jsonl")
BASE_COLUMNS = ("notebook", "variation", "status", "cached", "duration_s", "output", "error")


class ResultsPathError(ValueError):
    """The results file cannot be written where it was asked for; a usage error."""


@dataclass(frozen=True)
class ResultRow:
    """One row of the table, independent of where the run happened."""

    notebook: str
    variation: str
    status: str
    duration_s: float | None = None
    output: str = ""
    error: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    #: a failure's cell source and traceback (or message), for the HTML report; not a column
    source: str = ""
    traceback: str = ""
    #: what the run's notes say (a SystemExit that skipped cells), for the report; not a column
    notes: tuple[str, ...] = ()
    #: Not run: read back from the output of an earlier passing run (``--millrun-cache``).
    cached: bool = False
    #: The run's slowest code cells (index, seconds, first line), for the report; not a column
    slowest_cells: tuple[tuple[int, float, str], ...] = ()

    @classmethod
    def from_result(cls, result: ExecutionResult, root: Path | None = None) -> ResultRow:
        return cls(
            notebook=relative(result.notebook, root),
            variation=result.variation_id,
            status=result.status,
            cached=result.cached,
            duration_s=round(result.duration, 3),
            output=relative(result.output, root) if result.output is not None else "",
            error=result.error.headline if result.error is not None else "",
            params=dict(result.parameters),
            values=dict(result.recorded),
            source=result.error.source if result.error is not None else "",
            traceback=_failure_detail(result),
            notes=tuple(result.notes),
            slowest_cells=slowest_cells(result.cell_seconds),
        )

    def to_json(self) -> dict[str, Any]:
        """Standard-JSON data (for an xdist report, or a line of ``.jsonl``)."""
        return {
            **self._fixed_columns(),
            "params": encode(_jsonable(self.params)),
            "values": encode(dict(self.values)),
            **({"source": self.source} if self.source else {}),
            **({"traceback": self.traceback} if self.traceback else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
            **({"slowest_cells": [list(c) for c in self.slowest_cells]} if self.slowest_cells else {}),  # noqa: E501
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResultRow:
        return cls(
            notebook=data["notebook"],
            variation=data["variation"],
            status=data["status"],
            cached=bool(data.get("cached", False)),
            duration_s=data.get("duration_s"),
            output=data.get("output", ""),
            error=data.get("error", ""),
            params=decode(data.get("params", {})),
            values=decode(data.get("values", {})),
            source=data.get("source", ""),
            traceback=data.get("traceback", ""),
            notes=tuple(data.get("notes", ())),
            slowest_cells=tuple(
                (int(index), float(seconds), str(line))
                for index, seconds, line in data.get("slowest_cells", ())
            ),
        )

    def _fixed_columns(self) -> dict[str, Any]:
        """The columns every row has, whatever its parameters and values."""
        return {
            "notebook": self.notebook,
            "variation": self.variation,
            "status": self.status,
            "cached": self.cached,
            "duration_s": self.duration_s,
            "output": self.output,
            "error": self.error,
        }

    def cells(self) -> dict[str, Any]:
        """The row as column -> value (parameters and values prefixed)."""
        row = self._fixed_columns()
        row.update((f"param.{key}", value) for key, value in self.params.items())
        row.update((f"value.{name}", value) for name, value in self.values.items())
        return row


#: How many of a run's cells the report names, slowest first.
SLOWEST_CELLS = 3


def slowest_cells(
    cells: Iterable[tuple[int, float, str]], count: int = SLOWEST_CELLS
) -> tuple[tuple[int, float, str], ...]:
    """The ``count`` slowest of a run's cells, slowest first (ties: in notebook order)."""
    return tuple(sorted(cells, key=lambda cell: -cell[1])[:count])


def _failure_detail(result: ExecutionResult) -> str:
    """The traceback (or what a cell printed when it failed without one), and for a failure
    outside a cell (timeout, dead kernel) its message."""
    error = result.error
    if error is None:
        return ""
    lines = "\n".join(error.traceback) or error.output
    if error.kind != "cell":
        lines = f"{lines}\n\n{error.message}".strip()
    return lines


def columns(rows: Sequence[ResultRow]) -> list[str]:
    """The base columns, then every parameter and every value in first-seen order."""
    params: dict[str, None] = {}
    values: dict[str, None] = {}
    for row in rows:
        params.update(dict.fromkeys(f"param.{key}" for key in row.params))
        values.update(dict.fromkeys(f"value.{name}" for name in row.values))
    return [*BASE_COLUMNS, *params, *values]


def check_results_path(path: str | Path, inputs: Iterable[Path] = ()) -> Path:
    """The results file as an absolute path, or :class:`ResultsPathError` saying what to fix."""
    target = Path(path).absolute()
    if target.suffix == ".ipynb" or target.resolve() in {Path(p).resolve() for p in inputs}:
        raise ResultsPathError(
            f"The results file {path} is a notebook; writing the table there would replace "
            f"it. Name a file ending in .csv, .json or .jsonl."
        )
    if target.is_dir():
        raise ResultsPathError(
            f"The results file {path} is a directory. Name a file in it ending in .csv, "
            f".json or .jsonl (e.g. {Path(path) / 'results.csv'})."
        )
    if target.suffix.lower() not in FORMATS:
        raise ResultsPathError(
            f"The results file {path} must end in .csv, .json or .jsonl (the suffix chooses "
            f"the format), not {target.suffix or 'nothing'!r}."
        )
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ResultsPathError(
                    f"The results file {path} cannot be created: {parent} is a file, not a "
                    f"folder. Choose another path."
                )
            break
    return target


def render(rows: Sequence[ResultRow], suffix: str) -> str:
    """The table's text in the format of ``suffix``."""
    names = columns(rows)
    table = [row.cells() for row in rows]
    suffix = suffix.lower()
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)  # excel dialect: \r\n, so a \r or \n in a cell is quoted
        writer.writerow(names)
        for cells in table:
            writer.writerow([_csv_cell(cells.get(name)) for name in names])
        return buffer.getvalue()
    objects = [{name: encode(_jsonable(cells.get(name))) for name in names} for cells in table]
    if suffix == ".jsonl":
        # ASCII: no U+2028 or U+0085 inside a line for a reader that splits on them
        return "".join(json.dumps(o, allow_nan=False) + "\n" for o in objects)
    return json.dumps(objects, ensure_ascii=False, allow_nan=False, indent=1) + "\n"


def write_results(
    results: Iterable[ExecutionResult | ResultRow],
    path: str | Path,
    *,
    root: str | Path | None = None,
) -> Path:
    """Write the results table to ``path`` (format by suffix), atomically; return the path.

    ``results`` are :class:`~pytest_millrun.execution.execute.ExecutionResult` objects
    (as ``execute_run`` returns them, or ``RunFailedError.results`` /
    ``RunInterrupted.results``) in the order to write.  ``notebook`` and
    ``output`` are given relative to ``root``: by default the folder the
    notebooks share.
    """
    items = list(results)
    target = check_results_path(path, _notebooks(items))
    base = (
        Path(root)
        if root is not None
        else common_root([r for r in items if not isinstance(r, ResultRow)])
    )
    rows = [r if isinstance(r, ResultRow) else ResultRow.from_result(r, base) for r in items]
    atomic_write(target, render(rows, target.suffix))
    return target


def _notebooks(items: Sequence[ExecutionResult | ResultRow]) -> list[Path]:
    return [r.notebook for r in items if not isinstance(r, ResultRow)]


def _jsonable(value: Any) -> Any:
    """A parameter value as JSON data (the API accepts any object; JSON shows its repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return repr(value)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (int, str)):
        return str(value)
    return dumps(_jsonable(value))
