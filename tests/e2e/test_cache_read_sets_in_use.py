"""Read sets where users meet them: ``-vv`` lists them, an editable package's source
counts, ``--millrun-force`` re-stamps, a suite's sections, the command and the API agree.

Real kernels, as in ``test_cache_read_sets.py`` (which covers what each kind of read
re-runs); here the same record seen through each front end.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from millrun_testing import write_notebook, write_params
from pytest_millrun import execute_run

#: Imports the package from the source tree on ``sys.path``, and reads a file beside the notebook.
CELLS = [
    "import mylib.core",
    "rows = open('data.csv').read().splitlines()",
    "total = mylib.core.scale(len(rows)) + x",
]


def editable_project(root: Path) -> tuple[Path, Path]:
    """A notebook folder and, beside it, a package's source tree as an editable install
    leaves it: outside the interpreter and its ``site-packages``, on ``sys.path`` by a path
    entry (setuptools' and hatchling's editable ``.pth`` files hold just that folder)."""
    notebook = write_notebook(root / "nbs" / "calc.ipynb", CELLS, params="x = 1")
    (root / "nbs" / "data.csv").write_text("a\nb\n")
    package = root / "src" / "mylib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "core.py").write_text("def scale(n):\n    return 10 * n\n")
    return notebook, root / "src"


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k in ("passed", "failed", "cached")}


def ran(result: pytest.RunResult) -> list[str]:
    prefix = "millrun: ran "
    return sorted(line[len(prefix) :] for line in result.outlines if line.startswith(prefix))


def listed(result: pytest.RunResult) -> dict[str, list[str]]:
    """The read sets ``-vv`` lists in the summary, by node id."""
    sets: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in result.outlines:
        if line.startswith("millrun: read set of "):
            nodeid, count = line[len("millrun: read set of ") :].rsplit(" (", 1)
            lines = sets[nodeid] = []
            assert count.endswith("):")
        elif line.startswith("    ") and sets:
            lines.append(line.strip())
    return sets


def test_an_editable_packages_changed_module_reruns_and_vv_lists_what_each_variation_read(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, src = editable_project(pytester.path)
    monkeypatch.setenv("PYTHONPATH", str(src))  # the kernels' sys.path, fork templates' too
    write_params(pytester.path / "params.json", {"x": [1, 2]})
    (pytester.path / "pytest.ini").write_text(
        "[pytest]\nmillrun_params = params.json\nmillrun_record = total\nmillrun_cache = true\n"
    )
    first = pytester.runpytest("-n", "2", "-v")
    assert outcomes(first) == {"passed": 2}, first.stdout.str()
    assert not listed(first)  # -v says why each ran, and no more
    core = f"imported {src / 'mylib' / 'core.py'}"
    expected = ["read data.csv", f"imported {src / 'mylib' / '__init__.py'}", core]
    cached = pytester.runpytest("-n", "2", "-vv")
    assert outcomes(cached) == {"cached": 2}
    assert listed(cached) == {f"nbs/calc.ipynb::calc[{i}]": expected for i in range(2)}

    (src / "mylib" / "core.py").write_text("def scale(n):\n    return 10 * n  # reviewed\n")
    changed = pytester.runpytest("-n", "2", "-vv")
    assert outcomes(changed) == {"passed": 2}, changed.stdout.str()
    assert ran(changed) == [f"nbs/calc.ipynb::calc[{i}]: {core} changed" for i in range(2)]
    assert listed(changed) == {f"nbs/calc.ipynb::calc[{i}]": expected for i in range(2)}

    (src / "mylib" / "core.py").write_text("def scale(n):\n    raise ValueError('regressed')\n")
    broken = pytester.runpytest("-n", "2")
    assert outcomes(broken) == {"failed": 2}
    assert "regressed" in broken.stdout.str()


def test_force_runs_every_variation_and_stamps_it_for_the_next_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, src = editable_project(pytester.path)
    monkeypatch.setenv("PYTHONPATH", str(src))
    write_params(pytester.path / "params.json", {"x": [1, 2]})
    (pytester.path / "pytest.ini").write_text(
        "[pytest]\nmillrun_params = params.json\nmillrun_cache = true\n"
    )
    (src / "mylib" / "core.py").write_text("def scale(n):\n    raise ValueError('broken')\n")
    assert outcomes(pytester.runpytest("-v")) == {"failed": 2}
    (src / "mylib" / "core.py").write_text("def scale(n):\n    return n\n")
    forced = pytester.runpytest("-v", "--millrun-force")
    assert outcomes(forced) == {"passed": 2}, forced.stdout.str()
    assert ran(forced) == [f"nbs/calc.ipynb::calc[{i}]: forced (--millrun-force)" for i in range(2)]
    assert outcomes(pytester.runpytest("-v")) == {"cached": 2}  # the forced pass was stamped
    (src / "mylib" / "core.py").write_text("def scale(n):\n    return n + 0\n")
    assert outcomes(pytester.runpytest("-v")) == {"passed": 2}


def test_a_suites_sections_rerun_on_their_own_reads_and_leave_out_their_ignored_files(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "nbs"
    cells = ["rows = open('data.csv').read()", "log = open('run.log').read()", "y = x * 2"]
    write_notebook(folder / "calc.ipynb", cells, params="x = 1")
    write_notebook(folder / "other.ipynb", ["rows = open('other.csv').read()"], params="x = 1")
    for name in ("data.csv", "other.csv", "run.log"):
        (folder / name).write_text(name)
    suite = folder / "suite.yaml"
    suite.write_text(
        "notebooks:\n"
        "  calc.ipynb: {grid: {x: [1, 2]}, ignore: ['*.log']}\n"
        "  other.ipynb: {variations: [{x: 3}]}\n"
    )

    def api() -> dict[str, tuple[str, ...] | None]:
        """Why each variation ran, by notebook and x; None: cached."""
        results = execute_run(folder, suite, tmp_path / "out", cache=True)
        assert all(r.passed for r in results), [r.error for r in results]
        return {f"{r.notebook.stem} {r.parameters['x']}": (
            None if r.cached else r.cache_reasons) for r in results}  # fmt: skip

    assert set(api().values()) == {("no output",)}
    assert set(api().values()) == {None}
    (folder / "run.log").write_text("the section ignores its logs")
    assert set(api().values()) == {None}
    (folder / "data.csv").write_text("changed")
    changed = ("read data.csv changed",)
    assert api() == {"calc 1": changed, "calc 2": changed, "other 3": None}
    (folder / "other.csv").write_text("changed")
    assert api() == {"calc 1": None, "calc 2": None, "other 3": ("read other.csv changed",)}


def test_the_command_and_the_api_give_the_same_reasons_and_read_sets(tmp_path: Path) -> None:
    cells = ["import helper", CELLS[1], "total = helper.scale(len(rows)) + x"]
    notebook = write_notebook(tmp_path / "nbs" / "calc.ipynb", cells, params="x = 1")
    folder = notebook.parent
    (folder / "data.csv").write_text("a\nb\n")
    (folder / "helper.py").write_text("def scale(n):\n    return 10 * n\n")
    params = write_params(tmp_path / "params.json", {"x": [1, 2]})

    def command(*flags: str) -> subprocess.CompletedProcess[str]:
        """The command, in a pool of two (``--workers 2``), into its own output folder."""
        done = subprocess.run(
            [sys.executable, "-m", "pytest_millrun", str(folder), str(params),
             "--output-dir", str(tmp_path / "cli"), "--cache", "--no-progress", "--workers", "2",
             *flags],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def api() -> list[Said]:
        """The API, one run after the other in this process, into another output folder."""
        results = execute_run(folder, params, tmp_path / "api", cache=True)
        assert all(r.passed for r in results), [r.error for r in results]
        return [(() if r.cached else r.cache_reasons, r.read_set) for r in results]

    reads = ("read data.csv", "imported helper.py")
    assert said(command("-vv")) == api() == [(("no output",), reads)] * 2
    assert said(command("-vv")) == api() == [((), reads)] * 2
    (folder / "data.csv").write_text("a\nb\nc\n")
    (folder / "helper.py").write_text("def scale(n):\n    return n\n")
    both = ("read data.csv changed", "imported helper.py changed")
    assert said(command("-vv")) == api() == [(both, reads)] * 2
    (folder / "data.csv").write_text("a\n")
    quiet = command("-v")  # why each ran, and not what each read
    assert said(quiet) == [(("read data.csv changed",), ())] * 2
    assert " read set (" not in quiet.stderr


#: What the command says of one run with ``-vv``, or what the API's result holds:
#: why it ran (nothing when cached), and its read set.
Said = tuple[tuple[str, ...], tuple[str, ...]]


def said(done: subprocess.CompletedProcess[str]) -> list[Said]:
    """Each run's reasons and read set as the command prints them, in variation order."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    into: list[str] = []
    for line in done.stderr.splitlines():
        text = line.strip()
        name = text.split("]", 1)[0]
        if line.startswith("  calc.ipynb [") and " read set (" in line:
            into = found.setdefault(name, ([], []))[1]
        elif line.startswith("  calc.ipynb ["):
            found.setdefault(name, ([], []))[0].extend(text.split(": ", 1)[1].split("; "))
        elif line.startswith("    "):
            into.append(text)
    return [(tuple(found[n][0]), tuple(found[n][1])) for n in sorted(found)]
