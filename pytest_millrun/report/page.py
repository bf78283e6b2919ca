"""The HTML report: one offline page of every variation, its values, its failures and charts.

It is built from the rows of the results table (:class:`~pytest_millrun.results.ResultRow`,
the same rows that travel from xdist workers to the controller) and written with the same
atomic replace, so the plugin, the CLI and :func:`write_report` share it.  The page is one
file that works from ``file://``: styles and script inline, charts as inline SVG
(:mod:`~pytest_millrun.report.charts`), the rows as a JSON blob that the script pages
through (10,000 variations open without freezing).  The table has a column per parameter and
per recorded value, as the results table does, the sweep's varied parameters first; the view
(filters, sort) lives in the URL's fragment so a link can open it.  The executed notebooks of
failures are rendered with nbconvert into ``<name>_files/`` beside it
(:mod:`~pytest_millrun.report.rendered`), so a reader needs no Jupyter.  matplotlib
and nbconvert come with the ``report`` extra and are imported only when a report is written;
without them the page says what is missing.

The page's data (``id="millrun-data"``) is ``{"columns": [...], "rows": [...]}``: a column is
``{"key", "label", "group", "numeric"}`` and a row ``{"status", "cells", "links", "detail"}``,
``cells`` in column order.  To add a column, add it to :data:`RUN_COLUMNS`; to show more of a
failure (e.g. a figure's expected and actual images), add blocks to the row's ``detail`` in
:func:`detail_blocks`: ``{"title", "text"}`` (preformatted) or ``{"title", "images":
[{"label", "src"}]}`` (``src`` a ``data:`` URI; the page's policy loads nothing else).
"""

from __future__ import annotations

import html
import json
import math
import os
import posixpath
import re
import statistics
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_millrun.core.files import atomic_write, common_root
from pytest_millrun.core.storage import redacted, url_scheme
from pytest_millrun.core.values import dumps
from pytest_millrun.report.charts import draw_charts
from pytest_millrun.report.rendered import MAX_RENDERED, render_failed_notebooks
from pytest_millrun.results import ResultRow, ResultsPathError

if TYPE_CHECKING:
    from pytest_millrun.core.data import ExecutionResult

__all__ = ["MAX_RENDERED", "check_report_path", "render_page", "write_report"]

STATUSES = ("passed", "failed", "interrupted", "skipped")
SYMBOLS = {"passed": "✓", "failed": "✗", "interrupted": "!", "skipped": "○"}
#: a grid with at most this many distinct variation ids gets one column per id
GRID_COLUMNS = 60
#: a text cell longer than this is cut in the page (the results table has it whole)
CELL_CHARS = 300
#: a detail block (cell source, traceback) longer than this is cut: head and tail kept
DETAIL_CHARS = 20_000

Block = dict[str, Any]


@dataclass(frozen=True)
class Column:
    """A column of the page's table; ``key`` names it in the URL (``#sort=p.rate``)."""

    key: str
    label: str
    #: "run" (what every row has), "varied" or "constant" (parameters), "value", "error"
    group: str
    numeric: bool = False


#: the columns before the parameters: (key, label, numeric, the cell of row number i)
RUN_COLUMNS: tuple[tuple[str, str, bool, Callable[[int, ResultRow], Any]], ...] = (
    ("index", "#", True, lambda i, r: i + 1),
    ("status", "status", False, lambda i, r: r.status),
    ("notebook", "notebook", False, lambda i, r: r.notebook),
    ("variation", "variation", False, lambda i, r: r.variation),
    ("duration", "duration s", True, lambda i, r: r.duration_s),
)


