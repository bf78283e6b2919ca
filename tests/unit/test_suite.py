"""Suites and YAML params files: the rule that tells the forms apart, grids, globs, errors."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_millrun.core.globs import glob_match, glob_matches_a_file
from pytest_millrun.core.params import ParamsError, normalize_params
from pytest_millrun.core.suite import (
    SUITE_KEYS,
    MillrunSuiteWarning,
    SuiteError,
    expand_grid,
    marker_kwargs,
)
from pytest_millrun.core.suite_file import build_suite, is_suite_form, load_suite

names = st.sampled_from(["x", "y", "region", "seed", "rate", *SUITE_KEYS])
scalars = st.one_of(
    st.integers(-5, 5), st.text("abc", min_size=1, max_size=3), st.booleans(), st.none()
)


def suite_of(data: Any, base: Path = Path("/p")) -> Any:
    return build_suite(data, "Params file s.yaml", base)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the rule -------------------------------------------------------------------------------


@given(
    st.dictionaries(names, st.integers(1, 3), min_size=1, max_size=5).flatmap(
        lambda lengths: st.fixed_dictionaries(
            {k: st.lists(scalars, min_size=3, max_size=3) for k in lengths}
        )
    )
)
def test_every_valid_dict_of_lists_keeps_its_meaning(data: dict[str, list[Any]]) -> None:
    """Suite key names included: a dict whose values are all lists is the seed form."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MillrunSuiteWarning)
        suite = suite_of(data)
    assert not suite.is_suite
    assert list(suite.top.variations) == normalize_params(data)


@given(st.lists(st.dictionaries(names, scalars, max_size=3), min_size=1, max_size=4))
def test_every_valid_list_of_dicts_keeps_its_meaning(data: list[dict[str, Any]]) -> None:
    suite = suite_of(data)
    assert not suite.is_suite
    assert list(suite.top.variations) == data


def test_grid_as_a_parameter_name_with_a_list_is_the_seed_form() -> None:
    assert not is_suite_form({"grid": [1, 2], "x": [3, 4]})
    assert list(suite_of({"grid": [1, 2], "x": [3, 4]}).top.variations) == [
        {"grid": 1, "x": 3},
        {"grid": 2, "x": 4},
    ]


def test_a_dict_with_one_value_that_is_not_a_list_is_a_suite() -> None:
    assert is_suite_form({"grid": {"x": [1, 2]}})
    assert is_suite_form({"variations": [{"x": 1}], "constants": {}})
    assert is_suite_form({"prepend": "x", "variations": [{"x": 1}]})
    assert not is_suite_form([{"grid": {"x": 1}}])


def test_all_list_dict_of_suite_keys_stays_seed_form_with_a_warning() -> None:
    with pytest.warns(MillrunSuiteWarning, match=r"'variations', 'prepend' are parameter names"):
        suite = suite_of({"variations": [{"x": 1}], "prepend": ["x"]})
    assert list(suite.top.variations) == [{"variations": {"x": 1}, "prepend": "x"}]


def test_broken_seed_form_keeps_its_old_error() -> None:
    with pytest.raises(ParamsError, match=r"the value of 'x' is a int \(5\), not a list"):
        suite_of({"x": 5, "y": [1]})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"grdi": {"x": [1]}}, r"'grdi' is not a suite key \(did you mean 'grid'\?\)"),
        ({"grid": {"x": [1]}, "x": [1]}, r"'x' is not a suite key\. .*value of 'grid' is not"),
        ({"grid": {"x": [1]}, "constant": {}}, r"did you mean 'constants'"),
    ],
)
def test_misspelled_or_stray_suite_key_is_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        suite_of(data)


# --- grids ----------------------------------------------------------------------------------

axes = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
    st.lists(st.integers(), min_size=1, max_size=4, unique=True),
    min_size=1,
    max_size=4,
)


@given(axes)
def test_grid_has_every_combination_once_in_nested_loop_order(grid: dict[str, list[int]]) -> None:
    variations = expand_grid(grid)
    assert len(variations) == math.prod(len(v) for v in grid.values())
    keys = list(grid)
    as_tuples = [tuple(v[k] for k in keys) for v in variations]
    assert sorted(set(as_tuples)) == sorted(itertools.product(*grid.values()))
    # first axis slowest, last fastest: the positions of the values count up like digits
    positions = [tuple(grid[k].index(v[k]) for k in keys) for v in variations]
    assert positions == sorted(positions)
    assert all(list(v) == keys for v in variations)


