"""The results table without a kernel: columns, the three formats, atomic writes, bad paths."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_millrun import write_results
from pytest_millrun.core.data import ExecutionResult, Failure
from pytest_millrun.core.files import atomic_write
from pytest_millrun.results import (
    ResultRow,
    ResultsPathError,
    check_results_path,
    columns,
    render,
)

ROWS = [
    ResultRow("a.ipynb", "0", "passed", 1.25, "out/0-a.ipynb", "", {"x": 1}, {"rmse": 0.5}),
    ResultRow(
        "sub/b.ipynb",
        "1",
        "failed",
        0.5,
        "out/sub/1-b.ipynb",
        "ZeroDivisionError: division by zero in cell [3]",
        {"x": 2, "mode": "fast"},
        {"curve": [1, math.nan], "flag": True, "none": None, "inf": -math.inf},
    ),
    ResultRow("a.ipynb", "2", "skipped", 0.0, "", "", {"x": 3}, {}),
]


def test_columns_are_the_base_then_every_param_and_value_in_first_seen_order() -> None:
    assert columns(ROWS) == [
        "notebook", "variation", "status", "cached", "duration_s", "output", "error",
        "param.x", "param.mode", "value.rmse", "value.curve", "value.flag", "value.none",
        "value.inf",
    ]  # fmt: skip


def test_csv_cells_are_text_nested_values_json_and_missing_ones_empty(tmp_path: Path) -> None:
    path = write_results(ROWS, tmp_path / "r.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["variation"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["value.rmse"] == "0.5"
    assert rows[0]["param.mode"] == ""  # a row without that parameter
    assert rows[1]["value.curve"] == '[1,{"$float":"nan"}]'
    assert rows[1]["value.flag"] == "true"
    assert rows[1]["value.none"] == ""
    assert rows[1]["value.inf"] == "-inf"
    assert rows[1]["error"] == "ZeroDivisionError: division by zero in cell [3]"
    assert rows[2]["status"] == "skipped"


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_formats_hold_every_column_with_tagged_non_finite_floats(
    tmp_path: Path, suffix: str
) -> None:
    path = write_results(ROWS, tmp_path / f"r{suffix}")
    text = path.read_text()
    objects = (
        json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines()]
    )
    assert [list(o) for o in objects] == [columns(ROWS)] * 3
    assert objects[1]["value.curve"] == [1, {"$float": "nan"}]
    assert objects[1]["value.inf"] == {"$float": "-inf"}
    assert objects[0]["param.mode"] is None
    assert "NaN" not in text
    assert "Infinity" not in text


finite = st.floats(allow_nan=False, allow_infinity=False)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=8,
)
rows = st.builds(
    ResultRow,
    notebook=st.text(min_size=1, max_size=10),
    variation=st.text(max_size=6),
    status=st.sampled_from(["passed", "failed", "interrupted", "skipped"]),
    duration_s=finite,
    output=st.text(max_size=10),
    error=st.text(max_size=20),
    params=st.dictionaries(st.text(min_size=1, max_size=4), values, max_size=3),
    values=st.dictionaries(st.text(min_size=1, max_size=4), values, max_size=3),
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=40, deadline=None)  # renders a report page per example: slow under load
@given(st.lists(rows, max_size=4))
def test_rows_survive_the_trip_through_a_report_and_render_in_every_format(
    table: list[ResultRow],
) -> None:
    for row in table:
        back = ResultRow.from_json(json.loads(json.dumps(row.to_json(), allow_nan=False)))
        assert same(back.values, dict(row.values))
        assert same(back.params, dict(row.params))
        assert (back.notebook, back.variation, back.status) == (
            row.notebook,
            row.variation,
            row.status,
        )
    for suffix in (".csv", ".json", ".jsonl"):
        text = render(table, suffix)
        if suffix == ".csv":
            parsed = list(csv.reader(io.StringIO(text, newline="")))
            assert len(parsed) == len(table) + 1
            assert {len(r) for r in parsed} == {len(columns(table))}
        elif suffix == ".jsonl":
            assert len([json.loads(line) for line in text.splitlines()]) == len(table)
        else:
            assert len(json.loads(text)) == len(table)


def test_write_results_takes_execution_results_relative_to_their_common_folder(
    tmp_path: Path,
) -> None:
    nbs = tmp_path / "nbs"
    results = [
        ExecutionResult(nbs / "a.ipynb", "0", {"x": 1}, nbs / "out" / "0-a.ipynb", "passed", 1.0,
                        recorded={"v": 1}),
        ExecutionResult(nbs / "sub" / "b.ipynb", "0", {"x": 1}, None, "failed", 2.0,
                        Failure("cell", "m", "ValueError", "bad", 1, 2)),
    ]  # fmt: skip
    path = write_results(results, tmp_path / "t.jsonl")
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert (first["notebook"], first["output"], first["value.v"]) == ("a.ipynb", "out/0-a.ipynb", 1)
    assert (second["notebook"], second["output"]) == ("sub/b.ipynb", "")
    assert second["error"] == "ValueError: bad in cell [2]"
    path = write_results(results, tmp_path / "t.jsonl", root=tmp_path)
    assert json.loads(path.read_text().splitlines()[0])["notebook"] == "nbs/a.ipynb"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("folder", "is a directory"),
        ("calc.ipynb", "is a notebook"),
        ("table.txt", "must end in .csv, .json or .jsonl"),
        ("table", "not 'nothing'"),
        ("afile/table.csv", "is a file, not a folder"),
    ],
)
def test_bad_results_paths_are_refused_naming_the_fix(
    tmp_path: Path, name: str, message: str
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("")
    with pytest.raises(ResultsPathError, match=message):
        check_results_path(tmp_path / name)


def test_an_input_notebook_is_refused_whatever_its_name(tmp_path: Path) -> None:
    (tmp_path / "nb.csv").write_text("")
    with pytest.raises(ResultsPathError, match="is a notebook"):
        check_results_path(tmp_path / "nb.csv", [tmp_path / "nb.csv"])


def test_the_file_is_replaced_whole_and_no_temporary_file_remains(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "r.csv"
    atomic_write(target, "old\n")
    os.chmod(target, 0o640)
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(50):
            atomic_write(target, "new\n" * 20_000)
            atomic_write(target, "old\n")
    finally:
        stop.set()
        reader.join()
    assert seen <= {"old\n", "new\n" * 20_000}
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.csv"]
    assert target.stat().st_mode & 0o777 == 0o640  # the file keeps its mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    write_results(ROWS[:1], target)
    before = target.read_text()
    with pytest.raises(UnicodeEncodeError):
        atomic_write(target, "half written \ud800 cannot be encoded")
    assert target.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
