"""Kernel start modes through every front end: the option is honoured, results are the same,
and a forked kernel is as fresh as a spawned one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_notebook, write_params
from pytest_millrun import execute_run

#: A cell that records how its kernel was started and what state it starts with.
PROBE = """\
import json, os, random, sys
parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
json.dump({
    "forked": "millrun-fork-template" in parent,
    "pid": os.getpid(),
    "cwd": os.getcwd(),
    "random": random.random(),
    "preloaded": "colorsys" in sys.modules,
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
}, open(f"probe-{x}.json", "w"))
"""


def probes(folder: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("probe-*.json"))]


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_plugin_option_picks_the_mode_and_preload_reaches_forked_kernels(
    pytester: pytest.Pytester, mode: str
) -> None:
    write_notebook(pytester.path / "nb" / "probe.ipynb", [PROBE], params="x = 0")
    write_params(pytester.path / "p.json", {"x": [1, 2]})
    result = pytester.runpytest(
        "--millrun-params", "p.json", "nb", "--millrun-kernel-start", mode,
        "--millrun-preload", "colorsys",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    first, second = probes(pytester.path / "nb")
    assert first["forked"] is second["forked"] is (mode == "fork")
    assert first["preloaded"] is (mode == "fork")
    assert first["pid"] != second["pid"]
    assert first["cwd"] == str(pytester.path / "nb")
    assert first["random"] != second["random"], "every kernel starts with fresh random state"


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_cli_option_picks_the_mode(tmp_path: Path, mode: str) -> None:
    write_notebook(tmp_path / "nb" / "probe.ipynb", [PROBE], params="x = 0")
    write_params(tmp_path / "p.json", {"x": [1]})
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nb", "p.json", "--output-dir", "out",
         "--kernel-start", mode, "--preload", "colorsys"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [probe] = probes(tmp_path / "nb")
    assert probe["forked"] is (mode == "fork")
    assert probe["preloaded"] is (mode == "fork")


@pytest.mark.parametrize("use_multiprocessing", [False, True], ids=["sequential", "pool"])
def test_api_argument_picks_the_mode(tmp_path: Path, use_multiprocessing: bool) -> None:
    write_notebook(tmp_path / "nb" / "probe.ipynb", [PROBE], params="x = 0")
    for mode, x in [("fork", 1), ("spawn", 2)]:
        execute_run(
            tmp_path / "nb", {"x": [x]}, output_dir=tmp_path / mode, kernel_start=mode,
            use_multiprocessing=use_multiprocessing, workers=1,
        )  # fmt: skip
    forked, spawned = probes(tmp_path / "nb")
    assert (forked["forked"], spawned["forked"]) == (True, False)


def test_forked_kernel_inherits_no_descriptors_beyond_a_spawned_ones(
    pytester: pytest.Pytester,
) -> None:
    write_notebook(pytester.path / "nb" / "probe.ipynb", [PROBE], params="x = 0")
    write_params(pytester.path / "p.json", {"x": [1]})
    pytester.runpytest("--millrun-params", "p.json", "nb", "--millrun-kernel-start", "spawn")
    [spawned] = probes(pytester.path / "nb")
    write_params(pytester.path / "p.json", {"x": [2]})
    pytester.runpytest("--millrun-params", "p.json", "nb", "--millrun-kernel-start", "fork")
    forked = next(p for p in probes(pytester.path / "nb") if p["forked"])
    assert len(forked["fds"]) <= len(spawned["fds"]), (forked["fds"], spawned["fds"])  # type: ignore[arg-type]


def test_bad_kernel_start_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "a.ipynb")
    result = pytester.runpytest("--millrun", "a.ipynb", "--millrun-kernel-start", "vfork")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "must be one of auto, fork, spawn" in result.stderr.str()