text_axes = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
    st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=3, unique=True),
    min_size=1,
    max_size=4,
)


@settings(max_examples=2, deadline=None)
@given(st.lists(text_axes, min_size=8, max_size=8))
def test_grid_order_is_the_same_in_every_process(grids: list[dict[str, list[str]]]) -> None:
    """xdist workers are separate interpreters with their own string hash seeds."""
    code = (
        "import json, sys; from pathlib import Path;"
        "from pytest_millrun.core.suite_file import build_suite;"
        "print(json.dumps([list(build_suite({'grid': g}, 's', Path('.')).top.variations)"
        " for g in json.loads(sys.stdin.read())]))"
    )
    expected = json.dumps([expand_grid(grid) for grid in grids]) + "\n"
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(grids),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert done.stdout == expected


def test_grid_then_variations_then_constants_under_each() -> None:
    suite = suite_of(
        {
            "grid": {"x": [1, 2], "y": ["a"]},
            "variations": [{"x": 9, "rate": 0.5}],
            "constants": {"rate": 0.1, "seed": 7},
        }
    )
    assert list(suite.top.variations) == [
        {"x": 1, "y": "a", "rate": 0.1, "seed": 7},
        {"x": 2, "y": "a", "rate": 0.1, "seed": 7},
        {"x": 9, "rate": 0.5, "seed": 7},
    ]


def test_constants_alone_give_one_variation_and_nothing_gives_the_defaults() -> None:
    assert list(suite_of({"constants": {"x": 1}}).top.variations) == [{"x": 1}]
    suite = suite_of({"notebooks": {"a.ipynb": {"constants": {"x": 1}}}})
    assert list(suite.top.variations) == [{}]


