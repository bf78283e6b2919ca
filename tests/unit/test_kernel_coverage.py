"""Kernel coverage without a kernel: the code sent into kernels, run in a plain subprocess with
real coverage; the settings taken from the host's ``Coverage``; stored lines written back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import coverage
import pytest

from pytest_millrun.cache import verdicts
from pytest_millrun.cache.keys import CacheKey
from pytest_millrun.cache.verdicts import CacheSettings
from pytest_millrun.coverage import kernel_code, stored_lines
from pytest_millrun.coverage.kernel_reports import kernel_notes
from pytest_millrun.coverage.kernel_settings import (
    PROCESS_START_VARIABLES,
    KernelCoverage,
    kernel_coverage,
    settings_digest,
)
from pytest_millrun.execution.coverage_part import CoveragePart, write_returned_lines
from pytest_millrun.execution.kernel_session import EndReply
from pytest_millrun.execution.kernels import kernel_environment

HELPER = """\
def used(x):
    return x * 2


def unused(x):
    return x * 3
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with ``nbs/helper.py``: the notebooks' folder is not the project's."""
    (tmp_path / "nbs").mkdir()
    (tmp_path / "nbs" / "helper.py").write_text(HELPER)
    return tmp_path


def host_settings(project: Path, **options: Any) -> KernelCoverage:
    """The settings a host measuring ``nbs`` hands its kernels (its Coverage never started)."""
    cov = coverage.Coverage(source=["nbs"], data_suffix=True, config_file=False, **options)
    return kernel_coverage(cov, str(project))


def run_as_kernel(project: Path, code: str, *, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a new interpreter in ``nbs`` (as a kernel runs there); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project / "nbs",
        env={**(env or os.environ), "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.stdout


def data_files(project: Path) -> list[Path]:
    return sorted(path for path in project.rglob(".coverage*") if path.is_file())


def measured_lines(path: Path) -> dict[str, list[int]]:
    data = coverage.CoverageData(str(path))
    data.read()
    return {Path(name).name: sorted(data.lines(name) or ()) for name in data.measured_files()}


def test_a_killed_kernel_keeps_what_its_cells_ran_in_a_data_file_beside_the_hosts(
    project: Path,
) -> None:
    settings = host_settings(project)
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        {kernel_code.start_code(settings)}
        sys.path.insert(0, os.getcwd())
        import helper
        helper.used(1)
        {kernel_code.save_code()}
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    run_as_kernel(project, code)
    files = data_files(project)
    assert [path.parent for path in files] == [project]  # beside the host's, not in nbs/
    assert files[0].name.startswith(".coverage.")
    assert measured_lines(files[0]) == {"helper.py": [1, 2, 5]}  # unused's body (6) not run


def test_a_kernel_measured_for_a_remote_host_keeps_no_data_file_and_sends_its_lines(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A Dask worker's kernel: no file beside the host's (it may not be reachable), a
    private one removed at the end, and the lines in the part's report, written back by
    the host at its own paths."""
    settings = host_settings(project)
    private_tmp = tmp_path_factory.mktemp("kernel-tmp")
    code = textwrap.dedent(
        f"""
        import os, sys
        {kernel_code.start_code(settings, private=True)}
        sys.path.insert(0, os.getcwd())
        import helper
        helper.used(1)
        print({kernel_code.finish_expression(False)})
        """
    )
    reply = run_as_kernel(project, code, env={**os.environ, "TMPDIR": str(private_tmp)})
    assert data_files(project) == []
    assert list(private_tmp.iterdir()) == []  # the kernel's own data folder is gone
    part = CoveragePart(settings, lines_back=True)
    report = {"coverage": part.read_end(EndReply(json.loads(reply)))}
    written = write_returned_lines(report, settings)
    assert written is not None
    assert Path(written).parent == project
    assert measured_lines(Path(written)) == {"helper.py": [1, 2, 5]}
    assert write_returned_lines(report, settings) is None  # written once


