"""The executed notebooks of failures, rendered to HTML pages beside the report.

A reader needs no Jupyter to see what failed.  The pages are nbconvert's ``basic`` template
(the notebook alone: no script, no font or MathJax from a CDN) inside a page of our own with a
strict Content-Security-Policy.  Two things a run must not suffer from its report:

- nbconvert warns about outputs it cannot represent (a scrapbook scrap's mimetype); those
  warnings are caught here, never shown in the run's own warnings summary;
- a cell that printed 50 MB must not make a 50 MB page that a browser takes seconds to open:
  each output is capped (:data:`OUTPUT_CHARS`) and the page as a whole (:data:`PAGE_CHARS`),
  what is cut named in a note that links to the ``.ipynb``, which keeps everything.
"""

from __future__ import annotations

import copy
import html
import json
import os
import urllib.parse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_millrun.core.files import atomic_write
from pytest_millrun.results import ResultRow

#: failed notebooks rendered to HTML at most; the rest keep their .ipynb link
MAX_RENDERED = 50
#: characters one output may put in a rendered page (head and tail of a longer text kept)
OUTPUT_CHARS = 200_000
#: characters all the outputs of one rendered page may take together
PAGE_CHARS = 1_200_000
#: an output smaller than this is always kept, whatever the page's budget
SMALL_CHARS = 2_000
EXTRA = "pip install 'pytest-millrun[report]'"


def render_failed_notebooks(
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
        from pygments.formatters import HtmlFormatter
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
    exporter = HTMLExporter(template_name="basic")  # type: ignore[no-untyped-call]
    highlight = HtmlFormatter().get_style_defs(".highlight")
    pages: dict[int, Path] = {}
    for index, source in wanted[:MAX_RENDERED]:
        page = files / f"{index:05d}-{source.stem}.html"
        link = urllib.parse.quote(Path(os.path.relpath(source, files)).as_posix())
        try:
            notebook = nbformat.read(source, as_version=4)  # type: ignore[no-untyped-call]
            cut = cap_outputs(notebook, link, source.name)
            # e.g. "Your element with mimetype(s) ... is not able to be represented": the
            # report's business, not the run's (pytest would list it in its summary)
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                body, _ = exporter.from_notebook_node(notebook)
        except Exception as exc:  # a broken output notebook must not cost the whole report
            notes.append(f"{source.name} could not be rendered to HTML: {exc}")
            continue
        banner = (
            f'<p class="cut">{cut} long outputs are shortened here; <a href="{html.escape(link)}">'
            f"{html.escape(source.name)}</a> holds them whole.</p>"
            if cut
            else ""
        )
        atomic_write(
            page,
            _NOTEBOOK_PAGE.format(
                title=html.escape(source.name), body=body, highlight=highlight, banner=banner
            ),
        )
        pages[index] = page
    return pages


def cap_outputs(notebook: Any, link: str, name: str) -> int:
    """Shorten the long outputs of ``notebook`` in place; return how many were shortened."""
    budget = PAGE_CHARS
    cut = 0
    for cell in notebook.get("cells", ()):
        outputs = cell.get("outputs")
        if not isinstance(outputs, list):
            continue
        kept: list[Any] = []
        for output in outputs:
            size = _size(output)
            limit = min(OUTPUT_CHARS, max(budget, SMALL_CHARS))
            if size <= limit:
                budget -= size
                kept.append(output)
                continue
            cut += 1
            shortened = _shorten(output, limit // 2)
            if shortened is not None:
                budget -= _size(shortened)
                kept.append(shortened)
            kept.append(_note(size, link, name))
        cell["outputs"] = kept
    return cut


def _size(output: Any) -> int:
    """About how many characters an output puts in the page."""
    if output.get("output_type") == "stream":
        return len(_joined(output.get("text", "")))
    if output.get("output_type") == "error":
        return sum(len(line) for line in output.get("traceback", ()))
    return sum(len(_joined(v)) for v in (output.get("data") or {}).values())


def _joined(value: Any) -> str:
    if isinstance(value, list):
        return "".join(map(str, value))
    return value if isinstance(value, str) else json.dumps(value)


def _shorten(output: Any, chars: int) -> Any:
    """The head and tail of a long text output; None for a rich one (it is only named)."""
    kind = output.get("output_type")
    if kind == "stream":
        text = _joined(output.get("text", ""))
        shortened = copy.copy(output)
        shortened["text"] = f"{text[: chars * 3 // 4]}\n…\n{text[-(chars // 4) :]}"
        return shortened
    if kind == "error":
        lines = [line[: chars // 40] for line in output.get("traceback", ())]
        shortened = copy.copy(output)
        shortened["traceback"] = [*lines[:20], "…", *lines[-20:]] if len(lines) > 40 else lines
        return shortened
    return None


def _note(size: int, link: str, name: str) -> dict[str, Any]:
    text = (
        f"Output shortened in this page: it holds {_megabytes(size)}; "
        f'<a href="{html.escape(link)}">{html.escape(name)}</a> has it whole.'
    )
    return {
        "output_type": "display_data",
        "metadata": {},
        "data": {"text/html": f'<p class="cut">{text}</p>', "text/plain": text},
    }


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size:,} characters"


_NOTEBOOK_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 1em 2em; max-width: 70em; }}
pre {{ background: #f6f8fa; padding: .5em; overflow: auto; white-space: pre-wrap;
  overflow-wrap: anywhere; }}
.jp-InputPrompt, .jp-OutputPrompt {{ color: #6e7781; font-family: monospace; font-size: 12px; }}
.jp-Cell {{ margin: .6em 0; }} .jp-OutputArea-output pre {{ background: #fff; }}
.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"] pre {{ background: #ffebe9; }}
.ansi-red-fg {{ color: #cf222e; }} .ansi-green-fg {{ color: #1a7f37; }}
.ansi-cyan-fg {{ color: #0969da; }} .ansi-yellow-fg {{ color: #9a6700; }}
.cut {{ background: #fff8c5; border: 1px solid #d4a72c; padding: .3em .6em; border-radius: 4px; }}
img {{ max-width: 100%; }}
{highlight}
</style></head><body><h1>{title}</h1>
{banner}
{body}
</body></html>
"""
