"""Figure snapshots without kernels: naming, comparison, images of a failure, baselines."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_millrun.snapshots.figures import (
    Figure,
    check_figures,
    compare_png,
    figures_of,
    update_baselines,
)
from pytest_millrun.snapshots.store import Entry, SnapshotFileError, read_file, render_file

Image = pytest.importorskip("PIL.Image")


def png(size: tuple[int, int] = (4, 3), colour: Any = (255, 255, 255), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="png")
    return buffer.getvalue()


def with_pixel(data: bytes, xy: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    image = Image.open(io.BytesIO(data))
    image.putpixel(xy, colour)
    buffer = io.BytesIO()
    image.save(buffer, format="png")
    return buffer.getvalue()


def output(data: bytes, **metadata: Any) -> dict[str, Any]:
    encoded = base64.b64encode(data).decode()
    return {"output_type": "display_data", "data": {"image/png": encoded}, "metadata": metadata}


def cell(*outputs: dict[str, Any], tags: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "outputs": list(outputs)}


def test_figures_are_named_by_glue_name_tag_or_position_stably_and_uniquely() -> None:
    a, b = png(colour=(0, 0, 0)), png()
    notebook = {
        "cells": [
            cell(tags=("parameters",)),
            cell(output(a), tags=("injected-parameters",)),  # papermill's: not counted
            {"cell_type": "markdown", "metadata": {}, "source": "text"},
            cell({"output_type": "stream", "text": "hi"}, output(a), output(b)),
            cell(output(a), output(b), tags=("figure=loss curve",)),
            cell(output(a, scrapbook={"name": "fit"}), output(b, scrapbook={"name": "fit"})),
            cell(output(a), tags=("figure=cell3-1",)),
        ]
    }
    figures = figures_of(notebook)
    assert [f.name for f in figures] == [
        "cell3-1",
        "cell3-2",
        "loss_curve_6246f6e5",  # made file-safe, with a hash of what was dropped
        "loss_curve_6246f6e5-2",
        "fit",
        "fit-2",
        "cell3-1-2",  # a tag that repeats a name is told apart too
    ]
    assert [f.data for f in figures[:2]] == [a, b]
    lines = dict(output(a))
    lines["data"] = {
        "image/png": [base64.b64encode(a).decode()[:10], base64.b64encode(a).decode()[10:]]
    }
    assert figures_of({"cells": [cell(lines)]}) == [Figure("cell1-1", a)]


def test_identical_bytes_pass_then_size_then_rms_within_the_tolerance() -> None:
    white = png()
    assert compare_png(white, white, 0) == (True, 0.0, "")
    assert compare_png(white, png((5, 3)), 2) == (False, None, "size 4x3 -> 5x3")
    assert compare_png(white, png(mode="RGBA", colour=(255, 255, 255, 255)), 0)[:2] == (True, 0.0)
    dot = with_pixel(white, (0, 0), (0, 0, 0))  # one pixel of 12 black: RMS 255/sqrt(12)
    passes, rms, _ = compare_png(white, dot, 2)
    assert not passes
    assert rms == pytest.approx(255 / 12**0.5)
    assert compare_png(white, dot, 74) == (True, rms, "")
    assert compare_png(white, b"not a png", 2)[:2] == (False, None)


def test_a_failing_figure_leaves_expected_got_and_diff_images_until_it_passes(
    tmp_path: Path,
) -> None:
    baselines, failures = tmp_path / "snaps", tmp_path / "out" / "nb.figures"
    white = png()
    update_baselines(baselines, {"curve": ("png", base64.b64encode(white).decode())}, None)
    (baselines / "bars.png").write_bytes(white)
    (baselines / "gone.png").write_bytes(white)
    got = [Figure("curve", with_pixel(white, (1, 1), (0, 0, 0))), Figure("new", white)]
    results = check_figures(["curve", "gone"], baselines, got, 2.0, {}, failures)
    assert [(r.name, r.state) for r in results] == [
        ("curve", "differs"),
        ("new", "missing"),
        ("gone", "gone"),
    ]
    assert results[0].describe().startswith("curve: RMS 73.6 > tolerance 2; see ")
    assert results[0].describe().endswith("nb.figures/curve.{expected,got,diff}.png")
    assert sorted(p.name for p in failures.iterdir()) == [
        "curve.diff.png",
        "curve.expected.png",
        "curve.got.png",
        "gone.expected.png",
        "new.got.png",
    ]
    passing = check_figures(["curve"], baselines, got[:1], 2.0, {"curve": 80}, failures)
    assert [r.state for r in passing] == ["matches"]
    assert not failures.exists()  # cleared: no stale images beside a passing output


def test_an_update_writes_only_what_changed_and_removes_the_figures_gone(tmp_path: Path) -> None:
    folder = tmp_path / "nb.figures" / "oslo"
    a = ("png", base64.b64encode(b"A").decode())
    assert update_baselines(folder, {"a": a, "b": None}, None) == (1, 0)
    (folder / "b.png").write_bytes(b"B")
    (folder / "keep.txt").write_text("not ours")
    assert update_baselines(folder, {"b": None}, ["a", "b"]) == (0, 1)
    assert sorted(p.name for p in folder.iterdir()) == ["b.png", "keep.txt"]
    assert update_baselines(folder, {"b": ("svg", base64.b64encode(b"<svg/>").decode())}, ["b"])
    assert sorted(p.name for p in folder.iterdir()) == ["b.svg", "keep.txt"]  # its kind changed


SVG = (
    '<svg xmlns:xlink="http://www.w3.org/1999/xlink"><metadata><dc:date>{date}</dc:date>'
    '</metadata><g id="{id}"><path d="{path}" clip-path="url(#{id})"/>'
    '<use xlink:href="#{id}"/></g></svg>'
)


def test_svg_figures_compare_as_text_without_ids_and_dates(tmp_path: Path) -> None:
    drawn = SVG.format(date="2026-01-01", id="p1a2b", path="M 0 0 L 1 1")
    again = SVG.format(date="2026-12-03", id="p9f8e", path="M 0 0 L 1 1")
    moved = SVG.format(date="2026-12-03", id="p9f8e", path="M 0 0 L 1 2")
    svg_output = {"output_type": "display_data", "data": {"image/svg+xml": drawn}, "metadata": {}}
    both = {"output_type": "display_data", "data": {"image/svg+xml": drawn,
            "image/png": base64.b64encode(png()).decode()}, "metadata": {}}  # fmt: skip
    figures = figures_of({"cells": [cell(svg_output, both)]})
    assert [(f.name, f.kind, f.file) for f in figures] == [
        ("cell1-1", "svg", "cell1-1.svg"),
        ("cell1-2", "png", "cell1-2.png"),  # a PNG, where there is one, is what counts
    ]
    baselines, failures = tmp_path / "snaps", tmp_path / "out.figures"
    baselines.mkdir()
    (baselines / "cell1-1.svg").write_text(drawn)
    same = check_figures(["cell1-1"], baselines, [Figure("cell1-1", again.encode(), "svg")],
                         2.0, {}, failures)  # fmt: skip
    assert [r.state for r in same] == ["matches"]
    differs = check_figures(["cell1-1"], baselines, [Figure("cell1-1", moved.encode(), "svg")],
                            2.0, {}, failures)  # fmt: skip
    assert differs[0].describe().startswith("cell1-1: SVG text differs (ids and metadata aside)")
    assert differs[0].describe().endswith("out.figures/cell1-1.{expected,got}.svg")


def test_snapshot_files_keep_figure_names_and_tolerances_and_refuse_bad_ones(
    tmp_path: Path,
) -> None:
    entry = Entry({"x": 1}, figures=("cell2-1", "loss"), figure_tolerances={"loss": 5.0})
    path = tmp_path / "nb.json"
    path.write_text(render_file({"a": entry}))
    assert json.loads(path.read_text())["a"] == {
        "figure_tolerances": {"loss": 5.0},
        "figures": ["cell2-1", "loss"],
        "values": {"x": 1},
    }
    assert read_file(path)["a"] == entry
    for bad, message in (
        ({"figures": "loss"}, "should be a list of names"),
        ({"figure_tolerances": [5]}, "figure tolerances of 'a' should be like"),
        ({"figure_tolerances": {"loss": -1}}, "a figure loss tolerance must be a number >= 0"),
    ):
        path.write_text(json.dumps({"a": {"values": {}, **bad}}))
        with pytest.raises(SnapshotFileError, match=message):
            read_file(path)


def test_the_report_shows_a_failed_figures_images_side_by_side_inline(tmp_path: Path) -> None:
    from pytest_millrun.report.figure_panels import figures_section
    from pytest_millrun.results import ResultRow

    output = tmp_path / "out" / "oslo-plot.ipynb"
    output.parent.mkdir()
    output.write_text("{}")
    folder = tmp_path / "out" / "oslo-plot.figures"
    folder.mkdir()
    for kind in ("expected", "got", "diff"):
        (folder / f"a<b.{kind}.png").write_bytes(png())
    row = ResultRow("nbs/plot.ipynb", "oslo", "failed", output="out/oslo-plot.ipynb")
    page = figures_section([row, ResultRow("nbs/plot.ipynb", "rome", "passed")], tmp_path)
    assert "<h3>nbs/plot.ipynb [oslo] figure a&lt;b</h3>" in page
    assert page.count('<img src="data:image/png;base64,') == 3
    assert page.index("expected</figcaption>") < page.index("got</figcaption>")
    assert page.index("got</figcaption>") < page.index("diff</figcaption>")
    os.utime(output, (output.stat().st_mtime + 10,) * 2)  # rewritten by a later run
    assert figures_section([row], tmp_path) == ""  # its images are an earlier check's
