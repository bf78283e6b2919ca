"""Snapshot comparison, the difference table and storage, without kernels."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_millrun.snapshots.checks import check_values, compare, format_check, format_table
from pytest_millrun.snapshots.scope import Folder, Scope, unused_in_scope
from pytest_millrun.snapshots.store import (
    Change,
    SnapshotFileError,
    Tolerance,
    ToleranceError,
    apply_changes,
    check_tolerance,
    read_file,
    render_file,
    snapshot_file,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)
records = st.dictionaries(st.text(min_size=1, max_size=5), json_values, max_size=4)


@given(records)
def test_values_always_match_themselves_nan_included(values: dict[str, Any]) -> None:
    assert compare(values, values) == []


@given(records, st.text(min_size=1, max_size=5), json_values)
def test_a_value_missing_on_either_side_is_a_difference(
    values: dict[str, Any], name: str, value: Any
) -> None:
    fewer = {k: v for k, v in values.items() if k != name}
    more = {**fewer, name: value}
    assert [d.name for d in compare(fewer, more)] == [name]
    assert [d.note for d in compare(more, fewer)] == ["not recorded"]


@given(records)
def test_storage_round_trips_and_is_stable(values: dict[str, Any]) -> None:
    from pytest_millrun.snapshots.store import Entry

    text = render_file({"b": Entry(values), "a": Entry({})})
    assert list(json.loads(text)) == ["a", "b"]  # sorted keys
    reread = _read_text(text)
    assert compare(reread["b"].values, values) == []
    assert render_file(reread) == text


def _read_text(text: str) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "nb.json"
        path.write_text(text)
        return read_file(path)


def test_ints_and_floats_compare_as_numbers_within_the_tolerance() -> None:
    assert compare({"n": 3}, {"n": 3.0}) == []
    assert compare({"x": 1.0}, {"x": 1.0 + 1e-12}) == []
    (row,) = compare({"x": 1.0}, {"x": 1.001})
    assert row.absolute == pytest.approx(0.001)
    assert row.relative == pytest.approx(0.001)
    assert row.tolerance == "rtol=1e-09 atol=0"
    assert compare({"x": 1.0}, {"x": 1.001}, Tolerance(rtol=0.01)) == []
    assert compare({"x": 0.0}, {"x": 1e-7}, Tolerance(atol=1e-6)) == []
    assert compare({"big": 10**30}, {"big": 10**30 + 1}, Tolerance(rtol=0)) != []


def test_nan_equals_nan_and_infinities_only_themselves() -> None:
    nan, inf = math.nan, math.inf
    assert compare({"a": nan, "b": inf}, {"a": nan, "b": inf}) == []
    assert len(compare({"a": nan}, {"a": 1.0})) == 1
    assert len(compare({"a": inf}, {"a": -inf}, Tolerance(rtol=1))) == 1


def test_strings_bools_and_none_compare_exactly_and_bools_are_not_numbers() -> None:
    assert compare({"s": "a", "b": True, "n": None}, {"s": "a", "b": True, "n": None}) == []
    assert [d.name for d in compare({"s": "a"}, {"s": "b"})] == ["s"]
    (row,) = compare({"b": True}, {"b": 1}, Tolerance(rtol=1))
    assert row.note == "type differs"
    assert len(compare({"n": None}, {"n": 0})) == 1


def test_lists_and_dicts_compare_element_by_element_with_lengths_and_keys() -> None:
    rows = compare(
        {"v": [1.0, 2.0, 3.0], "d": {"a": 1, "b": 2}},
        {"v": [1.0, 2.5, 3.0], "d": {"a": 1, "c": 2}},
    )
    assert [d.name for d in rows] == ["d.b", "d.c", "v[1]"]
    (row,) = compare({"v": [1, 2]}, {"v": [1, 2, 3]})
    assert row.note == "length 2 -> 3"


def test_a_per_value_tolerance_applies_to_that_value_only() -> None:
    expected, got = {"a": [1.0], "b": 1.0}, {"a": [1.05], "b": 1.05}
    rows = compare(expected, got, Tolerance(), {"a": Tolerance(rtol=0.1)})
    assert [d.name for d in rows] == ["b"]


def test_the_table_shortens_long_values_and_counts_rows_beyond_the_limit() -> None:
    expected = {f"v{i:02}": i for i in range(25)} | {"long": "x" * 100}
    got = {f"v{i:02}": i + 1 for i in range(25)} | {"long": "y" * 100}
    lines = format_table(compare(expected, got))
    assert lines[0].split() == [
        "name",
        "expected",
        "got",
        "abs",
        "diff",
        "rel",
        "diff",
        "tolerance",
    ]
    assert len(lines) == 2 + 20 + 1
    assert lines[-1] == "... and 6 more differences"
    assert '"' + "x" * 28 + '...  "' + "y" * 28 + "..." in lines[2]
    assert all(len(line) < 140 for line in lines)


def test_the_message_names_the_file_and_how_to_accept(tmp_path: Path) -> None:
    path = tmp_path / "nb.json"
    missing = check_values({}, "a", {"x": 1}, Tolerance(), path)
    assert missing.state == "missing"
    text = format_check(missing, "a", update_hint="--snapshot-update")
    assert str(path) in text
    assert "--snapshot-update" in text
    assert check_values({}, "a", {}, Tolerance(), path).state == "empty"


def test_the_api_refuses_bad_tolerances_and_an_update_without_a_folder_before_running(
    tmp_path: Path,
) -> None:
    from pytest_millrun import execute_run

    notebook = tmp_path / "never_run.ipynb"
    notebook.write_text("not even a notebook")
    with pytest.raises(ValueError, match="rtol must be a number >= 0"):
        execute_run(notebook, [{}], snapshots=tmp_path / "snaps", rtol=-1)
    with pytest.raises(ValueError, match="snapshot_update=True needs snapshots="):
        execute_run(notebook, [{}], snapshot_update=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never_run.ipynb"]


def test_bad_tolerances_are_refused() -> None:
    assert check_tolerance("1e-6", "--rtol") == 1e-6
    for bad in ("-1", "nan", "x", True):
        with pytest.raises(ToleranceError, match="--rtol must be a number >= 0"):
            check_tolerance(bad, "--rtol")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not valid JSON"),
        ("[]", "should hold an object"),
        ('{"a": {"values": 3}}', "the entry 'a' should be"),
        ('{"a": {"values": {}, "tolerances": {"x": {"rel": 1}}}}', "tolerance of 'x' in 'a'"),
        ('{"a": {"values": {}, "tolerances": {"x": {"rtol": -1}}}}', "rtol must be a number"),
    ],
)
def test_a_broken_snapshot_file_is_named_with_the_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "nb.json"
    path.write_text(text)
    with pytest.raises(SnapshotFileError, match=message) as info:
        read_file(path)
    assert str(path) in str(info.value)


def test_updates_keep_tolerances_and_other_entries_and_files(tmp_path: Path) -> None:
    directory = tmp_path / "snaps"
    path = snapshot_file(directory, "nbs/nb.ipynb")
    assert path == directory / "nbs" / "nb.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "a": {"values": {"x": 1.0}, "tolerances": {"x": {"rtol": 0.5}}},
                "b": {"values": {"x": 2.0}},
            }
        )
    )
    other = directory / "other.json"
    other.write_text('{"z": {"values": {}}}')
    summary = apply_changes(
        directory,
        [
            Change("nbs/nb.ipynb", "a", "differs", {"x": 3.0}),
            Change("nbs/nb.ipynb", "c", "missing", {"x": math.nan}),
            Change("nbs/nb.ipynb", "d", "matches", {"x": 9.0}),
        ],
    )
    assert (summary.written, summary.updated, summary.unchanged) == (1, 1, 1)
    assert summary.unused == []  # no scope given: nothing checked
    assert summary.removed == 0
    data = json.loads(path.read_text())
    assert data == {
        "a": {"tolerances": {"x": {"rtol": 0.5}}, "values": {"x": 3.0}},
        "b": {"values": {"x": 2.0}},
        "c": {"values": {"x": {"$float": "nan"}}},
    }
    assert other.read_text() == '{"z": {"values": {}}}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["nb.json"]  # no temporary left


def test_an_update_removes_the_unused_entries_it_is_given_and_empty_files(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "snaps"
    apply_changes(
        directory,
        [
            Change("nb.ipynb", "a", "missing", {"x": 1}),
            Change("nb.ipynb", "gone", "missing", {"x": 1}),
            Change("old.ipynb", "a", "missing", {"x": 1}),
        ],
    )
    unused = unused_in_scope(directory, Scope(tmp_path, {"nb.ipynb": ["a"]}, folders=[Folder(".")]))
    assert unused.names(directory) == ["nb.json [gone]", "old.json [a]"]
    summary = apply_changes(directory, [Change("nb.ipynb", "a", "matches", {"x": 1})], unused)
    assert summary.unused == ["nb.json [gone]", "old.json [a]"]
    assert summary.removed == 2
    assert sorted(p.name for p in directory.iterdir()) == ["nb.json"]
    assert list(json.loads((directory / "nb.json").read_text())) == ["a"]
