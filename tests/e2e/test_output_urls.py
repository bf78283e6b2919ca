"""An output folder given as a URL, in each front end: refused before anything runs with one
paragraph, never written as a local folder named ``s3:`` (what ``Path("s3://...")`` is)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from millrun_testing import write_notebook, write_params
from pytest_millrun import cli, execute_run

pytest.importorskip("fsspec")
if importlib.util.find_spec("gcsfs") is not None:
    pytest.skip("gcsfs is installed: gs:// has its filesystem here", allow_module_level=True)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_notebook(tmp_path / "nbs" / "a.ipynb")
    write_params(tmp_path / "p.json", {"x": [1, 2]})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def nothing_written(project: Path) -> None:
    made = sorted(p.name for p in project.iterdir())
    assert made == ["nbs", "p.json"], made  # no gs: or s3: folder, no .millrun
    assert [p.name for p in (project / "nbs").iterdir()] == ["a.ipynb"]


def test_cli_refuses_a_url_whose_filesystem_is_missing(project: Path) -> None:
    done = CliRunner().invoke(cli.main, ["nbs", "p.json", "--output-dir", "gs://bucket/runs"])
    assert done.exit_code == 2, done.output
    assert "--output-dir gs://bucket/runs is a URL" in done.output
    assert "gcsfs" in done.output
    nothing_written(project)


def test_api_refuses_a_url_with_a_value_error(project: Path) -> None:
    with pytest.raises(ValueError, match="output_dir= gs://bucket/runs is a URL") as info:
        execute_run("nbs", {"x": [1]}, output_dir="gs://bucket/runs")
    assert "gcsfs" in str(info.value)
    nothing_written(project)


def test_plugin_refuses_a_url_as_a_usage_error(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nbs" / "a.ipynb")
    done = pytester.runpytest("--millrun", "nbs", "--millrun-output-dir", "gs://bucket/runs")
    assert done.ret == pytest.ExitCode.USAGE_ERROR
    option = "--millrun-output-dir / millrun_output_dir"
    done.stderr.fnmatch_lines([f"*{option} gs://bucket/runs is a URL*"])
    assert not list(pytester.path.glob("gs*"))


def test_credentials_in_the_url_are_not_printed(project: Path) -> None:
    done = CliRunner().invoke(
        cli.main, ["nbs", "p.json", "--output-dir", "gs://someone:sEcReT@bucket/runs"]
    )
    assert done.exit_code == 2
    assert "sEcReT" not in done.output
    assert "gs://***@bucket/runs" in done.output
    nothing_written(project)

