"""The report's piece for figure snapshots: expected, got and diff side by side.

A failing figure leaves its images beside the output notebook (see
:mod:`pytest_millrun.snapshots.figures`); this finds them for the report's
failed rows and shows each figure's three images in a row, inline as
``data:`` URLs so the page still opens offline and from anywhere.  Kept apart
from :mod:`pytest_millrun.report.page` so the report's layout can change
without it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from pytest_millrun.results import ResultRow
from pytest_millrun.snapshots.figures import FAILURE_SUFFIXES, failure_folder

#: Figures shown before the rest are only counted (each costs its images' bytes in the page).
MAX_FIGURES = 24
STYLE = (
    "<style>.millrun-figures figure { display: inline-block; margin: 0 1em 1em 0; }"
    " .millrun-figures img { max-width: 22em; border: 1px solid #ccc; }"
    " .millrun-figures .triple { display: flex; flex-wrap: wrap; }</style>"
)


def figure_failures(row: ResultRow, root: Path) -> dict[str, dict[str, Path]]:
    """A row's figures that failed their check: name -> kind (expected, got, diff) -> file.

    Only images written after the output notebook count: those of this run's
    check (a check clears older ones; a run without one leaves them older).
    """
    if not row.output:
        return {}
    output = root / row.output
    folder = failure_folder(output)
    try:
        written = output.stat().st_mtime
        paths = sorted(folder.iterdir())
    except OSError:
        return {}
    found: dict[str, dict[str, Path]] = {}
    for path in paths:
        for suffix in FAILURE_SUFFIXES:
            if path.name.endswith(suffix) and path.stat().st_mtime >= written:
                kind = suffix.split(".")[1]  # expected, got or diff
                found.setdefault(path.name[: -len(suffix)], {})[kind] = path
    return found


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    mimetype = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f'<img src="data:{mimetype};base64,{data}" alt="{html.escape(alt)}">'


def figures_section(rows: Sequence[ResultRow], root: Path) -> str:
    """The HTML of every failed figure's images (empty when there is none)."""
    parts: list[str] = []
    shown = total = 0
    for row in rows:
        for name, images in figure_failures(row, root).items():
            total += 1
            if shown >= MAX_FIGURES:
                continue
            shown += 1
            title = f"{row.notebook} [{row.variation}] figure {name}"
            cells = "".join(
                f"<figure>{_image(images[kind], f'{title} {kind}')}"
                f"<figcaption>{kind}</figcaption></figure>"
                for kind in ("expected", "got", "diff")
                if kind in images
            )
            parts.append(f'<h3>{html.escape(title)}</h3><div class="triple">{cells}</div>')
    if not parts:
        return ""
    more = f"<p>... and {total - shown} more failed figures.</p>" if total > shown else ""
    return (
        f'{STYLE}<section class="millrun-figures"><h2>Figures that differ from their snapshots'
        f"</h2>{''.join(parts)}{more}</section>"
    )
