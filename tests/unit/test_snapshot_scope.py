"""Which snapshot entries a run may call unused, without kernels: files, ids and folders."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_millrun.snapshots.scope import Folder, Scope, unused_in_scope


def snapshots(directory: Path, files: dict[str, list[str]]) -> None:
    for name, ids in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({variation: {"values": {"x": 1}} for variation in ids}))


def test_a_notebook_that_ran_whole_has_its_other_ids_unused_and_others_files_are_left(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "snaps"
    (tmp_path / "nbs").mkdir()
    for name in ("calc.ipynb", "other.ipynb"):
        (tmp_path / "nbs" / name).write_text("{}")
    snapshots(directory, {"nbs/calc.json": ["oslo", "rome", "lima"], "nbs/other.json": ["x"]})
    (directory / "notes.json").write_text("[1, 2]")  # not a snapshot file: not ours
    scope = Scope(tmp_path, {"nbs/calc.ipynb": {"oslo", "lima"}}, folders=[Folder(".")])
    unused = unused_in_scope(directory, scope)
    assert unused.names(directory) == ["nbs/calc.json [rome]"]  # other.ipynb exists: not run
    assert unused.unchecked == []


def test_a_notebook_run_in_part_is_unchecked(tmp_path: Path) -> None:
    directory = tmp_path / "snaps"
    snapshots(directory, {"calc.json": ["oslo", "rome"]})
    unused = unused_in_scope(
        directory, Scope(tmp_path, partial=["calc.ipynb"], folders=[Folder(".")])
    )
    assert unused.names(directory) == []
    assert unused.unchecked == [directory / "calc.json"]


def test_a_deleted_notebooks_file_is_unused_only_where_its_folder_was_collected_unfiltered(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "snaps"
    snapshots(
        directory,
        {
            "nbs/gone.json": ["b", "a"],
            "nbs/sub/gone.v2.json": ["a"],
            "nbs/kept.v2.json": ["a"],
            "other/gone.json": ["a"],
            "nbs/text.json": ["a"],
        },
    )
    (tmp_path / "nbs").mkdir()
    (tmp_path / "nbs" / "kept.v2.ipynb").write_text("{}")
    (tmp_path / "nbs" / "text.py").write_text("# a text notebook")
    everything = unused_in_scope(directory, Scope(tmp_path, folders=[Folder("nbs")]))
    assert everything.names(directory) == [
        "nbs/gone.json [a]",
        "nbs/gone.json [b]",
        "nbs/sub/gone.v2.json [a]",
    ]  # other/ was not collected; kept.v2 and text (another suffix) still exist
    top_only = unused_in_scope(directory, Scope(tmp_path, folders=[Folder("nbs", False)]))
    assert top_only.names(directory) == ["nbs/gone.json [a]", "nbs/gone.json [b]"]
    filtered = unused_in_scope(
        directory, Scope(tmp_path, folders=[Folder("nbs")], filtered=["nbs/sub"])
    )
    assert filtered.names(directory) == ["nbs/gone.json [a]", "nbs/gone.json [b]"]
    ignored = unused_in_scope(
        directory, Scope(tmp_path, folders=[Folder(".")]), lambda path: path.name == "sub"
    )
    assert ignored.names(directory) == [
        "nbs/gone.json [a]",
        "nbs/gone.json [b]",
        "other/gone.json [a]",
    ]
    assert unused_in_scope(directory, Scope(tmp_path)).names(directory) == []  # no folder given
    assert unused_in_scope(tmp_path / "none", Scope(tmp_path, folders=[Folder(".")])).entries == {}