# --- notebooks globs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.ipynb", "a.ipynb", True),
        ("*.ipynb", "sub/a.ipynb", False),
        ("**/*.ipynb", "a.ipynb", True),
        ("**/*.ipynb", "sub/deeper/a.ipynb", True),
        ("sub/**", "sub/deeper/a.ipynb", True),
        ("./sub/?.ipynb", "sub/a.ipynb", True),
        ("sub/[ab].ipynb", "sub/c.ipynb", False),
        ("sub/[!ab].ipynb", "sub/c.ipynb", True),
        ("a+b.ipynb", "a+b.ipynb", True),
        ("a.ipynb", "xa.ipynb", False),
    ],
)
def test_glob_match(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


def test_each_notebook_gets_its_section_relative_to_the_params_folder(tmp_path: Path) -> None:
    suite = build_suite(
        {
            "grid": {"x": [1, 2]},
            "prepend": ["x"],
            "notebooks": {
                "nbs/sub/*.ipynb": {"variations": [{"y": 3}], "append": ["y"]},
                "nbs/calibrate.ipynb": [{"max_nfev": 1}],
                "nbs/defaults.ipynb": None,
            },
        },
        "s",
        tmp_path,
    )
    other = suite.section_for(tmp_path / "nbs" / "other.ipynb")
    assert (other.variations, other.prepend) == (({"x": 1}, {"x": 2}), ("x",))
    sub = suite.section_for(tmp_path / "nbs" / "sub" / "a.ipynb")
    assert (sub.variations, sub.prepend, sub.append) == (({"y": 3},), None, ("y",))
    assert suite.section_for(tmp_path / "nbs" / "calibrate.ipynb").variations == ({"max_nfev": 1},)
    assert suite.section_for(tmp_path / "nbs" / "defaults.ipynb").variations == ({},)


def test_unmatched_globs_are_those_no_notebook_took(tmp_path: Path) -> None:
    suite = build_suite(
        {"notebooks": {"a.ipynb": None, "b.ipynb": None, "c*.ipynb": None}}, "s", tmp_path
    )
    taken = [suite.section_for(tmp_path / name).glob for name in ("a.ipynb", "d.ipynb")]
    assert [section.glob for section, _ in suite.unmatched_globs(taken)] == ["b.ipynb", "c*.ipynb"]


def test_a_notebook_matched_by_two_globs_is_an_error_naming_both(tmp_path: Path) -> None:
    suite = build_suite(
        {"notebooks": {"*.ipynb": {"constants": {"x": 1}}, "a.*": {"constants": {"x": 2}}}},
        "Params file s.yaml",
        tmp_path,
    )
    with pytest.raises(SuiteError, match=r"a\.ipynb matches both notebooks globs '\*\.ipynb' and"):
        suite.section_for(tmp_path / "a.ipynb")


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("grid:\n  x: []\n", r"line 2, column 3: the grid axis 'x' is empty"),
        ("grid:\n  x: 3\n", r"line 2, column 3: the grid axis 'x' is a int \(3\), not a list"),
        ("grid: {}\n", r"line 1, column 1: 'grid' has no axes"),
        ("grid: [1, 2]\nconstants: {}\n", r"'grid' is a list, not a mapping"),
        ("constants: [1]\ngrid: {x: [1]}\n", r"line 1, column 1: 'constants' is a list"),
        ("grid: {x: [1]}\nprepend: [1]\n", r"line 2, column 1: 'prepend' must be a list"),
        ("grid: {x: [1, 1]}\n", r"gets the variation \{'x': 1\} twice \(numbers 0 and 1"),
        (
            "grid: {x: [1]}\nvariations: [{x: 1}]\n",
            r"gets the variation \{'x': 1\} twice",
        ),
        ("grid: {'': [1]}\n", r"the key '', which is not a parameter name"),
        ("notebooks: [a]\nconstants: {}\n", r"'notebooks' is a list, not a mapping of glob"),
        (
            "notebooks:\n  a.ipynb:\n    x: [1, 2]\n",
            r"notebooks 'a.ipynb' at line 3, column 5: 'x' is not a key of a notebooks entry",
        ),
        (
            "notebooks:\n  a.ipynb:\n    marks: []\n",
            r"'marks' is not allowed here; move the rule to the top level's 'marks'",
        ),
        (
            "notebooks:\n  a.ipynb: {notebooks: {}}\n",
            r"'notebooks' is not allowed here; globs do not nest",
        ),
        ("notebooks:\n  a.ipynb: 3\n", r"notebooks 'a.ipynb' is a int, not a suite"),
        ("marks: {skip: x}\n", r"'marks' is a dict, not a list of rules"),
        ("variations: [{x: 1}]\nmarks: [{}, {}]\n", r"unequal lengths .* To write a suite"),
        (
            "constants: {}\nmarks:\n  - {where: {x: 1}}\n",
            r"marks rule 1 at line 3, column 5 names 0 marks",
        ),
        (
            "constants: {}\nmarks:\n  - {notebook: a.ipynb, skip: why}\n",
            r"names 2 marks \('notebook', 'skip'\) \('notebook': did you mean 'notebooks'\?\)",
        ),
        (
            "constants: {}\nmarks:\n  - {parametrize: x}\n",
            r"uses the mark 'parametrize', which a rule cannot",
        ),
        ("constants: {}\nmarks:\n  - {skip: 3}\n", r"the reason of 'skip' is 3; give a text"),
        ("constants: {}\nmarks:\n  - {where: [x], skip: y}\n", r"'where' is a list, not a mapping"),
        ("constants: {}\nmarks:\n  - {ids: [a], skip: y}\n", r"'ids' must be one glob as text"),
    ],
)
def test_bad_suite_is_one_paragraph_naming_file_place_and_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "suite.yaml", text)
    with pytest.raises(ParamsError, match=message) as info:
        load_suite(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


# --- YAML -----------------------------------------------------------------------------------


def test_yaml_seed_forms_with_comments_read_like_json(tmp_path: Path) -> None:
    listed = write(tmp_path, "a.yml", "# two runs\n- {x: 1}\n- {x: 2}  # the second\n")
    zipped = write(tmp_path, "b.yaml", "x: [1, 2]\ny: [a, b]\n")
    assert list(load_suite(listed).top.variations) == [{"x": 1}, {"x": 2}]
    assert list(load_suite(zipped).top.variations) == [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]


def test_yaml_dates_stay_text_so_they_reach_the_notebook_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, "d.yaml", "start: [2024-01-31]\n")
    assert list(load_suite(path).top.variations) == [{"start": "2024-01-31"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: [1, 2\n", r"is not valid YAML: .* at line 2, column 1"),
        ("x: [1]\n  y: 2\n", r"is not valid YAML: .* at line 2, column \d+"),
        ("x: [1]\nx: [2]\n", r"has the key 'x' twice in one mapping, at line 1, column 1 and at "),
        ("", r"top level of type NoneType"),
    ],
)
def test_broken_yaml_names_file_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(ParamsError, match=message) as info:
        load_suite(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_merge_keys_may_override_without_a_duplicate_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        "constants: &base {x: 1, y: 2}\nnotebooks:\n  a.ipynb:\n    constants: {<<: *base, y: 3}\n",
    )
    suite = load_suite(path)
    assert suite.section_for(tmp_path / "a.ipynb").variations == ({"x": 1, "y": 3},)


# --- marks ----------------------------------------------------------------------------------


def test_mark_rules_match_on_notebook_glob_values_and_ids(tmp_path: Path) -> None:
    suite = build_suite(
        {
            "grid": {"x": [1, 3], "flag": [True]},
            "marks": [
                {"where": {"x": 3}, "xfail": "known drift"},
                {"notebooks": "sub/*.ipynb", "skip": None},
                {"ids": "1-*", "slow": True},
                {"where": {"flag": 1}, "never": "True is not 1"},
            ],
        },
        "s",
        tmp_path,
    )

    def names(notebook: str, variation: dict[str, Any], variation_id: str) -> list[str]:
        return [r.name for r in suite.marks_for(tmp_path / notebook, variation, variation_id)]

    assert names("a.ipynb", {"x": 3, "flag": True}, "3-True") == ["xfail"]
    assert names("sub/b.ipynb", {"x": 1, "flag": True}, "1-True") == ["skip", "slow"]
    assert suite.marks[0].reason == "known drift"
    assert suite.marks[2].reason is None


def test_marker_kwargs_are_the_scalar_parameters() -> None:
    variation = {"x": 1, "region": "eu", "on": True, "none": None, "rate": 0.5, "xs": [1, 2]}
    assert marker_kwargs(variation) == {
        "x": 1,
        "region": "eu",
        "on": True,
        "none": None,
        "rate": 0.5,
    }


def test_json_suite_file_works_like_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "s.json", json.dumps({"grid": {"x": [1, 2]}, "prepend": ["x"]}))
    suite = load_suite(path)
    assert suite.is_suite
    assert suite.base == tmp_path.resolve()
    assert suite.top.variations == ({"x": 1}, {"x": 2})
    assert suite.top.prepend == ("x",)