def check_report_path(path: str | Path, inputs: Iterable[Path] = ()) -> Path:
    """The report file as an absolute path, or :class:`ResultsPathError` saying what to fix."""
    target = Path(path).absolute()
    if target.suffix == ".ipynb" or target.resolve() in {Path(p).resolve() for p in inputs}:
        raise ResultsPathError(
            f"The report file {path} is a notebook; writing the report there would replace it. "
            f"Name a file ending in .html."
        )
    if target.is_dir():
        raise ResultsPathError(
            f"The report file {path} is a directory. Name a file in it ending in .html "
            f"(e.g. {Path(path) / 'report.html'})."
        )
    if target.suffix.lower() not in (".html", ".htm"):
        raise ResultsPathError(
            f"The report file {path} must end in .html, not {target.suffix or 'nothing'!r}."
        )
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ResultsPathError(
                    f"The report file {path} cannot be created: {parent} is a file, not a "
                    f"folder. Choose another path."
                )
            break
    return target


def write_report(
    results: Iterable[ExecutionResult | ResultRow],
    path: str | Path,
    *,
    root: str | Path | None = None,
    command: str = "",
    params_file: str | Path | None = None,
    title: str = "millrun report",
) -> Path:
    """Write the HTML report of ``results`` to ``path``, atomically; return the path.

    ``results`` are what ``execute_run`` returns (or ``RunFailedError.results``),
    or result rows.  Row paths are relative to ``root`` (by default the folder the
    notebooks share; for rows, the current folder); links in the page are made
    relative to the report's folder.  ``command`` and ``params_file`` go in the header.
    """
    items = list(results)
    target = check_report_path(path, [r.notebook for r in items if not isinstance(r, ResultRow)])
    executed = [r for r in items if not isinstance(r, ResultRow)]
    base = Path(root) if root is not None else (common_root(executed) or Path.cwd())
    rows = [r if isinstance(r, ResultRow) else ResultRow.from_result(r, base) for r in items]
    notes: list[str] = []
    files = target.with_name(f"{target.stem}_files")
    rendered = render_failed_notebooks(rows, base.absolute(), files, notes)
    page = render_page(
        rows,
        folder=target.parent,
        root=base.absolute(),
        rendered=rendered,
        command=command,
        params_file=str(params_file) if params_file else "",
        title=title,
        notes=notes,
    )
    atomic_write(target, page)
    return target


def render_page(
    rows: Sequence[ResultRow],
    *,
    folder: Path,
    root: Path,
    rendered: Mapping[int, Path] | None = None,
    command: str = "",
    params_file: str = "",
    title: str = "millrun report",
    notes: Sequence[str] = (),
    extra_details: Mapping[int, Sequence[Block]] | None = None,
) -> str:
    """The page's text; links relative to ``folder``, the rows' paths relative to ``root``.

    ``extra_details`` adds blocks (see the module's docs) to the detail of row number i.
    """
    rendered = rendered or {}
    extra_details = extra_details or {}
    # the runs' own notes (a default kernel, a SystemExit that skipped cells), each once
    notes = [*dict.fromkeys(note for row in rows for note in row.notes), *notes]
    from pytest_millrun.report.figure_panels import figures_section

    charts = figures_section(rows, root) + draw_charts(rows, notes)
    columns, getters = table_columns(rows)
    data = {
        "folder": _shared_folder(rows),
        "columns": [asdict(c) for c in columns],
        "rows": [
            {
                "status": row.status,
                "cells": [get(index, row) for get in getters],
                "links": _links(index, row, root, folder, rendered),
                "detail": [*detail_blocks(row), *extra_details.get(index, ())],
            }
            for index, row in enumerate(rows)
        ],
    }
    present = [s for s in STATUSES if any(r.status == s for r in rows)]
    options = "".join(f'<option value="{s}">{s}</option>' for s in present)
    replacements = {
        "@@TITLE@@": html.escape(title),
        "@@HEADER@@": _header(rows, command, params_file, notes),
        "@@GRID@@": _grid(rows),
        "@@STATUS_OPTIONS@@": options,
        "@@CHARTS@@": charts,
        "@@DATA@@": _script_json(data),
    }
    # one pass, so a notebook name or a command holding "@@DATA@@" stays text
    return re.sub(r"@@[A-Z_]+@@", lambda m: replacements[m.group(0)], _template())


