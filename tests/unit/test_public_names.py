"""The names users and tools reach by path keep working, and loading the plugin stays cheap.

The package moved into subpackages (issue 21); these are the paths that outside
code names: the documented API, the entry points, ``python -m``, the modules a
process pool preloads and the functions a Dask task is pickled by.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import millrun
import pytest_millrun

DOCUMENTED = [
    "ExecutionResult",
    "Failure",
    "MillrunSnapshotWarning",
    "ParamsError",
    "RunFailedError",
    "RunInterrupted",
    "SnapshotMismatchError",
    "execute_run",
    "write_report",
    "write_results",
]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_documented_name_is_reachable_from_both_packages(name: str) -> None:
    assert name in pytest_millrun.__all__
    assert getattr(millrun, name) is getattr(pytest_millrun, name)
    assert name in dir(pytest_millrun)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pytest_millrun.nope  # noqa: B018


def test_the_entry_points_name_modules_that_exist() -> None:
    points = importlib.metadata.entry_points()
    (plugin,) = [p for p in points.select(group="pytest11") if p.name == "millrun"]
    hooks = plugin.load()
    assert hasattr(hooks, "pytest_addoption")
    assert hasattr(hooks, "pytest_collect_file")
    (script,) = [p for p in points.select(group="console_scripts") if p.name == "millrun"]
    assert callable(script.load())


def test_python_dash_m_is_the_millrun_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: millrun ")


def test_pool_preloads_and_dask_task_paths_import() -> None:
    from pytest_millrun.dispatch import dask_worker, pool_worker

    for module in pool_worker.PRELOAD:
        importlib.import_module(module)
    for function in (dask_worker.run_job_on_worker, dask_worker.stop_run, dask_worker.end_run):
        module = importlib.import_module(function.__module__)
        assert getattr(module, function.__name__) is function


def _modules_loaded(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


REPORT = (
    "import json, sys; "
    "print(json.dumps(sorted(m for m in sys.modules "
    "if m.startswith('pytest_millrun') or m == 'papermill')))"
)


def test_importing_the_package_or_the_plugin_loads_a_few_small_modules() -> None:
    assert _modules_loaded(f"import pytest_millrun; {REPORT}") == ["pytest_millrun"]
    loaded = _modules_loaded(f"import pytest_millrun.plugin.hooks; {REPORT}")
    assert "papermill" not in loaded
    assert len(loaded) <= 6, loaded


WRITE = REPORT.replace("print(", "open('loaded.json', 'w').write(").replace("))))", ")))))")


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_plain_pytest_run_with_the_plugin_installed_loads_at_most_six_modules(
    tmp_path: Path, xdist: list[str]
) -> None:
    (tmp_path / "test_plain.py").write_text("def test_nothing():\n    pass\n")
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            f"""
            def pytest_unconfigure(config):
                if not hasattr(config, "workerinput"):  # the controller (or the only process)
                    {WRITE}
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *xdist],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    loaded = json.loads((tmp_path / "loaded.json").read_text())
    assert "papermill" not in loaded
    assert "pytest_millrun.plugin.hooks" in loaded  # the plugin is installed and loaded
    assert len(loaded) <= 6, loaded


def test_the_snapshot_tolerance_help_texts_name_the_real_defaults() -> None:
    from pytest_millrun.config.option_table import OPTIONS
    from pytest_millrun.snapshots.store import DEFAULT_ATOL, DEFAULT_RTOL

    helps = {option.name: option.help for option in OPTIONS}
    assert helps["rtol"].endswith(f"(default: {DEFAULT_RTOL:g})")
    assert helps["atol"].endswith(f"(default: {DEFAULT_ATOL:g})")
