"""The HTML report's page, built from result rows alone: no kernel, no browser."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import millrun
from pytest_millrun.report.charts import numeric_values, plan_charts, sweep_shape
from pytest_millrun.report.page import check_report_path, render_page, write_report
from pytest_millrun.report.rendered import PAGE_CHARS
from pytest_millrun.results import ResultRow, ResultsPathError


def rows() -> list[ResultRow]:
    return [
        ResultRow("nbs/a.ipynb", "0", "passed", 1.5, ".millrun/nbs/0-a.ipynb", "",
                  {"x": 1, "name": "p"}, {"rmse": 0.5, "label": "fast"}),
        ResultRow("nbs/a.ipynb", "1", "failed", 0.5, ".millrun/nbs/1-a.ipynb",
                  "ValueError: bad </script> in cell [2]", {"x": 2, "name": "q"}, {},
                  source="raise ValueError('bad')", traceback="ValueError: bad </script>"),
        ResultRow("nbs/b.ipynb", "0", "skipped", None, "", "", {"x": 1, "name": "p"},
                  {"rmse": float("nan")}),
        ResultRow("nbs/b.ipynb", "1", "passed", 2.0, "", "", {"x": 3, "name": "r"},
                  {"rmse": 0.25, "label": "slow"}),
    ]  # fmt: skip


def data_of(page: str) -> dict[str, Any]:
    blob = re.search(r'id="millrun-data">(.*?)</script>', page, re.S)
    assert blob is not None
    loaded: dict[str, Any] = json.loads(blob.group(1))
    return loaded


def test_the_page_holds_a_column_per_parameter_and_value_varied_parameters_first(
    tmp_path: Path,
) -> None:
    table = [ResultRow(**{**vars(r), "params": {"seed": 7, **r.params}}) for r in rows()]
    page = render_page(table, folder=tmp_path / "out", root=tmp_path, command="pytest -n 2")
    data = data_of(page)
    assert [(c["key"], c["group"], c["numeric"]) for c in data["columns"]] == [
        ("index", "run", True), ("status", "run", False), ("notebook", "run", False),
        ("variation", "run", False), ("duration", "run", True),
        ("p.x", "varied", True), ("p.name", "varied", False), ("p.seed", "constant", True),
        ("v.rmse", "value", True), ("v.label", "value", False), ("error", "error", False),
    ]  # fmt: skip
    assert [r["cells"] for r in data["rows"]] == [
        [1, "passed", "nbs/a.ipynb", "0", 1.5, 1, "p", 7, 0.5, "fast", ""],
        [2, "failed", "nbs/a.ipynb", "1", 0.5, 2, "q", 7, None, None,
         "ValueError: bad </script> in cell [2]"],
        [3, "skipped", "nbs/b.ipynb", "0", None, 1, "p", 7, "nan", None, ""],
        [4, "passed", "nbs/b.ipynb", "1", 2.0, 3, "r", 7, 0.25, "slow", ""],
    ]  # fmt: skip
    assert data["folder"] == "nbs/"
    assert data["rows"][0]["links"] == [["ipynb", "../.millrun/nbs/0-a.ipynb"]]
    assert data["rows"][1]["detail"] == [
        {"title": "Cell source", "text": "raise ValueError('bad')", "kind": "source"},
        {"title": "Traceback", "text": "ValueError: bad </script>", "kind": "traceback"},
    ]
    # the only </script> closing the blob is the real one
    assert page.count("</script>") == 2
    assert "✓ 2 passed" in page
    assert "✗ 1 failed" in page
    assert "○ 1 skipped" in page
    assert (
        '<code><span class="w">pytest</span> <span class="w">-n</span> <span class="w">2</span>'
        in page
    )
    assert "median duration</dt><dd>1.500 s" in page
    assert "variations</dt><dd>4 in 2 notebooks" in page


def test_the_grid_links_each_notebook_and_variation_to_its_row(tmp_path: Path) -> None:
    page = render_page(rows(), folder=tmp_path, root=tmp_path)
    grid = page[page.index('<table class="grid">') : page.index("</table>")]
    assert re.findall(r'href="#r(\d)"[^>]*>(.)</a>', grid) == [
        ("0", "✓"), ("1", "✗"), ("2", "○"), ("3", "✓"),
    ]  # fmt: skip
    assert 'title="nbs/a.ipynb [1]: failed"' in grid


def grid(notebook: str = "nbs/loan.ipynb") -> list[ResultRow]:
    """A grid of 3 rates x 2 terms for one principal; rate 0.09 over 30 years fails."""
    table = []
    for rate in (0.03, 0.06, 0.09):
        for years in (15, 30):
            failed = (rate, years) == (0.09, 30)
            table.append(
                ResultRow(notebook, f"{rate}-{years}", "failed" if failed else "passed", 1.0,
                          params={"principal": 1000, "rate": rate, "years": years},
                          values={} if failed else {"payment": 1000 * rate + years})
            )  # fmt: skip
    return table


def test_a_grid_draws_a_line_per_value_of_the_second_parameter_failures_apart(
    tmp_path: Path,
) -> None:
    charts, why = plan_charts(grid())
    assert why == ""
    ((panel,),) = [c.panels for c in charts]
    assert (panel.x, panel.series_by, panel.scattered) == ("rate", "years", False)
    assert {s.label: s.points for s in panel.series.values()} == {
        "years=15": [(0.03, 45.0), (0.06, 75.0), (0.09, 105.0)],
        "years=30": [(0.03, 60.0), (0.06, 90.0)],
    }
    assert panel.marks == [(0.09, None, "failed")]
    page = render_page(grid(), folder=tmp_path, root=tmp_path)
    chart = page[page.index('<figure id="chart-payment">') :]
    for text in (">years=15<", ">years=30<", ">failed (no value)<", ">rate<", ">payment<"):
        assert text in chart
    assert "http://" not in chart.split("<svg", 1)[1].replace("http://www.w3.org/", "")


def test_a_third_parameter_makes_panels_and_one_that_moves_with_x_splits_nothing() -> None:
    big = [ResultRow(**{**vars(r), "params": {**r.params, "principal": 2000}}) for r in grid()]
    charts, _ = plan_charts(grid() + [ResultRow(**{**vars(r), "variation": "b" + r.variation})
                                      for r in big])  # fmt: skip
    # rates across, a line per principal (as many values as the terms, and named first), a
    # panel per term
    assert [(p.title, [s.label for s in p.series.values()]) for p in charts[0].panels] == [
        ("loan.ipynb · years=15", ["principal=1000", "principal=2000"]),
        ("loan.ipynb · years=30", ["principal=1000", "principal=2000"]),
    ]
    # a dict-of-lists sweep: the term grows with the rate, so each term holds one point
    zipped = [
        ResultRow("z.ipynb", str(i), "passed", 1.0, params={"rate": r, "years": y},
                  values={"payment": r * y})
        for i, (r, y) in enumerate([(0.01, 10), (0.02, 20), (0.03, 30)])
    ]  # fmt: skip
    assert sweep_shape(zipped).scattered  # type: ignore[union-attr]
    # one varied parameter: notebooks share a panel, a line each, apart where they coincide
    one = [
        ResultRow(nb, str(x), "passed", 1.0, params={"x": x}, values={"y": x * 2})
        for nb in ("nbs/a.ipynb", "nbs/b.ipynb") for x in (1, 2, 3)
    ]  # fmt: skip
    ((panel,),) = [c.panels for c in plan_charts(one)[0]]
    labels = [s.label for s in panel.series.values()]
    assert (panel.series_by, labels) == ("notebook", ["a.ipynb", "b.ipynb"])
    assert panel.coinciding()


def test_charts_say_why_there_are_none() -> None:
    assert numeric_values(rows()) == ["rmse"]  # label is text
    text = [
        ResultRow("a.ipynb", str(i), "passed", 1.0, params={"x": i}, values={"v": f"t{i}"})
        for i in range(3)
    ]
    assert plan_charts(text) == ([], "no recorded value is a number.")
    one = [
        ResultRow("a.ipynb", "0", "passed", 1.0, params={"x": 0}, values={"v": 1.5}),
        ResultRow("a.ipynb", "1", "failed", 1.0, params={"x": 1}),
    ]
    assert plan_charts(one)[1] == (
        "fewer than two variations recorded a number for v; a chart needs at least two points."
    )
    drawn = [
        *one,
        *(ResultRow("a.ipynb", str(x), "passed", 1.0, params={"x": x}, values={"w": x})
          for x in (2, 3)),
    ]  # fmt: skip
    charts, why = plan_charts(drawn)
    assert [c.value for c in charts] == ["w"]
    assert why == "no chart for v: fewer than two variations recorded a number."
    flat = [ResultRow("a.ipynb", str(i), "passed", 1.0, params={"x": 1}, values={"v": i})
            for i in range(2)]  # fmt: skip
    assert plan_charts(flat)[1] == "no numeric parameter varies within a notebook."


def test_without_matplotlib_the_page_says_how_to_get_charts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = render_page(rows(), folder=tmp_path, root=tmp_path)
    assert "<svg" not in page
    assert "pytest-millrun[report]" in page


def test_the_page_makes_no_network_request(tmp_path: Path) -> None:
    page = render_page(rows(), folder=tmp_path, root=tmp_path)
    without_svg_namespaces = re.sub(r'"http://www\.w3\.org/[^"]*"', "", page)
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", without_svg_namespaces)
    assert "default-src 'none'" in page


def test_write_report_writes_atomically_and_renders_failed_notebooks(tmp_path: Path) -> None:
    from millrun_testing import write_notebook

    output = write_notebook(tmp_path / ".millrun" / "nbs" / "1-a.ipynb", ["1 / 0"])
    target = millrun.write_report(rows(), tmp_path / "out" / "report.html", root=tmp_path)
    assert target == tmp_path / "out" / "report.html"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html", "report_files"]
    links = dict(data_of(target.read_text())["rows"][1]["links"])
    assert links["html"] == "report_files/00001-1-a.html"
    rendered = (target.parent / links["html"]).read_text()
    assert '<span class="mi">1</span> <span class="o">/</span>' in rendered
    assert "<script" not in rendered
    assert ".highlight .mi" in rendered
    assert output.exists()


def test_a_rendered_notebook_caps_long_outputs_and_keeps_nbconvert_quiet(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    huge = "0123456789abcdef" * (50 * 2**20 // 16)  # 50 MiB printed by one cell
    cells = [new_code_cell("print(big)"), new_code_cell("glue()"), new_code_cell("1 / 0")]
    cells[0].outputs = [new_output("stream", name="stdout", text=huge + "THE END")]
    cells[1].outputs = [new_output("display_data", data={
        "application/scrapbook.scrap.json+json": {"name": "v", "data": 1}})]  # fmt: skip
    cells[2].outputs = [new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                   traceback=["ZeroDivisionError: division by zero"])]  # fmt: skip
    notebook = tmp_path / ".millrun" / "nbs" / "1-a.ipynb"
    notebook.parent.mkdir(parents=True)
    nbformat.write(new_notebook(cells=cells), str(notebook))
    target = millrun.write_report(rows(), tmp_path / "report.html", root=tmp_path)
    page = target.parent / dict(data_of(target.read_text())["rows"][1]["links"])["html"]
    assert page.stat().st_size < 2 * 2**20
    assert PAGE_CHARS < 2 * 2**20
    text = page.read_text()
    assert "THE END" in text  # the head and the tail are kept
    assert "Output shortened in this page: it holds 52.4 MB" in text
    assert '<a href="../.millrun/nbs/1-a.ipynb">1-a.ipynb</a> has it whole' in text
    assert "ZeroDivisionError" in text
    assert [str(w.message) for w in recwarn] == []
    assert nbformat.read(str(notebook), as_version=4).cells[0].outputs[0].text.endswith("THE END")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nbs", "is a directory"),
        ("nbs/a.ipynb", "is a notebook"),
        ("report.pdf", "must end in .html"),
        ("nbs/a.ipynb/report.html", "is a file, not a folder"),
    ],
)
def test_bad_report_paths_are_refused_naming_the_fix(
    tmp_path: Path, name: str, message: str
) -> None:
    (tmp_path / "nbs").mkdir()
    (tmp_path / "nbs" / "a.ipynb").write_text("{}")
    with pytest.raises(ResultsPathError, match=message):
        check_report_path(tmp_path / name)
    with pytest.raises(ResultsPathError, match=message):
        write_report(rows(), tmp_path / name)


def test_a_passing_rows_detail_names_its_slowest_cells(tmp_path: Path) -> None:
    cells = ((1, 0.01, "x = 1"), (3, 2.5, "time.sleep(2.5)"), (2, 0.4, "fit()"), (4, 0.1, "y"))
    from pytest_millrun.results import slowest_cells

    row = ResultRow("nbs/a.ipynb", "0", "passed", 3.0, slowest_cells=slowest_cells(cells))
    assert row.slowest_cells == ((3, 2.5, "time.sleep(2.5)"), (2, 0.4, "fit()"), (4, 0.1, "y"))
    assert ResultRow.from_json(row.to_json()) == row  # as it travels from an xdist worker
    detail = data_of(render_page([row], folder=tmp_path, root=tmp_path))["rows"][0]["detail"]
    assert detail == [
        {
            "title": "Slowest cells",
            "text": "2.50 s  cell 4: time.sleep(2.5)\n0.40 s  cell 3: fit()\n0.10 s  cell 5: y",
            "kind": "cells",
        }
    ]
