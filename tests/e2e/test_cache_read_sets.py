"""Read sets end to end: what a notebook's kernel reads decides its cache key (issue 32).

Real kernels: the recorder is sent with the kernel session's start request and its
record comes back with the end request; run_job stamps the reads part after a pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from millrun_testing import write_notebook, write_params
from pytest_millrun import execute_run

#: Imports a helper module, reads a CSV, globs a folder, writes and reads back its own file.
CELLS = [
    "import glob\nimport helper",
    "rows = open('data.csv').read().splitlines()",
    "extra = sorted(glob.glob('more/*.txt'))",
    "made = f'made-{x}.txt'\nopen(made, 'w').write('made by the run')\nopen(made).read()",
    "total = helper.double(len(rows)) + len(extra) + x",
]


def project(folder: Path, cells: list[str] = CELLS) -> Path:
    notebook = write_notebook(folder / "calc.ipynb", cells, params="x = 1")
    (folder / "helper.py").write_text("def double(n):\n    return 2 * n\n")
    (folder / "data.csv").write_text("a\nb\n")
    (folder / "unread.txt").write_text("nobody reads me")
    (folder / "more").mkdir()
    (folder / "more" / "a.txt").write_text("a")
    return notebook


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k in ("passed", "failed", "cached")}


def ran(result: pytest.RunResult) -> list[str]:
    prefix = "millrun: ran "
    return sorted(line[len(prefix) :] for line in result.outlines if line.startswith(prefix))


def test_what_the_kernel_read_reruns_it_and_what_it_did_not_read_or_wrote_itself_does_not(
    pytester: pytest.Pytester,
) -> None:
    nbs = pytester.path / "nbs"
    project(nbs)
    write_params(pytester.path / "params.json", {"x": [1, 2]})
    (pytester.path / "pytest.ini").write_text(
        "[pytest]\nmillrun_params = params.json\nmillrun_record = total\nmillrun_cache = true\n"
    )
    run = ("-n", "2", "-v")
    assert outcomes(pytester.runpytest(*run)) == {"passed": 2}
    assert outcomes(pytester.runpytest(*run)) == {"cached": 2}

    (nbs / "unread.txt").write_text("still nobody reads me")
    (nbs / "made-1.txt").write_text("the run writes this before it reads it")
    assert outcomes(pytester.runpytest(*run)) == {"cached": 2}

    def reruns_for(reason: str) -> None:
        result = pytester.runpytest(*run)
        assert outcomes(result) == {"passed": 2}, result.stdout.str()
        assert ran(result) == [f"nbs/calc.ipynb::calc[{i}]: {reason}" for i in range(2)]
        assert outcomes(pytester.runpytest(*run)) == {"cached": 2}

    (nbs / "data.csv").write_text("a\nb\nc\n")
    reruns_for("read data.csv changed")
    (nbs / "more" / "b.txt").write_text("b")
    reruns_for("listing of more changed")
    (nbs / "helper.py").write_text("def double(n):\n    return 2 * n + 0  # same, longer\n")
    reruns_for("imported helper.py changed")

    (nbs / "helper.py").write_text("def double(n):\n    raise ValueError('broken helper')\n")
    broken = pytester.runpytest(*run)
    assert outcomes(broken) == {"failed": 2}
    assert "broken helper" in broken.stdout.str()


def test_the_command_and_the_api_give_the_same_read_reasons_in_forked_and_spawned_kernels(
    tmp_path: Path,
) -> None:
    pandas = ["import pandas\nframe = pandas.read_csv('table.csv')"]
    notebook = project(tmp_path / "nbs", [*CELLS, *pandas])
    (notebook.parent / "table.csv").write_text("a,b\n1,2\n")
    out = tmp_path / "out"
    params = write_params(tmp_path / "params.json", {"x": [1]})

    def api() -> list[tuple[bool, tuple[str, ...]]]:
        results = execute_run(
            notebook.parent, params, out, record=["total"], cache=True, kernel_start="spawn"
        )  # the command forks its kernels (where it can): the start mode is not in the key
        assert all(r.passed for r in results), [r.error for r in results]
        return [(r.cached, r.cache_reasons) for r in results]

    assert api() == [(False, ("no output",))]
    assert api() == [(True, ())]
    (notebook.parent / "data.csv").write_text("changed\n")
    assert api() == [(False, ("read data.csv changed",))]

    millrun = [sys.executable, "-m", "pytest_millrun", str(notebook.parent), str(params)]
    common = ["--output-dir", str(out), "--record", "total", "--cache", "--no-progress", "-v"]
    warm = subprocess.run([*millrun, *common], capture_output=True, text=True)
    assert "0 passed, 1 cached, 0 failed" in warm.stdout, warm.stdout + warm.stderr
    (notebook.parent / "helper.py").write_text("def double(n):\n    return n + n  # changed\n")
    again = subprocess.run([*millrun, *common], capture_output=True, text=True)
    assert "calc.ipynb [0]: imported helper.py changed" in again.stderr, again.stderr
    assert "1 passed, 0 failed" in again.stdout
    assert api() == [(True, ())]
    (notebook.parent / "table.csv").write_text("a,b\n1,3\n")
    assert api() == [(False, ("read table.csv changed",))]


def test_a_bash_notebook_records_no_reads_and_stays_cached_by_its_declared_inputs(
    tmp_path: Path, bash_kernel: str
) -> None:
    notebook = write_notebook(
        tmp_path / "nbs" / "greet.ipynb", ['echo "hello $NAME" && cat words.txt'],
        params="NAME=nobody", kernel=bash_kernel, language="bash",
    )  # fmt: skip
    (notebook.parent / "words.txt").write_text("hi")

    def api() -> list[tuple[bool, tuple[str, ...]]]:
        results = execute_run(
            notebook.parent, [{"NAME": "bob"}], tmp_path / "out", cache=True,
            cache_inputs=["words.txt"],
        )  # fmt: skip
        assert all(r.passed for r in results), [r.error for r in results]
        told = {"not_asked": "it is a bash kernel, not python"}
        assert all(r.cached or r.kernel_report["reads"] == told for r in results)
        return [(r.cached, r.cache_reasons) for r in results]

    assert api() == [(False, ("no output",))]
    assert api() == [(True, ())]
    (notebook.parent / "words.txt").write_text("hello")
    assert api() == [(False, ("input words.txt changed",))]
