"""The cache, stale outputs and ``--millrun-clean-output`` with the outputs on object storage: a
real S3 endpoint on loopback (moto's server, conftest.py's ``endpoint``), s3fs, real kernels.

A warm run reads a small sidecar beside each output, never the output itself; these tests
check what a user sees (cached, why each ran, what was removed), the benchmark the speed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from millrun_testing import S3_CREDENTIALS, free_port, private_tmp, write_notebook, write_params
from pytest_millrun import RunFailedError, execute_run

pytest.importorskip("s3fs")


def environment(endpoint: str) -> dict[str, str]:
    """A subprocess's: the endpoint from fsspec's environment config, AWS's usual variables."""
    tmp = private_tmp()
    return {**os.environ, **S3_CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": endpoint, "TMPDIR": str(tmp)}


def project(tmp_path: Path, xs: list[int]) -> Path:
    """A notebook that reads a data file beside it, and the params file of ``xs``."""
    (tmp_path / "nbs").mkdir(exist_ok=True)
    (tmp_path / "nbs" / "scale.txt").write_text("10")
    write_notebook(tmp_path / "nbs" / "calc.ipynb",
                   ["total = x * float(open('scale.txt').read())"], params="x = 1")  # fmt: skip
    write_params(tmp_path / "p.json", {"x": xs})
    return tmp_path / "nbs"


def millrun(tmp_path: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs", "p.json", "--output-dir",
         "s3://runs/sweep", "--record", "total", "--no-progress", *args],
        cwd=tmp_path, env=environment(endpoint), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cli_warm_run_against_the_bucket_is_cached_and_a_changed_input_reruns(
    s3: Any, endpoint: str, tmp_path: Path
) -> None:
    project(tmp_path, [1, 2])
    cold = millrun(tmp_path, endpoint, "--cache", "-v")
    assert cold.returncode == 0, cold.stdout + cold.stderr
    assert "2 passed, 0 failed" in cold.stdout
    assert sorted(s3.ls("runs/sweep")) == [
        "runs/sweep/.0-calc.ipynb.millrun-key.json", "runs/sweep/.1-calc.ipynb.millrun-key.json",
        "runs/sweep/0-calc.ipynb", "runs/sweep/1-calc.ipynb",
    ]  # fmt: skip
    warm = millrun(tmp_path, endpoint, "--cache", "--results", "t.csv")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "0 passed, 2 cached, 0 failed" in warm.stdout
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [(r["output"], r["cached"], r["value.total"]) for r in rows] == [
        ("s3://runs/sweep/0-calc.ipynb", "true", "10.0"),
        ("s3://runs/sweep/1-calc.ipynb", "true", "20.0"),
    ]
    (tmp_path / "nbs" / "scale.txt").write_text("100")  # what the notebook read
    again = millrun(tmp_path, endpoint, "--cache", "-v")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "calc.ipynb [0]: read scale.txt changed" in again.stderr, again.stderr
    assert "2 passed, 0 failed" in again.stdout
    s3.pipe("runs/sweep/1-calc.ipynb", s3.cat("runs/sweep/1-calc.ipynb").replace(b"200", b"7"))
    edited = millrun(tmp_path, endpoint, "--cache", "-v")
    assert "calc.ipynb [1]: output changed since its run" in edited.stderr, edited.stderr
    assert "1 passed, 1 cached, 0 failed" in edited.stdout


def test_api_warm_run_with_storage_options_only(
    s3: Any, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint and the credentials reach s3fs through storage_options alone."""
    import fsspec

    nbs = project(tmp_path, [1, 2])
    for name in S3_CREDENTIALS:
        monkeypatch.delenv(name)
    monkeypatch.delitem(fsspec.config.conf, "s3")
    monkeypatch.delenv("FSSPEC_S3_ENDPOINT_URL")
    options = {"key": "testing", "secret": "sEcReT-test-key", "endpoint_url": endpoint,
               "client_kwargs": {"region_name": "us-east-1"}}  # fmt: skip
    run = {"output_dir": "s3://runs/api", "record": ["total"], "cache": True,
           "storage_options": options}  # fmt: skip
    cold = execute_run(nbs, tmp_path / "p.json", **run)
    assert [(r.cached, r.output) for r in cold] == [
        (False, "s3://runs/api/0-calc.ipynb"), (False, "s3://runs/api/1-calc.ipynb"),
    ]  # fmt: skip
    warm = execute_run(nbs, tmp_path / "p.json", **run)
    assert [(r.cached, r.output, r.recorded) for r in warm] == [
        (True, "s3://runs/api/0-calc.ipynb", {"total": 10.0}),
        (True, "s3://runs/api/1-calc.ipynb", {"total": 20.0}),
    ]
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: the options are used
    bad = {**options, "secret": "sEcReT-2", "endpoint_url": nowhere, "retries": 1}
    with pytest.raises(RunFailedError, match="could not upload") as info:
        execute_run(nbs, [{"x": 5}], **{**run, "storage_options": bad})
    assert "sEcReT" not in str(info.value) + repr(info.value.results)


def test_a_failed_rerun_removes_the_entry_so_the_next_run_runs_it(
    s3: Any, endpoint: str, tmp_path: Path
) -> None:
    nbs = project(tmp_path, [1])
    assert millrun(tmp_path, endpoint, "--cache").returncode == 0
    assert s3.exists("runs/sweep/.0-calc.ipynb.millrun-key.json")
    (nbs / "scale.txt").write_text("not a number")
    assert millrun(tmp_path, endpoint, "--cache").returncode == 1
    assert not s3.exists("runs/sweep/.0-calc.ipynb.millrun-key.json")
    (nbs / "scale.txt").write_text("10")
    done = millrun(tmp_path, endpoint, "--cache", "-v")
    assert "calc.ipynb [0]: no passing output" in done.stderr, done.stderr
    assert "1 passed, 0 failed" in done.stdout


def test_stale_outputs_on_the_bucket_are_named_and_clean_removes_only_the_runs(
    s3: Any, endpoint: str, tmp_path: Path
) -> None:
    project(tmp_path, [1, 2, 3])
    write_notebook(tmp_path / "nbs" / "other.ipynb", ["total = 0"])
    assert millrun(tmp_path, endpoint, "--cache").returncode == 0
    s3.pipe("runs/sweep/notes.ipynb", b"{}")  # the user's own
    write_params(tmp_path / "p.json", {"x": [1]})
    found = millrun(tmp_path, endpoint, "--cache")
    assert found.returncode == 0, found.stdout + found.stderr
    assert "(e.g. s3://runs/sweep/1-calc.ipynb); --clean removes them" in found.stdout
    assert "4 stale outputs" in found.stdout  # calc's 1 and 2, other's 1 and 2
    cleaned = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs/calc.ipynb", "p.json", "--output-dir",
         "s3://runs/sweep", "--no-progress", "--clean"],
        cwd=tmp_path, env=environment(endpoint), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert "Removed 2 stale outputs" in cleaned.stdout
    assert sorted(s3.ls("runs/sweep")) == [
        "runs/sweep/.0-calc.ipynb.millrun-key.json", "runs/sweep/.0-other.ipynb.millrun-key.json",
        "runs/sweep/.1-other.ipynb.millrun-key.json", "runs/sweep/.2-other.ipynb.millrun-key.json",
        "runs/sweep/0-calc.ipynb", "runs/sweep/0-other.ipynb", "runs/sweep/1-other.ipynb",
        "runs/sweep/2-other.ipynb", "runs/sweep/notes.ipynb",
    ]  # fmt: skip


def test_plugin_warm_run_against_the_bucket_is_cached_under_xdist(
    s3: Any, endpoint: str, tmp_path: Path
) -> None:
    project(tmp_path, [1, 2, 3])
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--millrun-params",
               "p.json", "nbs", "--millrun-output-dir", "s3://runs/plug", "--millrun-cache",
               "-n", "2", "--millrun-results", "r.json"]  # fmt: skip
    env = environment(endpoint)
    cold = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "3 passed" in cold.stdout, cold.stdout + cold.stderr
    warm = subprocess.run([*command, "-v"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert "3 cached" in warm.stdout, warm.stdout + warm.stderr
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [(row["output"], row["cached"]) for row in rows] == [
        (f"s3://runs/plug/nbs/{x}-calc.ipynb", True) for x in range(3)
    ]
    write_params(tmp_path / "p.json", {"x": [1]})
    clean = [*command[:-4], "--millrun-clean-output"]
    cleaned = subprocess.run(clean, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "1 cached" in cleaned.stdout, cleaned.stdout + cleaned.stderr
    assert "Removed 2 stale outputs" in cleaned.stdout
    assert sorted(s3.ls("runs/plug/nbs")) == [
        "runs/plug/nbs/.0-calc.ipynb.millrun-key.json", "runs/plug/nbs/0-calc.ipynb",
    ]  # fmt: skip
