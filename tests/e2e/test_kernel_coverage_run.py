"""Kernel coverage with real pytest-cov: the lines a notebook's kernel runs are in pytest-cov's
report (forked and spawned kernels, with and without xdist), a failing notebook's too, and
the kernels leave no data file behind; without ``--cov`` a kernel never imports coverage."""

from __future__ import annotations

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
    write_notebook(pytester.path / "nbs" / "calls.ipynb", ["from helper import used", *cells])
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
        str(path.relative_to(pytester.path)) for path in pytester.path.rglob(".coverage*")
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
