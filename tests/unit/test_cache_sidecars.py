"""The cache on object storage, on fsspec's in-memory filesystem (no kernel, no network): a
sidecar beside each output answers for it, and stale outputs are found by their marker."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from pytest_millrun.cache import keys
from pytest_millrun.cache.keys import CacheKey
from pytest_millrun.cache.sidecars import is_sidecar, prefetch, sidecar_url
from pytest_millrun.cache.verdicts import (
    CACHE_ENTRY,
    CacheSettings,
    check_output,
    publish,
    stamp,
    stamp_unusable,
    unstamp,
)
from pytest_millrun.pipeline.stale_outputs import handle_stale_urls

fsspec = pytest.importorskip("fsspec")
PARTS = {"schema": 2, "cells": ["a"], "parameters": {"x": "1"}, "record": ["total"]}
SETTINGS = CacheSettings(enabled=True)


@pytest.fixture
def root() -> str:
    """A fresh folder of the in-memory filesystem (shared by the process: a unique name)."""
    return f"memory://runs-{uuid.uuid4().hex[:8]}"


def output_notebook(path: Path, notebook: str = "/nbs/calc.ipynb", total: Any = 3) -> Path:
    nb = {
        "cells": [{"cell_type": "code", "source": "total = 3", "metadata": {}, "outputs": [],
                   "execution_count": 1}],
        "metadata": {"millrun": {"input": notebook, "recorded": {"total": total}}},
        "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    path.write_text(json.dumps(nb))
    return path


def check(output: Path, key: CacheKey, settings: CacheSettings, **where: Any) -> Any:
    """The check as a new run makes it (what an earlier one listed or fetched is forgotten)."""
    keys.forget()
    return check_output(output, key, settings, **where)


def upload(local: Path, url: str) -> None:
    """What a job does after a pass: upload, then keep the entry beside the output."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.put_file(str(local), path)
    publish(local, url, {})


def test_a_sidecar_is_hidden_beside_its_output() -> None:
    assert sidecar_url("s3://b/p/1-calc.ipynb") == "s3://b/p/.1-calc.ipynb.millrun-key.json"
    assert is_sidecar(sidecar_url("s3://b/p/1-calc.ipynb"))
    assert not is_sidecar("s3://b/p/1-calc.ipynb")


def test_a_published_pass_is_a_hit_with_its_recorded_values(tmp_path: Path, root: str) -> None:
    key, url = CacheKey(PARTS), f"{root}/1-calc.ipynb"
    local = output_notebook(tmp_path / "1-calc.ipynb")
    stamp(local, key)
    upload(local, url)
    verdict = check(tmp_path / "gone.ipynb", key, SETTINGS, url=url)
    assert verdict.hit, verdict.reasons
    assert verdict.recorded == {"total": 3}
    assert check(tmp_path / "gone.ipynb", key, SETTINGS).reasons == ("no output",)
    other = CacheKey({**PARTS, "record": []})
    assert check(local, other, SETTINGS, url=url).reasons == ("recorded names changed",)


def test_an_output_replaced_on_the_storage_is_no_hit(tmp_path: Path, root: str) -> None:
    key, url = CacheKey(PARTS), f"{root}/1-calc.ipynb"
    local = output_notebook(tmp_path / "1-calc.ipynb")
    stamp(local, key)
    upload(local, url)
    fs, path = fsspec.core.url_to_fs(url)
    fs.pipe_file(path, local.read_bytes().replace(b'"total": 3', b'"total": 4'))  # by hand
    verdict = check(local, key, SETTINGS, url=url)
    assert verdict.reasons == ("output changed since its run",)
    fs.rm_file(path)
    assert check(local, key, SETTINGS, url=url).reasons == ("no output",)


def test_without_a_sidecar_an_output_is_no_passing_output(tmp_path: Path, root: str) -> None:
    key, url = CacheKey(PARTS), f"{root}/1-calc.ipynb"
    assert check(tmp_path / "x", key, SETTINGS, url=url).reasons == ("no output",)
    local = output_notebook(tmp_path / "1-calc.ipynb")
    stamp(local, key)
    upload(local, url)
    unstamp(local)  # the next run failed: its output replaces the passing one
    upload(local, url)
    fs, _ = fsspec.core.url_to_fs(url)
    assert not fs.exists(sidecar_url(url).removeprefix("memory://"))
    assert check(local, key, SETTINGS, url=url).reasons == ("no passing output",)


