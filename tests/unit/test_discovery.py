"""Which files are notebooks to run: globs, recursion, checkpoints and earlier outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from millrun_testing import write_notebook
from pytest_millrun.core.discovery import (
    ParameterNameError,
    check_parameter_names,
    discover_notebooks,
    read_notebook_json,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in [
        "b.ipynb",
        "a.ipynb",
        "skip_me.ipynb",
        "sub/c.ipynb",
        ".ipynb_checkpoints/a-checkpoint.ipynb",
    ]:
        write_notebook(tmp_path / name)
    output = write_notebook(tmp_path / "0-a.ipynb")
    data = json.loads(output.read_text())
    data["metadata"]["millrun"] = {"input": "a.ipynb"}
    output.write_text(json.dumps(data))
    (tmp_path / "notes.txt").write_text("not a notebook")
    return tmp_path


def names(paths: list[Path], root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in paths]


def test_directory_gives_sorted_notebooks_without_outputs_or_checkpoints(tree: Path) -> None:
    assert names(discover_notebooks(tree), tree) == ["a.ipynb", "b.ipynb", "skip_me.ipynb"]


def test_recursive_includes_subfolders_but_no_checkpoints_at_any_depth(tree: Path) -> None:
    write_notebook(tree / "sub" / ".ipynb_checkpoints" / "c-checkpoint.ipynb")
    found = names(discover_notebooks(tree, recursive=True), tree)
    assert found == ["a.ipynb", "b.ipynb", "skip_me.ipynb", "sub/c.ipynb"]


def test_exclude_glob_removes_matches(tree: Path) -> None:
    found = discover_notebooks(tree, exclude_glob_pattern="skip*")
    assert names(found, tree) == ["a.ipynb", "b.ipynb"]


def test_include_glob_replaces_the_default(tree: Path) -> None:
    assert names(discover_notebooks(tree, include_glob_pattern="b*"), tree) == ["b.ipynb"]


def test_a_file_is_taken_as_given(tree: Path) -> None:
    assert discover_notebooks(tree / "a.ipynb") == [tree / "a.ipynb"]


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_notebooks(tmp_path / "nope")


def test_outputs_inside_the_output_dir_are_skipped(tree: Path) -> None:
    write_notebook(tree / "out" / "x.ipynb")
    found = discover_notebooks(tree, recursive=True, output_dirs=[tree / "out"])
    assert "out/x.ipynb" not in names(found, tree)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("class", "'class' is a Python keyword.*'class' to 'class_'"),
        ("None", "'None' is a Python keyword"),
        ("my-value", "'my-value' is not a Python identifier.*'my-value' to 'my_value'"),
        ("2x", "'2x' is not a Python identifier"),
    ],
)
def test_python_notebook_refuses_names_it_could_not_assign(
    tmp_path: Path, key: str, reason: str
) -> None:
    path = write_notebook(tmp_path / "calc.ipynb")
    with pytest.raises(ParameterNameError, match=f"Notebook {path} is a Python notebook.*{reason}"):
        check_parameter_names(path, read_notebook_json(path), ["x", key])


def test_notebook_without_kernelspec_is_taken_as_python(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "calc.ipynb", kernel=None)
    with pytest.raises(ParameterNameError):
        check_parameter_names(path, read_notebook_json(path), ["lambda"])


def test_other_languages_keep_their_own_naming_rules(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "calc.ipynb", kernel="ir", language="R")
    check_parameter_names(path, read_notebook_json(path), ["my.var", "class"])


def test_soft_keywords_and_unicode_identifiers_are_fine(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "calc.ipynb")
    check_parameter_names(path, read_notebook_json(path), ["match", "type", "_", "größe"])