def test_the_kernels_report_has_its_lines_and_files_imported_before_coverage_started(
    project: Path,
) -> None:
    (project / "nbs" / "early.py").write_text("VALUE = 1\n")
    settings = host_settings(project, branch=True)
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, os.getcwd())
        import early
        {kernel_code.start_code(settings)}
        import helper
        helper.used(1)
        print({kernel_code.finish_expression(True)})
        """
    )
    report = json.loads(run_as_kernel(project, code))
    assert report["measured"] is True
    assert report["problems"] == []
    assert [Path(p).name for p in report["already_imported"]] == ["early.py"]
    assert report["branch"] is True
    arcs = report["files"][str(project / "nbs" / "helper.py")]
    assert {line for arc in arcs for line in arc if line > 0} == {1, 2, 5}


def test_a_kernel_without_a_start_reports_that_nothing_was_measured(project: Path) -> None:
    report = json.loads(run_as_kernel(project, f"print({kernel_code.finish_expression(True)})"))
    assert report == {"measured": False, "problems": ["coverage was never started"]}


def test_a_kernel_whose_project_folder_is_missing_says_so_and_runs_on(project: Path) -> None:
    settings = host_settings(project)
    elsewhere = KernelCoverage(
        settings.config, str(project / "gone"), settings.data_file, False, settings.digest
    )
    code = f"{kernel_code.start_code(elsewhere)}\nprint({kernel_code.finish_expression(False)})"
    report = json.loads(run_as_kernel(project, code))
    assert report["measured"] is False
    assert "coverage did not start in the kernel: FileNotFoundError" in report["problems"][0]


def test_settings_paths_are_the_projects_and_the_digest_does_not_depend_on_its_folder(
    tmp_path: Path,
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for base in (one, two):
        (base / "nbs").mkdir(parents=True)
    first, second = host_settings(one), host_settings(two)
    assert first.data_file == str(one / ".coverage")
    assert first.topdir == str(one)
    config = coverage.Coverage(config_file=":data:" + first.config).config
    assert config.source == [str(one / "nbs")]
    assert first.digest == second.digest
    assert host_settings(one, branch=True).digest != first.digest
    assert host_settings(one, omit=["nbs/skip*"]).digest != first.digest


def test_the_digest_reads_only_the_options_that_decide_what_is_recorded() -> None:
    config = coverage.Coverage(config_file=False).config
    before = settings_digest(config, "/project")
    config.html_dir = "elsewhere"
    config.data_file = "/tmp/other"
    assert settings_digest(config, "/project") == before
    config.source = ["/project/src"]
    assert settings_digest(config, "/project") != before


def test_stored_lines_come_back_as_a_data_file_in_another_checkout_under_the_items_context(
    tmp_path: Path,
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for base in (one, two):
        (base / "nbs").mkdir(parents=True)
    payload = {
        "measured": True,
        "branch": False,
        "files": {str(one / "nbs" / "helper.py"): [1, 2, 5], "/elsewhere/lib.py": [3]},
    }
    entry = stored_lines.stored_entry(payload, host_settings(one))
    assert entry is not None
    assert set(entry["files"]) == {"nbs/helper.py", "/elsewhere/lib.py"}
    settings = host_settings(two).in_context("nbs/a.ipynb::a[1]|run")
    assert stored_lines.unusable(json.loads(json.dumps(entry)), settings) is None
    written = Path(stored_lines.write_data_file(entry, settings))
    assert written.parent == two
    assert written.name.startswith(".coverage.")
    data = coverage.CoverageData(str(written))
    data.read()
    assert data.measured_files() == {str(two / "nbs" / "helper.py"), "/elsewhere/lib.py"}
    assert data.measured_contexts() == {"nbs/a.ipynb::a[1]|run"}
    assert sorted(data.lines(str(two / "nbs" / "helper.py")) or ()) == [1, 2, 5]


def test_stored_arcs_come_back_as_arcs(project: Path) -> None:
    settings = host_settings(project, branch=True)
    arcs = [[-1, 1], [1, 2], [2, -1]]
    entry = stored_lines.stored_entry(
        {"measured": True, "branch": True, "files": {"nbs/helper.py": arcs}}, settings
    )
    assert entry is not None
    data = coverage.CoverageData(stored_lines.write_data_file(entry, settings))
    data.read()
    assert data.has_arcs()
    assert sorted(data.arcs(str(project / "nbs" / "helper.py")) or ()) == [(-1, 1), (1, 2), (2, -1)]


def test_stored_lines_made_with_other_settings_or_none_do_not_count(project: Path) -> None:
    settings = host_settings(project)
    branch = host_settings(project, branch=True)
    entry = stored_lines.stored_entry({"measured": True, "files": {}}, branch)
    assert stored_lines.unusable(entry, settings) == (
        "coverage lines stored with other coverage settings"
    )
    assert stored_lines.unusable(None, settings) == "no coverage lines stored"
    assert stored_lines.stored_entry({"measured": False, "problems": ["x"]}, settings) is None


def test_kernels_and_fork_templates_never_start_coverage_through_its_startup_variables() -> None:
    env = {name: "x" for name in PROCESS_START_VARIABLES} | {"PATH": "/bin", "COVERAGE_FILE": "f"}
    assert kernel_environment(env) == {"PATH": "/bin", "COVERAGE_FILE": "f"}


def test_files_the_fork_template_imported_are_named_once_with_the_fix() -> None:
    payload = {"already_imported": ["/p/nbs/helper.py"], "problems": []}
    forked = kernel_notes(
        payload,
        topdir="/p",
        forked=True,
        preload=["helper"],
        preload_option="--millrun-preload",
        spawn_option="--millrun-kernel-start spawn",
    )
    assert forked == [
        "Measured files imported too early: nbs/helper.py: the fork template imported them "
        "(--millrun-preload helper) before coverage started in each kernel, so the lines they "
        "ran on import (their definitions) are reported as missed. Leave them out of "
        "--millrun-preload when measuring coverage, or start kernels with "
        "--millrun-kernel-start spawn."
    ]
    assert kernel_notes({"problems": ["no coverage"]}, topdir="/p", forked=False) == [
        "A notebook's kernel was not measured, so the lines it ran are not in the coverage "
        "report: no coverage."
    ]
    assert kernel_notes({"already_imported": [], "problems": []}, topdir="/p", forked=True) == []


def cached_output(path: Path, lines: dict[str, Any] | None) -> CacheKey:
    """A passing run's output, stamped with its key, with ``lines`` as its stored coverage."""
    nb: dict[str, Any] = {"cells": [], "metadata": {"millrun": {}}, "nbformat": 4}
    if lines is not None:
        nb["metadata"]["millrun"][stored_lines.COVERAGE_ENTRY] = lines
    path.write_text(json.dumps(nb))
    key = CacheKey({"schema": 1, "cells": []})
    verdicts.stamp(path, key)
    return key


