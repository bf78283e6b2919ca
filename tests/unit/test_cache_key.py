"""The cache key's pure parts: what a key sees, what it ignores, why two keys differ."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_millrun.cache.keys import (
    CacheKey,
    code_cell_digests,
    file_digest,
    forget,
    notebook_kernel,
    option_digests,
    resolve_inputs,
)
from pytest_millrun.cache.verdicts import (
    CACHE_ENTRY,
    CacheSettings,
    check_output,
    key_changes,
    output_digest,
)
from pytest_millrun.core.suite import SuiteError
from pytest_millrun.core.suite_file import build_suite


def notebook(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def code(source: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"cell_type": "code", "source": source, "metadata": {}, "outputs": [], **extra}


PARTS: dict[str, Any] = {
    "schema": 1,
    "millrun": "0.1.0",
    "cells": ["a", "b", "c", "d"],
    "kernel": {"name": "python3", "language": "python"},
    "parameters": {"x": "1", "y": "2"},
    "record": ["total"],
    "options": {},
    "environment": {"executable": "/venv/bin/python", "python": "3.12.1", "distributions": "d1"},
    "inputs": {"data/prices.csv": "p1"},
}


def changed(**parts: Any) -> dict[str, Any]:
    return {**copy.deepcopy(PARTS), **parts}


def test_code_cells_are_keyed_by_source_and_execution_tags_only() -> None:
    base = code_cell_digests(notebook(code("x = 1"), code("y = x")))
    markdown = {"cell_type": "markdown", "source": "# changed", "metadata": {}}
    noise = code(
        ["y", " = x"],  # the same source as a list of lines
        id="abc",
        execution_count=7,
        outputs=[{"output_type": "stream", "name": "stdout", "text": "hi"}],
        metadata={"tags": ["hide-input"], "collapsed": True},
    )
    assert code_cell_digests(notebook(markdown, code("x = 1"), markdown, noise)) == base
    assert code_cell_digests(notebook(code("x = 1"), code("y = x + 1")))[1] != base[1]
    tagged = code("x = 1", metadata={"tags": ["parameters"]})
    assert code_cell_digests(notebook(tagged, code("y = x")))[0] != base[0]
    skipped = code("y = x", metadata={"tags": ["skip-execution", "other"]})
    assert code_cell_digests(notebook(code("x = 1"), skipped))[1] != base[1]


def test_equal_keys_have_no_reasons_and_each_part_says_what_changed() -> None:
    assert key_changes(PARTS, copy.deepcopy(PARTS)) == []
    assert key_changes(PARTS, changed(cells=["a", "b", "c", "e"])) == ["code cell 4 changed"]
    assert key_changes(PARTS, changed(cells=["z", "b", "y", "d"])) == ["code cells 1, 3 changed"]
    assert key_changes(PARTS, changed(cells=["a", "b"])) == ["code cells added or removed (4 -> 2)"]
    assert key_changes(PARTS, changed(parameters={"x": "1", "y": "3"})) == [
        "parameters changed (y)"
    ]
    assert key_changes(PARTS, changed(parameters={"x": "1"})) == ["parameters changed (y)"]
    assert key_changes(PARTS, changed(kernel={"name": "other", "language": "python"})) == [
        "kernel changed (python3, python -> other, python)"
    ]
    assert key_changes(PARTS, changed(record=["total", "mean"])) == ["recorded names changed"]
    assert key_changes(PARTS, changed(options={"engine_name": "e"})) == [
        "options changed (engine_name)"
    ]
    assert key_changes(PARTS, changed(millrun="0.2.0")) == [
        "millrun version changed (0.1.0 -> 0.2.0)"
    ]
    assert key_changes(PARTS, changed(schema=2)) == ["cache key schema changed"]
    inputs = {"data/prices.csv": "p2", "data/new.csv": "n"}
    assert key_changes(PARTS, changed(inputs=inputs)) == [
        "input data/new.csv added",
        "input data/prices.csv changed",
    ]
    assert key_changes(PARTS, changed(inputs={})) == ["input data/prices.csv removed"]


def test_an_environment_change_names_the_distributions_or_the_interpreter() -> None:
    env = dict(PARTS["environment"], distributions="d2")
    old = {"numpy": "2.1.0", "pandas": "2.2.0", "six": "1.0"}
    new = {"numpy": "2.2.0", "pandas": "2.2.0", "rich": "13.0"}
    assert key_changes(PARTS, changed(environment=env), old, new) == [
        "environment changed (numpy 2.1.0 -> 2.2.0, rich 13.0 added, six 1.0 removed)"
    ]
    many = {f"p{i}": "2" for i in range(5)}
    assert key_changes(PARTS, changed(environment=env), {}, many) == [
        "environment changed (p0 2 added, p1 2 added, p2 2 added, 2 more)"
    ]
    other = {"executable": "/other/python", "python": "3.13.0", "distributions": "d1"}
    assert key_changes(PARTS, changed(environment=other)) == [
        "environment changed (interpreter /venv/bin/python 3.12.1 -> /other/python 3.13.0)"
    ]


def test_the_output_digest_leaves_out_only_its_own_entry() -> None:
    nb = notebook(code("x = 1", outputs=[{"output_type": "stream", "text": "1"}]))
    nb["metadata"]["millrun"] = {"input": "calc.ipynb", "recorded": {"x": 1}}
    before = output_digest(nb)
    nb["metadata"]["millrun"][CACHE_ENTRY] = {"key": "k", "parts": PARTS}
    assert output_digest(nb) == before
    nb["cells"][0]["outputs"][0]["text"] = "2"
    assert output_digest(nb) != before
    nb["cells"][0]["outputs"][0]["text"] = "1"
    nb["metadata"]["millrun"]["recorded"] = {"x": 2}
    assert output_digest(nb) != before


def test_an_output_is_a_hit_only_when_whole_passing_and_of_the_same_key(tmp_path: Path) -> None:
    key = CacheKey(PARTS)
    settings = CacheSettings(enabled=True)
    output = tmp_path / "out.ipynb"
    assert check_output(output, key, settings).reasons == ("no output",)
    output.write_text("{not json")
    assert check_output(output, key, settings).reasons == ("output unreadable",)
    nb = notebook(code("x = 1"))
    output.write_text(json.dumps(nb))
    assert check_output(output, key, settings).reasons == ("output not written by millrun",)
    nb["metadata"]["millrun"] = {"recorded": {"total": 3}}
    output.write_text(json.dumps(nb))
    assert check_output(output, key, settings).reasons == ("no passing output",)
    entry = {"key": key.digest, "parts": PARTS, "output": output_digest(nb)}
    nb["metadata"]["millrun"][CACHE_ENTRY] = entry
    output.write_text(json.dumps(nb))
    verdict = check_output(output, key, settings)
    assert verdict.hit
    assert verdict.reasons == ()
    assert verdict.recorded == {"total": 3}
    forced = check_output(output, key, CacheSettings(True, force=True, force_option="--f"))
    assert forced.reasons == ("forced (--f)",)
    assert check_output(output, CacheKey(changed(record=[])), settings).reasons == (
        "recorded names changed",
    )
    nb["metadata"]["millrun"]["recorded"] = {"total": 4}  # edited by hand
    output.write_text(json.dumps(nb))
    assert check_output(output, key, settings).reasons == ("output changed since its run",)


def test_neutral_options_and_the_kernel_override_are_keyed_as_documented() -> None:
    assert option_digests({"execution_timeout": 5, "log_output": True, "kernel_name": "k"}) == {}
    assert set(option_digests({"engine_name": "x", "report_mode": True})) == {
        "engine_name",
        "report_mode",
    }
    nb = {"metadata": {"kernelspec": {"name": "python3", "language": "python"}}}
    assert notebook_kernel(nb, None, None) == {"name": "python3", "language": "python"}
    assert notebook_kernel(nb, "other", None)["name"] == "other"
    assert notebook_kernel({"metadata": {}}, None, None) == {"name": "python3", "language": ""}


def test_inputs_are_globbed_under_their_base_and_hashed_by_content(tmp_path: Path) -> None:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("1")
    (tmp_path / "data" / "sub" / "b.csv").write_text("2")
    files, empty = resolve_inputs(["data/**/*.csv", "data/a.csv", "nothing/*.txt"], tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["data/a.csv", "data/sub/b.csv"]
    assert empty == ["nothing/*.txt"]
    target = tmp_path / "data" / "a.csv"
    first = file_digest(target)
    assert file_digest(tmp_path / "data" / "sub" / "b.csv") != first
    stat = target.stat()
    target.write_text("9")  # same size; a new run must see it even if the mtime were equal
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    forget()
    assert file_digest(target) != first


def test_a_suite_section_declares_inputs_relative_to_its_file(tmp_path: Path) -> None:
    data = {"notebooks": {"fit.ipynb": {"grid": {"a": [1]}, "inputs": ["data/*.csv"]}}}
    section = build_suite(data, "suite.yaml", tmp_path).sections[0]
    assert section.inputs == (str(tmp_path / "data" / "*.csv"),)
    with pytest.raises(SuiteError, match="'inputs' must be a list of file globs"):
        build_suite({"notebooks": {"fit.ipynb": {"inputs": [3]}}}, "suite.yaml", tmp_path)


def test_a_text_notebook_is_keyed_by_its_code_cells_as_jupytext_reads_them(tmp_path: Path) -> None:
    from pytest_millrun.cache.keys import read_notebook

    text = tmp_path / "calc.py"
    header = "# ---\n# jupyter:\n#   jupytext:\n#     formats: py:percent\n# ---\n\n"
    cells = '# %% tags=["parameters"]\nx = 1\n\n# %% [markdown]\n# Notes\n\n# %%\ny = x * 2\n'
    text.write_text(header + cells)
    forget()
    _, digests = read_notebook(text)
    assert len(digests) == 2
    text.write_text(header + cells.replace("# Notes", "# Other notes, longer"))
    forget()
    assert read_notebook(text)[1] == digests
    text.write_text(header + cells.replace("y = x * 2", "y = x * 3"))
    forget()
    changed = read_notebook(text)[1]
    assert changed[0] == digests[0]
    assert changed[1] != digests[1]
    text.write_text(header + cells.replace('tags=["parameters"]', ""))
    forget()
    assert read_notebook(text)[1][0] != digests[0]  # the parameters tag is in the key


def test_ignored_globs_leave_files_out_of_the_declared_inputs(tmp_path: Path) -> None:
    from pytest_millrun.core.globs import path_regexes

    (tmp_path / "data" / "logs").mkdir(parents=True)
    for name in ("a.csv", "run.log", "logs/x.txt"):
        (tmp_path / "data" / name).write_text("1")
    ignore = path_regexes(["**/*.log", "data/logs"], tmp_path)
    ignore += path_regexes([str(tmp_path / "data" / "logs" / "*")], tmp_path)  # absolute
    files, empty = resolve_inputs(["data/**/*", "data/run.log"], tmp_path, ignore)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["data/a.csv"]
    assert empty == []  # a glob whose files are all ignored still matched


def test_above_the_hash_limit_an_input_is_known_by_size_mtime_and_inode(tmp_path: Path) -> None:
    from pytest_millrun.cache.keys import DEFAULT_HASH_LIMIT_MIB, input_digests
    from pytest_millrun.config.option_table import BY_NAME
    from pytest_millrun.config.option_values import BadValue, parse_mib

    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (1 << 20) + b"x")
    forget()
    digests = input_digests([big], tmp_path, hash_limit_mib=1)
    assert digests["big.bin"].startswith("stat:")
    assert input_digests([big], tmp_path)["big.bin"] == file_digest(big)
    os.utime(big, ns=(1, 1))
    forget()
    now = input_digests([big], tmp_path, hash_limit_mib=1)
    parts = {"schema": 1, "inputs": digests}
    assert key_changes(parts, {**parts, "inputs": now}) == [
        "input big.bin changed (size, mtime or inode; too large to hash)"
    ]
    assert BY_NAME["cache_hash_limit"].default == DEFAULT_HASH_LIMIT_MIB
    assert parse_mib("0") == 0
    assert parse_mib(None) is None
    with pytest.raises(BadValue, match="must be a whole number of MiB"):
        parse_mib("1.5G")


def test_a_suite_section_declares_ignored_globs_relative_to_its_file(tmp_path: Path) -> None:
    data = {"notebooks": {"fit.ipynb": {"grid": {"a": [1]}, "ignore": "**/*.log, scratch/*"}}}
    section = build_suite(data, "suite.yaml", tmp_path).sections[0]
    assert section.ignore == (str(tmp_path / "**/*.log"), str(tmp_path / "scratch/*"))
    with pytest.raises(SuiteError, match=r"'ignore' must be a list of file globs"):
        build_suite({"notebooks": {"fit.ipynb": {"ignore": {"a": 1}}}}, "suite.yaml", tmp_path)
