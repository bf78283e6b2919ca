"""The report's charts: each recorded number against the sweep's parameters, as a sweep reads.

A sweep over a grid reads as lines: the value against the numeric parameter that takes the most
values, one line per value of the next parameter that crosses it, small multiples (one panel
per combination) for the ones after.  The shape is worked out per notebook, because a suite
gives each notebook its own variations; notebooks that vary only one parameter share a panel,
one line per notebook.  A parameter that moves together with the x parameter (the edge cases
of a suite, the rows of a dict-of-lists file) does not split lines: each of its groups would
hold one point.  Failed and interrupted variations are marked apart, never joined into a line.

:func:`plan_charts` is the pure part (rows in, panels and series out, tested without
matplotlib); :func:`draw_charts` turns the plan into inline SVG with matplotlib, imported
only here and only when there is something to draw.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_millrun.core.values import dumps
from pytest_millrun.results import ResultRow

#: above this many points a panel's lines and markers are drawn as one embedded image
RASTER_POINTS = 2000
#: panels per recorded value at most; the rest are named in a note
MAX_PANELS = 12
#: legend entries per panel at most (more lines are coloured along a colour map)
MAX_LEGEND = 8
#: a line with more points than this is drawn without markers
MARKER_POINTS = 40
MARKERS = "osD^vPX<>*"
DASHES = ("-", "--", "-.", ":")
EXTRA = "pip install 'pytest-millrun[report]'"
_MISSING = ("missing",)


@dataclass
class Series:
    """One line: the passed variations that share every parameter but x."""

    label: str
    points: list[tuple[float, float]] = field(default_factory=list)
    #: where the line comes in its panel: by the value of the parameter that names it
    order: Any = None


@dataclass
class Panel:
    """One set of axes: ``value`` against ``x``, a line per series."""

    title: str
    x: str
    series_by: str  # the parameter that splits lines, or "notebook"
    #: points only, not joined: other parameters change along x too
    scattered: bool = False
    #: the lines, by the value (or notebook) that names them
    series: dict[Any, Series] = field(default_factory=dict)
    #: failed or interrupted variations: (x, value or None, status)
    marks: list[tuple[float, float | None, str]] = field(default_factory=list)

    def coinciding(self) -> bool:
        """Whether two lines share a point (one would hide the other)."""
        seen: set[tuple[float, float]] = set()
        for series in self.series.values():
            mine = {(round(x, 12), round(y, 12)) for x, y in series.points}
            if mine & seen:
                return True
            seen |= mine
        return False


@dataclass
class Chart:
    """The panels of one recorded value."""

    value: str
    panels: list[Panel]
    omitted: int = 0


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def numeric_values(rows: Sequence[ResultRow]) -> list[str]:
    """Recorded values that are numbers wherever they are set (None allowed), one finite."""
    names = dict.fromkeys(name for row in rows for name in row.values)
    return [
        name
        for name in names
        if all(is_number(v) or v is None for v in (r.values.get(name) for r in rows))
        and any(finite(r.values.get(name)) for r in rows)
    ]


def plan_charts(rows: Sequence[ResultRow]) -> tuple[list[Chart], str]:
    """The charts of ``rows``, and why there are none or some values have none (a sentence)."""
    values = numeric_values(rows)
    if not values:
        return [], "no recorded value is a number."
    short = _short_names(rows)
    by_notebook: dict[str, list[ResultRow]] = {}
    for row in rows:
        by_notebook.setdefault(row.notebook, []).append(row)
    shapes = {notebook: sweep_shape(mine) for notebook, mine in by_notebook.items()}
    charts: list[Chart] = []
    few: list[str] = []
    for value in values:
        points = sum(1 for r in rows if r.status == "passed" and finite(r.values.get(value)))
        if points < 2:
            few.append(value)
            continue
        panels = _panels(by_notebook, shapes, value, short)
        if panels:
            charts.append(Chart(value, panels[:MAX_PANELS], max(0, len(panels) - MAX_PANELS)))
    if charts:
        left = f"no chart for {', '.join(few)}: fewer than two variations recorded a number."
        return charts, left if few else ""
    if few == values:
        names = ", ".join(few)
        return [], (
            f"fewer than two variations recorded a number for {names}; a chart needs at "
            f"least two points."
        )
    return [], "no numeric parameter varies within a notebook."


def _panels(
    by_notebook: Mapping[str, Sequence[ResultRow]],
    shapes: Mapping[str, Shape | None],
    value: str,
    short: Mapping[str, str],
) -> list[Panel]:
    panels: dict[tuple[Any, ...], Panel] = {}
    texts: dict[Any, str] = {}

    def text(item: Any) -> str:
        key = _key(item)
        if key not in texts:
            texts[key] = _text(item)
        return texts[key]

    for notebook, mine in by_notebook.items():
        if not any(finite(r.values.get(value)) for r in mine):
            continue
        shape = shapes[notebook]
        if shape is None:
            continue
        x = shape.x
        for row in mine:
            if not finite(row.params.get(x)):
                continue
            if shape.series is not None:
                combo = tuple((name, text(row.params.get(name))) for name in shape.panels)
                key: tuple[Any, ...] = (notebook, x, shape.series, combo)
                title = " · ".join([short[notebook], *(f"{n}={t}" for n, t in combo)])
                series_by = shape.series
                line = f"{series_by}={text(row.params.get(series_by))}"
                order = _order(row.params.get(series_by))
                ident: Any = _key(row.params.get(series_by))
            else:
                key, series_by, line = (None, x, shape.scattered), "notebook", short[notebook]
                order, ident = (1, ""), notebook  # notebooks in the order they ran
                title = "each notebook" + (
                    " (other parameters change with x)" if shape.scattered else ""
                )
            panel = panels.setdefault(key, Panel(title, x, series_by, scattered=shape.scattered))
            y: Any = row.values.get(value)
            if row.status == "passed" and finite(y):
                point = (float(row.params[x]), float(y))
                panel.series.setdefault(ident, Series(line, order=order)).points.append(point)
            elif row.status in ("failed", "interrupted"):
                panel.marks.append(
                    (float(row.params[x]), float(y) if finite(y) else None, row.status)
                )
    # a notebook's own grid first, the panels notebooks share after
    result = sorted(
        (p for p in panels.values() if p.series), key=lambda p: p.series_by == "notebook"
    )
    for panel in result:
        # stable: lines of equal order stay as they were seen
        panel.series = dict(sorted(panel.series.items(), key=lambda item: item[1].order))
        for series in panel.series.values():
            series.points.sort()
    return result


def _order(value: Any) -> tuple[int, Any]:
    """Numbers before text, each in its own order."""
    return (0, value) if finite(value) else (1, _text(value))


@dataclass(frozen=True)
class Shape:
    """How one notebook's variations read as lines."""

    x: str
    #: the parameter with a line per value, or None (one line for the notebook)
    series: str | None = None
    #: the parameters with a panel per combination of values
    panels: tuple[str, ...] = ()
    #: other parameters change along x too (a zipped sweep, a suite's edge cases): no line
    scattered: bool = False


