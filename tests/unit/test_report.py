"""The HTML report's page, built from result rows alone: no kernel, no browser."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import millrun
from pytest_millrun.outputs.report import _numeric, check_report_path, render_page, write_report
from pytest_millrun.outputs.results import ResultRow, ResultsPathError


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


def data_of(page: str) -> list[list[Any]]:
    blob = re.search(r'id="millrun-data">(.*?)</script>', page, re.S)
    assert blob is not None
    loaded: list[list[Any]] = json.loads(blob.group(1))
    return loaded


def test_the_page_holds_every_row_with_its_failure_detail_and_relative_links(
    tmp_path: Path,
) -> None:
    page = render_page(rows(), folder=tmp_path / "out", root=tmp_path, command="pytest -n 2")
    data = data_of(page)
    assert [(r[1], r[2], r[3]) for r in data] == [
        ("nbs/a.ipynb", "0", "passed"),
        ("nbs/a.ipynb", "1", "failed"),
        ("nbs/b.ipynb", "0", "skipped"),
        ("nbs/b.ipynb", "1", "passed"),
    ]
    assert data[0][5] == 'x=1, name="p"'
    assert data[0][6] == 'rmse=0.5, label="fast"'
    assert data[2][6] == "rmse=nan"
    assert data[0][8] == "../.millrun/nbs/0-a.ipynb"
    assert (data[1][10], data[1][11]) == ("raise ValueError('bad')", "ValueError: bad </script>")
    # the only </script> closing the blob is the real one
    assert page.count("</script>") == 2
    assert "✓ 2 passed" in page
    assert "✗ 1 failed" in page
    assert "○ 1 skipped" in page
    assert "<code>pytest -n 2</code>" in page
    assert "median duration</dt><dd>1.500 s" in page
    assert "variations</dt><dd>4 in 2 notebooks" in page


def test_the_grid_links_each_notebook_and_variation_to_its_row(tmp_path: Path) -> None:
    page = render_page(rows(), folder=tmp_path, root=tmp_path)
    grid = page[page.index('<table class="grid">') : page.index("</table>")]
    assert re.findall(r'href="#r(\d)"[^>]*>(.)</a>', grid) == [
        ("0", "✓"), ("1", "✗"), ("2", "○"), ("3", "✓"),
    ]  # fmt: skip
    assert 'title="nbs/a.ipynb [1]: failed"' in grid


def test_numeric_values_and_varying_numeric_parameters_are_charted(tmp_path: Path) -> None:
    table = rows()
    assert _numeric(table, "values") == ["rmse"]  # label is text
    assert _numeric(table, "params") == ["x"]  # name is text
    page = render_page(table, folder=tmp_path, root=tmp_path)
    assert page.count("<svg") == 1
    chart = page[page.index('<figure id="chart-rmse">') :]
    assert ">x<" in chart  # axis labels as text
    assert ">rmse<" in chart
    assert "http://" not in chart.split("<svg", 1)[1].replace("http://www.w3.org/", "")


def test_a_sweep_without_numbers_draws_no_chart(tmp_path: Path) -> None:
    table = [
        ResultRow("a.ipynb", str(i), "passed", 1.0, params={"x": i}, values={"v": f"t{i}"})
        for i in range(3)
    ]
    page = render_page(table, folder=tmp_path, root=tmp_path)
    assert "<svg" not in page
    assert "No charts: no recorded value is a number." in page


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
    from conftest import write_notebook

    output = write_notebook(tmp_path / ".millrun" / "nbs" / "1-a.ipynb", ["1 / 0"])
    target = millrun.write_report(rows(), tmp_path / "out" / "report.html", root=tmp_path)
    assert target == tmp_path / "out" / "report.html"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html", "report_files"]
    data = data_of(target.read_text())
    assert data[1][9] == "report_files/00001-1-a.html"
    rendered = (target.parent / data[1][9]).read_text()
    assert '<span class="mi">1</span> <span class="o">/</span>' in rendered
    assert "<script" not in rendered
    assert ".highlight .mi" in rendered
    assert output.exists()


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
