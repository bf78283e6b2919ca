"""Ids and output names: the seed rule, sanitising, uniqueness, staying in the output dir."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_millrun.naming import (
    MAX_ID_LENGTH,
    OutputPathError,
    mirrored_folder,
    name_variations,
    safe_output_path,
)

ID_CHARS = re.compile(r"^[A-Za-z0-9_.+-]+$")


def test_seed_example_name_with_integer_values() -> None:
    [name] = name_variations(
        "special_calculation",
        [{"x_values": 0, "y_values": 45}],
        ["x_values", "y_values", "results"],
    )
    assert name.filename == "0-45-results-special_calculation.ipynb"
    assert name.id == "0-45-results"


def test_no_components_prepends_the_index() -> None:
    names = name_variations("calc", [{"x": 1}, {"x": 2}])
    assert [(n.id, n.filename) for n in names] == [("0", "0-calc.ipynb"), ("1", "1-calc.ipynb")]


def test_append_components_follow_the_stem() -> None:
    [name] = name_variations("calc", [{"x": 1, "y": 2}], ["x"], ["y", "final"])
    assert name.filename == "1-calc-2-final.ipynb"
    assert name.id == "1-2-final"


def test_repeated_ids_get_numbered_suffixes_and_distinct_files() -> None:
    names = name_variations("calc", [{"x": 1}, {"x": 1}, {"x": 1}], ["x"])
    assert [n.id for n in names] == ["1", "1-2", "1-3"]
    assert [n.filename for n in names] == ["1-calc.ipynb", "1-calc-2.ipynb", "1-calc-3.ipynb"]


def test_unsafe_characters_become_underscores() -> None:
    [name] = name_variations("calc", [{"path": "../../x y"}], ["path"])
    assert name.id == "___.._x_y"
    assert "/" not in name.filename


def test_hidden_names_are_not_produced() -> None:
    [name] = name_variations("calc", [{"p": ".hidden"}], ["p"])
    assert not name.filename.startswith(".")


def test_huge_values_are_capped_and_stay_unique() -> None:
    variations = [{"v": "a" * 5000 + str(i)} for i in range(3)]
    names = name_variations("calc", variations, ["v"])
    assert all(len(n.id) <= MAX_ID_LENGTH for n in names)
    assert len({n.id for n in names}) == 3
    assert all(len(n.filename.encode()) < 255 for n in names)


def test_containers_are_rendered_as_compact_json() -> None:
    [name] = name_variations("calc", [{"v": [1, 2]}], ["v"])
    assert name.id == "_1_2_"


def test_deeply_nested_and_circular_values_still_give_short_unique_names() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    circular: list[object] = []
    circular.append(circular)
    names = name_variations("calc", [{"v": deep}, {"v": circular}], ["v"])
    assert [n.id for n in names] == ["list", "list-2"]


def test_mirrored_folder_is_relative_to_root(tmp_path: Path) -> None:
    notebook = tmp_path / "a" / "b" / "calc.ipynb"
    assert mirrored_folder(notebook, tmp_path) == Path("a/b")


def test_symlink_in_output_dir_pointing_outside_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    with pytest.raises(OutputPathError, match="outside the output directory"):
        safe_output_path(out, Path("sub"), "x.ipynb")


def test_file_name_with_separator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError):
        safe_output_path(tmp_path, Path(), "../x.ipynb")


values = st.one_of(
    st.text(max_size=300),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=20), max_size=5),
    st.dictionaries(st.text(max_size=10), st.integers(), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    stem=st.text(min_size=1, max_size=50).filter(lambda s: "/" not in s and "\0" not in s),
    variations=st.lists(st.fixed_dictionaries({"a": values, "b": values}), min_size=1, max_size=8),
    prepend=st.lists(st.sampled_from(["a", "b", "lit", "..", "/etc"]), max_size=3),
    append=st.lists(st.sampled_from(["a", "b", "x/y", "~"]), max_size=3),
)
def test_any_values_give_unique_safe_names_inside_the_output_dir(
    tmp_path_factory: pytest.TempPathFactory,
    stem: str,
    variations: list[dict[str, object]],
    prepend: list[str],
    append: list[str],
) -> None:
    out = tmp_path_factory.getbasetemp() / "prop-out"
    names = name_variations(stem, variations, prepend, append)
    assert len(names) == len(variations)
    assert len({n.id for n in names}) == len(names)
    assert len({n.filename for n in names}) == len(names)
    for name in names:
        assert ID_CHARS.match(name.id), name.id
        assert len(name.id) <= MAX_ID_LENGTH + 8
        assert ID_CHARS.match(name.filename)
        assert not name.filename.startswith(".")
        assert len(name.filename.encode()) < 255
        path = safe_output_path(out, Path("sub"), name.filename)
        assert os.path.commonpath([path, out.resolve()]) == str(out.resolve())
