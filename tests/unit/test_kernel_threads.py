"""Each kernel's share of the cores when several run at once (no kernels)."""

from __future__ import annotations

from pytest_millrun.execution.kernel_threads import THREAD_VARIABLES, thread_limits
from pytest_millrun.execution.kernels import kernel_environment


def test_the_cores_are_divided_by_the_kernels_running_at_once() -> None:
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "2"}, cpus=8) == dict.fromkeys(
        THREAD_VARIABLES, "4"
    )
    assert thread_limits({"MILLRUN_KERNELS_AT_ONCE": "3"}, cpus=8)["OMP_NUM_THREADS"] == "2"


def test_every_kernel_keeps_at_least_one_thread() -> None:
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "8"}, cpus=2)["MKL_NUM_THREADS"] == "1"


def test_one_kernel_at_a_time_or_a_users_own_setting_adds_nothing() -> None:
    assert thread_limits({}, cpus=8) == {}
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "1"}, cpus=8) == {}
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "x"}, cpus=8) == {}
    assert thread_limits({"PYTEST_XDIST_WORKER_COUNT": "2", "OMP_NUM_THREADS": "6"}, cpus=8) == {}


def test_the_kernel_gets_the_limits_but_not_the_count_that_made_them() -> None:
    env = kernel_environment({"MILLRUN_KERNELS_AT_ONCE": "2", "PATH": "/bin"})
    assert "MILLRUN_KERNELS_AT_ONCE" not in env
    assert env["PATH"] == "/bin"
    assert set(THREAD_VARIABLES) <= set(env)
