"""Pure logic of issue 23, without kernels: which names a notebook records, which globs match
files on disk, and what a saved notebook tells of a cell that printed its error or an exit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_millrun.core.globs import glob_matches_a_file
from pytest_millrun.core.suite import SuiteError
from pytest_millrun.core.suite_file import build_suite
from pytest_millrun.core.values import RecordNameError, RecordSpec, parse_record
from pytest_millrun.execution.failures import early_exit_note, printed_lines


def test_record_entries_for_every_notebook_and_by_glob() -> None:
    spec = parse_record("payment, fit*.ipynb:rmse,sub/*.ipynb:n, payment")
    assert spec == RecordSpec(("payment",), (("fit*.ipynb", "rmse"), ("sub/*.ipynb", "n")))
    # a glob without "/" matches the file name anywhere, one with "/" the relative path
    assert spec.for_notebook("deep/fit_a.ipynb", ("loss",)) == ("loss", "payment", "rmse")
    assert spec.for_notebook("sub/fit.ipynb") == ("payment", "rmse", "n")
    assert spec.for_notebook("other/sub/x.ipynb", ("payment",)) == ("payment",)
    assert not parse_record(None)
    assert parse_record(["a", "b.ipynb:c"]).by_glob == (("b.ipynb", "c"),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":rmse", "':rmse' has no glob before its ':'"),
        ("fit.ipynb:not-a-name", "'not-a-name' is not a variable name"),
    ],
)
def test_bad_record_entries_name_the_fix(text: str, message: str) -> None:
    with pytest.raises(RecordNameError, match=message):
        parse_record(text, "--record")


def test_suite_record_key_per_section_and_its_errors(tmp_path: Path) -> None:
    suite = build_suite(
        {"record": "a, b", "notebooks": {"fit.ipynb": {"record": ["rmse"]}, "x.ipynb": None}},
        "s",
        tmp_path,
    )
    assert suite.top.record == ("a", "b")
    assert [s.record for s in suite.sections] == [("rmse",), ()]
    with pytest.raises(SuiteError, match=re.escape("'fit.ipynb': 'record': 'a b' is not a var")):
        build_suite({"notebooks": {"fit.ipynb": {"record": ["a b"]}}}, "s", tmp_path)
    with pytest.raises(SuiteError, match="must be strings, not 3"):
        build_suite({"record": 3, "constants": {}}, "s", tmp_path)


def test_glob_matches_a_file_walks_only_what_the_glob_can_reach(tmp_path: Path) -> None:
    for name in ("a/calc.ipynb", "a/b/deep.ipynb", ".hidden/h.ipynb", "a/.x.ipynb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert glob_matches_a_file(tmp_path, "a/calc.ipynb")
    assert glob_matches_a_file(tmp_path, "a/*.ipynb")
    assert glob_matches_a_file(tmp_path, "**/deep.ipynb")
    assert glob_matches_a_file(tmp_path, "*/b/*.ipynb")
    assert not glob_matches_a_file(tmp_path, "*/deep.ipynb")  # * stays in one folder
    assert not glob_matches_a_file(tmp_path, "a/calc.ipnyb")
    assert not glob_matches_a_file(tmp_path, "**/h.ipynb")  # hidden folders are left out
    assert not glob_matches_a_file(tmp_path, "a/.x.ipynb")
    assert not glob_matches_a_file(tmp_path, "missing/*.ipynb")


def cell(outputs: list[dict[str, object]], status: str = "completed", count: int = 1) -> dict:
    return {
        "cell_type": "code",
        "execution_count": count,
        "metadata": {"papermill": {"status": status}},
        "outputs": outputs,
        "source": "",
    }


def test_early_exit_note_counts_the_code_cells_that_never_ran() -> None:
    exit_output = {"output_type": "error", "ename": "SystemExit", "evalue": "", "traceback": []}
    cells = [
        cell([]),
        cell([exit_output], "failed", 2),
        {"cell_type": "markdown", "metadata": {}, "source": "notes"},
        cell([], "pending", None),  # type: ignore[arg-type]
        cell([], "pending", None),  # type: ignore[arg-type]
    ]
    note = early_exit_note(Path("/x/stop.ipynb"), cells)
    assert note == "stop.ipynb: stopped by SystemExit in cell [2]; 2 later cells not run."
    assert early_exit_note(Path("stop.ipynb"), cells[:3]) is None  # nothing was left out
    assert early_exit_note(Path("stop.ipynb"), [cell([]), cell([], "pending")]) is None


def test_printed_lines_skip_papermills_markers_and_keep_the_last_lines(tmp_path: Path) -> None:
    marker = {"cell_type": "markdown", "metadata": {"tags": ["papermill-error-cell-tag"]}}
    printed = [
        {"output_type": "stream", "name": "stdout", "text": ["one\n", "two\n"]},
        {"output_type": "display_data", "data": {"text/plain": "shown"}, "metadata": {}},
        {"output_type": "stream", "name": "stderr", "text": "UsageError: no such magic.\n"},
    ]
    saved = tmp_path / "out.ipynb"
    saved.write_text(json.dumps({"cells": [marker, cell([]), marker, cell(printed)]}))
    assert printed_lines(saved, 1) == "one\ntwo\nUsageError: no such magic."
    assert printed_lines(saved, 1, lines=1) == "UsageError: no such magic."
    assert printed_lines(saved, 0) == ""
    assert printed_lines(saved, 5) == ""
    assert printed_lines(tmp_path / "missing.ipynb", 1) == ""