def _shared_folder(rows: Sequence[ResultRow]) -> str:
    """The folder all notebooks are in, with its final slash, or nothing."""
    folders = {posixpath.dirname(r.notebook) for r in rows}
    try:
        common = posixpath.commonpath(folders) if folders and "" not in folders else ""
    except ValueError:  # absolute and relative paths (notebooks outside the root)
        common = ""
    return f"{common}/" if common and common != "/" else ""


def table_columns(
    rows: Sequence[ResultRow],
) -> tuple[list[Column], list[Callable[[int, ResultRow], Any]]]:
    """The table's columns and how to get each cell: the run's, parameters, values, error.

    Parameters that take two values or more come first (the sweep's shape), then the ones
    that stay the same; each in first-seen order, as in the results table.
    """
    columns = [Column(key, label, "run", numeric) for key, label, numeric, _ in RUN_COLUMNS]
    getters = [get for *_, get in RUN_COLUMNS]
    params = list(dict.fromkeys(key for row in rows for key in row.params))
    values = list(dict.fromkeys(name for row in rows for name in row.values))
    seen: dict[str, set[str]] = {key: set() for key in params}
    for row in rows:
        for key in params:
            seen[key].add(_value_text(row.params[key]) if key in row.params else "")
    varied = [key for key in params if len(seen[key]) > 1]
    constant = [key for key in params if len(seen[key]) <= 1]
    for group, keys, prefix, attribute in (
        ("varied", varied, "p.", "params"),
        ("constant", constant, "p.", "params"),
        ("value", values, "v.", "values"),
    ):
        for key in keys:
            numbers = [getattr(r, attribute).get(key) for r in rows]
            numeric = any(_number(v) for v in numbers) and all(
                _number(v) or v is None for v in numbers
            )
            columns.append(Column(prefix + key, key, group, numeric))
            getters.append(_getter(attribute, key))
    columns.append(Column("error", "error", "error"))
    getters.append(lambda i, r: r.error)
    return columns, getters


def _getter(attribute: str, key: str) -> Callable[[int, ResultRow], Any]:
    missing = object()

    def cell(index: int, row: ResultRow) -> Any:
        value = getattr(row, attribute).get(key, missing)
        return None if value is missing else _cell_value(value)

    return cell


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell_value(value: Any) -> Any:
    """A finite number as itself (sorted as one); anything else as its text."""
    if _number(value) and math.isfinite(value):
        return value
    if isinstance(value, str):
        return value if len(value) <= CELL_CHARS else value[: CELL_CHARS - 1] + "…"
    if value is None:
        return "None"
    return _value_text(value)


def _links(
    index: int, row: ResultRow, root: Path, folder: Path, rendered: Mapping[int, Path]
) -> list[list[str]]:
    links = []
    if row.output and url_scheme(row.output) is not None:  # on object storage: its URL
        links.append(["ipynb", redacted(row.output)])
    elif row.output:
        links.append(["ipynb", _href(root / row.output, folder)])
    if index in rendered:
        links.append(["html", _href(rendered[index], folder)])
    return links


def detail_blocks(row: ResultRow) -> list[Block]:
    """What the row's detail shows: a failure's cell source and traceback, the slowest cells."""
    blocks = []
    if row.source:
        blocks.append({"title": "Cell source", "text": _cut(row.source), "kind": "source"})
    if row.traceback:
        blocks.append({"title": "Traceback", "text": _cut(row.traceback), "kind": "traceback"})
    if row.slowest_cells:
        text = "\n".join(cell_line(cell) for cell in row.slowest_cells)
        blocks.append({"title": "Slowest cells", "text": text, "kind": "cells"})
    return blocks


