"""Loading parameter variations: both forms, and every way a params file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_millrun.core.params import ParamsError, Variation, normalize_params
from pytest_millrun.core.suite_file import load_suite


def load_params_file(path: Path) -> list[Variation]:
    """A params file's variations, as every front end reads them."""
    return list(load_suite(path).top.variations)


def test_list_of_dicts_is_taken_as_is() -> None:
    assert normalize_params([{"x": 1}, {"x": 2, "y": 3}]) == [{"x": 1}, {"x": 2, "y": 3}]


def test_dict_of_lists_is_zipped_in_order() -> None:
    assert normalize_params({"x": [0, 45], "y": ["a", "b"]}) == [
        {"x": 0, "y": "a"},
        {"x": 45, "y": "b"},
    ]


def test_file_is_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"x": [1, 2]}')
    assert load_params_file(path) == [{"x": 1}, {"x": 2}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"just a string"', "top level of type str, which is neither"),
        ("42", "top level of type int"),
        ("[]", "empty list"),
        ("{}", "empty dict"),
        ('{"x": [1, 2], "y": [1]}', r"unequal lengths \('x' has 2, 'y' has 1\)"),
        ('[{"x": 1}, 3]', "entry 1 is a int"),
        ('{"x": "abc"}', r"the value of 'x' is a str .* not a list"),
        ('{"x": 5}', r"the value of 'x' is a int"),
        ('{"x": []}', "lists are empty"),
        ('[{"": 1}]', "has the key '', which is not a parameter name"),
        ('{"x": ["\\ud800"]}', r"variation 0, parameter 'x' holds .* cannot be encoded"),
        ('[{"x": 1}, {"y": {"k": ["ok", "\\udfff"]}}]', "variation 1, parameter 'y'"),
        ('[{"\\ud800": 1}]', "half of a surrogate pair"),
    ],
)
def test_bad_params_file_names_the_file_and_the_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "params.json"
    path.write_text(text)
    with pytest.raises(ParamsError, match=expected) as info:
        load_params_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_missing_params_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="does not exist"):
        load_params_file(tmp_path / "nope.json")


@pytest.mark.parametrize("text", ['{"x": [1, 2],}', '{\n  "x": [1,\n  2\n', "{'x': [1]}"])
def test_invalid_json_error_quotes_the_parser_and_where_it_stopped(
    tmp_path: Path, text: str
) -> None:
    # The parser's wording and the column it blames vary between Pythons (3.13 words a
    # trailing comma anew, a column earlier): the error must carry this Python's own.
    with pytest.raises(json.JSONDecodeError) as parser:
        json.loads(text)
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        load_params_file(path)
    message = str(info.value)
    assert message.startswith(f"Params file {path} is not valid JSON: ")
    where = f"{parser.value.msg} at line {parser.value.lineno}, column {parser.value.colno}."
    assert where in message
    assert "\n" not in message


def test_absurdly_deep_params_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"x": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    with pytest.raises(ParamsError, match="nests lists or dicts too deeply"):
        load_params_file(path)


def test_a_lone_surrogate_from_the_api_is_refused_before_any_kernel_starts() -> None:
    with pytest.raises(ParamsError, match=r"bulk_params: variation 0, parameter 'x'"):
        normalize_params({"x": ["\ud800"]}, source="bulk_params")


def test_surrogate_pairs_and_self_containing_values_are_fine() -> None:
    circular: list[object] = []
    circular.append(circular)
    variations = normalize_params([{"emoji": "\U0001f600", "loop": circular}])
    assert variations[0]["emoji"] == "😀"


def test_names_for_other_languages_are_left_to_the_notebook() -> None:
    # "my.var" is a fine R name; Python notebooks are checked when the run is planned
    assert normalize_params({"my.var": [1]}) == [{"my.var": 1}]