def test_suite_record_key_per_section_and_its_errors(tmp_path: Path) -> None:
    suite = build_suite(
        {"record": "a, b", "notebooks": {"fit.ipynb": {"record": ["rmse"]}, "x.ipynb": None}},
        "s",
        tmp_path,
    )
    assert suite.top.record == ("a", "b")
    assert [s.record for s in suite.sections] == [("rmse",), ()]
    with pytest.raises(SuiteError, match=re.escape("'fit.ipynb': 'record': 'a b' is not a var")):
        build_suite({"notebooks": {"fit.ipynb": {"record": ["a b"]}}}, "s", tmp_path)
    with pytest.raises(SuiteError, match="must be strings, not 3"):
        build_suite({"record": 3, "constants": {}}, "s", tmp_path)


def test_glob_matches_a_file_walks_only_what_the_glob_can_reach(tmp_path: Path) -> None:
    for name in ("a/calc.ipynb", "a/b/deep.ipynb", ".hidden/h.ipynb", "a/.x.ipynb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert glob_matches_a_file(tmp_path, "a/calc.ipynb")
    assert glob_matches_a_file(tmp_path, "a/*.ipynb")
    assert glob_matches_a_file(tmp_path, "**/deep.ipynb")
    assert glob_matches_a_file(tmp_path, "*/b/*.ipynb")
    assert not glob_matches_a_file(tmp_path, "*/deep.ipynb")  # * stays in one folder
    assert not glob_matches_a_file(tmp_path, "a/calc.ipnyb")
    assert not glob_matches_a_file(tmp_path, "**/h.ipynb")  # hidden folders are left out
    assert not glob_matches_a_file(tmp_path, "a/.x.ipynb")
    assert not glob_matches_a_file(tmp_path, "missing/*.ipynb")