def cell_line(cell: tuple[int, float, str]) -> str:
    """``2.01 s  cell 4: time.sleep(2)``: a cell's seconds, its number from 1, its first line."""
    index, seconds, line = cell
    return f"{seconds:.2f} s  cell {index + 1}: {line}"


def _cut(text: str) -> str:
    if len(text) <= DETAIL_CHARS:
        return text
    return (
        f"{text[: DETAIL_CHARS // 2]}\n… {len(text) - DETAIL_CHARS:,} characters left out "
        f"(the executed notebook has them) …\n{text[-DETAIL_CHARS // 2 :]}"
    )


def _template() -> str:
    return resources.files(__package__).joinpath("report_page.html").read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``<`` (so no ``</script>`` or ``<!--``) and standard."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


def _href(path: Path, folder: Path) -> str:
    return urllib.parse.quote(Path(os.path.relpath(path, folder)).as_posix())


def _value_text(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        text = dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def _header(rows: Sequence[ResultRow], command: str, params_file: str, notes: list[str]) -> str:
    counts = {s: sum(1 for r in rows if r.status == s) for s in STATUSES}
    durations = [r.duration_s for r in rows if r.duration_s is not None]
    spans = "".join(
        f'<span class="s-{s}">{SYMBOLS[s]} {counts[s]} {s}</span>' for s in STATUSES if counts[s]
    )
    meta = [
        ("variations", f"{len(rows)} in {_plural(len({r.notebook for r in rows}), 'notebook')}"),
        ("total duration", f"{sum(durations):.1f} s" if durations else "none"),
        ("median duration", f"{statistics.median(durations):.3f} s" if durations else "none"),
        ("written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    cached = sum(1 for r in rows if r.cached)
    if cached:
        meta.append(("cached", f"{cached} of {len(rows)}, read back from earlier passing runs"))
    if command:
        meta.append(("command", command))
    if params_file:
        meta.append(("params file", params_file))
    items = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{_command(v) if k == 'command' else html.escape(v)}</dd>"
        for k, v in meta
    )
    boxes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    return f'<p class="counts">{spans or "no variations"}</p><dl class="meta">{items}</dl>{boxes}'


def _command(command: str) -> str:
    """The command, breaking between its words only: ``--millrun-results`` stays whole."""
    words = [
        f'<span class="w">{html.escape(w)}</span>' if len(w) <= 60 else html.escape(w)
        for w in command.split(" ")
    ]
    return f"<code>{' '.join(words)}</code>"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _cell(index: int, row: ResultRow) -> str:
    label = html.escape(f"{row.notebook} [{row.variation}]: {row.status}", quote=True)
    status = row.status if row.status in SYMBOLS else "failed"
    return f'<a class="cell s-{status}" href="#r{index}" title="{label}">{SYMBOLS[status]}</a>'


def _grid(rows: Sequence[ResultRow]) -> str:
    """Notebooks down, variations across: one column per id when ids are few and shared."""
    by_notebook: dict[str, dict[str, str]] = {}
    for index, row in enumerate(rows):
        by_notebook.setdefault(row.notebook, {}).setdefault(row.variation, _cell(index, row))
    ids = list(dict.fromkeys(row.variation for row in rows))
    out = ['<table class="grid">']
    if len(ids) <= GRID_COLUMNS:
        heads = "".join(f"<th>{html.escape(i)}</th>" for i in ids)
        out.append(f"<thead><tr><th></th>{heads}</tr></thead><tbody>")
        for notebook, cells in by_notebook.items():
            tds = "".join(f"<td>{cells.get(i, '')}</td>" for i in ids)
            out.append(f"<tr><th>{html.escape(notebook)}</th>{tds}</tr>")
    else:
        out.append("<tbody>")
        for notebook, cells in by_notebook.items():
            wrapped = "".join(cells.values())
            out.append(
                f'<tr><th>{html.escape(notebook)}</th><td><div class="wrap">{wrapped}'
                f"</div></td></tr>"
            )
    out.append("</tbody></table>")
    return "".join(out)
