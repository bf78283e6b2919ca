"""What a Dask task carries to a worker without the client's files, and the size limit."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pytest_millrun.cache.read_sets import keep_read_set, last_read_set
from pytest_millrun.config.option_table import BY_NAME
from pytest_millrun.core.globs import matches_any, path_regexes
from pytest_millrun.dispatch import ship_manifest
from pytest_millrun.dispatch.ship_manifest import (
    DEFAULT_SHIP_LIMIT_MIB,
    ShipLimitError,
    ShipSettings,
    check_size,
    job_files,
    read_set_files,
    tree_files,
)
from pytest_millrun.dispatch.ship_worker import moved_settings
from pytest_millrun.dispatch.shipping import import_roots


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def names(paths: list[str], base: Path) -> list[str]:
    return sorted(os.path.relpath(path, base) for path in paths)


def test_tree_leaves_out_hidden_folders_caches_and_the_output_folder(tmp_path: Path) -> None:
    for name in ("nb.ipynb", "helper.py", "sub/data.csv", ".git/config", "__pycache__/h.pyc",
                 "out/nb.ipynb", ".hidden", "pkg.egg-info/PKG-INFO"):  # fmt: skip
        touch(tmp_path / name)
    found = tree_files(tmp_path, [tmp_path / "out"])
    assert names(found, tmp_path) == ["helper.py", "nb.ipynb", "sub/data.csv"]


def test_tree_is_bounded_in_depth_and_count_nearest_files_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path / "a" / "b" / "c" / "d" / "e" / "deep.txt")
    touch(tmp_path / "a" / "b" / "c" / "d" / "level4.txt")
    assert names(tree_files(tmp_path), tmp_path) == ["a/b/c/d/level4.txt"]
    for index in range(5):
        touch(tmp_path / f"top{index}.txt")
    monkeypatch.setattr(ship_manifest, "TREE_FILES", 3)
    assert names(tree_files(tmp_path), tmp_path) == ["top0.txt", "top1.txt", "top2.txt"]


def test_read_set_ships_files_missing_ones_that_exist_now_and_listed_folders(
    tmp_path: Path,
) -> None:
    read = touch(tmp_path / "data" / "x.csv")
    appeared = touch(tmp_path / "late.txt")
    touch(tmp_path / "parts" / "p1.csv")
    touch(tmp_path / "parts" / "new.csv")  # not read last time: a glob would see it now
    found = read_set_files({
        "files": [str(read)], "modules": [],
        "missing": [str(appeared), str(tmp_path / "still-missing.txt")],
        "listings": [str(tmp_path / "parts")],
    })  # fmt: skip
    assert names(found, tmp_path) == ["data/x.csv", "late.txt", "parts/new.csv", "parts/p1.csv"]


def test_job_files_are_deduplicated_existing_and_not_excluded(tmp_path: Path) -> None:
    notebook = touch(tmp_path / "nbs" / "nb.ipynb")
    keep = touch(tmp_path / "nbs" / "keep.csv")
    raw = touch(tmp_path / "data" / "raw" / "huge.bin")
    exclude = path_regexes(["data/raw/**"], tmp_path)
    found = job_files(notebook, [str(notebook), str(keep)], [str(raw), str(keep), "/nope"], exclude)
    assert names(found, tmp_path) == ["nbs/keep.csv", "nbs/nb.ipynb"]


@pytest.mark.parametrize(
    ("limit", "exclude", "advice"),
    [("--ship-limit", "--ship-exclude", "--ship-limit MIB"),
     ("ship_limit=", "ship_exclude=", "ship_limit=MIB")],
)  # fmt: skip
def test_size_limit_names_the_biggest_files_and_how_to_go_on(
    limit: str, exclude: str, advice: str
) -> None:
    mib = 1 << 20
    sizes = {f"/p/small{i}.txt": 10 for i in range(7)} | {"/p/big.parquet": 3 * mib,
                                                             "/p/mid.csv": mib}  # fmt: skip
    settings = ShipSettings(limit_mib=2, limit_option=limit, exclude_option=exclude)
    with pytest.raises(ShipLimitError) as info:
        check_size(sizes, settings)
    message = str(info.value)
    assert "9 files, 4.0 MiB in all, above the limit of 2 MiB" in message
    biggest = "/p/big.parquet (3.0 MiB), /p/mid.csv (1.0 MiB), /p/small0.txt (10 B)"
    assert f"The biggest: {biggest}" in message
    assert "/p/small5.txt" not in message  # five named
    assert advice in message
    assert exclude in message
    check_size(sizes, ShipSettings(limit_mib=5))  # under the limit: fine


def test_the_limit_option_default_is_the_manifest_default() -> None:
    assert BY_NAME["ship_limit"].default == DEFAULT_SHIP_LIMIT_MIB == ShipSettings().limit_mib


def test_import_roots_are_the_folders_above_packages_not_the_notebook_folder(
    tmp_path: Path,
) -> None:
    touch(tmp_path / "src" / "mylib" / "__init__.py")
    core = touch(tmp_path / "src" / "mylib" / "sub" / "core.py")
    touch(tmp_path / "src" / "mylib" / "sub" / "__init__.py")
    beside = touch(tmp_path / "nbs" / "helper.py")
    loose = touch(tmp_path / "tools" / "util.py")
    roots = import_roots([str(core), str(beside), str(loose)], tmp_path / "nbs")
    assert roots == (str(tmp_path / "src"), str(tmp_path / "tools"))


def test_read_settings_moved_to_a_task_folder_keep_the_clients_exclusions() -> None:
    ignore = path_regexes(["logs/*.log"], Path("/home/me/proj"))
    moved = moved_settings(
        {"roots": ["/home/me/proj/nbs"], "exclude": ["/home/me/proj/out"], "ignore": ignore},
        "/tmp/millrun-task-1",
    )
    assert moved["roots"] == ["/tmp/millrun-task-1", "/tmp/millrun-task-1/home/me/proj/nbs"]
    assert moved["exclude"] == ["/tmp/millrun-task-1/home/me/proj/out"]
    assert matches_any("/tmp/millrun-task-1/home/me/proj/logs/a.log", moved["ignore"])
    assert not matches_any("/home/me/proj/logs/a.log", moved["ignore"])
    assert all(re.compile(regex) for regex in moved["ignore"])


def test_a_read_set_recorded_in_a_task_folder_names_the_clients_paths(tmp_path: Path) -> None:
    output = tmp_path / "out.ipynb"
    output.write_text(json.dumps({"cells": [], "metadata": {"millrun": {}}}))
    home = tmp_path / "proj" / "nbs"
    task = "/tmp/millrun-task-7"
    payload = {
        "files": {f"{task}{home}/data.csv": [1, 2], f"{task}{tmp_path}/proj/data/x.csv": [1, 2]},
        "modules": {f"{task}{tmp_path}/proj/src/lib.py": [1, 2]},
        "listings": {}, "missing": [f"{task}{home}/late.txt"],
    }  # fmt: skip
    keep_read_set(output, payload, home, task)
    stored = json.loads(output.read_text())["metadata"]["millrun"]["reads"]
    assert stored["files"] == sorted(["data.csv", f"{tmp_path}/proj/data/x.csv"])
    assert last_read_set(output, home) == {
        "files": sorted([f"{home}/data.csv", f"{tmp_path}/proj/data/x.csv"]),
        "modules": [f"{tmp_path}/proj/src/lib.py"], "listings": [], "missing": [f"{home}/late.txt"],
    }  # fmt: skip


def test_a_failed_recorder_keeps_no_read_set(tmp_path: Path) -> None:
    output = tmp_path / "out.ipynb"
    output.write_text(json.dumps({"cells": [], "metadata": {"millrun": {}}}))
    keep_read_set(output, {"problem": "the recorder failed"}, tmp_path)
    assert last_read_set(output, tmp_path) == {}


def test_what_a_worker_lacks_is_said_in_words() -> None:
    import platform

    from pytest_millrun.cache.keys import millrun_version
    from pytest_millrun.dispatch.worker_checks import _lacks

    here = {"millrun": millrun_version(), "python": platform.python_version(),
            "installed": ["python3"], "environments": {}}  # fmt: skip
    assert _lacks(here, ["python3"]) == ""
    other = {**here, "millrun": "0.0.1", "python": "2.7.18", "installed": ["ir"]}
    words = _lacks(other, ["python3", "bash"])
    assert words.startswith(f"lacks pytest-millrun {millrun_version()} (it has 0.0.1) and Python ")
    assert "(it has 2.7.18) and the kernel python3, bash (it has ir)" in words
    gone = _lacks(ModuleNotFoundError("No module named 'pytest_millrun'"), ["python3"])
    assert gone.startswith("cannot answer (ModuleNotFoundError: No module named 'pytest_millrun')")
