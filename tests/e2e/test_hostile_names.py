"""Odd names, links and file systems end to end: pytest, the CLI and the API with real kernels.

Negative first components, over-long and non-ASCII names, symlinked notebooks,
read-only output folders, and parameter names a Python notebook cannot take.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from millrun_testing import output_files, write_notebook, write_params
from pytest_millrun import execute_run
from pytest_millrun.core.discovery import ParameterNameError
from pytest_millrun.core.naming import NAME_MAX_BYTES, OutputPathError

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def millrun(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_millrun", *map(str, args), "--no-progress"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_negative_first_component_gives_an_id_that_k_selects(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nbs" / "calc.ipynb")
    write_params(pytester.path / "p.json", {"x": [-0.0, 1], "y": [-1, -1]})
    args = ["--millrun-params", "p.json", "nbs", "--millrun-prepend", "x", "--millrun-append", "y"]
    result = pytester.runpytest(*args, "-k", "_-0.0--1")
    result.assert_outcomes(passed=1, deselected=1)
    assert output_files(pytester.path / ".millrun") == ["nbs/_-0.0-calc--1.ipynb"]


def test_long_names_are_shortened_to_fit_and_every_run_passes(tmp_path: Path) -> None:
    # a 130-character notebook name, two components of 100 characters: 288 bytes unshortened
    write_notebook(tmp_path / "nbs" / f"{'n' * 130}.ipynb", ["a + b"], params="a = b = ''")
    write_params(tmp_path / "p.json", {"a": ["v" * 100, "w" * 100], "b": ["x" * 100] * 2})
    done = millrun("nbs", "p.json", "--prepend", "a", "--append", "b", "--output-dir", "out",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert "2 passed, 0 failed" in done.stdout
    names = output_files(tmp_path / "out")
    assert len(names) == 2
    assert all(len(name.encode()) < NAME_MAX_BYTES for name in names)


def test_read_only_output_dir_is_a_usage_error_in_every_front_end(
    pytester: pytest.Pytester, read_only_dir: Path
) -> None:
    write_notebook(pytester.path / "nbs" / "calc.ipynb")
    write_params(pytester.path / "p.json", {"x": [1]})
    out = read_only_dir / "out"
    result = pytester.runpytest("--millrun-params", "p.json", "nbs", "--millrun-output-dir", out)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: Output folder {out} would be made in *not writable*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()

    done = millrun("nbs", "p.json", "--output-dir", out, cwd=pytester.path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"Error: Output folder {out} would be made in {read_only_dir}")
    assert "--output-dir" in done.stderr
    assert "Traceback" not in done.stderr

    with pytest.raises(OutputPathError, match="not writable"):
        execute_run(pytester.path / "nbs", {"x": [1]}, output_dir=out)


def test_read_only_mirrored_folder_is_one_collection_error_and_the_rest_runs(
    pytester: pytest.Pytester, read_only_dir: Path
) -> None:
    # the output dir is writable, but the folder nbs/read-only mirrors to is not
    write_notebook(pytester.path / read_only_dir.name / "calc.ipynb")
    write_notebook(pytester.path / "fine" / "calc.ipynb")
    out = read_only_dir.parent
    result = pytester.runpytest("--millrun", read_only_dir.name, "fine",
                                f"--millrun-output-dir={out}")  # fmt: skip
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*Output folder {read_only_dir} is not writable*"])
    assert "Traceback" not in result.stdout.str()
    assert output_files(out / "fine") == ["0-calc.ipynb"]


def test_non_ascii_notebook_names_keep_their_letters_and_never_collide(
    pytester: pytest.Pytester,
) -> None:
    write_notebook(pytester.path / "nbs" / "数据.ipynb")
    write_notebook(pytester.path / "nbs" / "模型.ipynb")
    result = pytester.runpytest("--millrun", "nbs")
    result.assert_outcomes(passed=2)
    assert output_files(pytester.path / ".millrun" / "nbs") == ["0-数据.ipynb", "0-模型.ipynb"]


def link_tree(root: Path, elsewhere: Path) -> None:
    """``nbs/a/calc.ipynb`` and ``nbs/b/calc.ipynb``, both links to one notebook elsewhere."""
    write_notebook(elsewhere / "real.ipynb", ["open('ran-here', 'w').close()"])
    for folder in ("a", "b"):
        (root / "nbs" / folder).mkdir(parents=True)
        (root / "nbs" / folder / "calc.ipynb").symlink_to(elsewhere / "real.ipynb")
    write_params(root / "p.json", {"x": [1]})


def test_symlinked_notebooks_are_placed_and_run_where_the_links_sit_in_pytest(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    link_tree(pytester.path, tmp_path)
    result = pytester.runpytest("--millrun-params", "p.json", "nbs", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["nbs/a/calc.ipynb::calc*PASSED*", "nbs/b/calc.ipynb::calc*PASSED*"]
    )
    assert output_files(pytester.path / ".millrun") == ["nbs/a/0-calc.ipynb", "nbs/b/0-calc.ipynb"]
    assert (pytester.path / "nbs" / "a" / "ran-here").exists()  # the link's folder is the cwd


def test_symlinked_notebooks_are_placed_and_named_by_the_link_in_the_cli(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("tree")
    link_tree(root, tmp_path_factory.mktemp("elsewhere"))
    done = millrun("nbs", "p.json", "--recursive", "--output-dir", "out", cwd=root)
    assert done.returncode == 0, done.stderr
    assert output_files(root / "out") == ["a/0-calc.ipynb", "b/0-calc.ipynb"]
    progress = [line for line in done.stderr.splitlines() if "PASSED" in line]
    assert len(progress) == 2
    assert all(" calc.ipynb [0] " in line for line in progress), progress
    assert (root / "nbs" / "b" / "ran-here").exists()


def test_python_keyword_as_parameter_name_is_refused_before_anything_runs(
    pytester: pytest.Pytester,
) -> None:
    write_notebook(pytester.path / "nbs" / "calc.ipynb")
    write_params(pytester.path / "p.json", {"class": [1], "x": [2]})
    result = pytester.runpytest("--millrun-params", "p.json", "nbs", "-n", "2")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*Notebook *calc.ipynb is a Python notebook*'class'*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert not (pytester.path / ".millrun").exists()

    done = millrun("nbs", "p.json", "--output-dir", "out", cwd=pytester.path)
    assert done.returncode == 2
    assert "'class' is a Python keyword" in done.stderr
    with pytest.raises(ParameterNameError, match="'None' is a Python keyword"):
        execute_run(pytester.path / "nbs", [{"None": 1}], output_dir=pytester.path / "api")


def test_lone_surrogate_in_params_is_a_params_file_error(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nbs" / "calc.ipynb")
    (pytester.path / "p.json").write_text('{"x": ["ok", "\\ud800"]}')
    result = pytester.runpytest("--millrun-params", "p.json", "nbs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: Params file *p.json: variation 1, parameter 'x'*"])

    done = millrun("nbs", "p.json", "--output-dir", "out", cwd=pytester.path)
    assert done.returncode == 2
    assert "cannot be encoded as UTF-8" in done.stderr


def test_output_folder_made_read_only_after_planning_fails_only_that_run(
    tmp_path: Path, read_only_dir: Path
) -> None:
    from pytest_millrun.execution.execute import execute_notebook

    notebook = write_notebook(tmp_path / "calc.ipynb")
    result = execute_notebook(notebook, read_only_dir / "sub" / "0-calc.ipynb", {"x": 1})
    assert result.status == "failed"
    assert result.error is not None
    assert f"would be made in {read_only_dir}, which is not writable" in result.error.message
