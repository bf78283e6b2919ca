"""How long the HTML report takes for a large sweep, and how the page behaves in Chromium.

Builds N result rows (default 10,000: 8 notebooks, two numeric parameters and a text one,
a numeric and a text recorded value, every 33rd variation failed with a traceback and a real
executed notebook on disk), times ``millrun.write_report`` on them (charts and the rendering
of failed notebooks included), then, when Playwright and /usr/bin/chromium are there, loads
the page headless from ``file://`` and times the load, a filter to failed rows and a sort.

    .venv/bin/python benchmarks/report_bench.py [--rows 10000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from pytest_millrun.report.page import write_report
from pytest_millrun.report.rendered import MAX_RENDERED
from pytest_millrun.results import ResultRow

CHROMIUM = Path("/usr/bin/chromium")
TRACEBACK = "\n".join(
    ["---------------------------------------------------------------------------",
     "ZeroDivisionError                         Traceback (most recent call last)",
     "Cell In[3], line 2",
     "      1 spread = rate - floor",
     "----> 2 payment = principal / spread",
     "ZeroDivisionError: float division by zero"]
)  # fmt: skip


def make_rows(count: int, root: Path) -> list[ResultRow]:
    rows = []
    for i in range(count):
        notebook = f"notebooks/model_{i % 8}.ipynb"
        rate, years = 0.01 + (i // 8 % 25) * 0.002, 5 + (i // 200) % 50
        failed = i % 33 == 0
        output = f".millrun/notebooks/{i}-model_{i % 8}.ipynb"
        if failed:
            write_failed_notebook(root / output)
        rows.append(
            ResultRow(
                notebook=notebook,
                variation=str(i),
                status="failed" if failed else "passed",
                duration_s=round(0.2 + (i % 17) / 10, 3),
                output=output,
                error="ZeroDivisionError: float division by zero in cell [3]" if failed else "",
                params={"rate": rate, "years": years, "region": ["eu", "us"][i % 2]},
                values={}
                if failed
                else {
                    "payment": 1000 * rate / (1 - (1 + rate) ** -years) + i % 8,
                    "label": f"run {i}",
                    "ratio": math.nan if i % 50 == 1 else rate * years,
                },
                source="spread = rate - floor\npayment = principal / spread" if failed else "",
                traceback=TRACEBACK if failed else "",
            )
        )
    return rows


def write_failed_notebook(path: Path) -> None:
    cell = new_code_cell("spread = rate - floor\npayment = principal / spread", execution_count=3)
    cell.outputs = [
        new_output(
            "error",
            ename="ZeroDivisionError",
            evalue="float division by zero",
            traceback=TRACEBACK.split("\n"),
        )
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[new_code_cell("rate = 0.01"), cell]), str(path))


def browse(report: Path, profile: Path, expected_rows: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=flags
        )
        try:
            page = context.new_page()
            started = time.perf_counter()
            page.goto(report.as_uri())
            page.wait_for_selector("#rows tbody tr")
            loaded = time.perf_counter() - started
            shown = page.inner_text("#shown")
            assert shown.startswith(f"{expected_rows} of"), shown
            started = time.perf_counter()
            page.select_option("#status-filter", "failed")
            page.wait_for_function(
                f"!document.getElementById('shown').textContent.startsWith('{expected_rows} ')"
            )
            filtered = time.perf_counter() - started
            started = time.perf_counter()
            page.click("#rows th[data-key='duration'] button")
            page.wait_for_selector("#rows th[aria-sort]")
            sorted_ = time.perf_counter() - started
        finally:
            context.close()
    return {"load s": loaded, "filter s": filtered, "sort s": sorted_}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="millrun-report-bench-"))
    shutil.rmtree(root / ".millrun", ignore_errors=True)
    rows = make_rows(args.rows, root)
    failed = sum(r.status == "failed" for r in rows)
    started, cpu = time.perf_counter(), time.process_time()
    report = write_report(rows, root / "report.html", root=root, command="report_bench.py")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = report.stat().st_size / 2**20
    print(f"rows: {len(rows)} ({failed} failed, first {min(failed, MAX_RENDERED)} rendered)")
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    # CPU time is the figure a busy machine distorts least (the report is one thread)
    print(f"write_report: {seconds:.2f} s wall, {cpu:.2f} s CPU, report.html {size:.1f} MiB")
    if CHROMIUM.exists():
        try:
            figures = browse(report, root / "profile", len(rows))
        except ImportError:
            print("browser: playwright is not installed (pip install playwright)")
        else:
            print("chromium: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
