"""Each kernel's share of the cores when several run at once (no kernels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_millrun.execution.kernel_threads import THREAD_VARIABLES, cgroup_quota, thread_limits
from pytest_millrun.execution.kernels import kernel_environment


def test_the_cores_are_divided_by_the_kernels_running_at_once() -> None:
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "2"}, cpus=8) == dict.fromkeys(
        THREAD_VARIABLES, "4"
    )
    assert thread_limits({"MILLRUN_KERNELS_AT_ONCE": "3"}, cpus=8)["OMP_NUM_THREADS"] == "2"


def test_every_kernel_keeps_at_least_one_thread() -> None:
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "8"}, cpus=2)["MKL_NUM_THREADS"] == "1"


def test_one_kernel_at_a_time_or_a_users_omp_setting_adds_nothing() -> None:
    assert thread_limits({}, cpus=8) == {}
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "1"}, cpus=8) == {}
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "x"}, cpus=8) == {}
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "2", "OMP_NUM_THREADS": "6"}, cpus=8) == {}


def test_a_variable_the_user_set_is_kept_and_the_others_are_filled_in() -> None:
    env = {"PYTEST_XDIST_WORKER_COUNT": "2", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": ""}
    added = thread_limits(env, cpus=8)
    assert "MKL_NUM_THREADS" not in added
    assert added["OPENBLAS_NUM_THREADS"] == added["OMP_NUM_THREADS"] == "4"  # empty is unset


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({"cpu.max": "150000 100000"}, 2),  # cgroup v2, docker --cpus 1.5
        ({"cpu.max": "max 100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({}, None),
    ],
)
def test_a_cgroup_quota_counts_as_that_many_cores(
    tmp_path: Path, files: dict[str, str], cores: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert cgroup_quota(tmp_path) == cores


def test_the_kernel_gets_the_limits_but_not_the_count_that_made_them() -> None:
    env = kernel_environment({"MILLRUN_KERNELS_AT_ONCE": "2", "PATH": "/bin"})
    assert "MILLRUN_KERNELS_AT_ONCE" not in env
    assert env["PATH"] == "/bin"
    assert set(THREAD_VARIABLES) <= set(env)