def sweep_shape(rows: Sequence[ResultRow]) -> Shape | None:
    """One notebook's sweep: its x parameter and the parameters that split its lines.

    x is the numeric parameter with the most distinct values (the first of equals).  A line
    holds the variations that agree on every other varied parameter; if no line would hold
    two points, the others move with x and the notebook is one series of points.  Otherwise
    the other parameter with the most values names the lines, and each one after it that
    is not fixed by those before it makes a panel per value.
    """
    distinct: dict[str, set[Any]] = {}
    numeric: dict[str, bool] = {}
    for row in rows:
        for name, item in row.params.items():
            distinct.setdefault(name, set()).add(_key(item))
            numeric[name] = numeric.get(name, True) and finite(item)
    for name, texts in distinct.items():  # a row without the parameter is a value of its own
        if any(name not in r.params for r in rows):
            texts.add(_MISSING)
            numeric[name] = False
    varied = [name for name, texts in distinct.items() if len(texts) >= 2]
    candidates = [name for name in varied if numeric[name]]
    if not candidates:
        return None
    x = max(candidates, key=lambda n: (len(distinct[n]), -varied.index(n)))
    others = sorted(
        (n for n in varied if n != x), key=lambda n: (-len(distinct[n]), varied.index(n))
    )
    if not others:
        return Shape(x)
    if all(len(xs) < 2 for xs in _groups(rows, others, x).values()):
        return Shape(x, scattered=True)
    chosen = [others[0]]
    for name in others[1:]:
        # a parameter fixed by the chosen ones (it moves with them) splits nothing more
        if any(len(v) > 1 for v in _groups(rows, chosen, name).values()):
            chosen.append(name)
    return Shape(x, chosen[0], tuple(chosen[1:]))


def _groups(rows: Sequence[ResultRow], by: Sequence[str], of: str) -> dict[Any, set[Any]]:
    """The distinct values of parameter ``of`` among rows that agree on the ``by`` ones."""
    groups: dict[Any, set[Any]] = {}
    for row in rows:
        key = tuple(_key(row.params.get(n, _MISSING)) for n in by)
        groups.setdefault(key, set()).add(_key(row.params.get(of, _MISSING)))
    return groups


def _text(value: Any) -> str:
    """A value as a legend or a title says it (a float to six significant digits)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        return dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _key(value: Any) -> Any:
    """A hashable stand-in for a parameter's value: cheap for the plain ones (most of them)."""
    if value is None or isinstance(value, (str, int, bool)):
        return (type(value), value)
    if isinstance(value, float) and math.isfinite(value):
        return (float, value)
    return (str, _text(value))


