"""The HTML report end to end: real kernels, every front end, and a real headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import millrun
from chromium import Browser, launch, needs_chromium
from millrun_testing import write_notebook, write_params
from pytest_millrun.results import ResultRow


def data_of(page: str) -> dict[str, Any]:
    blob = re.search(r'id="millrun-data">(.*?)</script>', page, re.S)
    assert blob is not None
    loaded: dict[str, Any] = json.loads(blob.group(1))
    return loaded


def table_of(page: str) -> list[dict[str, Any]]:
    """The page's rows as column key -> cell, with the row's links and detail."""
    data = data_of(page)
    keys = [c["key"] for c in data["columns"]]
    return [
        {
            **dict(zip(keys, r["cells"], strict=True)),
            "links": dict(r["links"]),
            "detail": r["detail"],
        }
        for r in data["rows"]
    ]


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with launch(tmp_path_factory.mktemp("chromium-profile")) as opened:
        yield opened


#: a value glued as scrapbook does: nbconvert cannot represent its mimetype, and warns
SCRAP = """from IPython.display import display
display({"application/scrapbook.scrap.json+json": {"name": "twice", "data": 2 * x,
         "encoder": "json", "version": 1}},
        metadata={"scrapbook": {"name": "twice", "data": True, "display": False}}, raw=True)"""


@pytest.fixture
def sweep(pytester: pytest.Pytester) -> Path:
    """Two notebooks, three variations; divide glues a scrapbook scrap, then fails when y == 2."""
    root = pytester.path
    write_notebook(root / "nbs" / "add.ipynb", ["total = x + y"])
    write_notebook(root / "nbs" / "sub" / "divide.ipynb", [SCRAP, "total = x / (y - 2)"])
    write_params(root / "params.json", {"x": [1, 45, 7], "y": [2, 3, 4]})
    return root


@needs_chromium
def test_the_plugin_under_xdist_writes_a_report_a_browser_reads_offline(
    pytester: pytest.Pytester, sweep: Path, browser: Browser
) -> None:
    pytester.makeini("[pytest]\nmillrun_params = params.json\nmillrun_record = total\n")
    result = pytester.runpytest_subprocess("nbs", "-n", "2", "--millrun-report", "out/run.html")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["millrun: HTML report written to *run.html"])
    # rendering the failed notebook (with its scrap) leaks no nbconvert warning into the run
    assert "warnings summary" not in result.stdout.str()
    assert "UserWarning" not in result.stdout.str() + result.stderr.str()
    report = sweep / "out" / "run.html"
    table = table_of(report.read_text())
    assert [(r["notebook"], r["variation"], r["status"]) for r in table] == [
        ("nbs/add.ipynb", "0", "passed"),
        ("nbs/add.ipynb", "1", "passed"),
        ("nbs/add.ipynb", "2", "passed"),
        ("nbs/sub/divide.ipynb", "0", "failed"),
        ("nbs/sub/divide.ipynb", "1", "passed"),
        ("nbs/sub/divide.ipynb", "2", "passed"),
    ]
    assert "total = x / (y - 2)" in table[3]["detail"][0]["text"]  # the source, from the worker
    assert sorted(p.name for p in (sweep / "out").iterdir()) == ["run.html", "run_files"]

    page = browser.open(report)
    assert len(browser.rows()) == 6
    assert page.locator("figure#chart-total svg").count() == 1
    page.select_option("#status-filter", "failed")
    failed = browser.rows()
    assert len(failed) == 1
    assert "divide.ipynb" in failed[0]
    assert "failed" in failed[0]
    traceback = page.locator("#rows tbody tr pre.traceback")
    assert not traceback.is_visible()
    page.locator("#rows tbody tr details summary").click()
    assert traceback.is_visible()
    assert "ZeroDivisionError" in traceback.inner_text()
    page.fill("#text-filter", "add.ipynb")
    assert browser.rows() == []
    page.select_option("#status-filter", "")
    assert len(browser.rows()) == 3

    # the grid's failed cell leads to its row; the rendered notebook opens offline too
    page.fill("#text-filter", "")
    page.locator("a.cell.s-failed").click()
    assert page.locator("tr.target").get_attribute("id") == "r3"
    page.locator("tr.target a", has_text="html").click()
    page.wait_for_load_state("load")
    assert "ZeroDivisionError" in page.content()
    assert browser.errors == []
    assert browser.requests == []


@needs_chromium
def test_a_large_report_pages_through_its_rows_and_sorts_them(
    tmp_path: Path, browser: Browser
) -> None:
    rows = [
        ResultRow(f"nb{i % 3}.ipynb", str(i), "failed" if i % 7 == 0 else "passed", i / 100,
                  params={"x": i}, values={"y": i * 2})
        for i in range(450)
    ]  # fmt: skip
    report = millrun.write_report(rows, tmp_path / "big.html", root=tmp_path)
    page = browser.open(report)
    assert len(browser.rows()) == 200
    assert page.inner_text("#page") == "page 1 of 3"
    page.click("#next")
    page.click("#next")
    assert len(browser.rows()) == 50
    page.click("#rows th[data-key='duration'] button")  # ascending then descending
    page.click("#rows th[data-key='duration'] button")
    assert browser.rows()[0].startswith("450\t")
    page.select_option("#status-filter", "failed")
    assert len(browser.rows()) == 65
    assert browser.errors == []
    assert browser.requests == []


def test_the_api_and_the_command_write_the_same_report(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "div.ipynb", ["total = 10 / x"])
    write_params(tmp_path / "p.json", {"x": [0, 2, 5]})
    with pytest.raises(millrun.RunFailedError) as failed:
        millrun.execute_run(tmp_path / "nbs", tmp_path / "p.json", record=["total"])
    api = millrun.write_report(failed.value.results, tmp_path / "api.html")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs", "p.json", "--output-dir", "runs",
         "--record", "total", "--report", "cli.html"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"report: written to {tmp_path / 'cli.html'}" in done.stdout
    for path, output in ((api, "nbs/0-div.ipynb"), (tmp_path / "cli.html", "runs/0-div.ipynb")):
        text = path.read_text()
        table = table_of(text)
        assert [(r["variation"], r["status"], r["p.x"], r["v.total"]) for r in table] == [
            ("0", "failed", 0, None), ("1", "passed", 2, 5.0), ("2", "passed", 5, 2.0),
        ]  # fmt: skip
        assert table[0]["error"] == "ZeroDivisionError: division by zero in cell [3]"
        assert table[0]["links"]["ipynb"] == output
        assert (path.parent / table[0]["links"]["html"]).is_file()  # the failed notebook
        assert '<figure id="chart-total">' in text
    command = re.search(r"<code>(.*?)</code>", (tmp_path / "cli.html").read_text())
    assert command is not None
    assert re.sub(r"<[^>]+>", "", command.group(1)).startswith(
        "millrun nbs p.json --output-dir runs"
    )
