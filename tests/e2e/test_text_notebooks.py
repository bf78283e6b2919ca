"""Text notebooks (jupytext) end to end: the plugin on two workers, the CLI and the API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from millrun_testing import write_params

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

#: A cell that fails when pytest imports the file as a module: in a kernel __name__ is __main__.
NOT_IMPORTED = 'assert __name__ == "__main__", "imported as a Python module"'


def text_notebook(path: Path, fmt: str, cells: list[str], *, header: bool = True) -> Path:
    """A notebook written by jupytext itself in ``fmt``: a ``parameters`` cell, then ``cells``."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = new_code_cell("x = 1\ny = 2")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# A text notebook"), params, *map(new_code_cell, cells)]
    text = jupytext.writes(nb, fmt=fmt)
    if not header:  # what a hand-written percent script looks like
        text = text[text.index("# %%") :]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def outputs(folder: Path) -> dict[str, dict[str, object]]:
    """Each output's name -> its papermill metadata (input path, parameters)."""
    found = {}
    for path in sorted(folder.rglob("*.ipynb")):
        nb = json.loads(path.read_text())
        found[path.relative_to(folder).as_posix()] = nb["metadata"]["papermill"]
    return found


@pytest.fixture
def team(pytester: pytest.Pytester) -> Path:
    """What a team keeps: percent .py and MyST .md notebooks, a paired .ipynb/.py, a
    headerless script, and beside them a plain module and a real test file."""
    root = pytester.path
    text_notebook(root / "nbs" / "analysis.py", "py:percent", [NOT_IMPORTED, "result = x + y"])
    text_notebook(root / "nbs" / "report.md", "md:myst", ["assert x + y < 40, x + y"])
    text_notebook(root / "nbs" / "raw" / "script.py", "py:percent", ["z = x * y"], header=False)
    pair = text_notebook(root / "nbs" / "pair.py", "py:percent", [NOT_IMPORTED])
    nbformat.write(jupytext.read(pair), str(root / "nbs" / "pair.ipynb"))
    (root / "nbs" / "helper.py").write_text("raise RuntimeError('a plain module was imported')\n")
    (root / "nbs" / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    write_params(root / "params.json", {"x": [1, 45], "y": [2, 2]})
    return root


def test_text_notebooks_run_like_ipynb_files_through_the_plugin_on_two_workers(
    pytester: pytest.Pytester, team: Path
) -> None:
    globs = ("--millrun-text-notebooks", "nbs/raw/*.py")
    listed = pytester.runpytest("--millrun-params", "params.json", "nbs", *globs, "--co", "-q")
    listed.stdout.fnmatch_lines(
        [
            "nbs/analysis.py::analysis[[]0[]]",
            "nbs/analysis.py::analysis[[]1[]]",
            "nbs/pair.ipynb::pair[[]0[]]",
            "nbs/pair.ipynb::pair[[]1[]]",
            "nbs/raw/script.py::script[[]0[]]",
            "nbs/raw/script.py::script[[]1[]]",
            "nbs/report.md::report[[]0[]]",
            "nbs/report.md::report[[]1[]]",
            "nbs/test_plain.py::test_plain",
            "9 tests collected*",
        ]
    )
    assert "pair.py" not in listed.stdout.str()  # its .ipynb runs instead
    result = pytester.runpytest("--millrun-params", "params.json", "nbs", *globs, "-n", "2")
    result.assert_outcomes(passed=8, failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED nbs/report.md::report[[]1[]] - AssertionError: 47 in cell*"]
    )
    # a headerless text notebook names no kernel: the default one, said as for an .ipynb
    result.stdout.fnmatch_lines(["millrun: script.py names no kernel in its metadata, so it ran*"])
    ran = outputs(team / ".millrun")
    assert sorted(ran) == [
        "nbs/0-analysis.ipynb",
        "nbs/0-pair.ipynb",
        "nbs/0-report.ipynb",
        "nbs/1-analysis.ipynb",
        "nbs/1-pair.ipynb",
        "nbs/1-report.ipynb",
        "nbs/raw/0-script.ipynb",
        "nbs/raw/1-script.ipynb",
    ]
    assert ran["nbs/1-analysis.ipynb"]["input_path"] == str(team / "nbs" / "analysis.py")
    assert ran["nbs/1-analysis.ipynb"]["parameters"] == {"x": 45, "y": 2}
    assert ran["nbs/0-report.ipynb"]["input_path"] == str(team / "nbs" / "report.md")
    assert ran["nbs/0-pair.ipynb"]["input_path"] == str(team / "nbs" / "pair.ipynb")
    executed = json.loads((team / ".millrun" / "nbs" / "1-analysis.ipynb").read_text())
    injected = next(c for c in executed["cells"] if "injected-parameters" in c["metadata"]["tags"])
    assert "x = 45" in "".join(injected["source"])


def test_a_text_notebook_named_on_the_command_line_is_never_imported(
    pytester: pytest.Pytester, team: Path
) -> None:
    result = pytester.runpytest(
        "--millrun-params", "params.json", "nbs/analysis.py", "nbs/report.md", "-k", "0"
    )
    result.assert_outcomes(passed=2)
    # the ids select variations as for an .ipynb: --lf reruns the one that failed
    pytester.runpytest("--millrun-params", "params.json", "nbs/report.md").assert_outcomes(
        passed=1, failed=1
    )
    again = pytester.runpytest("--millrun-params", "params.json", "nbs/report.md", "--lf")
    again.assert_outcomes(failed=1)


def test_text_notebooks_through_the_cli_and_the_api(team: Path, tmp_path: Path) -> None:
    from pytest_millrun import execute_run

    millrun = Path(sys.executable).with_name("millrun")
    cli = subprocess.run(
        [str(millrun), "nbs", "params.json", "--output-dir", "cli-out", "--workers", "2"],
        cwd=team,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 1, cli.stderr  # report.md fails for x = 45
    assert "report.md [1] in cell [3]\n    AssertionError: 47" in cli.stdout
    assert sorted(outputs(team / "cli-out")) == [
        "0-analysis.ipynb",
        "0-pair.ipynb",
        "0-report.ipynb",
        "1-analysis.ipynb",
        "1-pair.ipynb",
        "1-report.ipynb",
    ]
    results = execute_run(
        team / "nbs",
        [{"x": 3, "y": 4}],
        output_dir=tmp_path / "api-out",
        recursive=True,
        text_notebooks="raw/*.py",
        record=["x"],
    )
    assert sorted(r.notebook.name for r in results) == [
        "analysis.py",
        "pair.ipynb",
        "report.md",
        "script.py",
    ]
    assert [r.recorded for r in results] == [{"x": 3}] * 4
    ran = outputs(tmp_path / "api-out")
    assert ran["raw/0-script.ipynb"]["input_path"] == str(team / "nbs" / "raw" / "script.py")
    assert ran["raw/0-script.ipynb"]["parameters"] == {"x": 3, "y": 4}


def test_without_jupytext_a_text_notebook_names_the_extra(
    pytester: pytest.Pytester, team: Path
) -> None:
    pytester.makeconftest("import sys\nsys.modules['jupytext'] = None  # as if not installed\n")
    result = pytester.runpytest_subprocess("--millrun-params", "params.json", "nbs")
    result.assert_outcomes(passed=3, errors=2)  # pair.ipynb twice, test_plain; helper untouched
    text = result.stdout.str()
    for name in ("analysis.py", "report.md"):
        assert (
            f"nbs/{name} is a jupytext text notebook, but jupytext is not installed, so it "
            f"cannot be read as a notebook. Install the extra (pip install "
            f"'pytest-millrun[jupytext]'), or leave the file out of the run."
        ) in " ".join(text.split())
    assert "Traceback" not in text
    assert "a plain module was imported" not in text


def test_a_text_notebook_is_cached_and_reruns_after_a_code_edit_not_a_markdown_one(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    from pytest_millrun import execute_run

    notebook = text_notebook(pytester.path / "nbs" / "calc.py", "py:percent", ["z = x * y"])
    write_params(pytester.path / "params.json", {"x": [1, 2], "y": [2, 2]})
    args = ("--millrun-params", "params.json", "nbs", "--millrun-cache", "-v")
    pytester.runpytest(*args).assert_outcomes(passed=2)
    warm = pytester.runpytest(*args)
    assert warm.parseoutcomes().get("cached") == 2, warm.stdout.str()
    notebook.write_text(notebook.read_text().replace("# A text notebook", "# Renamed notes"))
    assert pytester.runpytest(*args).parseoutcomes().get("cached") == 2
    notebook.write_text(notebook.read_text().replace("z = x * y", "z = x * y + 1"))
    edited = pytester.runpytest(*args)
    edited.assert_outcomes(passed=2)
    edited.stdout.fnmatch_lines(["millrun: ran nbs/calc.py::calc[[]0[]]: code cell 2 changed"])
    api = [execute_run(notebook, [{"x": 3, "y": 1}], output_dir=tmp_path, cache=True)]
    api.append(execute_run(notebook, [{"x": 3, "y": 1}], output_dir=tmp_path, cache=True))
    assert [r.cached for results in api for r in results] == [False, True]
