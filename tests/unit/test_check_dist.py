"""tools/check_dist.py names what a built wheel or sdist lacks, on archives made here.

``.ci/run`` runs it on the real build; these tests show each check can fail, and
with a message that names the file and the fix.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
TRACKED = {
    "pytest_millrun/__init__.py",
    "pytest_millrun/py.typed",
    "pytest_millrun/report/report_page.html",
    "millrun/__init__.py",
    "millrun/py.typed",
}
README = "# pytest-millrun\n\n![The report](https://example.org/report.png) [docs](https://example.org/)\n"


@pytest.fixture(scope="module")
def check_dist() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_dist", REPO / "tools" / "check_dist.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _wheel(folder: Path, files: Iterable[str], description: str = README) -> Path:
    wheel = folder / "pytest_millrun-0.1.0-py3-none-any.whl"
    metadata = "Metadata-Version: 2.4\nName: pytest-millrun\nVersion: 0.1.0\n\n" + description
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in files:
            archive.writestr(name, "")
        archive.writestr("pytest_millrun-0.1.0.dist-info/METADATA", metadata)
    return wheel


def _sdist(folder: Path, files: Iterable[str]) -> Path:
    sdist = folder / "pytest_millrun-0.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for name in files:
            archive.addfile(tarfile.TarInfo(f"pytest_millrun-0.1.0/{name}"), io.BytesIO(b""))
    return sdist


def test_a_complete_wheel_has_no_problem(check_dist: ModuleType, tmp_path: Path) -> None:
    assert check_dist.problems_in_wheel(_wheel(tmp_path, TRACKED), TRACKED) == []
    assert check_dist.problems_in_description(_wheel(tmp_path, TRACKED)) == []


def test_a_data_file_left_out_of_the_wheel_is_named_with_the_fix(
    check_dist: ModuleType, tmp_path: Path
) -> None:
    wheel = _wheel(tmp_path, TRACKED - {"pytest_millrun/report/report_page.html"})
    (problem,) = check_dist.problems_in_wheel(wheel, TRACKED)
    assert "lacks 1 file(s)" in problem
    assert "\n  pytest_millrun/report/report_page.html\n" in problem
    assert ".gitignore" in problem
    assert "[tool.hatch.build]" in problem


def test_a_wheel_without_py_typed_is_refused_naming_the_package(
    check_dist: ModuleType, tmp_path: Path
) -> None:
    wheel = _wheel(tmp_path, TRACKED - {"millrun/py.typed"})
    problems = check_dist.problems_in_wheel(wheel, TRACKED - {"millrun/py.typed"})
    (problem,) = problems
    assert "has no millrun/py.typed" in problem
    assert "Typing :: Typed" in problem


def test_a_file_git_does_not_track_is_not_shipped(check_dist: ModuleType, tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, {*TRACKED, "pytest_millrun/scratch.py"})
    (problem,) = check_dist.problems_in_wheel(wheel, TRACKED)
    assert "git does not track" in problem
    assert "\n  pytest_millrun/scratch.py" in problem


@pytest.mark.parametrize(
    ("link", "relative"),
    [
        ("[the docs](docs/index.md)", "docs/index.md"),
        ("![The report](docs/report.png)", "docs/report.png"),
        ("[changes](CHANGELOG.md#unreleased)", "CHANGELOG.md#unreleased"),
        ("[an anchor](#a-tour)", None),
        ("[mail](mailto:someone@example.org)", None),
    ],
)
def test_a_relative_link_in_the_index_page_is_named(
    check_dist: ModuleType, tmp_path: Path, link: str, relative: str | None
) -> None:
    wheel = _wheel(tmp_path, TRACKED, description=f"{README}\nSee {link}.\n")
    problems = check_dist.problems_in_description(wheel)
    if relative is None:
        assert problems == []
    else:
        (problem,) = problems
        assert f"\n  {relative}\n" in problem
        assert "fancy-pypi-readme" in problem


def test_an_sdist_without_the_license_is_named(check_dist: ModuleType, tmp_path: Path) -> None:
    everything = {*TRACKED, *check_dist.SDIST_EXTRA}
    assert check_dist.problems_in_sdist(_sdist(tmp_path, everything), TRACKED) == []
    (problem,) = check_dist.problems_in_sdist(_sdist(tmp_path, everything - {"LICENSE"}), TRACKED)
    assert "lacks 1 file(s)" in problem
    assert "\n  LICENSE\n" in problem


def test_a_folder_without_exactly_one_wheel_and_one_sdist_is_said_so(
    check_dist: ModuleType, tmp_path: Path
) -> None:
    _wheel(tmp_path, TRACKED)
    (problem,) = check_dist.check(tmp_path, REPO)
    assert "should hold one wheel and one sdist" in problem
    assert "pytest_millrun-0.1.0-py3-none-any.whl" in problem


def test_the_files_checked_are_the_modules_and_data_files_git_tracks(
    check_dist: ModuleType,
) -> None:
    tracked = check_dist.tracked_files(REPO)
    assert "pytest_millrun/report/report_page.html" in tracked  # the report's page template
    assert {"pytest_millrun/py.typed", "millrun/py.typed"} <= tracked
    assert "pytest_millrun/inkernel/record.py" in tracked  # read as text, sent into kernels
    assert all(name.split("/")[0] in check_dist.PACKAGES for name in tracked)
