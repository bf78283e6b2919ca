"""The key's reads part: a kernel's read record made into digests, re-checked, and worded.

The records come from the real recorder (run in a plain python, no kernel) or are
written by hand where a test needs a record no run would make on its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from millrun_testing import recorded
from pytest_millrun.cache import keys, reads, verdicts
from pytest_millrun.cache.keys import CacheKey, file_digest, forget
from pytest_millrun.inkernel.read_recorder import PAYLOAD_VERSION

_READS = """
import glob, importlib, sys
sys.path.insert(0, "src")
open("data/prices.csv").read()
try:
    open("data/old.csv").read()
except FileNotFoundError:
    pass
open("data/gone.csv").read()
glob.glob("data/parts/*.csv")
try:
    open("data/new.csv")
except FileNotFoundError:
    pass
import mylib.core
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    forget()
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "data" / "parts").mkdir(parents=True)
    (tmp_path / "nb" / "data" / "prices.csv").write_text("day,price\n1,10\n")
    (tmp_path / "nb" / "data" / "gone.csv").write_text("g")
    (tmp_path / "nb" / "data" / "parts" / "a.csv").write_text("a")
    (tmp_path / "nb" / "src" / "mylib").mkdir(parents=True)
    (tmp_path / "nb" / "src" / "mylib" / "__init__.py").write_text("")
    (tmp_path / "nb" / "src" / "mylib" / "core.py").write_text("X = 1\n")
    return tmp_path / "nb"


def settings_for(folder: Path, **more: Any) -> reads.ReadSettings:
    return reads.read_settings(folder, base=folder, **more)


def part_after(folder: Path, code: str = _READS, **more: Any) -> dict[str, Any]:
    settings = settings_for(folder, **more)
    payload = recorded(folder, code, **settings.kernel_settings())
    part, unusable = reads.reads_part(payload, folder, settings)
    assert unusable == []
    assert part is not None
    return part


def changes(folder: Path, part: dict[str, Any], **more: Any) -> list[str]:
    forget()  # a new run
    settings = settings_for(folder, **more)
    return reads.read_changes(part, reads.current_reads(part, folder, settings))


def test_a_record_becomes_digests_named_relative_to_the_notebooks_folder(project: Path) -> None:
    part = part_after(project)
    assert part["files"] == {
        "data/gone.csv": file_digest(project / "data" / "gone.csv"),
        "data/prices.csv": file_digest(project / "data" / "prices.csv"),
    }
    assert list(part["modules"]) == ["src/mylib/__init__.py", "src/mylib/core.py"]
    assert list(part["listings"]) == ["data/parts"]
    assert part["missing"] == ["data/new.csv", "data/old.csv"]
    assert changes(project, part) == []


def test_each_change_is_worded_as_the_issue_words_it(project: Path) -> None:
    part = part_after(project)
    (project / "data" / "prices.csv").write_text("day,price\n1,99\n")
    (project / "src" / "mylib" / "core.py").write_text("X = 2\n")
    (project / "data" / "parts" / "b.csv").write_text("b")
    (project / "data" / "gone.csv").unlink()
    (project / "data" / "new.csv").write_text("n")
    assert changes(project, part) == [
        "read data/gone.csv removed",
        "read data/prices.csv changed",
        "imported src/mylib/core.py changed",
        "listing of data/parts changed",
        "data/new.csv now exists",
    ]


def test_a_touched_file_with_the_same_content_is_no_change(project: Path) -> None:
    part = part_after(project)
    os.utime(project / "data" / "prices.csv", ns=(1, 1))
    assert changes(project, part) == []


