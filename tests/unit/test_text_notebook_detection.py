"""Which files are text notebooks, and what a notebook of another language is told: no kernels."""

from __future__ import annotations

from pathlib import Path

import jupytext
import jupytext.formats
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from pytest_millrun.core.data import API_OPTION_NAMES, Failure
from pytest_millrun.core.discovery import (
    check_parameters,
    discover_notebooks,
    takes_python_parameters,
)
from pytest_millrun.core.text_notebooks import (
    TEXT_SUFFIXES,
    has_jupytext_header,
    ipynb_twin,
    is_text_notebook,
    looks_like_jupytext_header,
    parse_globs,
)
from pytest_millrun.execution.failures import no_such_kernel


def notebook_in(language: str, kernel: str) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": language}
    cell = new_code_cell("x = 1")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, new_code_cell("y = 2")]
    return nb


def test_the_text_suffixes_are_jupytexts() -> None:
    assert set(jupytext.formats.NOTEBOOK_EXTENSIONS) - {".ipynb"} == TEXT_SUFFIXES


@pytest.mark.parametrize(
    ("fmt", "suffix", "language", "kernel"),
    [
        ("py:percent", ".py", "python", "python3"),
        ("py:light", ".py", "python", "python3"),
        ("md:myst", ".md", "python", "python3"),
        ("md", ".md", "python", "python3"),
        ("R:percent", ".R", "R", "ir"),
        ("sh:percent", ".sh", "bash", "bash"),
        ("jl:percent", ".jl", "julia", "julia-1.9"),
    ],
)
def test_headers_jupytext_writes_are_recognised_with_and_without_jupytext(
    tmp_path: Path, fmt: str, suffix: str, language: str, kernel: str
) -> None:
    path = tmp_path / f"analysis{suffix}"
    path.write_text(jupytext.writes(notebook_in(language, kernel), fmt=fmt))
    assert has_jupytext_header(path)
    assert is_text_notebook(path)
    assert looks_like_jupytext_header(path.read_text())  # what is said without jupytext


def test_plain_modules_and_pytest_files_are_not_notebooks(tmp_path: Path) -> None:
    plain = tmp_path / "helper.py"
    plain.write_text('"""Uses jupytext: import jupytext"""\n# %%\nimport jupytext\n')
    conftest = tmp_path / "conftest.py"
    conftest.write_text(jupytext.writes(notebook_in("python", "python3"), fmt="py:percent"))
    data = tmp_path / "data.txt"
    data.write_text("---\njupytext:\n---\n")
    assert not is_text_notebook(plain)
    assert not looks_like_jupytext_header(plain.read_text())
    assert not is_text_notebook(conftest)  # pytest imports it, whatever it says
    assert not is_text_notebook(data)  # not a suffix jupytext reads


def test_globs_make_a_headerless_file_a_notebook(tmp_path: Path) -> None:
    script = tmp_path / "scripts" / "raw.py"
    script.parent.mkdir()
    script.write_text("# %%\nx = 1\n")
    assert parse_globs(" scripts/*.py, ,*.md ") == ("scripts/*.py", "*.md")
    assert not is_text_notebook(script)
    assert is_text_notebook(script, ["scripts/*.py"], tmp_path)
    assert not is_text_notebook(script, ["*.py"], tmp_path)  # ``*`` stays in one folder
    assert is_text_notebook(script, ["**/*.py"], tmp_path)


def test_a_paired_text_twin_gives_way_to_its_ipynb(tmp_path: Path) -> None:
    nb = notebook_in("python", "python3")
    nbformat.write(nb, str(tmp_path / "pair.ipynb"))
    (tmp_path / "pair.py").write_text(jupytext.writes(nb, fmt="py:percent"))
    (tmp_path / "alone.md").write_text(jupytext.writes(nb, fmt="md:myst"))
    (tmp_path / "helper.py").write_text("x = 1\n")
    assert ipynb_twin(tmp_path / "pair.py") == tmp_path / "pair.ipynb"
    assert ipynb_twin(tmp_path / "alone.md") is None
    found = discover_notebooks(tmp_path)
    assert [p.name for p in found] == ["alone.md", "pair.ipynb"]
    assert discover_notebooks(tmp_path / "pair.py") == [tmp_path / "pair.py"]  # given by name


def test_a_bash_notebook_is_not_said_to_declare_nothing() -> None:
    data = notebook_in("bash", "bash")
    data.cells[0].source = "NAME=nobody\nCOUNT=1"
    assert not takes_python_parameters(data)
    note = check_parameters(
        Path("greet.ipynb"), data, ["NAME", "COUNT"], strict=False, strict_flag="--strict"
    )
    assert note is not None
    assert "declares nothing" not in note
    assert "is written in bash: papermill cannot read the names" in note
    assert "COUNT, NAME" in note
    strict = check_parameters(
        Path("greet.ipynb"), data, ["NAME"], strict=True, strict_flag="--strict"
    )  # never raises: it cannot know
    assert strict is not None
    assert strict.endswith("--strict cannot check them either.")


def test_a_python_notebook_is_still_checked() -> None:
    data = notebook_in("python", "python3")
    note = check_parameters(Path("a.ipynb"), data, ["x", "z"], strict=False, strict_flag="-s")
    assert note is not None
    assert "does not declare 'z'" in note
    assert "(it declares x)" in note


def test_a_cell_error_without_a_name_reads_error_in_cell() -> None:
    failure = Failure("cell", ": 1", ename="", evalue="1", cell_index=3, exec_count=4)
    assert failure.headline == "Error in cell [4]: 1"
    assert failure.summary_lines() == ["Error: 1"]
    named = Failure(
        "cell", "ValueError: bad", ename="ValueError", evalue="bad", cell_index=1, exec_count=2
    )
    assert named.headline == "ValueError: bad in cell [2]"


def test_a_missing_kernel_of_another_language_gets_that_languages_advice() -> None:
    failure = no_such_kernel("ir", Path("model.ipynb"), "R", API_OPTION_NAMES)
    assert "ipykernel install" not in failure.message
    assert "It is written in R: install a Jupyter kernel for R, e.g. IRkernel" in failure.message
    python = no_such_kernel("py311", Path("a.ipynb"), "python", API_OPTION_NAMES)
    assert "python -m ipykernel install --user --name py311" in python.message
