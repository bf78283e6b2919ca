"""Suites end to end: the plugin (with xdist), execute_run and the CLI, with real kernels."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import pytest_millrun.plugin.marking
from millrun_testing import assert_no_kernels_left, output_files, write_notebook, write_params
from pytest_millrun import execute_run
from pytest_millrun.config.run_config import RunConfig
from pytest_millrun.core.discovery import MillrunParameterWarning
from pytest_millrun.core.suite import MillrunSuiteWarning
from pytest_millrun.core.suite_file import build_suite
from pytest_millrun.pipeline.planning import plan_run

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SUITE = """\
# calc gets the grid; everything under sub/ gets its own cheap setting
grid:
  x: [1, 3]
  region: [eu, us]
prepend: [region, x]
notebooks:
  nbs/sub/*.ipynb:
    constants: {max_nfev: 1}
    append: [max_nfev]
marks:
  - {where: {x: 3}, xfail: known drift}
  - notebooks: nbs/*.ipynb
    where: {region: us, x: 1}
    skip: no US data in CI
  - {ids: "nothing-*", skip: never}
"""


@pytest.fixture
def suite_project(tmp_path: Path) -> Path:
    """calc declares x and region and fails for x == 3; sub/fit declares only max_nfev."""
    write_notebook(
        tmp_path / "nbs" / "calc.ipynb",
        ["assert x < 3, 'x too big'"],
        params="x = 1\nregion = 'eu'",
    )
    write_notebook(
        tmp_path / "nbs" / "sub" / "fit.ipynb",
        ["assert max_nfev == 1, 'CI must run the cheap fit'"],
        params="max_nfev = 100",
    )
    (tmp_path / "suite.yaml").write_text(SUITE)
    return tmp_path


def copy_project(pytester: pytest.Pytester, source: Path) -> None:
    for path in source.rglob("*"):
        if path.is_file():
            target = pytester.path / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def test_collect_only_shows_each_notebooks_own_ids_and_the_header_counts(
    pytester: pytest.Pytester, suite_project: Path
) -> None:
    copy_project(pytester, suite_project)
    quiet = pytester.runpytest("--millrun-params", "suite.yaml", "nbs", "--collect-only", "-q")
    assert quiet.ret == 0
    quiet.stdout.fnmatch_lines(
        [
            "nbs/calc.ipynb::calc[[]eu-1[]]",
            "nbs/calc.ipynb::calc[[]us-1[]]",
            "nbs/calc.ipynb::calc[[]eu-3[]]",
            "nbs/calc.ipynb::calc[[]us-3[]]",
            "nbs/sub/fit.ipynb::fit[[]1[]]",
            "5 tests collected*",
        ]
    )
    loud = pytester.runpytest("--millrun-params", "suite.yaml", "nbs", "--collect-only")
    loud.stdout.fnmatch_lines(
        [
            "millrun: suite *suite.yaml, outputs in *",
            "millrun:   4 variations for every other notebook",
            "millrun:   1 variation for notebooks 'nbs/sub/[*].ipynb'",
            "*",
            "millrun: variations per notebook: nbs/calc.ipynb 4, nbs/sub/fit.ipynb 1",
        ]
    )
    assert "rule 3 at line 15, column 5 (skip ids 'nothing-*') matched no collected item" in (
        loud.stdout.str()
    )


def test_suite_runs_under_xdist_with_marks_and_per_notebook_strict_params(
    pytester: pytest.Pytester, suite_project: Path, kernel_tmp: Path
) -> None:
    """Strict params judge each notebook by its own variations: fit never sees x or region."""
    copy_project(pytester, suite_project)
    result = pytester.runpytest(
        "--millrun-params", "suite.yaml", "nbs", "-n", "2", "-rxs", "--millrun-strict-params"
    )
    result.assert_outcomes(passed=2, xfailed=2, skipped=1, warnings=1)  # the unmatched rule, once
    result.stdout.fnmatch_lines(
        ["XFAIL nbs/calc.ipynb::calc[[]eu-3[]] - known drift", "SKIPPED * no US data in CI"]
    )
    assert output_files(pytester.path / ".millrun") == [
        "nbs/eu-1-calc.ipynb",
        "nbs/eu-3-calc.ipynb",
        "nbs/sub/fit-1.ipynb",
        "nbs/us-3-calc.ipynb",
    ]
    assert_no_kernels_left(kernel_tmp)


def test_m_selects_variations_by_parameter_value(
    pytester: pytest.Pytester, suite_project: Path
) -> None:
    copy_project(pytester, suite_project)
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    args = ["--millrun-params", "suite.yaml", "nbs", "test_plain.py", "--collect-only", "-q"]
    eu = pytester.runpytest(*args, "-m", "millrun(region='eu')")
    eu.stdout.fnmatch_lines(
        ["nbs/calc.ipynb::calc[[]eu-1[]]", "nbs/calc.ipynb::calc[[]eu-3[]]", "2/6 tests collected*"]
    )
    three = pytester.runpytest(*args, "-m", "millrun(x=3)")
    three.stdout.fnmatch_lines(["*calc[[]eu-3[]]", "*calc[[]us-3[]]", "2/6 tests collected*"])
    skipped = pytester.runpytest(*args, "-m", "skip")  # a suite rule is a real mark
    skipped.stdout.fnmatch_lines(["*calc[[]us-1[]]", "1/6 tests collected*"])
    plain = pytester.runpytest(*args[:-2], "-m", "not millrun")
    plain.assert_outcomes(passed=1)


def test_yaml_seed_forms_collect_like_their_json_twins(
    pytester: pytest.Pytester, suite_project: Path
) -> None:
    copy_project(pytester, suite_project)
    (pytester.path / "listed.yml").write_text("# one per run\n- {x: 1}\n- {x: 2, region: us}\n")
    (pytester.path / "zipped.yaml").write_text("x: [1, 2]  # zipped\nregion: [eu, us]\n")
    for name, ids in [("listed.yml", ["1-region", "2-us"]), ("zipped.yaml", ["1-eu", "2-us"])]:
        result = pytester.runpytest(
            "--millrun-params", name, "nbs/calc.ipynb", "--collect-only", "-q",
            "--millrun-prepend", "x", "--millrun-append", "region",
        )  # fmt: skip
        assert result.ret == 0
        expected = [f"nbs/calc.ipynb::calc[[]{i}[]]" for i in ids]  # "region": literal text
        result.stdout.fnmatch_lines([*expected, "2 tests collected*"])


def test_m_by_value_on_a_pytest_without_keyword_matching_is_a_clear_usage_error(
    pytester: pytest.Pytester, suite_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_project(pytester, suite_project)
    monkeypatch.setattr(pytest_millrun.plugin.marking, "pytest_version", lambda: (8, 2))
    result = pytester.runpytest("--millrun-params", "suite.yaml", "nbs", "-m", "millrun(x=3)")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "needs pytest 8.3 or later" in result.stderr.str()


def test_unknown_mark_follows_strict_markers(
    pytester: pytest.Pytester, suite_project: Path
) -> None:
    copy_project(pytester, suite_project)
    (pytester.path / "suite.yaml").write_text(
        "grid: {x: [1]}\nmarks:\n  - {where: {x: 1}, nightly: only at night}\n"
    )
    args = ["--millrun-params", "suite.yaml", "nbs/calc.ipynb", "--collect-only", "-q"]
    strict = pytester.runpytest(*args, "--strict-markers")
    assert strict.ret == pytest.ExitCode.USAGE_ERROR
    assert "marks rule 1 at line 3, column 5 (nightly where x=1) uses the mark 'nightly'" in (
        strict.stderr.str()
    )
    lenient = pytester.runpytest(*args)
    lenient.stdout.fnmatch_lines(
        ["nbs/calc.ipynb::calc[[]0[]]", "*PytestUnknownMarkWarning: Unknown pytest.mark.nightly*"]
    )


def test_suite_errors_are_usage_or_collection_errors_naming_the_problem(
    pytester: pytest.Pytester, suite_project: Path
) -> None:
    copy_project(pytester, suite_project)
    (pytester.path / "bad.yaml").write_text("grid:\n  x: []\n")
    bad = pytester.runpytest("--millrun-params", "bad.yaml", "nbs")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: Params file *bad.yaml at line 2, column 3: the grid axis*"])
    (pytester.path / "two.yaml").write_text(
        "notebooks:\n  nbs/*.ipynb: {constants: {x: 1}}\n  nbs/calc.*: {constants: {x: 2}}\n"
    )
    two = pytester.runpytest("--millrun-params", "two.yaml", "nbs", "--collect-only", "-q")
    two.stdout.fnmatch_lines(["*nbs/calc.ipynb matches both notebooks globs 'nbs/[*].ipynb' and*"])
    assert "Traceback" not in two.stdout.str() + bad.stderr.str()


def test_notebooks_glob_matching_no_notebook_is_a_warning_naming_it(
    pytester: pytest.Pytester, suite_project: Path
) -> None:
    copy_project(pytester, suite_project)
    (pytester.path / "typo.yaml").write_text(
        "grid: {x: [1]}\nnotebooks:\n  nbs/calc.ipnyb: {constants: {x: 2}}\n"
    )
    result = pytester.runpytest("--millrun-params", "typo.yaml", "nbs", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["*typo.yaml:3: MillrunSuiteWarning: *the notebooks glob 'nbs/calc.ipnyb' matches no file*"]
    )
    with pytest.warns(MillrunSuiteWarning, match="glob 'calc.ipnyb' matches no file"):
        plan_run(RunConfig(notebook_dir_or_file=suite_project / "nbs"), build_suite(
            {"notebooks": {"calc.ipnyb": {"constants": {"x": 2}}}}, "s", suite_project / "nbs"
        ))  # fmt: skip


def test_command_line_components_win_over_the_suites_and_the_suites_over_the_ini(
    pytester: pytest.Pytester, suite_project: Path
) -> None:
    copy_project(pytester, suite_project)
    result = pytester.runpytest(
        "--millrun-params", "suite.yaml", "nbs", "--collect-only", "-q", "--millrun-prepend", "x"
    )
    result.stdout.fnmatch_lines(
        ["*calc[[]1[]]", "*calc[[]1-2[]]", "*calc[[]3[]]", "*calc[[]3-2[]]", "*fit[[]x-1[]]"]
    )
    pytester.makeini("[pytest]\nmillrun_prepend = seed\nmillrun_append = run\n")
    ini = pytester.runpytest("--millrun-params", "suite.yaml", "nbs", "--collect-only", "-q")
    ini.stdout.fnmatch_lines(["*calc[[]eu-1-run[]]", "*fit[[]seed-1[]]"])


def test_execute_run_takes_a_suite_dict_with_globs_relative_to_the_notebook_folder(
    suite_project: Path, tmp_path: Path, kernel_tmp: Path
) -> None:
    suite = {
        "grid": {"x": [1, 2]},
        "constants": {"region": "us"},
        "prepend": ["x"],
        "notebooks": {"sub/*.ipynb": {"constants": {"max_nfev": 1}}},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", MillrunParameterWarning)  # judged per notebook
        results = execute_run(
            suite_project / "nbs", suite, output_dir=tmp_path / "out", recursive=True
        )
    assert sorted((r.notebook.name, r.variation_id, r.passed) for r in results) == [
        ("calc.ipynb", "1", True),
        ("calc.ipynb", "2", True),
        ("fit.ipynb", "0", True),
    ]
    assert output_files(tmp_path / "out") == ["1-calc.ipynb", "2-calc.ipynb", "sub/0-fit.ipynb"]
    assert_no_kernels_left(kernel_tmp)


def test_execute_run_and_cli_take_a_yaml_suite_path(suite_project: Path, kernel_tmp: Path) -> None:
    (suite_project / "small.yaml").write_text(
        "notebooks:\n  nbs/calc.ipynb: [{x: 2, region: eu}]\n"
        "  nbs/sub/fit.ipynb:\n    constants: {max_nfev: 1}\n    prepend: [max_nfev, cheap]\n"
    )
    results = execute_run(
        suite_project / "nbs", suite_project / "small.yaml", output_dir=suite_project / "api",
        recursive=True, strict_params=True,
    )  # fmt: skip
    assert all(r.passed for r in results)
    assert output_files(suite_project / "api") == ["0-calc.ipynb", "sub/1-cheap-fit.ipynb"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs", "small.yaml", "--recursive",
         "--output-dir", "cli", "--strict-params", "--workers", "2"],
        cwd=suite_project, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert output_files(suite_project / "cli") == ["0-calc.ipynb", "sub/1-cheap-fit.ipynb"]
    assert "warning" not in done.stderr
    assert_no_kernels_left(kernel_tmp)


def test_cli_bad_suite_exits_2_naming_the_key(suite_project: Path) -> None:
    (suite_project / "typo.yaml").write_text("grid: {x: [1]}\nconstant: {y: 2}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs", "typo.yaml"],
        cwd=suite_project, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "'constant' is not a suite key (did you mean 'constants'?)" in done.stderr
    assert "line 2, column 1" in done.stderr


def test_example_project_suite_gives_each_notebook_its_own_variations(
    pytester: pytest.Pytester,
) -> None:
    example = Path(__file__).resolve().parents[2] / "example_project"
    result = pytester.runpytest(
        "--millrun-params", str(example / "suite.yaml"), str(example / "notebooks"),
        "--collect-only", "-q", "--rootdir", str(example),
    )  # fmt: skip
    result.stdout.fnmatch_lines(
        [
            "*amortization[[]200000-0.035[]]",
            "*amortization[[]500000-0.0[]]",
            "*monthly_payment[[]0.035-15[]]",
            "*monthly_payment[[]0.065-30[]]",
            "*total_interest[[]0.045[]]",
            "*total_interest[[]0.06[]]",
            "10 tests collected*",
        ]
    )


def test_suite_warning_of_a_json_params_file_quotes_no_line_of_it(
    pytester: pytest.Pytester,
) -> None:
    write_notebook(pytester.path / "nbs" / "calc.ipynb")
    write_params(
        pytester.path / "suite.json", {"notebooks": {"nbs/calc.ipnyb": {"constants": {"x": 2}}}}
    )
    result = pytester.runpytest(
        "--millrun-params", "suite.json", "nbs", "--collect-only", "-n", "2"
    )
    result.stdout.fnmatch_lines(["suite.json:0", "  suite.json:0: MillrunSuiteWarning: *"])
    assert result.stdout.str().count("matches no file under") == 1
    assert "    {" not in result.stdout.lines
