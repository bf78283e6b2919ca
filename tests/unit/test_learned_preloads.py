"""Learned preloads' pure logic: which modules, the in-kernel record, staleness, probing."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest

from pytest_millrun.core.learned_preloads import (
    learned_preloads,
    named_preloads,
    output_record,
    preloads_off,
    read_record,
)
from pytest_millrun.forkserver.client import Template
from pytest_millrun.inkernel import import_record


def test_learned_is_the_sorted_union_less_unsafe_measured_and_named() -> None:
    imported = [["pandas", "numpy"], ["numpy", "plthread", "scipy"], ["mylib"]]
    learned = learned_preloads(
        imported, {"plthread": "starts a thread"}, named=("scipy",), measured={"mylib"}
    )
    assert learned == ("numpy", "pandas")


def test_learned_leaves_out_names_that_are_not_modules() -> None:
    assert learned_preloads([["numpy", "", "a-b", "x y", "a..b"]]) == ("numpy",)


def test_learned_submodules_stay_and_go_with_their_package() -> None:
    imported = [["matplotlib", "matplotlib.pyplot", "mylib", "mylib.core"]]
    learned = learned_preloads(imported, measured={"mylib"}, named=("matplotlib.pyplot",))
    assert learned == ("matplotlib",)


def test_a_named_submodule_does_not_hide_its_learned_package() -> None:
    assert learned_preloads([["matplotlib"]], named=("matplotlib.pyplot",)) == ("matplotlib",)


@pytest.mark.parametrize(
    ("preload", "off", "named"),
    [
        ((), False, ()),
        (("numpy",), False, ("numpy",)),
        (("none",), True, ()),
        ((" None ",), True, ()),
        (("numpy", "none"), True, ()),
    ],
)
def test_preload_none_turns_every_preload_off(
    preload: tuple[str, ...], off: bool, named: tuple[str, ...]
) -> None:
    assert preloads_off(preload) is off
    assert named_preloads(preload) == named


def test_a_malformed_record_reads_as_what_can_be_read() -> None:
    assert read_record(None) is None
    assert read_record({"preloads": "junk"}) is None
    assert read_record({"preloads": {"imported": "numpy", "unsafe": []}}) == ([], {})
    record = {"preloads": {"imported": ["numpy"], "unsafe": {"t": "why"}}}
    assert read_record(record) == (["numpy"], {"t": "why"})


def test_an_output_without_a_record_or_unreadable_has_none(tmp_path: Path) -> None:
    assert output_record(tmp_path / "missing.ipynb") is None
    (tmp_path / "bad.ipynb").write_text("{not json")
    assert output_record(tmp_path / "bad.ipynb") is None
    nb = {"metadata": {"millrun": {"preloads": {"imported": ["numpy"], "unsafe": {}}}}}
    (tmp_path / "ok.ipynb").write_text(json.dumps(nb))
    assert output_record(tmp_path / "ok.ipynb") == (["numpy"], {})


def test_the_kernel_record_lists_installed_modules_only() -> None:
    """Run in this process as in a kernel: pytest is installed; json is the standard library;
    this package is an editable install (a local module), so none of theirs count."""
    before, preloaded = import_record.start()
    assert import_record.finish(set(), set(), {}).count("pytest") == 1
    found = import_record.finish(set(), set(), {})
    assert "json" not in found
    assert "pytest_millrun" not in found
    assert "pytest" not in import_record.finish(before, preloaded, {}), "there before the start"
    assert preloaded == set()  # no template preloaded anything here


def test_a_preloaded_module_counts_only_when_the_notebook_holds_something_of_it() -> None:
    import _pytest

    assert "_pytest" not in import_record.finish(set(), {"_pytest"}, {"x": 1, "p": pytest})
    # the module, a function, a class, an instance: all of _pytest
    for held in (_pytest, pytest.fixture, pytest.Pytester, pytest.MonkeyPatch()):
        assert "_pytest" in import_record.finish(set(), {"_pytest"}, {"held": held})


def test_a_submodule_the_notebook_holds_is_recorded_by_its_full_name() -> None:
    import _pytest.monkeypatch as submodule

    found = import_record.finish(set(), set(), {"m": submodule, "j": json})
    assert "_pytest.monkeypatch" in found
    assert "json" not in found


def test_the_record_survives_odd_objects_in_the_user_namespace() -> None:
    class Odd:
        def __getattr__(self, name: str) -> object:
            raise RuntimeError("no attributes here")

    odd = types.ModuleType("odd")
    found = import_record.finish(set(), set(), {"a": Odd(), "b": odd, "c": None})
    assert "pytest" in found


def test_a_template_is_stale_once_a_preloaded_local_file_changes(tmp_path: Path) -> None:
    helper = tmp_path / "helper.py"
    helper.write_text("VALUE = 1\n")
    key = (os.getpid(), (), ("helper",), (), ())
    template = Template(key, {})
    try:
        stat = helper.stat()
        template.local = {str(helper): [stat.st_mtime_ns, stat.st_size]}
        assert template.stale() is None
        helper.write_text("VALUE = 22\n")
        assert template.stale() == str(helper)
        helper.unlink()
        assert template.stale() == str(helper)
    finally:
        template.close()


def test_the_learned_preload_a_template_died_importing_is_read_from_its_log(
    tmp_path: Path,
) -> None:
    key = (os.getpid(), (), (), ("good", "bad"), ())
    template = Template(key, {}, ["good", "bad"])
    try:
        template.log_path.write_text("millrun-probing good\nmillrun-probing bad\nSegfault\n")
        assert template._probing_when_it_died() == "bad"
        template.log_path.write_text("millrun-probing good\nmillrun-probed\nlater trouble\n")
        assert template._probing_when_it_died() is None
    finally:
        template.close()


def test_modules_coverage_measures_by_name_and_by_folder(tmp_path: Path) -> None:
    coverage = pytest.importorskip("coverage")
    from pytest_millrun.coverage.kernel_settings import kernel_coverage, measured_modules

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mylib").mkdir()
    (tmp_path / "src" / "tool.py").write_text("")
    cov = coverage.Coverage(source=["numpy.linalg", str(tmp_path / "src")], source_pkgs=["pandas"])
    measured = measured_modules(kernel_coverage(cov, str(tmp_path)))
    assert {"numpy", "pandas", "src", "mylib", "tool"} <= measured
    assert "scipy" not in measured