def test_a_cached_variation_counts_its_stored_lines_or_runs_when_they_do_not_fit(
    project: Path,
) -> None:
    settings = host_settings(project)
    payload = {"measured": True, "files": {str(project / "nbs" / "helper.py"): [1, 2, 5]}}
    entry = stored_lines.stored_entry(payload, settings)
    output = project / "out.ipynb"
    key = cached_output(output, entry)

    plain = verdicts.check_output(output, key, CacheSettings(True))
    assert plain.hit
    assert plain.coverage_lines is None  # no coverage: nothing to count, nothing written
    measured = verdicts.check_output(output, key, CacheSettings(True, coverage=settings))
    assert measured.hit
    assert data_files(project) == []
    verdicts.cached_result(output, "1", {}, output, measured, settings.in_context("a|run"))
    [written] = data_files(project)
    assert measured_lines(written) == {"helper.py": [1, 2, 5]}

    branch = CacheSettings(True, coverage=host_settings(project, branch=True))
    assert verdicts.check_output(output, key, branch).reasons == (
        "coverage lines stored with other coverage settings",
    )
    key = cached_output(output, None)
    assert verdicts.check_output(output, key, CacheSettings(True)).hit
    assert verdicts.check_output(output, key, CacheSettings(True, coverage=settings)).reasons == (
        "no coverage lines stored",
    )


def test_settings_moved_under_a_task_folder_measure_there_with_the_same_digest(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from coverage.config import CoverageConfig

    settings = host_settings(project, omit=[str(project / "nbs" / "skip.py"), "*/tests/*"])
    folder = str(tmp_path_factory.mktemp("task"))
    shutil.copytree(project, folder + str(project))
    moved = settings.moved_under(folder)
    config = CoverageConfig.deserialize(moved.config)
    assert config.source == [folder + str(project / "nbs")]
    assert config.run_omit == [folder + str(project / "nbs" / "skip.py"), "*/tests/*"]
    assert moved.topdir == folder + settings.topdir
    assert moved.data_file == folder + settings.data_file
    assert moved.digest == settings.digest  # stored lines still count at home
