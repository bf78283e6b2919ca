"""pytest's own ways of choosing tests, on notebook variations: --lf, --ff, --sw, --deselect,
node-id arguments, and an output folder that is the folder under test. Real kernels."""

from __future__ import annotations

from pathlib import Path

import pytest

from millrun_testing import output_files, write_notebook, write_params

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

PARAMS = ("--millrun-params", "params.json")


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    """calc[1] of calc[0..2] fails; other.ipynb passes."""
    write_notebook(pytester.path / "nbs" / "calc.ipynb", ["assert x != 1, 'one'"])
    write_notebook(pytester.path / "nbs" / "other.ipynb", ["result = x"])
    write_params(pytester.path / "params.json", {"x": [0, 1, 2]})
    return pytester.path


def ran(result: pytest.RunResult) -> list[str]:
    """The ids of the items that ran, in the order they ran (from ``-v`` lines)."""
    return [
        line.split()[0]
        for line in result.stdout.lines
        if line.startswith("nbs/") and (" PASSED" in line or " FAILED" in line)
    ]


def test_last_failed_reruns_only_the_failed_variation(
    pytester: pytest.Pytester, project: Path
) -> None:
    pytester.runpytest(*PARAMS, "nbs").assert_outcomes(passed=5, failed=1)
    result = pytester.runpytest(*PARAMS, "nbs", "--lf", "-v")
    result.assert_outcomes(failed=1)
    assert ran(result) == ["nbs/calc.ipynb::calc[1]"]
    result.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure*"])


def test_failed_first_runs_the_failed_variation_before_the_others(
    pytester: pytest.Pytester, project: Path
) -> None:
    pytester.runpytest(*PARAMS, "nbs/calc.ipynb").assert_outcomes(passed=2, failed=1)
    result = pytester.runpytest(*PARAMS, "nbs/calc.ipynb", "--ff", "-v")
    result.assert_outcomes(passed=2, failed=1)
    assert ran(result) == [
        "nbs/calc.ipynb::calc[1]",
        "nbs/calc.ipynb::calc[0]",
        "nbs/calc.ipynb::calc[2]",
    ]


def test_stepwise_stops_at_the_failed_variation_and_resumes_from_it(
    pytester: pytest.Pytester, project: Path
) -> None:
    first = pytester.runpytest(*PARAMS, "nbs/calc.ipynb", "--sw", "-v")
    first.assert_outcomes(passed=1, failed=1)
    assert ran(first) == ["nbs/calc.ipynb::calc[0]", "nbs/calc.ipynb::calc[1]"]
    # the failure fixed, the next run starts at it and goes on to the end
    write_notebook(project / "nbs" / "calc.ipynb", ["assert x != 7"])
    second = pytester.runpytest(*PARAMS, "nbs/calc.ipynb", "--sw", "-v")
    second.assert_outcomes(passed=2, deselected=1)
    assert ran(second) == ["nbs/calc.ipynb::calc[1]", "nbs/calc.ipynb::calc[2]"]


def test_deselect_leaves_out_one_variation(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest(
        *PARAMS, "nbs/calc.ipynb", "--deselect", "nbs/calc.ipynb::calc[1]", "-v"
    )
    result.assert_outcomes(passed=2, deselected=1)
    assert ran(result) == ["nbs/calc.ipynb::calc[0]", "nbs/calc.ipynb::calc[2]"]


def test_node_id_arguments_select_one_variation_or_all_of_a_notebook(
    pytester: pytest.Pytester, project: Path
) -> None:
    one = pytester.runpytest(*PARAMS, "nbs/calc.ipynb::calc[1]", "nbs/other.ipynb::other[2]", "-v")
    one.assert_outcomes(passed=1, failed=1)
    assert ran(one) == ["nbs/calc.ipynb::calc[1]", "nbs/other.ipynb::other[2]"]
    every = pytester.runpytest(*PARAMS, "nbs/other.ipynb::other", "-v")
    every.assert_outcomes(passed=3)


def test_output_dir_that_is_the_folder_under_test_collects_its_inputs(
    pytester: pytest.Pytester, project: Path
) -> None:
    options = (*PARAMS, "nbs", "--millrun-output-dir", "nbs")
    pytester.runpytest(*options).assert_outcomes(passed=5, failed=1)
    outputs = [f"nbs/{i}-{stem}.ipynb" for stem in ("calc", "other") for i in range(3)]
    assert output_files(project / "nbs") == sorted([*outputs, "calc.ipynb", "other.ipynb"])
    # again, with the outputs now in the folder: they are skipped, the inputs run, under xdist too
    result = pytester.runpytest_subprocess(*options, "-n", "2")
    result.assert_outcomes(passed=5, failed=1)
    assert len(output_files(project / "nbs")) == 8
