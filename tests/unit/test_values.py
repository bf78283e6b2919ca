"""Recorded values without a kernel: scrap parsing, value conversion, the JSON encoding."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pytest_millrun.core import values
from pytest_millrun.core.values import (
    RecordNameError,
    RecordSpec,
    decode,
    encode,
    parse_names,
    parse_record,
    read_scraps,
)
from pytest_millrun.execution import recording
from pytest_millrun.execution.kernel_session import end_expression
from pytest_millrun.inkernel import record as kernel_record

# -- the JSON encoding: nan and the infinities survive a trip through standard JSON

floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.none() | st.booleans() | st.integers() | floats | st.text()
plain_json = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equality in which nan equals nan (and types must agree: 1 is not 1.0 is not True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(plain_json)
def test_encoded_values_are_standard_json_and_decode_to_the_same_value(value: Any) -> None:
    text = json.dumps(encode(value), allow_nan=False)  # raises on a bare nan/inf
    assert same(decode(json.loads(text)), value)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (math.nan, {"$float": "nan"}),
        (math.inf, {"$float": "inf"}),
        (-math.inf, {"$float": "-inf"}),
        ({"$float": "nan"}, {"$dict": {"$float": "nan"}}),  # a user's dict is not a tag
        ([None, "nan", 1.5], [None, "nan", 1.5]),
    ],
)
def test_non_finite_floats_are_tagged_and_none_and_strings_stay_apart(
    value: Any, encoded: Any
) -> None:
    assert encode(value) == encoded
    assert same(decode(encoded), value)


# -- the kernel-side conversion (the same module the kernel runs)


@given(plain_json)
def test_plain_json_values_convert_to_themselves_without_a_note(value: Any) -> None:
    converted, note = kernel_record.to_plain(value)
    assert note is None
    assert same(converted, value)


@given(st.recursive(scalars, lambda c: st.tuples(c, c) | st.lists(c, max_size=3), max_leaves=10))
def test_tuples_become_lists(value: Any) -> None:
    def listed(v: Any) -> Any:
        return [listed(item) for item in v] if isinstance(v, (list, tuple)) else v

    converted, note = kernel_record.to_plain(value)
    assert note is None
    assert same(converted, listed(value))


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.int64, np.float64, np.float32, np.bool_, np.int8]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    )
)
def test_numpy_arrays_and_scalars_become_plain_lists_and_numbers(array: np.ndarray) -> None:
    converted, note = kernel_record.to_plain(array)
    assert note is None
    assert same(converted, array.tolist())
    json.dumps(encode(converted), allow_nan=False)
    if array.ndim:
        scalar, note = kernel_record.to_plain(array.flat[0])
        assert note is None
        assert same(scalar, array.flat[0].item())


def test_pandas_objects_become_documented_plain_shapes() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, None]}, index=["x", "y"])
    converted, note = kernel_record.to_plain(frame)
    assert note is None
    assert same(
        converted,
        {"columns": ["a", "b"], "index": ["x", "y"], "data": [[1, 0.5], [2, math.nan]]},
    )
    series = pd.Series([1.5, 2.5], name="rmse", index=pd.Index([10, 20], name="n"))
    assert kernel_record.to_plain(series) == (
        {"name": "rmse", "index": [10, 20], "data": [1.5, 2.5]},
        None,
    )
    assert kernel_record.to_plain(pd.Index(["p", "q"])) == (["p", "q"], None)
    assert kernel_record.to_plain(pd.NaT) == (None, None)
    assert kernel_record.to_plain(pd.NA) == (None, None)
    assert kernel_record.to_plain(pd.Timestamp("2024-05-01 12:00")) == (
        "2024-05-01T12:00:00",
        None,
    )


def test_dates_become_iso_text_and_dict_keys_become_json_keys() -> None:
    assert kernel_record.to_plain(datetime.date(2024, 5, 1)) == ("2024-05-01", None)
    assert kernel_record.to_plain(np.datetime64("2024-05-01")) == ("2024-05-01", None)
    assert kernel_record.to_plain({2: "a", None: "b", True: "c", 1.5: "d"}) == (
        {"2": "a", "null": "b", "true": "c", "1.5": "d"},
        None,
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (object(), "object is not JSON"),
        (1 + 2j, "complex is not JSON"),
        (np.complex128(1 + 2j), "has no JSON form"),
        ({(1, 2): "tuple key"}, "keys JSON cannot hold"),
        (b"bytes", "bytes is not JSON"),
    ],
)
def test_anything_else_is_its_repr_with_a_note(value: Any, why: str) -> None:
    converted, note = kernel_record.to_plain(value)
    assert converted == repr(value)
    assert note is not None
    assert "recorded as its repr" in note
    assert why in note


def test_a_repr_inside_a_container_keeps_the_rest_and_notes_it() -> None:
    converted, note = kernel_record.to_plain({"ok": [1, 2], "odd": object})
    assert converted == {"ok": [1, 2], "odd": repr(object)}
    assert note is not None
    assert "type is not JSON" in note


def test_self_containing_and_huge_reprs_are_bounded() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    converted, note = kernel_record.to_plain(cycle)
    assert converted == "[[...]]"
    assert note is not None
    assert "holds itself" in note

    class Loud:
        def __repr__(self) -> str:
            return "x" * 10_000

    converted, note = kernel_record.to_plain(Loud())
    assert len(converted) == kernel_record.MAX_REPR
    assert note is not None
    assert "shortened" in note


def test_the_kernel_expression_reads_names_and_leaves_nothing_behind() -> None:
    namespace: dict[str, Any] = {"rmse": np.float64(0.25), "grid": np.eye(2), "label": "a"}
    namespace |= {"compile": "a notebook's own", "exec": 1, "globals": None, "json": 2}
    before = set(namespace)
    code = recording.record_code(["rmse", "grid", "missing"])
    answer = eval(end_expression("record", code, kept=False), namespace)
    assert set(namespace) - before <= {"__builtins__"}  # eval adds it; a kernel has it already
    assert namespace["compile"] == "a notebook's own"
    found = json.loads(repr(answer))
    assert found == {
        "values": {"rmse": 0.25, "grid": [[1.0, 0.0], [0.0, 1.0]]},
        "notes": {},
        "missing": ["missing"],
    }


# -- scraps, as scrapbook and papermill write them


def scrap(name: str, data: Any, encoder: str = "json") -> dict[str, Any]:
    """A display output exactly as ``scrapbook.glue`` writes it."""
    return {
        "output_type": "display_data",
        "data": {
            f"application/scrapbook.scrap.{encoder}+json": {
                "name": name,
                "data": data,
                "encoder": encoder,
                "version": 1,
            }
        },
        "metadata": {"scrapbook": {"name": name, "data": True, "display": False}},
    }


def display_scrap(name: str) -> dict[str, Any]:
    return {
        "output_type": "display_data",
        "data": {"text/plain": "shown"},
        "metadata": {"scrapbook": {"name": name, "data": False, "display": True}},
    }


def notebook(*outputs: dict[str, Any]) -> dict[str, Any]:
    return {"cells": [{"cell_type": "code", "outputs": list(outputs)}], "metadata": {}}


def test_json_and_text_scraps_and_papermill_records_are_read() -> None:
    record = {
        "output_type": "display_data",
        "data": {"application/papermill.record+json": {"old": [1, 2]}},
        "metadata": {},
    }
    values, notes = read_scraps(
        notebook(scrap("rmse", 0.12), scrap("label", "fast", "text"), record)
    )
    assert values == {"rmse": 0.12, "label": "fast", "old": [1, 2]}
    assert notes == {}


def test_other_encoders_and_display_only_scraps_are_named_in_notes() -> None:
    values, notes = read_scraps(
        notebook(
            scrap("frame", "QVJST1cx", "pandas"),
            scrap("table", "QVJST1cx", "arrow"),
            display_scrap("plot"),
            scrap("shown", 3),
            display_scrap("shown"),  # glue(..., display=True): data and display
        )
    )
    assert values == {"shown": 3}
    assert set(notes) == {"frame", "table", "plot"}
    assert "'pandas' encoder is not recorded" in notes["frame"]
    assert "display-only" in notes["plot"]


def test_the_last_glue_of_a_name_wins() -> None:
    nb = {
        "cells": [
            {"outputs": [scrap("x", 1)]},
            {"outputs": [scrap("x", 2), scrap("y", "a", "pandas")]},
            {"outputs": [scrap("y", 5)]},
        ]
    }
    assert read_scraps(nb) == ({"x": 2, "y": 5}, {})
    nb["cells"].append({"outputs": [scrap("x", "b", "arrow")]})
    values, notes = read_scraps(nb)
    assert values == {"y": 5}
    assert list(notes) == ["x"]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=15,
    )
)
def test_strange_notebooks_never_crash_the_scrap_reader(junk: Any) -> None:
    for nb in (junk, {"cells": junk}, {"cells": [{"outputs": junk}]}, notebook(junk)):
        if isinstance(nb, dict):
            read_scraps(nb)
    read_scraps(notebook({"data": {"application/scrapbook.scrap.json+json": junk}}))


# -- names and reports


def test_names_to_record_are_identifiers_without_repeats() -> None:
    assert parse_names("a, b,,a") == ("a", "b")
    assert parse_names(["x", "y"]) == ("x", "y")
    assert parse_names(None) == ()
    for bad in ("a-b", "1x", "class", "df['x']"):
        with pytest.raises(RecordNameError, match="not a variable name"):
            parse_names(bad)


def test_failure_report_lists_a_few_values_and_counts_many() -> None:
    few = values.report_lines({"rmse": 0.5, "bad": math.nan}, {"f": "a note"})
    assert few[0] == 'Recorded:  rmse=0.5, bad={"$float":"nan"}'
    assert "f: a note" in few[1]
    many = values.report_lines({f"v{i}": i for i in range(20)}, {})
    assert many == ["Recorded:  20 values (see the output notebook)"]
    assert values.report_lines({}, {}) == []


def test_record_entries_for_every_notebook_and_by_glob() -> None:
    spec = parse_record("payment, fit*.ipynb:rmse,sub/*.ipynb:n, payment")
    assert spec == RecordSpec(("payment",), (("fit*.ipynb", "rmse"), ("sub/*.ipynb", "n")))
    # a glob without "/" matches the file name anywhere, one with "/" the relative path
    assert spec.for_notebook("deep/fit_a.ipynb", ("loss",)) == ("loss", "payment", "rmse")
    assert spec.for_notebook("sub/fit.ipynb") == ("payment", "rmse", "n")
    assert spec.for_notebook("other/sub/x.ipynb", ("payment",)) == ("payment",)
    assert not parse_record(None)
    assert parse_record(["a", "b.ipynb:c"]).by_glob == (("b.ipynb", "c"),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":rmse", "':rmse' has no glob before its ':'"),
        ("fit.ipynb:not-a-name", "'not-a-name' is not a variable name"),
    ],
)
def test_bad_record_entries_name_the_fix(text: str, message: str) -> None:
    with pytest.raises(RecordNameError, match=message):
        parse_record(text, "--record")
