"""Outputs on object storage: a real S3 endpoint on loopback (moto's standalone server, started
here as its own process), s3fs through fsspec, real kernels.

The client finds the endpoint the way a user's would: fsspec's own configuration
(``FSSPEC_S3_ENDPOINT_URL`` for a subprocess, ``fsspec.config.conf`` in this one) and the
usual AWS variables for the credentials (the ``endpoint`` and ``s3`` fixtures, conftest.py).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from millrun_testing import (
    S3_CREDENTIALS as CREDENTIALS,
)
from millrun_testing import (
    private_tmp,
    write_notebook,
    write_params,
)
from millrun_testing import (
    read_s3_notebook as read_notebook,
)
from pytest_millrun import RunFailedError, execute_run

pytest.importorskip("s3fs")

def test_cli_uploads_passed_and_failed_outputs_and_names_their_urls(
    s3: Any, endpoint: str, tmp_path: Path
) -> None:
    write_notebook(tmp_path / "nbs" / "divide.ipynb", ["result = 1 / (x - 2)", "print(result)"])
    write_params(tmp_path / "p.json", {"x": [1, 2, 3]})
    tmp = private_tmp()
    env = {**os.environ, **CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": endpoint, "TMPDIR": str(tmp)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs", "p.json", "--output-dir",
         "s3://runs/sweep", "--prepend", "x", "--results", "results.csv", "--no-progress",
         "--report", "report.html"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert sorted(s3.ls("runs/sweep")) == [
        "runs/sweep/1-divide.ipynb", "runs/sweep/2-divide.ipynb", "runs/sweep/3-divide.ipynb",
    ]  # fmt: skip
    passed = read_notebook(s3, "runs/sweep/3-divide.ipynb")
    assert passed.cells[-1].outputs[0]["text"] == "1.0\n"
    failed = read_notebook(s3, "runs/sweep/2-divide.ipynb")  # the failed one is kept too
    assert "ZeroDivisionError" in json.dumps(failed.cells[-2].outputs)
    assert "s3://runs/sweep/2-divide.ipynb" in done.stdout
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    urls = [f"s3://runs/sweep/{x}-divide.ipynb" for x in (1, 2, 3)]
    assert [row["output"] for row in rows] == urls
    assert "s3://runs/sweep/2-divide.ipynb" in (tmp_path / "report.html").read_text()
    local = sorted(p.name for p in tmp_path.iterdir())
    assert local == ["nbs", "p.json", "report.html", "results.csv"]  # no s3: folder
    assert list(tmp.glob("millrun-upload-*")) == []  # the local staging is gone
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in done.stdout + done.stderr


def test_api_results_name_the_url(s3: Any, tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "sq.ipynb", ["y = x * x"])
    results = execute_run(tmp_path / "nbs", {"x": [2, 3]}, output_dir="s3://runs/api",
                          output_prepend_components=["x"])  # fmt: skip
    assert [r.output for r in results] == ["s3://runs/api/2-sq.ipynb", "s3://runs/api/3-sq.ipynb"]
    assert read_notebook(s3, "runs/api/3-sq.ipynb").metadata["papermill"]["parameters"] == {"x": 3}


def test_api_on_a_local_dask_cluster_uploads_from_the_workers(s3: Any, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    write_notebook(tmp_path / "nbs" / "boom.ipynb", ["assert x != 2"])
    with pytest.raises(RunFailedError) as info:
        execute_run(tmp_path / "nbs", {"x": [1, 2]}, output_dir="s3://runs/dask",
                    dask="local", workers=1)  # fmt: skip
    assert [r.output for r in info.value.results] == [
        "s3://runs/dask/0-boom.ipynb", "s3://runs/dask/1-boom.ipynb",
    ]  # fmt: skip
    assert sorted(s3.ls("runs/dask")) == ["runs/dask/0-boom.ipynb", "runs/dask/1-boom.ipynb"]


def test_figure_snapshots_are_refused_with_a_url(s3: Any, tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "a.ipynb")
    with pytest.raises(ValueError, match=r"snapshot_figures=True reads the figures back"):
        execute_run(tmp_path / "nbs", [{}], output_dir="s3://runs/c", snapshots=tmp_path / "s",
                    snapshot_figures=True)  # fmt: skip
    assert s3.ls("runs") == []


@pytest.mark.parametrize("where", ["here", "dask"])
def test_plugin_uploads_the_selected_items_outputs(
    s3: Any, endpoint: str, tmp_path: Path, where: str
) -> None:
    if where == "dask":
        pytest.importorskip("distributed")
    write_notebook(tmp_path / "nbs" / "divide.ipynb", ["result = 1 / (x - 2)"])
    write_params(tmp_path / "p.json", {"x": [1, 2, 3]})
    tmp = private_tmp()
    env = {**os.environ, **CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": endpoint, "TMPDIR": str(tmp)}
    dask = ["--millrun-dask", "local", "--millrun-dask-workers", "2"] if where == "dask" else []
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--millrun-params", "p.json",
         "nbs", "--millrun-output-dir", "s3://runs/plug", "-k", "not divide[0]",
         "--junitxml", "junit.xml", "--millrun-results", "results.json", *dask],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed, 1 deselected" in done.stdout
    assert "outputs in s3://runs/plug" in done.stdout  # the header
    assert sorted(s3.ls("runs/plug/nbs")) == ["runs/plug/nbs/1-divide.ipynb",
                                              "runs/plug/nbs/2-divide.ipynb"]  # fmt: skip
    assert "Output:    s3://runs/plug/nbs/1-divide.ipynb" in done.stdout  # the failure's report
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [row["output"] for row in rows] == ["s3://runs/plug/nbs/1-divide.ipynb",
                                               "s3://runs/plug/nbs/2-divide.ipynb"]  # fmt: skip
    properties = {
        prop.get("value")
        for prop in ET.parse(tmp_path / "junit.xml").getroot().iter("property")
        if prop.get("name") == "millrun_output"
    }
    assert properties == {"s3://runs/plug/nbs/1-divide.ipynb", "s3://runs/plug/nbs/2-divide.ipynb"}
    assert not (tmp_path / ".millrun").exists()
    assert list(tmp.glob("millrun-upload-*")) == []
