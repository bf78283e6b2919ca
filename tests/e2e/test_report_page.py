"""The report's page as a reader sees it, in headless Chromium: layout, columns, views."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chromium import Browser, launch, needs_chromium
from pytest_millrun.report.page import render_page
from pytest_millrun.results import ResultRow

pytestmark = needs_chromium

#: 500 characters, one of them a path with no space to break at
LONG_ERROR = (
    "ValueError: the fit did not converge for "
    + "/".join(f"segment{i:02d}" for i in range(30))
    + " after 1000 iterations; "
    + "residuals grew at every step " * 8
)[:500]
#: a 1x1 PNG, as a snapshot check would show an expected figure
PIXEL = (
    "data:image/png;base64,"
    + base64.b64encode(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360f8cf000000030101005f0c52f90000000049454e44ae426082"
        )
    ).decode()
)

#: every text node of ``selector`` whose characters sit on more than one line
BROKEN = """selector => [...document.querySelectorAll(selector)].filter(el => {
    const range = document.createRange();
    range.selectNodeContents(el);
    const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
    return tops.size > 1;
}).map(el => el.textContent)"""


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with launch(tmp_path_factory.mktemp("chromium-profile"), width=1400) as opened:
        yield opened


def wide_sweep() -> list[ResultRow]:
    """Eight varied parameters, large numbers, one failure with a 500-character error."""
    rows = []
    for i in range(12):
        params = {f"param_{k}": 10_000_000 * (k + 1) + i * 1234.5678 for k in range(8)}
        failed = i == 3
        rows.append(
            ResultRow(
                f"notebooks/experiments/long_notebook_name_{i % 2}.ipynb",
                f"v{i}",
                "failed" if failed else "passed",
                0.5 + i,
                f".millrun/out/{i}.ipynb",
                LONG_ERROR if failed else "",
                params,
                {} if failed else {"rmse": 1 / (i + 1), "fit": f"fit {i}"},
                source="model.fit(x)" if failed else "",
                traceback=(LONG_ERROR + "\n") * 40 if failed else "",
            )
        )
    return rows


def write(rows: list[ResultRow], path: Path, **extra: Any) -> Path:
    page = render_page(rows, folder=path.parent, root=path.parent, **extra)
    path.write_text(page, encoding="utf-8")
    return path


def test_a_wide_sweep_with_a_long_error_fits_the_window_and_keeps_its_links_in_view(
    tmp_path: Path, browser: Browser
) -> None:
    command = "pytest --millrun-params params.json notebooks -n 2 " + " ".join(
        f"--millrun-results results{i}.csv" for i in range(12)
    )
    report = write(
        wide_sweep(),
        tmp_path / "report.html",
        command=command,
        extra_details={
            3: [
                {
                    "title": "Expected figure",
                    "images": [
                        {"label": "expected", "src": PIXEL},
                        {"label": "elsewhere", "src": "http://x.y/z.png"},
                    ],
                }
            ]
        },
    )
    page = browser.open(report)
    for width in (1400, 1000, 2000):
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        # the failed row's links are on screen and on top, whatever the table's width
        for link in page.locator("#r3 td.links a").all():
            box = link.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= width
            centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            on_top = page.evaluate(
                "([x, y]) => document.elementFromPoint(x, y).textContent", centre
            )
            assert on_top in ("ipynb", "html")
        # numbers and option names never break in the middle
        assert page.evaluate(BROKEN, "#rows td.num") == []
        assert page.evaluate(BROKEN, "#rows th button.sort") == []
        assert page.locator("dl.meta code .w").count() == 30
        assert page.evaluate(BROKEN, "dl.meta code .w") == []
    # the long error is cut to a few lines; the whole of it, and its detail, on demand
    summary = page.locator("#r3 td.error summary")
    assert summary.bounding_box()["height"] < 80  # type: ignore[index]
    assert not page.locator("#r3 pre.traceback").is_visible()
    summary.click()
    assert page.locator("#r3 pre.traceback").is_visible()
    assert summary.inner_text().rstrip().endswith(LONG_ERROR[-20:].rstrip())
    assert page.evaluate("document.documentElement.scrollWidth") <= 2000
    images = page.locator("#r3 .images img")
    assert images.count() == 2
    assert images.first.evaluate("img => img.naturalWidth") == 1
    assert images.nth(1).get_attribute("src") is None  # only data: images
    assert browser.errors == []
    assert browser.requests == []


def sweep() -> list[ResultRow]:
    """Years 5, 10, 100 (text order would put 100 before 5), a constant seed, fits failing."""
    rows = []
    for i, (years, rate) in enumerate((y, r) for y in (10, 100, 5) for r in (0.01, 0.02)):
        failed = i in (1, 4)
        rows.append(
            ResultRow(
                "nbs/loan.ipynb",
                str(i),
                "failed" if failed else "passed",
                1.0,
                error=f"RuntimeError: fit {i} failed" if failed else "",
                params={"seed": 7, "years": years, "rate": rate},
                values={} if failed else {"payment": years * rate},
            )
        )
    rows.append(ResultRow("nbs/loan.ipynb", "6", "failed", 1.0, error="MemoryError",
                          params={"seed": 7, "years": 1, "rate": 0.5}))  # fmt: skip
    return rows


def column(page: Any, key: str) -> list[str]:
    index = page.locator("#rows thead tr:last-child th").evaluate_all(
        f"ths => ths.findIndex(th => th.dataset.key === {key!r})"
    )
    texts: list[str] = page.locator(f"#rows tbody td:nth-child({index + 1})").all_inner_texts()
    return texts


def test_a_parameter_column_sorts_and_filters_and_the_view_lives_in_the_url(
    tmp_path: Path, browser: Browser
) -> None:
    report = write(sweep(), tmp_path / "report.html")
    page = browser.open(report, "#status=failed&q=fit")
    # opened filtered: the two failures whose error says "fit", not the MemoryError
    assert page.input_value("#status-filter") == "failed"
    assert page.input_value("#text-filter") == "fit"
    assert column(page, "variation") == ["1", "4"]
    # the varied parameters first, each its own column; the constant seed after them
    keys = page.locator("#rows thead tr:last-child th").evaluate_all(
        "ths => ths.map(th => th.dataset.key || '')"
    )
    assert keys[5:9] == ["p.years", "p.rate", "p.seed", "v.payment"]
    assert page.locator("#rows thead tr.groups").inner_text().split("\t")[1:4] == [
        "varied parameters", "constant parameters", "recorded values",
    ]  # fmt: skip

    page.select_option("#status-filter", "")
    page.fill("#text-filter", "")
    page.click("#rows th[data-key='p.years'] button")
    assert column(page, "p.years") == ["1", "5", "5", "10", "10", "100", "100"]
    page.click("#rows th[data-key='p.years'] button")
    assert column(page, "p.years") == ["100", "100", "10", "10", "5", "5", "1"]
    page.fill("#rows th[data-key='p.years'] input", ">= 10")
    assert column(page, "p.years") == ["100", "100", "10", "10"]
    page.select_option("#status-filter", "passed")
    assert column(page, "v.payment") == ["1", "2", "0.1"]
    view = page.evaluate("location.hash")
    assert view == "#status=passed&sort=-p.years&f.p.years=%3E%3D+10"
    assert page.get_attribute("#view-link", "href") == view

    # the link opens the same view in a fresh page
    page.goto("about:blank")
    page = browser.open(report, view)
    assert column(page, "v.payment") == ["1", "2", "0.1"]
    assert page.input_value("#rows th[data-key='p.years'] input") == ">= 10"
    assert page.get_attribute("#rows th[data-key='p.years']", "aria-sort") == "descending"
    # a row's anchor (the grid's cells) still leads to it, clearing a view that hides it
    page.evaluate("location.hash = '#r6'")
    page.wait_for_selector("tr.target#r6")
    assert page.input_value("#status-filter") == ""
    assert browser.errors == []
    assert browser.requests == []
