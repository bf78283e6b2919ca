"""Recorded values and the results table end to end: real kernels, every source, every front end."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import millrun
from millrun_testing import (
    assert_no_kernels_left,
    wait_for_running_cells,
    wait_until,
    write_notebook,
    write_params,
)
from pytest_millrun import RunFailedError, execute_run
from pytest_millrun.execution.execute import execute_notebook
from pytest_millrun.execution.failures import format_failure


def glue(name: str, value: Any, encoder: str = "json") -> str:
    """A cell line writing the display output ``scrapbook.glue`` writes, without scrapbook."""
    payload = {"name": name, "data": value, "encoder": encoder, "version": 1}
    bundle = {f"application/scrapbook.scrap.{encoder}+json": payload}
    meta = {"scrapbook": {"name": name, "data": True, "display": False}}
    return f"display({bundle!r}, metadata={meta!r}, raw=True)"


SCRAPS = "\n".join(
    [
        "from IPython.display import display",
        glue("rmse", 0.5),
        glue("rmse", 0.25),  # glued again: the last one wins
        glue("label", "fast", "text"),
        glue("frame", "UEFSMQ==", "pandas"),
        "display({'application/papermill.record+json': {'legacy': [1, 2]}}, raw=True)",
        "display({'text/plain': 'a plot'}, metadata={'scrapbook': "
        "{'name': 'plot', 'data': False, 'display': True}}, raw=True)",
    ]
)


def cells_of(path: Path) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = json.loads(path.read_text())["cells"]
    return cells


def test_scraps_are_read_from_the_outputs_and_saved_in_the_metadata(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "glued.ipynb", [SCRAPS])
    result = execute_notebook(notebook, tmp_path / "out" / "glued.ipynb", {"x": 3})
    assert result.passed, result.error
    assert result.recorded == {"rmse": 0.25, "label": "fast", "legacy": [1, 2]}
    assert set(result.record_notes) == {"frame", "plot"}
    saved = json.loads((tmp_path / "out" / "glued.ipynb").read_text())["metadata"]["millrun"]
    assert saved["recorded"] == {"rmse": 0.25, "label": "fast", "legacy": [1, 2]}
    assert set(saved["recorded_notes"]) == {"frame", "plot"}


VARIABLES = """
import numpy as np, pandas as pd
count = x * 10
ratio = float('nan')
peak = -float('inf')
name = 'run-%d' % x
nothing = None
nested = {'a': [1, (2, 3)], 'b': {'c': True}}
curve = np.linspace(0, 1, 3)
table = pd.DataFrame({'k': [1, 2], 'v': [0.5, np.nan]})
thing = object()
"""


def test_named_variables_are_read_after_the_last_cell_without_a_trace(
    tmp_path: Path, kernel_start: str
) -> None:
    notebook = write_notebook(
        tmp_path / "calc.ipynb", [VARIABLES, glue("count", "glued") + "\nprint('done')"],
        params="x = 1",
    )  # fmt: skip
    names = ["count", "ratio", "peak", "name", "nothing", "nested", "curve", "table", "thing"]
    output = tmp_path / "out" / "calc.ipynb"
    result = execute_notebook(notebook, output, {"x": 4}, record=names)
    assert result.passed, result.error and format_failure(result)
    recorded = dict(result.recorded)
    assert math.isnan(recorded.pop("ratio"))
    assert recorded.pop("thing").startswith("<object object at")
    table = recorded.pop("table")
    assert (table["columns"], table["index"], table["data"][0]) == (["k", "v"], [0, 1], [1, 0.5])
    assert table["data"][1][0] == 2
    assert math.isnan(table["data"][1][1])
    assert recorded == {
        "count": 40,  # the variable, read last, wins over the scrap of the same name
        "peak": -math.inf,
        "name": "run-4",
        "nothing": None,
        "nested": {"a": [1, [2, 3]], "b": {"c": True}},
        "curve": [0.0, 0.5, 1.0],
    }
    assert list(result.record_notes) == ["thing"]
    # no cell was added and no execution count moved: parameters, injected, 2 cells
    cells = cells_of(output)
    assert len(cells) == 4
    assert [c["execution_count"] for c in cells] == [1, 2, 3, 4]
    streams = ["".join(o["text"]) for o in cells[-1]["outputs"] if o["output_type"] == "stream"]
    assert streams == ["done\n"]
    saved = json.loads(output.read_text())["metadata"]["millrun"]
    assert saved["recorded"]["ratio"] == {"$float": "nan"}
    assert saved["recorded"]["peak"] == {"$float": "-inf"}


def test_an_undefined_name_fails_that_variation_naming_it_and_the_notebook(
    tmp_path: Path,
) -> None:
    write_notebook(
        tmp_path / "nbs" / "calc.ipynb", ["if x == 2:\n    loss = x / 4"], params="x = 1"
    )
    with pytest.raises(RunFailedError) as info:
        execute_run(tmp_path / "nbs", {"x": [1, 2]}, output_dir=tmp_path / "out", record=["loss"])
    first, second = info.value.results
    assert (first.status, second.status) == ("failed", "passed")
    assert second.recorded == {"loss": 0.5}
    assert first.error is not None
    assert first.error.headline == "RecordError: 'loss' not defined at the end of calc.ipynb"
    report = format_failure(first)
    assert "Variable 'loss', named to be recorded" in report
    assert "after the last cell of calc.ipynb" in report
    assert first.output is not None
    assert first.output.exists()  # the executed notebook is kept


def test_a_failing_cell_records_its_scraps_and_reports_them(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "f.ipynb", [SCRAPS, "raise ValueError('late')"])
    result = execute_notebook(notebook, tmp_path / "out" / "f.ipynb", {}, record=["undefined"])
    assert result.error is not None
    assert result.error.ename == "ValueError"  # the cell's error, not the unread variable
    assert result.recorded["rmse"] == 0.25
    assert 'Recorded:  rmse=0.25, label="fast", legacy=[1,2]' in format_failure(result)


def test_the_api_records_and_write_results_writes_the_table(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "sq.ipynb", ["y = x * x"])
    results = millrun.execute_run(tmp_path / "nbs", {"x": [1, 2, 3]}, record=["y"])
    path = millrun.write_results(results, tmp_path / "table.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = ("notebook", "variation", "status", "param.x", "value.y")
    assert [tuple(r[c] for c in columns) for r in rows] == [
        ("sq.ipynb", "0", "passed", "1", "1"),
        ("sq.ipynb", "1", "passed", "2", "4"),
        ("sq.ipynb", "2", "passed", "3", "9"),
    ]  # fmt: skip
    assert all(float(r["duration_s"]) > 0 and r["output"].endswith("-sq.ipynb") for r in rows)


# -- the pytest plugin


@pytest.fixture
def sweep(pytester: pytest.Pytester) -> Path:
    """Two notebooks, three variations; divide fails when y == 2."""
    root = pytester.path
    write_notebook(root / "nbs" / "add.ipynb", ["total = x + y"])
    write_notebook(
        root / "nbs" / "sub" / "divide.ipynb", [glue("doubled", 0) + "\ntotal = x / (y - 2)"]
    )
    write_params(root / "params.json", {"x": [1, 45, 7], "y": [2, 3, 4]})
    return root


def test_plugin_records_into_the_table_and_the_failure_report(
    pytester: pytest.Pytester, sweep: Path
) -> None:
    result = pytester.runpytest(
        "--millrun-params", "params.json", "nbs", "--millrun-record", "total",
        "--millrun-results", "out/results.csv",
    )  # fmt: skip
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*Recorded:  doubled=0*", "millrun: 6 rows written to *"])
    with (sweep / "out" / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["notebook"], r["variation"], r["status"], r["value.total"]) for r in rows] == [
        ("nbs/add.ipynb", "0", "passed", "3"),
        ("nbs/add.ipynb", "1", "passed", "48"),
        ("nbs/add.ipynb", "2", "passed", "11"),
        ("nbs/sub/divide.ipynb", "0", "failed", ""),
        ("nbs/sub/divide.ipynb", "1", "passed", "45.0"),
        ("nbs/sub/divide.ipynb", "2", "passed", "3.5"),
    ]
    assert rows[3]["error"] == "ZeroDivisionError: division by zero in cell [3]"
    assert rows[0]["output"] == ".millrun/nbs/0-add.ipynb"
    assert (rows[0]["value.doubled"], rows[3]["value.doubled"]) == ("", "0")


def test_under_xdist_the_controller_writes_every_row_once_in_collection_order(
    pytester: pytest.Pytester, sweep: Path
) -> None:
    pytester.makeini(
        "[pytest]\nmillrun_params = params.json\nmillrun_record = total\n"
        "millrun_results = results.json\n"
    )
    pytester.makeconftest(
        """
        import pytest
        def pytest_collection_modifyitems(items):
            for item in items:
                if item.name == "add[1]":
                    item.add_marker(pytest.mark.skip(reason="not this one"))
        """
    )
    result = pytester.runpytest_subprocess("nbs", "-n", "2")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    rows = json.loads((sweep / "results.json").read_text())
    assert [(r["notebook"], r["variation"], r["status"]) for r in rows] == [
        ("nbs/add.ipynb", "0", "passed"),
        ("nbs/add.ipynb", "1", "skipped"),
        ("nbs/add.ipynb", "2", "passed"),
        ("nbs/sub/divide.ipynb", "0", "failed"),
        ("nbs/sub/divide.ipynb", "1", "passed"),
        ("nbs/sub/divide.ipynb", "2", "passed"),
    ]
    assert [r["value.total"] for r in rows] == [3, None, 11, None, 45.0, 3.5]
    assert rows[1]["param.x"] == 45
    assert sorted(p.name for p in sweep.iterdir() if "results" in p.name) == ["results.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--millrun-results", "nbs"], "is a directory"),
        (["--millrun-results", "nbs/add.ipynb"], "is a notebook"),
        (["--millrun-results", "table.xlsx"], "must end in .csv, .json or .jsonl"),
        (["--millrun-record", "total,1x"], "'1x' is not a variable name"),
    ],
)
def test_bad_record_names_and_results_paths_are_usage_errors(
    pytester: pytest.Pytester, sweep: Path, args: list[str], message: str
) -> None:
    result = pytester.runpytest("--millrun-params", "params.json", "nbs", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])
    assert "Traceback" not in result.stderr.str()


# -- the command


def millrun_command(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_millrun", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_the_command_records_and_writes_the_table(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "add.ipynb", ["total = x + y\n" + glue("g", [1])])
    write_params(tmp_path / "p.json", {"x": [1, 2], "y": [3, 4]})
    done = millrun_command(
        "nbs", "p.json", "--output-dir", "out", "--record", "total", "--results", "r.jsonl",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "results: 2 rows written to" in done.stdout
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["notebook"], r["value.total"], r["value.g"]) for r in rows] == [
        ("add.ipynb", 4, [1]),
        ("add.ipynb", 6, [1]),
    ]
    assert rows[0]["output"] == str(tmp_path / "out" / "0-add.ipynb")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--results", "nbs"], "is a directory"), (["--record", "a-b"], "not a variable name")],
)
def test_the_command_refuses_bad_names_and_paths_before_running(
    tmp_path: Path, args: list[str], message: str
) -> None:
    write_notebook(tmp_path / "nbs" / "add.ipynb")
    write_params(tmp_path / "p.json", [{"x": 1}])
    done = millrun_command("nbs", "p.json", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert not list((tmp_path / "nbs").glob("0-*"))


# -- interrupted runs write what they have


@pytest.mark.parametrize("front", ["command", "pytest", "xdist"])
def test_an_interrupted_run_writes_the_rows_it_has(
    tmp_path: Path, kernel_tmp: Path, front: str
) -> None:
    write_notebook(tmp_path / "nbs" / "a_quick.ipynb", ["v = x"])
    write_notebook(tmp_path / "nbs" / "b_slow.ipynb", ["import time\ntime.sleep(60)\nv = 0"])
    write_params(tmp_path / "p.json", {"x": [1, 2]})
    if front == "command":
        argv = [sys.executable, "-m", "pytest_millrun", "nbs", "p.json", "--workers", "1",
                "--output-dir", "out", "--record", "v", "--results", "r.csv",
                "--report", "r.html"]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--millrun-params",
                "p.json", "nbs", "--millrun-output-dir", "out", "--millrun-record", "v",
                "--millrun-results", "r.csv", "--millrun-report", "r.html"]  # fmt: skip
        argv += ["-n", "2"] if front == "xdist" else []
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # the rootdir, for the pytest front end
    process = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    out = tmp_path / "out"
    wait_until(lambda: len(list(out.glob("**/*a_quick.ipynb"))) >= 2, 90, "both quick runs")
    wait_for_running_cells(out, "**/.*b_slow.partial*")
    assert process.poll() is None
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    with (tmp_path / "r.csv").open(newline="") as handle:
        rows = [(r["notebook"], r["variation"], r["status"], r["value.v"])
                for r in csv.DictReader(handle)]  # fmt: skip
    folder = "" if front == "command" else "nbs/"
    assert rows[:3] == [
        (f"{folder}a_quick.ipynb", "0", "passed", "1"),
        (f"{folder}a_quick.ipynb", "1", "passed", "2"),
        (f"{folder}b_slow.ipynb", "0", "interrupted", ""),
    ], output
    # under xdist the other worker may have started the last one too; nothing else
    assert rows[3:] in ([], [(f"{folder}b_slow.ipynb", "1", "interrupted", "")]), output
    # the HTML report is made from the same rows
    page = (tmp_path / "r.html").read_text()
    blob = json.loads(page.split('id="millrun-data">', 1)[1].split("</script>", 1)[0])
    keys = [c["key"] for c in blob["columns"]]
    at = [keys.index(k) for k in ("notebook", "variation", "status")]
    assert [tuple(r["cells"][i] for i in at) for r in blob["rows"]] == [row[:3] for row in rows]
    assert_no_kernels_left(kernel_tmp)