def test_a_file_outside_the_notebooks_folder_is_named_by_its_absolute_path(
    project: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared.csv"
    shared.write_text("s")
    settings = reads.read_settings(project, base=tmp_path)
    payload = recorded(project, f"open({str(shared)!r}).read()\n", **settings.kernel_settings())
    part, _ = reads.reads_part(payload, project, settings)
    assert part is not None
    assert list(part["files"]) == [str(shared)]
    shared.write_text("t")
    forget()
    now = reads.current_reads(part, project, settings)
    assert reads.read_changes(part, now) == [f"read {shared} changed"]


def test_above_the_hash_limit_a_file_is_known_by_size_mtime_and_inode(project: Path) -> None:
    big = project / "data" / "big.bin"
    big.write_bytes(b"x" * (2 << 20))
    part = part_after(project, "open('data/big.bin', 'rb').read()\n", hash_limit_mib=1)
    assert part["files"]["data/big.bin"].startswith("stat:")
    os.utime(big, ns=(1, 1))  # the same content, but a large file is not hashed
    assert changes(project, part, hash_limit_mib=1) == [
        "read data/big.bin changed (size, mtime or inode; too large to hash)"
    ]


def test_a_file_is_hashed_once_per_run_and_a_rewrite_is_seen_even_with_its_mtime_put_back(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = part_after(project, "open('data/prices.csv').read()\n")  # hashed once, to stamp
    prices = project / "data" / "prices.csv"
    stat = prices.stat()
    settings = settings_for(project)
    hashed: list[object] = []
    sha256 = keys.hashlib.sha256
    monkeypatch.setattr(keys.hashlib, "sha256", lambda: hashed.append(1) or sha256())
    for _ in range(3):  # as for three variations of one run
        assert reads.current_reads(part, project, settings)["files"] == part["files"]
    assert hashed == []
    prices.write_text("day,price\n1,11\n")  # same size, mtime put back: its ctime moved
    os.utime(prices, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert reads.current_reads(part, project, settings)["files"] != part["files"]
    assert changes(project, part) == ["read data/prices.csv changed"]


def test_many_changes_are_named_up_to_five_and_counted(project: Path) -> None:
    for index in range(7):
        (project / "data" / f"f{index}.csv").write_text("0")
    code = "".join(f"open('data/f{i}.csv').read()\n" for i in range(7))
    part = part_after(project, code)
    for index in range(7):
        (project / "data" / f"f{index}.csv").write_text("1")
    found = changes(project, part)
    assert found[:5] == [f"read data/f{i}.csv changed" for i in range(5)]
    assert found[5:] == ["2 more reads changed"]


def test_a_file_changed_while_the_run_had_it_makes_the_key_unusable(project: Path) -> None:
    settings = settings_for(project)
    payload = recorded(project, "open('data/prices.csv').read()\n", **settings.kernel_settings())
    (project / "data" / "prices.csv").write_text("day,price\n1,10\n2,12\n")  # before the host
    (project / "data" / "gone.csv").unlink()
    gone = str(project / "data" / "gone.csv")
    payload["files"][gone] = [1, 1]
    part, unusable = reads.reads_part(payload, project, settings)
    assert part is None
    assert unusable == [
        "read data/prices.csv changed during the run",
        "read data/gone.csv removed during the run",
    ]


def test_listings_and_missing_files_that_changed_during_the_run_make_it_unusable(
    project: Path,
) -> None:
    settings = settings_for(project)
    code = "import glob\nglob.glob('data/parts/*')\n"
    code += "try:\n  open('data/new.csv')\nexcept OSError:\n  pass\n"
    payload = recorded(project, code, **settings.kernel_settings())
    (project / "data" / "parts" / "late.csv").write_text("l")
    (project / "data" / "new.csv").write_text("n")
    part, unusable = reads.reads_part(payload, project, settings)
    assert part is None
    assert unusable == [
        "listing of data/parts changed during the run",
        "data/new.csv appeared during the run",
    ]


def test_the_kernels_own_findings_and_problems_make_it_unusable(project: Path) -> None:
    settings = settings_for(project)
    module = str(project / "src" / "mylib" / "core.py")
    stat = os.stat(module)
    payload = {
        "version": PAYLOAD_VERSION,
        "modules": {module: [stat.st_size, stat.st_mtime_ns]},
        "changed": [module],
    }
    assert reads.reads_part(payload, project, settings) == (
        None,
        ["imported src/mylib/core.py changed during the run"],
    )
    problem = {"problem": "recording reads failed: OSError: x"}
    assert reads.reads_part(problem, project, settings) == (None, [problem["problem"]])
    assert reads.reads_part({"version": -1}, project, settings)[0] is None


def test_ignored_globs_are_neither_read_nor_part_of_a_listing(project: Path) -> None:
    (project / "data" / "parts" / "run.log").write_text("1")
    (project / "run.log").write_text("1")
    code = "import glob\nglob.glob('data/parts/*')\nopen('run.log').read()\n"
    part = part_after(project, code, ignore=["**/*.log"])
    assert part["files"] == {}
    (project / "data" / "parts" / "other.log").write_text("2")
    assert changes(project, part, ignore=["**/*.log"]) == []
    (project / "data" / "parts" / "b.csv").write_text("b")
    assert changes(project, part, ignore=["**/*.log"]) == ["listing of data/parts changed"]


def test_the_output_folder_and_millruns_own_source_are_excluded(project: Path) -> None:
    settings = reads.read_settings(project, base=project, exclude=[project / ".millrun"])
    assert str(project / ".millrun") in settings.exclude
    assert str(Path(reads.__file__).resolve().parents[1]) in settings.exclude
    assert settings.roots == (str(project),)


def test_the_read_set_is_listed_one_line_each(project: Path) -> None:
    assert reads.describe(part_after(project)) == [
        "read data/gone.csv",
        "read data/prices.csv",
        "imported src/mylib/__init__.py",
        "imported src/mylib/core.py",
        "listed data/parts",
        "looked for data/new.csv (not found)",
        "looked for data/old.csv (not found)",
    ]


def millrun_output(path: Path) -> Path:
    nb = {"cells": [], "metadata": {"millrun": {"recorded": {}}}, "nbformat": 4}
    path.write_text(json.dumps(nb))
    return path


def test_a_stored_read_set_is_checked_again_and_names_what_changed(project: Path) -> None:
    settings = verdicts.CacheSettings(enabled=True, base=project, output_root=project / ".out")
    notebook = project / "calc.ipynb"
    output = millrun_output(project / "out.ipynb")
    read = verdicts.read_settings_for(notebook, output, settings)
    assert read.exclude[0] == str(project / ".out")
    key = CacheKey({"schema": 2, "cells": []}, reads=read.as_json())
    part, _ = reads.reads_part(recorded(project, _READS, **read.kernel_settings()), project, read)
    verdicts.stamp(output, key, part)
    assert verdicts.check_output(output, key, settings, notebook=notebook).hit
    (project / "data" / "prices.csv").write_text("day,price\n1,12\n")
    forget()
    verdict = verdicts.check_output(output, key, settings, notebook=notebook)
    assert verdict.reasons == ("read data/prices.csv changed",)
    stored = json.loads(output.read_text())["metadata"]["millrun"]["cache"]
    assert stored["parts"]["reads"] == part
    assert stored["key"] != key.digest  # the reads are part of the stored key


def test_a_run_that_kept_no_key_says_why_on_the_next_run(project: Path) -> None:
    output = millrun_output(project / "out.ipynb")
    verdicts.stamp_unusable(output, ["read data/prices.csv changed during the run"])
    verdict = verdicts.check_output(output, CacheKey({}), verdicts.CacheSettings(enabled=True))
    assert verdict.reasons == (
        "its last run kept no key: read data/prices.csv changed during the run",
    )


def test_outputs_beside_the_notebook_exclude_only_the_output_itself(project: Path) -> None:
    notebook, output = project / "calc.ipynb", project / "0-calc.ipynb"
    beside = verdicts.CacheSettings(enabled=True, base=project)
    assert verdicts.read_settings_for(notebook, output, beside).exclude[0] == str(output)
    above = verdicts.CacheSettings(enabled=True, base=project, output_root=project.parent)
    assert verdicts.read_settings_for(notebook, output, above).exclude[0] == str(output)


def test_changed_ignore_globs_rerun_and_are_keyed_relative_to_the_base(project: Path) -> None:
    settings = verdicts.CacheSettings(enabled=True, base=project, ignore=("**/*.log",))
    (project / "calc.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    inputs = verdicts.RunInputs(settings)
    more = (str(project / "scratch" / "*"),)
    key = verdicts.key_for(
        project / "calc.ipynb", {}, inputs, kernel_name=None, record=(), papermill_kwargs={},
        more_ignore=more,
    )  # fmt: skip
    assert key.parts["ignore"] == ["**/*.log", "scratch/*"]
    assert verdicts.key_changes(key.parts, {**key.parts, "ignore": ["**/*.log"]}) == [
        "ignored globs changed"
    ]


def test_the_reads_part_sends_a_recorder_that_compiles_and_says_why_it_has_no_record() -> None:
    from pytest_millrun.execution.kernel_session import EndReply
    from pytest_millrun.execution.read_recording import NOT_ASKED, PROBLEM, ReadsPart

    part = ReadsPart({"roots": ("/nbs",), "exclude": [], "ignore": []})
    start = part.start_code()
    assert start.startswith("from __future__ import annotations")  # first in its compile unit
    assert start.rstrip().endswith("start({'roots': ['/nbs'], 'exclude': [], 'ignore': []})")
    compile(start, "<start>", "exec")
    assert part.read_end(EndReply(payload={"version": 1})) == {"version": 1}
    assert part.read_end(EndReply(error="it is a bash kernel", asked=False)) == {
        NOT_ASKED: "it is a bash kernel"
    }
    assert part.read_end(EndReply(error="NameError: start"))[PROBLEM].endswith("NameError: start")
    assert PROBLEM in part.read_end(EndReply(payload=[1]))
