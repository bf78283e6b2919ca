"""Loading parameter variations: both forms, and every way a params file can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_millrun.params import ParamsError, load_params_file, normalize_params


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
        ('{"x": [1, 2],}', r"not valid JSON: .* at line 1, column 14"),
        ('"just a string"', "top level of type str, which is neither"),
        ("42", "top level of type int"),
        ("[]", "empty list"),
        ("{}", "empty dict"),
        ('{"x": [1, 2], "y": [1]}', r"unequal lengths \('x' has 2, 'y' has 1\)"),
        ('[{"x": 1}, 3]', "entry 1 is a int"),
        ('{"x": "abc"}', r"the value of 'x' is a str .* not a list"),
        ('{"x": 5}', r"the value of 'x' is a int"),
        ('{"x": []}', "lists are empty"),
        ('[{"not valid": 1}]', "not a valid Python parameter name"),
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


def test_invalid_json_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{\n  "x": [1,\n  2\n')
    with pytest.raises(ParamsError, match=r"line \d+, column \d+"):
        load_params_file(path)


def test_absurdly_deep_params_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"x": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    with pytest.raises(ParamsError, match="nests lists or dicts too deeply"):
        load_params_file(path)
