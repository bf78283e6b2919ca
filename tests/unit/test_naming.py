"""Ids and output names: the seed rule, sanitising, uniqueness, staying in the output dir."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_millrun.core.naming import (
    MAX_COMPONENTS_BYTES,
    MAX_FILENAME_BYTES,
    NAME_MAX_BYTES,
    OutputPathError,
    check_output_folder,
    mirrored_folder,
    name_variations,
    partial_path,
    safe_output_path,
    safe_part,
)

#: Unicode letters and digits, _ . + -: safe in file names and word characters of ``-k``.
ID_CHARS = re.compile(r"^[\w.+-]+$")
HASH = "[0-9a-f]{8}"
#: pytest's ``-k`` scanner accepts an identifier of these characters.
K_IDENT = re.compile(r"(:?\w|:|\+|-|\.|\[|\]|\\|/)+")


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


def test_unsafe_characters_become_underscores_and_a_hash_of_the_value() -> None:
    [name] = name_variations("calc", [{"path": "../../x y"}], ["path"])
    assert re.fullmatch(f"___.._x_y_{HASH}", name.id)
    assert "/" not in name.filename


def test_values_that_sanitise_alike_still_get_different_names_in_any_order() -> None:
    values = [{"v": "a b"}, {"v": "a?b"}, {"v": "a_b"}]
    names = name_variations("calc", values, ["v"])
    assert len({n.filename for n in names}) == 3
    assert names[2].id == "a_b"
    assert [n.id for n in name_variations("calc", values[::-1], ["v"])] == [
        n.id for n in names[::-1]
    ]


def test_unicode_letters_are_kept_so_non_ascii_notebooks_do_not_collide() -> None:
    [data] = name_variations("数据", [{}])
    [model] = name_variations("模型", [{}])
    assert (data.filename, model.filename) == ("0-数据.ipynb", "0-模型.ipynb")
    [name] = name_variations("calc", [{"city": "Zürich"}], ["city"])
    assert (name.id, name.filename) == ("Zürich", "Zürich-calc.ipynb")


def test_an_undecodable_file_name_still_gives_a_valid_name() -> None:
    stem = b"caf\xe9".decode("utf-8", "surrogateescape")  # how Python reads a Latin-1 name
    [name] = name_variations(stem, [{}])
    assert re.fullmatch(f"0-caf__{HASH}.ipynb", name.filename)
    name.filename.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "expected_id"),
    [(-1, "_-1"), ("-0.0--1", "_-0.0--1"), ("_-1", "__-1"), ("_x", "_x"), (1, "1")],
)
def test_ids_and_names_never_start_with_a_dash(value: object, expected_id: str) -> None:
    [name] = name_variations("calc", [{"x": value}], ["x"])
    assert name.id == expected_id
    assert name.filename == f"{expected_id}-calc.ipynb"


def test_a_stem_starting_with_a_dash_is_escaped_when_it_starts_the_name() -> None:
    [name] = name_variations("-calc", [{"x": 1}], (), ["x"])
    assert name.filename == "_-calc-1.ipynb"


def test_names_differing_only_in_case_count_as_repeated() -> None:
    names = name_variations("calc", [{"v": "A"}, {"v": "a"}], ["v"])
    assert [n.id for n in names] == ["A", "a-2"]
    assert [n.filename for n in names] == ["A-calc.ipynb", "a-calc-2.ipynb"]


def test_hidden_names_are_not_produced() -> None:
    [name] = name_variations("calc", [{"p": ".hidden"}], ["p"])
    assert not name.filename.startswith(".")


def test_huge_values_are_capped_and_stay_unique() -> None:
    variations = [{"v": "a" * 5000 + str(i)} for i in range(3)]
    names = name_variations("calc", variations, ["v"])
    assert all(len(n.id.encode()) <= MAX_COMPONENTS_BYTES for n in names)
    assert len({n.id for n in names}) == 3
    assert all(len(n.filename.encode()) <= MAX_FILENAME_BYTES for n in names)


def test_long_stem_and_values_fit_the_file_system_limit_partial_name_included() -> None:
    # the case: a 130-character notebook name and two 100-character values
    names = name_variations("n" * 130, [{"a": "v" * 100, "b": "w" * 100}], ["a"], ["b"])
    [name] = names
    assert len(name.filename.encode()) <= MAX_FILENAME_BYTES
    assert len(partial_path(Path(name.filename)).name.encode()) <= NAME_MAX_BYTES
    assert re.fullmatch(f"v+_{HASH}-n+_{HASH}-w+_{HASH}.ipynb", name.filename)


def test_multibyte_names_are_measured_in_bytes() -> None:
    stem = "数" * 85  # 255 bytes of UTF-8, the longest name a file system allows
    [name] = name_variations(stem, [{"v": "模" * 80, "w": "型" * 80}], ["v"], ["w"])
    assert len(partial_path(Path(name.filename)).name.encode()) <= NAME_MAX_BYTES
    assert name.filename.startswith("模")


def test_containers_are_rendered_as_compact_json() -> None:
    [name] = name_variations("calc", [{"v": [1, 2]}], ["v"])
    assert re.fullmatch(f"_1_2__{HASH}", name.id)


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


def test_a_symlinked_notebook_is_placed_where_the_link_sits(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "real.ipynb"
    target.parent.mkdir()
    target.write_text("{}")
    root = tmp_path / "root"
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
        (root / folder / "calc.ipynb").symlink_to(target)
    assert mirrored_folder(root / "a" / "calc.ipynb", root) == Path("a")
    assert mirrored_folder(root / "b" / "calc.ipynb", root) == Path("b")


def test_a_root_reached_through_a_symlink_still_mirrors_relative_folders(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert mirrored_folder(tmp_path / "real" / "sub" / "x.ipynb", tmp_path / "alias") == Path("sub")


def test_output_folder_that_can_be_made_is_accepted(tmp_path: Path) -> None:
    check_output_folder(tmp_path / "new" / "deeper", "--out")
    assert not (tmp_path / "new").exists()  # checking makes nothing


def test_output_folder_behind_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputPathError, match=r"exists and is not a folder.*\(--out\)"):
        check_output_folder(tmp_path / "file" / "out", "--out")


def test_read_only_output_folder_is_refused(read_only_dir: Path) -> None:
    with pytest.raises(OutputPathError, match=r"not writable.*\(--out\)"):
        check_output_folder(read_only_dir, "--out")
    with pytest.raises(OutputPathError, match="would be made in"):
        check_output_folder(read_only_dir / "sub", "--out")


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


any_text = st.text(st.characters(exclude_categories=()), max_size=300)  # surrogates too
values = st.one_of(
    any_text,
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=20), max_size=5),
    st.dictionaries(st.text(max_size=10), st.integers(), max_size=3),
)
stems = st.text(st.characters(exclude_categories=()), min_size=1, max_size=90).filter(
    lambda s: "/" not in s and "\0" not in s
)


def assert_valid(name: str, out: Path) -> None:
    assert ID_CHARS.match(name), name
    assert not name.startswith((".", "-"))
    assert len(name.encode()) <= MAX_FILENAME_BYTES
    assert len(partial_path(Path(name)).name.encode()) <= NAME_MAX_BYTES
    path = safe_output_path(out, Path("sub"), name)
    assert os.path.commonpath([path, out.resolve()]) == str(out.resolve())


@settings(max_examples=300, deadline=None)
@given(
    stem=stems,
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
    assert len({n.id.casefold() for n in names}) == len(names)
    assert len({n.filename.casefold() for n in names}) == len(names)
    for name in names:
        assert ID_CHARS.match(name.id), name.id
        assert K_IDENT.fullmatch(name.id)
        assert not name.id.startswith("-")
        assert len(name.id.encode()) <= 2 * MAX_COMPONENTS_BYTES + 16
        assert_valid(name.filename, out)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(any_text, min_size=2, max_size=6, unique=True))
def test_different_texts_never_give_the_same_part(texts: list[str]) -> None:
    parts = [safe_part(t) for t in texts]
    assert len(set(parts)) == len(parts)
    assert all(ID_CHARS.match(p) for p in parts if p)


@settings(max_examples=300, deadline=None)
@given(
    stems=st.lists(stems, min_size=2, max_size=4, unique=True),
    value=st.text(st.characters(exclude_characters="-"), max_size=80),
    components=st.sampled_from([((), ()), (("v",), ()), ((), ("v",)), (("v", "lit"), ("v",))]),
)
def test_different_notebooks_in_one_folder_never_share_a_name(
    tmp_path_factory: pytest.TempPathFactory,
    stems: list[str],
    value: str,
    components: tuple[tuple[str, ...], tuple[str, ...]],
) -> None:
    out = tmp_path_factory.getbasetemp() / "prop-out"
    prepend, append = components
    files = [name_variations(s, [{"v": value}], prepend, append)[0].filename for s in stems]
    assert len(set(files)) == len(files)
    for name in files:
        assert_valid(name, out)
