"""Kernel coverage with real pytest-cov: the lines a notebook's kernel runs are in pytest-cov's
report (forked and spawned kernels, with and without xdist), a failing notebook's too, and
the kernels leave no data file behind; without ``--cov`` a kernel never imports coverage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from millrun_testing import write_notebook

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

HELPER = '''\
def used(x):
    return x * 2


def unused(x):
    return x * 3
'''


def project(pytester: pytest.Pytester, *cells: str) -> None:
    (pytester.path / "helper.py").write_text(HELPER)
    # the kernel runs in the notebook's folder (the command) or the rootdir (the plugin)
    imports = f"import sys\nsys.path.insert(0, {str(pytester.path)!r})\nfrom helper import used"
    write_notebook(pytester.path / "nbs" / "calls.ipynb", [imports, *cells])
    pytester.makefile(".json", params='[{"x": 1}]')


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "--millrun-params", "params.json",
        "--millrun-output-dir", "out", "nbs", *args,
    )


def helper_lines(pytester: pytest.Pytester) -> set[int] | None:
    """The lines of helper.py in pytest-cov's combined data file (None: not measured)."""
    from coverage import CoverageData

    data = CoverageData(str(pytester.path / ".coverage"))
    data.read()
    lines = data.lines(str(pytester.path / "helper.py"))
    return None if lines is None else set(lines)


def data_files(pytester: pytest.Pytester) -> list[str]:
    return sorted(
        str(path.relative_to(pytester.path))
        for path in pytester.path.rglob(".coverage*")
        if path.name != ".coveragerc"
    )


@pytest.mark.parametrize("workers", ["0", "2"])
def test_pytest_cov_reports_the_lines_the_notebook_kernels_ran(
    pytester: pytest.Pytester, kernel_start: str, workers: str
) -> None:
    project(pytester, "result = used(x)")
    result = run(pytester, "-n", workers, "--cov=.", "--cov-report=term-missing")
    result.assert_outcomes(passed=1)
    # the called function's body ran in the kernel, the other one's did not
    assert helper_lines(pytester) == {1, 2, 5}
    result.stdout.re_match_lines([r"helper\.py\s+4\s+1\s+75%\s+6"])
    # pytest-cov combined (and removed) every kernel's data file
    assert data_files(pytester) == [".coverage"]


def test_a_failing_notebooks_executed_lines_count(pytester: pytest.Pytester) -> None:
    project(pytester, "result = used(x)", "raise ValueError('after used')", "unused(x)")
    result = run(pytester, "--cov=.", "--cov-report=")
    result.assert_outcomes(failed=1)
    assert helper_lines(pytester) == {1, 2, 5}
    assert data_files(pytester) == [".coverage"]


@pytest.mark.parametrize("measured", [False, True], ids=["plain", "cov"])
def test_a_kernel_imports_coverage_only_when_pytest_cov_measures(
    pytester: pytest.Pytester, measured: bool
) -> None:
    project(pytester, f"import sys\nassert ('coverage' in sys.modules) is {measured}")
    result = run(pytester, *(["--cov=.", "--cov-report="] if measured else []))
    result.assert_outcomes(passed=1)
    assert data_files(pytester) == ([".coverage"] if measured else [])


COVERAGERC = "[run]\nparallel = true\nsource = .\n"
API_SCRIPT = """
import millrun

results = millrun.execute_run("nbs", "params.json", "out", workers=2, use_multiprocessing=True)
assert all(result.passed for result in results), results
"""


def coverage_command(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "coverage", *args], cwd=cwd, capture_output=True, text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.parametrize("front_end", ["command", "api"])
def test_coverage_run_of_the_command_and_the_api_measures_their_kernels(
    pytester: pytest.Pytester, kernel_start: str, front_end: str
) -> None:
    project(pytester, "result = used(x)")
    (pytester.path / ".coveragerc").write_text(COVERAGERC)
    (pytester.path / "run_api.py").write_text(API_SCRIPT)
    if front_end == "command":
        program = ["-m", "pytest_millrun", "nbs", "params.json", "--output-dir", "out"]
    else:
        program = ["run_api.py"]
    coverage_command(pytester.path, "run", *program)
    coverage_command(pytester.path, "combine")
    assert helper_lines(pytester) == {1, 2, 5}
    assert data_files(pytester) == [".coverage"]


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k in ("passed", "failed", "cached")}


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_cached_variation_counts_the_lines_its_run_stored(
    pytester: pytest.Pytester, workers: str
) -> None:
    project(pytester, "result = used(x)")
    cov = ["-n", workers, "--millrun-cache", "--cov=.", "--cov-report="]
    assert outcomes(run(pytester, *cov)) == {"passed": 1}
    (pytester.path / ".coverage").unlink()
    warm = run(pytester, *cov, "-v")
    assert outcomes(warm) == {"cached": 1}
    assert helper_lines(pytester) == {1, 2, 5}
    assert data_files(pytester) == [".coverage"]


def test_an_output_stored_without_coverage_runs_again_when_measured(
    pytester: pytest.Pytester,
) -> None:
    project(pytester, "result = used(x)")
    assert outcomes(run(pytester, "--millrun-cache")) == {"passed": 1}
    measured = run(pytester, "--millrun-cache", "--cov=.", "--cov-report=", "-v")
    assert outcomes(measured) == {"passed": 1}
    measured.stdout.fnmatch_lines(["*no coverage lines stored*"])
    assert helper_lines(pytester) == {1, 2, 5}
    # and now the lines are stored: the next measured run is served from the output
    assert outcomes(run(pytester, "--millrun-cache", "--cov=.", "--cov-report=")) == {"cached": 1}
    assert helper_lines(pytester) == {1, 2, 5}


def test_pytest_cov_reports_the_lines_of_kernels_run_on_dask(pytester: pytest.Pytester) -> None:
    """The lines come back with each result and are written on the client's side, so a worker
    that cannot reach the client's data file counts too (here a local cluster)."""
    project(pytester, "result = used(x)")
    dask = ["--millrun-dask", "local", "--millrun-dask-workers", "1"]
    result = run(pytester, *dask, "--cov=.", "--cov-report=")
    result.assert_outcomes(passed=1)
    assert helper_lines(pytester) == {1, 2, 5}
    assert data_files(pytester) == [".coverage"]


def test_coverage_run_of_the_command_on_dask_measures_its_kernels(
    pytester: pytest.Pytester,
) -> None:
    project(pytester, "result = used(x)")
    (pytester.path / ".coveragerc").write_text(COVERAGERC)
    program = ["-m", "pytest_millrun", "nbs", "params.json", "--output-dir", "out"]
    coverage_command(pytester.path, "run", *program, "--dask", "local", "--workers", "1")
    coverage_command(pytester.path, "combine")
    assert helper_lines(pytester) == {1, 2, 5}
    assert data_files(pytester) == [".coverage"]