def _short_names(rows: Sequence[ResultRow]) -> dict[str, str]:
    """Notebook paths without the folder they all share, for legends and titles."""
    names = list(dict.fromkeys(r.notebook for r in rows))
    folders = [os.path.dirname(n) for n in names]
    common = os.path.commonpath(folders) if all(folders) else ""
    return {n: os.path.relpath(n, common) if common else n for n in names}


def draw_charts(rows: Sequence[ResultRow], notes: list[str]) -> str:
    """The charts as HTML (figures of inline SVG), or a paragraph saying why there are none."""
    charts, why = plan_charts(rows)
    if not charts:
        return f'<p class="no-charts">No charts: {html.escape(why)}</p>'
    left = f'<p class="no-charts">{html.escape(why[0].upper() + why[1:])}</p>' if why else ""
    try:
        from matplotlib import rc_context
        from matplotlib.backends.backend_svg import FigureCanvasSVG
        from matplotlib.figure import Figure
    except ImportError:
        notes.append(f"Charts need matplotlib, which is not installed: {EXTRA}.")
        return "<p>No charts: matplotlib is not installed.</p>"
    figures = []
    for number, chart in enumerate(charts):
        count = len(chart.panels)
        columns = min(count, 3)
        lines = math.ceil(count / columns)
        offset = False
        # a salt per figure: ids inside one page's SVGs must not collide
        with rc_context({"svg.hashsalt": f"m{number}", "svg.fonttype": "none", "font.size": 9}):
            width = 4.6 * columns if columns > 1 else 6.4
            figure = Figure(figsize=(width, 3.1 * lines + 0.2), layout="constrained")
            FigureCanvasSVG(figure)
            axes = list(figure.subplots(lines, columns, squeeze=False).flat)
            for ax, panel in zip(axes, chart.panels, strict=False):
                offset = _draw_panel(ax, panel, chart.value) or offset
            for ax in axes[count:]:
                ax.set_visible(False)
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", dpi=72)
        # the page needs the drawing alone: no XML prolog, no RDF metadata (date, tool URLs)
        svg = re.sub(r"<metadata>.*?</metadata>", "", buffer.getvalue(), count=1, flags=re.S)
        svg = svg[svg.index("<svg") :]
        caption = f"<code>{html.escape(chart.value)}</code> against the sweep's parameters"
        if offset:
            caption += "; lines that share points are drawn slightly apart along x"
        if chart.omitted:
            caption += f"; {chart.omitted} more panels not drawn (see the table)"
        figures.append(
            f'<figure id="chart-{html.escape(chart.value, quote=True)}"><figcaption>{caption}'
            f"</figcaption>{svg}</figure>"
        )
    return "".join(figures) + left


def _draw_panel(ax: Any, panel: Panel, value: str) -> bool:
    """Draw one panel; return whether lines were offset to keep coinciding ones visible."""
    series = list(panel.series.values())
    xs = [x for s in series for x, _ in s.points] + [x for x, _, _ in panel.marks]
    span = (max(xs) - min(xs)) or abs(xs[0]) or 1.0
    offset = len(series) > 1 and panel.coinciding()
    step = 0.012 * span if offset else 0.0
    raster = sum(len(s.points) for s in series) > RASTER_POINTS
    many = len(series) > MAX_LEGEND
    cmap = None
    if many:
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
    for k, line in enumerate(series):
        shift = (k - (len(series) - 1) / 2) * step
        color = cmap(k / (len(series) - 1)) if cmap is not None else f"C{k % 10}"
        show = not many or k in (0, len(series) - 1)
        ax.plot(
            [x + shift for x, _ in line.points],
            [y for _, y in line.points],
            marker=MARKERS[k % len(MARKERS)] if len(line.points) <= MARKER_POINTS else None,
            ls="none" if panel.scattered else DASHES[k % len(DASHES)] if offset else "-",
            ms=5,
            mfc="none",
            lw=1.3,
            alpha=0.9,
            color=color,
            label=line.label if show else "_",
            rasterized=raster,
        )
    for status, marker, color in (("failed", "x", "#cf222e"), ("interrupted", "+", "#bc4c00")):
        valued = [(x, y) for x, y, s in panel.marks if s == status and y is not None]
        bare = [x for x, y, s in panel.marks if s == status and y is None]
        label = status
        if valued:
            ax.plot(*zip(*valued, strict=True), marker, ls="none", ms=8, mew=1.8, color=color,
                    label=label)  # fmt: skip
            label = "_"
        if bare:
            # no value to place it by: on the x axis, where the variation ran
            ax.plot(bare, [0.03] * len(bare), marker, ls="none", ms=8, mew=1.8, color=color,
                    transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"{status} (no value)" if label == status else "_")  # fmt: skip
    ax.locator_params(nbins=5)
    ax.set_xlabel(panel.x)
    ax.set_ylabel(value)
    ax.set_title(panel.title, fontsize=9, loc="left")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if many:
        labels[1] = f"… {len(series)} lines …\n{labels[1]}"
    if handles:
        ax.legend(handles, labels, fontsize=8, frameon=False, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))  # fmt: skip
    return offset
