"""Outputs of earlier runs that this run does not write: found without kernels, then reported
and removed on request by each front end (plugin, plugin under xdist, CLI, API)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from millrun_testing import output_files, write_notebook, write_params
from pytest_millrun import execute_run
from pytest_millrun.pipeline.stale_outputs import (
    StaleOutputs,
    find_stale_outputs,
    handle_stale_outputs,
)


def write_output(path: Path, notebook: Path | None) -> Path:
    """A notebook file; with the output marker naming ``notebook`` unless that is None."""
    metadata = {} if notebook is None else {"millrun": {"input": str(notebook), "variation": "0"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": [], "metadata": metadata, "nbformat": 4}))
    return path


@pytest.fixture
def earlier(tmp_path: Path) -> tuple[Path, Path]:
    """nbs/calc.ipynb and an output folder holding what a run of three variations left."""
    notebook = write_notebook(tmp_path / "nbs" / "calc.ipynb")
    out = tmp_path / "out"
    for index in range(3):
        write_output(out / f"{index}-calc.ipynb", notebook)
    return notebook, out


def test_outputs_of_the_same_notebook_that_the_run_does_not_write_are_stale(
    earlier: tuple[Path, Path],
) -> None:
    notebook, out = earlier
    assert find_stale_outputs([(notebook, out / "0-calc.ipynb")]) == [
        out / "1-calc.ipynb",
        out / "2-calc.ipynb",
    ]
    planned_all = [(notebook, out / f"{i}-calc.ipynb") for i in range(3)]
    assert find_stale_outputs(planned_all) == []


def test_only_marked_outputs_of_the_run_s_notebooks_in_its_folders_are_stale(
    earlier: tuple[Path, Path], tmp_path: Path
) -> None:
    notebook, out = earlier
    other = write_notebook(tmp_path / "nbs" / "other.ipynb")
    write_output(out / "mine.ipynb", None)  # the user's own notebook
    write_output(out / "1-other.ipynb", other)  # another notebook's output
    write_output(out / ".3-calc.partial.ipynb", notebook)  # a run in progress
    write_output(out / "deeper" / "4-calc.ipynb", notebook)  # not a folder this run writes to
    (out / "notes.ipynb").write_text("{ not json")
    (out / "link.ipynb").symlink_to(out / "1-calc.ipynb")
    (out / "1-calc.txt").write_text("text")
    assert find_stale_outputs([(notebook, out / "0-calc.ipynb")]) == [
        out / "1-calc.ipynb",
        out / "2-calc.ipynb",
    ]


def test_inputs_beside_their_outputs_are_never_stale(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "calc.ipynb")
    write_notebook(tmp_path / "unrelated.ipynb")
    write_output(tmp_path / "1-calc.ipynb", notebook)
    found = find_stale_outputs([(notebook, tmp_path / "0-calc.ipynb")])
    assert found == [tmp_path / "1-calc.ipynb"]


def test_a_marker_naming_the_link_or_its_target_both_count(tmp_path: Path) -> None:
    target = write_notebook(tmp_path / "real" / "calc.ipynb")
    link = tmp_path / "nbs" / "calc.ipynb"
    link.parent.mkdir()
    link.symlink_to(target)
    out = tmp_path / "out"
    write_output(out / "1-calc.ipynb", target)
    write_output(out / "2-calc.ipynb", link)
    found = find_stale_outputs([(link, out / "0-calc.ipynb")])
    assert found == [out / "1-calc.ipynb", out / "2-calc.ipynb"]


def test_clean_removes_exactly_the_stale_outputs(
    earlier: tuple[Path, Path], tmp_path: Path
) -> None:
    notebook, out = earlier
    write_output(out / "mine.ipynb", None)
    write_output(out / "1-other.ipynb", tmp_path / "nbs" / "other.ipynb")
    kept = handle_stale_outputs([(notebook, out / "0-calc.ipynb")], clean=False)
    assert kept.removed == []
    assert len(kept.found) == 2
    assert (out / "1-calc.ipynb").exists()
    stale = handle_stale_outputs([(notebook, out / "0-calc.ipynb")], clean=True)
    assert stale.removed == [out / "1-calc.ipynb", out / "2-calc.ipynb"]
    assert sorted(p.name for p in out.iterdir()) == ["0-calc.ipynb", "1-other.ipynb", "mine.ipynb"]


def test_a_file_that_lost_its_marker_since_it_was_found_is_kept(
    earlier: tuple[Path, Path],
) -> None:
    notebook, out = earlier
    found = find_stale_outputs([(notebook, out / "0-calc.ipynb")])
    write_output(found[0], None)  # the user saved over it meanwhile
    from pytest_millrun.pipeline.stale_outputs import remove_stale_outputs

    assert remove_stale_outputs(found) == ([found[1]], [])
    assert found[0].exists()


def test_description_gives_count_example_and_the_front_end_s_option(tmp_path: Path) -> None:
    a, b = tmp_path / "1-calc.ipynb", tmp_path / "2-calc.ipynb"
    assert StaleOutputs().describe("--clean") is None
    found = StaleOutputs([a, b]).describe("--clean")
    assert found == (
        f"2 stale outputs of these notebooks, written by earlier runs and not by this one, are "
        f"beside this run's outputs (e.g. {a}); --clean removes them."
    )
    assert StaleOutputs([a]).describe("--x") == (
        f"1 stale output of these notebooks, written by earlier runs and not by this one, is "
        f"beside this run's outputs (e.g. {a}); --x removes them."
    )
    removed = StaleOutputs([a, b], [a], ["Could not remove the stale output b: denied."])
    assert removed.describe("--clean") == (
        f"Removed 1 stale output of these notebooks, written by earlier runs and not by this one "
        f"(e.g. {a}). Could not remove the stale output b: denied."
    )


# End to end, real kernels: each front end reports stale outputs and cleans only when asked.


def make_project(root: Path) -> Path:
    """Two notebooks, and params of three variations and of one."""
    write_notebook(root / "nbs" / "calc.ipynb")
    write_notebook(root / "nbs" / "other.ipynb")
    write_params(root / "three.json", {"x": [0, 1, 2]})
    write_params(root / "one.json", {"x": [0]})
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


@pytest.fixture
def plugin_project(pytester: pytest.Pytester) -> Path:
    return make_project(pytester.path)


def test_plugin_reports_stale_outputs_and_cleans_them_once_under_xdist(
    pytester: pytest.Pytester, plugin_project: Path
) -> None:
    pytester.runpytest("--millrun-params", "three.json", "nbs").assert_outcomes(passed=6)
    out = plugin_project / ".millrun" / "nbs"
    write_output(out / "mine.ipynb", None)
    result = pytester.runpytest("--millrun-params", "one.json", "nbs/calc.ipynb")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [f"millrun: 2 stale outputs of these notebooks*(e.g. {out / '1-calc.ipynb'}); "
         "--millrun-clean-output removes them."]
    )  # fmt: skip
    assert len(output_files(out)) == 7  # reported, never removed unasked
    result = pytester.runpytest_subprocess(
        "--millrun-params", "one.json", "nbs/calc.ipynb", "--millrun-clean-output", "-n", "2"
    )
    result.assert_outcomes(passed=1)
    assert result.stdout.str().count("millrun: Removed 2 stale outputs") == 1
    # other.ipynb was not in the run: its outputs stay, as does the user's own file
    assert output_files(out) == [
        "0-calc.ipynb", "0-other.ipynb", "1-other.ipynb", "2-other.ipynb", "mine.ipynb"
    ]  # fmt: skip


def test_plugin_ini_key_cleans_and_deselected_variations_are_not_stale(
    pytester: pytest.Pytester, plugin_project: Path
) -> None:
    pytester.runpytest("--millrun-params", "three.json", "nbs/calc.ipynb").assert_outcomes(passed=3)
    out = plugin_project / ".millrun" / "nbs"
    write_output(out / "7-calc.ipynb", plugin_project / "nbs" / "calc.ipynb")
    pytester.makeini("[pytest]\nmillrun_clean_output = true\n")
    result = pytester.runpytest(
        "--millrun-params", "three.json", "nbs/calc.ipynb",
        "--deselect", "nbs/calc.ipynb::calc[0]", "--deselect", "nbs/calc.ipynb::calc[2]",
    )  # fmt: skip
    result.assert_outcomes(passed=1, deselected=2)
    removed = out / "7-calc.ipynb"
    result.stdout.fnmatch_lines([f"millrun: Removed 1 stale output *(e.g. {removed})."])
    assert output_files(out) == ["0-calc.ipynb", "1-calc.ipynb", "2-calc.ipynb"]


def test_cli_reports_stale_outputs_and_clean_removes_them(project: Path) -> None:
    def millrun(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest_millrun", "nbs/calc.ipynb", *args, "--output-dir",
             "out", "--workers", "1"],
            cwd=project, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    assert millrun("three.json").returncode == 0
    done = millrun("one.json")
    assert done.returncode == 0, done.stderr
    assert "2 stale outputs of these notebooks, written by earlier runs" in done.stdout
    assert "--clean removes them." in done.stdout
    assert output_files(project / "out") == ["0-calc.ipynb", "1-calc.ipynb", "2-calc.ipynb"]
    done = millrun("one.json", "--clean")
    assert done.returncode == 0, done.stderr
    assert "Removed 2 stale outputs of these notebooks" in done.stdout
    assert output_files(project / "out") == ["0-calc.ipynb"]


def test_api_clean_output_removes_stale_outputs_only_when_asked(project: Path) -> None:
    out = project / "out"
    execute_run(project / "nbs", {"x": [0, 1]}, output_dir=out)
    execute_run(project / "nbs", {"x": [0]}, output_dir=out)
    assert len(output_files(out)) == 4
    execute_run(project / "nbs", {"x": [0]}, output_dir=out, clean_output=True)
    assert output_files(out) == ["0-calc.ipynb", "0-other.ipynb"]
