"""The in-kernel read recorder, run as a kernel runs it (its source exec'd) in a plain python.

No kernel: each test starts ``python -c`` in a folder of its own, which runs the source
of ``pytest_millrun/inkernel/read_recorder.py`` in a namespace of its own, starts recording,
runs the test's code and prints what :func:`finish` returns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from millrun_testing import recorded
from pytest_millrun.inkernel import read_recorder as reads


def relative(paths: Any, folder: Path) -> list[str]:
    return sorted(os.path.relpath(p, folder) for p in paths)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data" / "parts").mkdir(parents=True)
    (tmp_path / "data" / "prices.csv").write_text("day,price\n1,10\n2,11\n")
    (tmp_path / "data" / "parts" / "a.txt").write_text("a")
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    return tmp_path


def test_files_read_by_open_pathlib_and_json_are_recorded_with_their_stat(project: Path) -> None:
    (project / "conf.json").write_text('{"a": 1}')
    found = recorded(
        project,
        """
        import json, pathlib
        open("data/prices.csv").read()
        pathlib.Path("data/parts/a.txt").read_text()
        json.load(open(os.path.abspath("conf.json")))
        """,
    )
    assert relative(found["files"], project) == ["conf.json", "data/parts/a.txt", "data/prices.csv"]
    stat = (project / "data" / "prices.csv").stat()
    assert found["files"][str(project / "data" / "prices.csv")] == [stat.st_size, stat.st_mtime_ns]
    assert found["missing"] == []
    assert found["changed"] == []


def test_files_read_by_pandas_numpy_and_compressed_openers_are_recorded(project: Path) -> None:
    import numpy as np

    np.save(project / "array.npy", np.arange(3))
    (project / "table.txt").write_text("1 2\n3 4\n")
    found = recorded(
        project,
        """
        import bz2, pandas, numpy
        pandas.read_csv("data/prices.csv")
        numpy.load("array.npy")
        numpy.loadtxt("table.txt")
        with bz2.open(open("packed.bz2", "wb"), "wb") as f:
            f.write(b"x")
        bz2.open("packed.bz2").read()
        """,
        before="import numpy, pandas, bz2",  # loaded before recording starts, as in a template
    )
    files = relative(found["files"], project)
    assert files == ["array.npy", "data/prices.csv", "table.txt"]  # packed.bz2: a product
    assert relative(found["wrote"], project) == ["packed.bz2"]


def test_a_file_that_was_not_found_is_recorded_as_missing(project: Path) -> None:
    found = recorded(
        project,
        """
        for name in ("data/new.csv", "nowhere/x.csv"):
            try:
                open(name)
            except FileNotFoundError:
                pass
        try:
            os.listdir("data/later")
        except FileNotFoundError:
            pass
        """,
    )
    assert relative(found["missing"], project) == ["data/later", "data/new.csv", "nowhere/x.csv"]
    assert found["files"] == {}


@pytest.mark.parametrize(
    "listing",
    [
        "glob.glob('data/parts/*.txt')",
        "os.listdir('data/parts')",
        "list(os.scandir('data/parts'))",
        "list(pathlib.Path('data/parts').iterdir())",
        "list(pathlib.Path('data').glob('parts/*'))",
        "[x for x in os.walk('data/parts')]",
    ],
)
def test_a_folder_listed_any_way_is_recorded_with_the_digest_of_its_names(
    project: Path, listing: str
) -> None:
    found = recorded(project, f"import glob, pathlib\n{listing}\n")
    parts = str(project / "data" / "parts")
    assert parts in found["listings"]
    rules = reads.Rules({"roots": [str(project)]}, environment=False)
    assert found["listings"][parts] == reads.listing_digest(parts, rules)
    assert found["changed"] == []


def test_a_listing_digest_sees_names_added_but_not_hidden_files_or_caches(project: Path) -> None:
    rules = reads.Rules({"roots": [str(project)]}, environment=False)
    parts = str(project / "data" / "parts")
    before = reads.listing_digest(parts, rules)
    (project / "data" / "parts" / ".hidden").write_text("")
    (project / "data" / "parts" / "__pycache__").mkdir()
    assert reads.listing_digest(parts, rules) == before
    (project / "data" / "parts" / "b.txt").write_text("")
    assert reads.listing_digest(parts, rules) != before
    assert reads.listing_digest(str(project / "gone"), rules) == "missing"


def test_files_the_run_wrote_before_reading_them_are_products_not_reads(project: Path) -> None:
    found = recorded(
        project,
        """
        import pathlib, sqlite3
        with open("out.csv", "w") as f:
            f.write("x")
        open("out.csv").read()
        pathlib.Path("made.txt").write_text("y")
        pathlib.Path("made.txt").read_text()
        os.makedirs("results", exist_ok=True)
        open("results/r.txt", "w").close()
        os.listdir("results")
        fd = os.open("raw.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.close(fd)
        os.close(os.open("raw.bin", os.O_RDONLY))
        sqlite3.connect("new.db").close()
        sqlite3.connect(":memory:").close()
        """,
        before="import sqlite3",  # IPython's history loads it in every kernel
    )
    assert found["files"] == {}
    assert found["listings"] == {}
    assert relative(found["wrote"], project) == [
        "made.txt", "new.db", "out.csv", "raw.bin", "results", "results/r.txt"
    ]  # fmt: skip


def test_an_existing_sqlite_database_and_os_open_for_reading_are_reads(project: Path) -> None:
    import sqlite3

    sqlite3.connect(project / "old.db").close()
    found = recorded(
        project,
        """
        import sqlite3
        sqlite3.connect("old.db").close()
        os.close(os.open("data/prices.csv", os.O_RDONLY))
        """,
        before="import sqlite3",
    )
    assert relative(found["files"], project) == ["data/prices.csv", "old.db"]


def test_local_modules_are_recorded_and_the_interpreters_are_not(project: Path) -> None:
    (project / "mylib").mkdir()
    (project / "mylib" / "__init__.py").write_text("from . import core\n")
    (project / "mylib" / "core.py").write_text("X = 2\n")
    found = recorded(project, "import helper, mylib, json, csv, pytest, numpy\n")
    modules = relative(found["modules"], project)
    assert modules == ["helper.py", "mylib/__init__.py", "mylib/core.py"]
    stat = (project / "helper.py").stat()
    assert found["modules"][str(project / "helper.py")] == [stat.st_size, stat.st_mtime_ns]


def test_the_import_systems_own_reads_and_listings_are_not_recorded(project: Path) -> None:
    (project / "pkg.egg-info").mkdir()
    (project / "pkg.egg-info" / "PKG-INFO").write_text("Name: pkg\nVersion: 1\n")
    found = recorded(
        project,
        """
        import importlib, importlib.metadata, pkgutil, linecache
        importlib.metadata.version("pytest")
        list(importlib.metadata.distributions())
        importlib.metadata.entry_points()
        list(pkgutil.iter_modules([os.getcwd()]))
        importlib.invalidate_caches()
        import helper
        linecache.getlines(helper.__file__)
        """,
    )
    assert found["files"] == {}
    assert found["listings"] == {}
    assert found["missing"] == []


def test_coverages_own_data_files_and_configuration_are_not_reads(project: Path) -> None:
    """A measured kernel saves and reloads its ``.coverage.*`` file: that is no input."""
    (project / ".coveragerc").write_text("[run]\nparallel = true\n")
    found = recorded(
        project,
        """
        import coverage
        measured = coverage.Coverage(data_suffix="kernel", config_file=".coveragerc")
        measured.start()
        import helper
        measured.stop()
        measured.save()
        measured.get_data().measured_files()
        open("data/prices.csv").read()
        """,
    )
    assert relative(found["files"], project) == ["data/prices.csv"]
    assert found["missing"] == []


def test_excluded_ignored_and_environment_paths_are_left_out(
    project: Path, tmp_path_factory: Any
) -> None:
    elsewhere = tmp_path_factory.mktemp("scratch")  # in the temp folder, not under a root
    (elsewhere / "t.txt").write_text("t")
    (project / "out").mkdir()
    (project / "out" / "o.txt").write_text("o")
    (project / "run.log").write_text("l")
    found = recorded(
        project,
        f"""
        import json, tempfile
        open({str(elsewhere / "t.txt")!r}).read()
        open("out/o.txt").read()
        os.listdir("out")
        open("run.log").read()
        open(json.__file__).read()
        open("/proc/self/status").read()
        os.listdir(tempfile.gettempdir())
        open("data/prices.csv").read()
        """,
        exclude=[str(project / "out")],
        ignore=[r".*\.log"],
    )
    assert relative(found["files"], project) == ["data/prices.csv"]
    assert found["listings"] == {}


def test_the_cells_own_open_through_ipython_is_recorded(project: Path) -> None:
    found = recorded(
        project,
        """
        from IPython.core import interactiveshell
        assert interactiveshell.io_open is open
        interactiveshell._modified_open("data/prices.csv").read()
        """,
        before="import IPython.core.interactiveshell",
    )
    assert relative(found["files"], project) == ["data/prices.csv"]


def test_a_listing_changed_by_another_process_during_the_run_is_reported(project: Path) -> None:
    found = recorded(
        project,
        """
        import glob, subprocess, sys
        glob.glob("data/parts/*")
        open("data/parts/mine.txt", "w").close()
        glob.glob("data/*")
        subprocess.run([sys.executable, "-c", "open('data/theirs.txt', 'w').close()"])
        """,
    )
    assert found["changed"] == [str(project / "data")]  # parts: only the run's own file


def test_a_module_edited_after_recording_started_is_reported(project: Path) -> None:
    found = recorded(
        project,
        """
        import subprocess, sys, time, helper
        time.sleep(0.02)
        edit = "open('helper.py', 'a').write('# edited')"
        subprocess.run([sys.executable, "-c", edit], check=True)  # the user, while it runs
        """,
    )
    assert found["changed"] == [str(project / "helper.py")]


def test_removing_a_tree_is_no_listing_and_replaced_functions_still_pickle(project: Path) -> None:
    found = recorded(
        project,
        """
        import pickle, shutil
        shutil.rmtree("data/parts")
        assert pickle.loads(pickle.dumps(open)) is open
        assert pickle.loads(pickle.dumps(os.listdir)) is os.listdir
        """,
    )
    assert found["listings"] == {}
    assert found["changed"] == []


def test_uninstall_puts_every_original_back(project: Path) -> None:
    import builtins
    import io

    before = (builtins.open, io.open, os.open, os.listdir, os.scandir, os.remove)
    recorder = reads.ReadRecorder({"roots": [str(project)]})
    recorder.install()
    try:
        assert builtins.open is not before[0]
        assert os.scandir is not before[4]
        with open(project / "data" / "prices.csv") as handle:
            handle.read()
    finally:
        recorder.uninstall()
    assert (builtins.open, io.open, os.open, os.listdir, os.scandir, os.remove) == before
    assert list(recorder.files) == [str(project / "data" / "prices.csv")]


def test_nothing_is_recorded_before_start(project: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "millrun_reads"}
    exec(compile(Path(reads.__file__).read_text(), "<millrun-reads>", "exec"), namespace)
    assert namespace["finish"]() == {}
    assert not getattr(open, "millrun_reads", False)


def test_relative_paths_follow_the_working_folder_and_renames_are_the_runs(project: Path) -> None:
    (project / "old.txt").write_text("made before the run")
    found = recorded(
        project,
        """
        import contextlib
        open("helper.py").read()
        with contextlib.chdir("data"):
            open("prices.csv").read()
            os.listdir("parts")
        os.listdir(".")
        os.rename(src="old.txt", dst="final.txt")
        """,
    )
    assert relative(found["files"], project) == ["data/prices.csv", "helper.py"]
    assert relative(found["listings"], project) == [".", "data/parts"]
    assert relative(found["wrote"], project) == ["final.txt"]
    assert found["changed"] == []  # the listing changed, but by the run's own rename
