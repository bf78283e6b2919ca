"""Longest first: the order in which runs start, from the last run's durations (no kernels)."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_millrun.pipeline.run_order import longest_first, output_duration, outputs_durations


def test_known_durations_run_longest_first() -> None:
    order = longest_first(["a", "b", "c"], {"a": 0.8, "b": 0.9, "c": 8.0}, key=str)
    assert order == ["c", "b", "a"]


def test_with_nothing_known_the_order_is_kept() -> None:
    assert longest_first(["b", "a", "c"], {}, key=str) == ["b", "a", "c"]


def test_unknown_items_come_first_in_their_own_order() -> None:
    durations = {"short": 0.5, "long": 5.0}
    order = longest_first(["short", "new2", "long", "new1"], durations, key=str)
    assert order == ["new2", "new1", "long", "short"]


def test_equal_durations_keep_their_order() -> None:
    durations = {"x": 1.0, "y": 1.0, "z": 2.0}
    assert longest_first(["y", "x", "z"], durations, key=str) == ["z", "y", "x"]


def test_items_are_matched_by_their_key() -> None:
    jobs = [{"out": "a"}, {"out": "b"}]
    order = longest_first(jobs, {"a": 1.0, "b": 3.0}, key=lambda job: job["out"])
    assert order == [{"out": "b"}, {"out": "a"}]


def _output(path: Path, metadata: object) -> Path:
    path.write_text(json.dumps({"cells": [], "metadata": metadata, "nbformat": 4}))
    return path


def test_an_outputs_duration_is_papermills_record(tmp_path: Path) -> None:
    output = _output(tmp_path / "o.ipynb", {"papermill": {"duration": 8.25}})
    assert output_duration(output) == 8.25


def test_an_outputs_duration_is_its_cells_when_papermill_recorded_them(tmp_path: Path) -> None:
    cells = [
        {"cell_type": "code", "metadata": {"papermill": {"duration": 1.5}}},
        {"cell_type": "markdown", "metadata": {}},
        {"cell_type": "code", "metadata": {"papermill": {"duration": 0.25}}},
    ]
    output = tmp_path / "o.ipynb"
    output.write_text(json.dumps({"cells": cells, "metadata": {"papermill": {"duration": 9.0}}}))
    assert output_duration(output) == 1.75


def test_an_output_without_a_usable_duration_has_none(tmp_path: Path) -> None:
    assert output_duration(tmp_path / "never-written.ipynb") is None
    assert output_duration(_output(tmp_path / "a.ipynb", {})) is None
    assert output_duration(_output(tmp_path / "b.ipynb", {"papermill": {"duration": None}})) is None
    assert output_duration(_output(tmp_path / "c.ipynb", {"papermill": {"duration": "1"}})) is None
    assert output_duration(_output(tmp_path / "d.ipynb", {"papermill": {"duration": -1}})) is None
    (tmp_path / "e.ipynb").write_text("{not json")
    assert output_duration(tmp_path / "e.ipynb") is None


def test_outputs_durations_leaves_out_outputs_never_written(tmp_path: Path) -> None:
    ran = _output(tmp_path / "ran.ipynb", {"papermill": {"duration": 2}})
    assert outputs_durations([ran, tmp_path / "new.ipynb"]) == {ran: 2.0}
