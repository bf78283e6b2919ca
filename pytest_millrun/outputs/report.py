"""The HTML report: one offline page of every variation, its values, its failures and charts.

It is built from the rows of the results table (:class:`~pytest_millrun.outputs.results.ResultRow`,
the same rows that travel from xdist workers to the controller) and written with the same
atomic replace, so the plugin, the CLI and :func:`write_report` share it.  The page is one
file that works from ``file://``: styles and script inline, charts as inline SVG, the rows as
a JSON blob that the script pages through (10,000 variations open without freezing).  The
executed notebooks of failures are rendered with nbconvert into ``<name>_files/`` beside it,
so a reader needs no Jupyter.  matplotlib and nbconvert come with the ``report`` extra and
are imported here only when a report is written; without them the page says what is missing.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
import statistics
import urllib.parse
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_millrun.core.values import dumps, encode
from pytest_millrun.outputs.files import atomic_write, common_root
from pytest_millrun.outputs.results import ResultRow, ResultsPathError

if TYPE_CHECKING:
    from pytest_millrun.core.data import ExecutionResult

STATUSES = ("passed", "failed", "interrupted", "skipped")
SYMBOLS = {"passed": "✓", "failed": "✗", "interrupted": "!", "skipped": "○"}
#: failed notebooks rendered to HTML at most; the rest keep their .ipynb link
MAX_RENDERED = 50
#: above this many points a chart's markers are drawn as one embedded image inside the SVG
RASTER_POINTS = 2000
MARKERS = "osD^vPX<>*"
#: a grid with at most this many distinct variation ids gets one column per id
GRID_COLUMNS = 60
EXTRA = "pip install 'pytest-millrun[report]'"


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
    rendered = _render_notebooks(rows, base.absolute(), files, notes)
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
    rendered: dict[int, Path] | None = None,
    command: str = "",
    params_file: str = "",
    title: str = "millrun report",
    notes: Sequence[str] = (),
) -> str:
    """The page's text; links relative to ``folder``, the rows' paths relative to ``root``."""
    rendered = rendered or {}
    # the runs' own notes (a default kernel, a SystemExit that skipped cells), each once
    notes = [*dict.fromkeys(note for row in rows for note in row.notes), *notes]
    from pytest_millrun.outputs.figure_report import figures_section

    charts = figures_section(rows, root) + _charts(rows, notes)
    data = [
        [
            index,
            row.notebook,
            row.variation,
            row.status,
            row.duration_s,
            _mapping_text(row.params),
            _mapping_text(row.values),
            row.error,
            _href(root / row.output, folder) if row.output else "",
            _href(rendered[index], folder) if index in rendered else "",
            row.source,
            row.traceback,
        ]
        for index, row in enumerate(rows)
    ]
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


def _template() -> str:
    return resources.files(__package__).joinpath("report_page.html").read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``<`` (so no ``</script>`` or ``<!--``) and standard."""
    return json.dumps(encode(data), ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


def _href(path: Path, folder: Path) -> str:
    return urllib.parse.quote(Path(os.path.relpath(path, folder)).as_posix())


def _mapping_text(mapping: Any) -> str:
    """``k=v, k=v`` with each value as compact JSON (strings quoted, nan as nan)."""
    return ", ".join(f"{key}={_value_text(value)}" for key, value in mapping.items())


def _value_text(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        text = dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 300 else text[:299] + "…"


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
        f"<dt>{html.escape(k)}</dt><dd>{'<code>' if k == 'command' else ''}{html.escape(v)}"
        f"{'</code>' if k == 'command' else ''}</dd>"
        for k, v in meta
    )
    boxes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    return f'<p class="counts">{spans or "no variations"}</p><dl class="meta">{items}</dl>{boxes}'


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


def _numeric(rows: Sequence[ResultRow], attribute: str) -> list[str]:
    """Names whose values are all numbers (nan and None allowed) with at least two distinct."""
    seen: dict[str, set[float] | None] = {}
    for row in rows:
        for name, value in getattr(row, attribute).items():
            known = seen.setdefault(name, set())
            if known is None or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                seen[name] = None
            elif math.isfinite(value):
                known.add(float(value))
    return [name for name, known in seen.items() if known is not None and len(known) >= 2]


def _charts(rows: Sequence[ResultRow], notes: list[str]) -> str:
    """One figure per numeric value: a panel per numeric parameter, a series per notebook."""
    values = _numeric(rows, "values")
    params = _numeric(rows, "params")
    if not values or not params:
        why = "no recorded value is a number" if not values else "no numeric parameter varies"
        return f"<p>No charts: {why}.</p>"
    try:
        from matplotlib import rc_context
        from matplotlib.backends.backend_svg import FigureCanvasSVG
        from matplotlib.figure import Figure
    except ImportError:
        notes.append(f"Charts need matplotlib, which is not installed: {EXTRA}.")
        return "<p>No charts: matplotlib is not installed.</p>"
    notebooks = list(dict.fromkeys(r.notebook for r in rows))
    figures = []
    for number, value in enumerate(values):
        columns = min(len(params), 4)
        lines = math.ceil(len(params) / columns)
        # a salt per figure: ids inside one page's SVGs must not collide
        with rc_context({"svg.hashsalt": f"m{number}", "svg.fonttype": "none", "font.size": 9}):
            figure = Figure(figsize=(3.4 * columns, 2.7 * lines + 0.5), layout="constrained")
            FigureCanvasSVG(figure)
            axes = list(figure.subplots(lines, columns, squeeze=False).flat)
            for ax, param in zip(axes, params, strict=False):
                series: dict[str, list[tuple[Any, Any]]] = {n: [] for n in notebooks}
                for r in rows:
                    x, y = r.params.get(param), r.values.get(value)
                    if _finite(x) and _finite(y):
                        series[r.notebook].append((x, y))
                # many markers as vector paths make a slow, heavy page: draw them as one image
                raster = sum(map(len, series.values())) > RASTER_POINTS
                for shape, (notebook, points) in enumerate(series.items()):
                    if points:
                        xs, ys = zip(*points, strict=True)
                        # hollow markers of a shape per notebook: coinciding series stay visible
                        marker = MARKERS[shape % len(MARKERS)]
                        ax.plot(
                            xs,
                            ys,
                            marker,
                            ls="none",
                            ms=5,
                            mfc="none",
                            alpha=0.8,
                            color=f"C{shape % 10}",
                            label=notebook,
                            rasterized=raster,
                        )
                ax.locator_params(nbins=4)
                ax.set_xlabel(param)
                ax.set_ylabel(value)
                ax.grid(alpha=0.3)
            for ax in axes[len(params) :]:
                ax.set_visible(False)
            handles, labels = figure.axes[0].get_legend_handles_labels()
            if handles:
                wide = max(map(len, labels)) > 120 / min(len(labels), 4)
                figure.legend(
                    handles,
                    labels,
                    loc="outside lower center",
                    ncols=1 if wide else min(len(labels), 4),
                    frameon=False,
                )
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", dpi=72)
        # the page needs the drawing alone: no XML prolog, no RDF metadata (date, tool URLs)
        svg = re.sub(r"<metadata>.*?</metadata>", "", buffer.getvalue(), count=1, flags=re.S)
        svg = svg[svg.index("<svg") :]
        figures.append(
            f'<figure id="chart-{html.escape(value, quote=True)}"><figcaption><code>'
            f"{html.escape(value)}</code> against each numeric parameter</figcaption>"
            f"{svg}</figure>"
        )
    return "".join(figures)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _render_notebooks(
    rows: Sequence[ResultRow], root: Path, files: Path, notes: list[str]
) -> dict[int, Path]:
    """The executed notebooks of failures as HTML pages in ``files``: row index -> page."""
    wanted = [
        (index, root / row.output)
        for index, row in enumerate(rows)
        if row.status in ("failed", "interrupted") and row.output and (root / row.output).is_file()
    ]
    if not wanted:
        return {}
    try:
        import nbformat
        from nbconvert import HTMLExporter
    except ImportError:
        notes.append(
            f"Failed notebooks are not rendered to HTML: nbconvert is not installed ({EXTRA}); "
            f"each row still links to its .ipynb."
        )
        return {}
    if len(wanted) > MAX_RENDERED:
        notes.append(
            f"The first {MAX_RENDERED} of {len(wanted)} failed notebooks are rendered to HTML; "
            f"the others link to their .ipynb only."
        )
    # the basic template is the notebook alone: no scripts, no fonts or MathJax from a CDN
    exporter = HTMLExporter(template_name="basic")  # type: ignore[no-untyped-call]
    from pygments.formatters import HtmlFormatter

    highlight = HtmlFormatter().get_style_defs(".highlight")
    pages: dict[int, Path] = {}
    for index, source in wanted[:MAX_RENDERED]:
        page = files / f"{index:05d}-{source.stem}.html"
        try:
            body, _ = exporter.from_notebook_node(nbformat.read(source, as_version=4))  # type: ignore[no-untyped-call]
        except Exception as exc:  # a broken output notebook must not cost the whole report
            notes.append(f"{source.name} could not be rendered to HTML: {exc}")
            continue
        atomic_write(
            page,
            _NOTEBOOK_PAGE.format(title=html.escape(source.name), body=body, highlight=highlight),
        )
        pages[index] = page
    return pages


_NOTEBOOK_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 1em 2em; max-width: 70em; }}
pre {{ background: #f6f8fa; padding: .5em; overflow: auto; white-space: pre-wrap; }}
.jp-InputPrompt, .jp-OutputPrompt {{ color: #6e7781; font-family: monospace; font-size: 12px; }}
.jp-Cell {{ margin: .6em 0; }} .jp-OutputArea-output pre {{ background: #fff; }}
.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"] pre {{ background: #ffebe9; }}
.ansi-red-fg {{ color: #cf222e; }} .ansi-green-fg {{ color: #1a7f37; }}
.ansi-cyan-fg {{ color: #0969da; }} .ansi-yellow-fg {{ color: #9a6700; }}
img {{ max-width: 100%; }}
{highlight}
</style></head><body><h1>{title}</h1>
{body}
</body></html>
"""
