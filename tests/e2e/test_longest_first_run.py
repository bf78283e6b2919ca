"""Longest first: a second run starts the notebooks the first run found longest first.

Real kernels, real xdist.  Each notebook writes its name to a shared file when its cell
starts, so the order the runs really started in is read back from that file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from millrun_testing import write_notebook
from pytest_millrun import execute_run

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

#: Named so that collection order is shortest first.
SLEEPS = {"a": 0.05, "b": 0.1, "c": 0.2, "d": 1.2, "e": 2.0}


def write_corpus(folder: Path, log: Path, sleeps: dict[str, float]) -> None:
    for name, seconds in sleeps.items():
        cell = (
            f"import time\nwith open({str(log)!r}, 'a') as f:\n    f.write({name!r} + '\\n')\n"
            f"time.sleep({seconds})"
        )
        write_notebook(folder / f"{name}.ipynb", [cell], params=None)


def started(log: Path) -> list[str]:
    order = log.read_text().split()
    log.unlink()
    return order


def ran(result: pytest.RunResult) -> list[str]:
    """The notebooks of the items that ran, in the order they ran (from ``-v`` lines)."""
    return [
        line.split("::")[0].removeprefix("nbs/").removesuffix(".ipynb")
        for line in result.stdout.lines
        if line.startswith("nbs/") and " PASSED" in line
    ]


@pytest.fixture
def corpus(pytester: pytest.Pytester) -> Path:
    log = pytester.path / "started.txt"
    write_corpus(pytester.path / "nbs", log, {k: SLEEPS[k] for k in "abcd"})
    return log


def test_a_second_run_starts_the_longest_notebooks_first(
    pytester: pytest.Pytester, corpus: Path
) -> None:
    pytester.runpytest("--millrun", "nbs", "-v", "-p", "no:randomly").assert_outcomes(passed=4)
    assert started(corpus) == ["a", "b", "c", "d"]
    result = pytester.runpytest(
        "--millrun", "nbs", "-v", "-p", "no:randomly", "--millrun-results", "table.json"
    )
    result.assert_outcomes(passed=4)
    assert ran(result) == ["d", "c", "b", "a"]
    assert started(corpus) == ["d", "c", "b", "a"]
    table = json.loads((pytester.path / "table.json").read_text())
    assert [row["notebook"] for row in table] == [f"nbs/{n}.ipynb" for n in "abcd"]


@pytest.mark.parametrize(
    "args", [("--millrun-order", "collection"), ("--ff",)], ids=lambda a: a[0]
)
def test_collection_order_and_pytests_own_orders_stand_longest_first_aside(
    pytester: pytest.Pytester, corpus: Path, args: tuple[str, ...]
) -> None:
    pytester.runpytest("--millrun", "nbs", "-p", "no:randomly").assert_outcomes(passed=4)
    started(corpus)
    result = pytester.runpytest("--millrun", "nbs", "-v", "-p", "no:randomly", *args)
    result.assert_outcomes(passed=4)
    assert ran(result) == ["a", "b", "c", "d"]


def test_the_ini_key_turns_longest_first_off(pytester: pytest.Pytester, corpus: Path) -> None:
    pytester.makeini("[pytest]\nmillrun_order = collection\n")
    pytester.runpytest("--millrun", "nbs", "-p", "no:randomly").assert_outcomes(passed=4)
    result = pytester.runpytest("--millrun", "nbs", "-v", "-p", "no:randomly")
    assert ran(result) == ["a", "b", "c", "d"]


def test_under_xdist_the_scheduler_hands_out_the_longest_first(pytester: pytest.Pytester) -> None:
    """Collection stays the same on every worker; the controller sends the longest first.

    xdist's own ``load`` scheduling gives each of the 2 workers two consecutive items (a,
    b and c, d), so a and c (or b, when one worker starts late) would start first.
    """
    log = pytester.path / "started.txt"
    write_corpus(pytester.path / "nbs", log, SLEEPS)
    first = pytester.runpytest_subprocess("--millrun", "nbs", "-n", "2", "-p", "no:randomly")
    first.assert_outcomes(passed=5)
    started(log)
    second = pytester.runpytest_subprocess("--millrun", "nbs", "-n", "2", "-p", "no:randomly")
    second.assert_outcomes(passed=5)
    assert "Different tests" not in second.stdout.str() + second.stderr.str()
    order = started(log)
    assert sorted(order[:2]) == ["d", "e"], order


def test_the_api_starts_the_longest_first_and_returns_results_in_plan_order(
    tmp_path: Path,
) -> None:
    log = tmp_path / "started.txt"
    write_corpus(tmp_path / "nbs", log, {k: SLEEPS[k] for k in "abd"})
    out = tmp_path / "out"
    execute_run(tmp_path / "nbs", [{}], out)
    assert started(log) == ["a", "b", "d"]
    heard: list[str] = []
    results = execute_run(
        tmp_path / "nbs", [{}], out, on_result=lambda r: heard.append(r.notebook.stem)
    )
    assert started(log) == heard == ["d", "b", "a"]
    assert [r.notebook.stem for r in results] == ["a", "b", "d"]
    execute_run(tmp_path / "nbs", [{}], out, order="collection")
    assert started(log) == ["a", "b", "d"]