def test_an_unusable_pass_says_why_from_its_sidecar(tmp_path: Path, root: str) -> None:
    url = f"{root}/1-calc.ipynb"
    local = output_notebook(tmp_path / "1-calc.ipynb")
    stamp_unusable(local, ["data.csv changed while it ran"])
    upload(local, url)
    assert check(local, CacheKey(PARTS), SETTINGS, url=url).reasons == (
        "its last run kept no key: data.csv changed while it ran",
    )


def test_a_forced_run_reads_nothing(tmp_path: Path) -> None:
    forced = CacheSettings(enabled=True, force=True, force_option="--force")
    verdict = check(tmp_path / "x", CacheKey(PARTS), forced, url="memory://nowhere/x")
    assert verdict.reasons == ("forced (--force)",)


def test_stale_outputs_on_storage_are_only_the_run_notebooks_and_clean_removes_them(
    tmp_path: Path, root: str
) -> None:
    fs, folder = fsspec.core.url_to_fs(root)
    calc, other = tmp_path / "calc.ipynb", tmp_path / "other.ipynb"
    for name, notebook in [("1-calc", calc), ("2-calc", calc), ("9-calc", calc),
                           ("1-other", other)]:  # fmt: skip
        local = output_notebook(tmp_path / f"{name}.ipynb", str(notebook))
        stamp(local, CacheKey(PARTS))
        upload(local, f"{root}/{name}.ipynb")
    fs.pipe_file(f"{folder}/notes.ipynb", b"{}")  # the user's own
    planned = [(calc, f"{root}/1-calc.ipynb"), (calc, f"{root}/2-calc.ipynb")]
    found = handle_stale_urls(planned, clean=False, storage_options={})
    assert found.found == [f"{root}/9-calc.ipynb"]
    message = found.describe("--clean")
    assert message is not None
    assert f"(e.g. {root}/9-calc.ipynb)" in message
    cleaned = handle_stale_urls(planned, clean=True, storage_options={})
    assert cleaned.removed == [f"{root}/9-calc.ipynb"]
    left = sorted(p.rpartition("/")[2] for p in fs.ls(folder, detail=False))
    assert left == [".1-calc.ipynb.millrun-key.json", ".1-other.ipynb.millrun-key.json",
                    ".2-calc.ipynb.millrun-key.json", "1-calc.ipynb", "1-other.ipynb",
                    "2-calc.ipynb", "notes.ipynb"]  # fmt: skip


def test_the_entry_in_the_uploaded_output_is_the_sidecars(tmp_path: Path, root: str) -> None:
    url = f"{root}/1-calc.ipynb"
    local = output_notebook(tmp_path / "1-calc.ipynb")
    stamp(local, CacheKey(PARTS))
    upload(local, url)
    fs, path = fsspec.core.url_to_fs(sidecar_url(url))
    sidecar = json.loads(fs.cat_file(path))
    entry = json.loads(local.read_text())["metadata"]["millrun"][CACHE_ENTRY]
    assert {name: sidecar[name] for name in entry} == entry


def test_prefetched_sidecars_answer_the_checks_of_the_run(tmp_path: Path, root: str) -> None:
    key, urls = CacheKey(PARTS), [f"{root}/{i}-calc.ipynb" for i in range(3)]
    for index, url in enumerate(urls[:2]):
        local = output_notebook(tmp_path / f"{index}.ipynb", total=index)
        stamp(local, key)
        upload(local, url)
    keys.forget()
    prefetch(urls, {})
    fs, _ = fsspec.core.url_to_fs(root)
    fs.rm_file(sidecar_url(urls[0]).removeprefix("memory://"))  # fetched already
    verdicts = [check_output(tmp_path / "x", key, SETTINGS, url=url) for url in urls]
    assert [(v.hit, v.recorded, v.reasons) for v in verdicts] == [
        (True, {"total": 0}, ()), (True, {"total": 1}, ()), (False, {}, ("no output",)),
    ]  # fmt: skip
