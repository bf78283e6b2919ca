"""Fork-mode kernels: real templates, real forked kernels, probed from inside the kernel.

Every test drives jupyter_client's own AsyncKernelManager with the
ForkProvisioner installed the way the execution layer installs it, and asks
the kernel about itself, so "indistinguishable from a spawned kernel" is
checked where the user's code would look.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbformat.v4 import new_code_cell, new_notebook

from forkserver_kernels import (
    ForkKernelManager,
    NumpyForkKernelManager,
    fd_kinds,
    gone,
    is_template,
    kernel,
    kernel_pid,
    no_templates_left,  # noqa: F401  (autouse, module scope)
    probe,
    run_code,
    wait_gone,
)
from pytest_millrun import forkserver
from pytest_millrun.forkserver.client import ForkUnavailable
from pytest_millrun.forkserver.provisioner import ForkProvisioner, fork_available, make_provisioner
from pytest_millrun.forkserver.template_registry import shutdown_templates, start_template

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork mode is Linux")


# ------------------------------------------------------------------------------------
# fork_available
# ------------------------------------------------------------------------------------


def test_fork_available_only_for_ipykernel_on_this_interpreter(tmp_path: Path) -> None:
    def spec(argv: list[str], **extra: Any) -> KernelSpec:
        return KernelSpec(argv=argv, display_name="x", language="python", **extra)

    conn = ["-f", "{connection_file}"]
    assert fork_available(spec(["python", "-m", "ipykernel_launcher", *conn]))
    assert fork_available(spec(["python3", "-m", "ipykernel", *conn]))
    assert fork_available(
        spec([sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher"])
    )
    assert fork_available(spec([sys.executable, "-X", "utf8", "-m", "ipykernel_launcher", *conn]))
    # same binary through another name in the same bin folder
    sibling = Path(sys.executable).with_name("python3")
    if sibling.exists():
        assert fork_available(spec([str(sibling), "-m", "ipykernel_launcher", *conn]))
    # the base interpreter behind a virtualenv's symlink is another environment
    base = os.path.realpath(sys.executable)
    if os.path.dirname(base) != os.path.dirname(sys.executable):
        assert not fork_available(spec([base, "-m", "ipykernel_launcher", *conn]))
    assert not fork_available(spec(["/usr/bin/env", "python", "-m", "ipykernel_launcher"]))
    assert not fork_available(spec([sys.executable, "-m", "some_other_kernel", *conn]))
    assert not fork_available(spec([sys.executable, "-c", "pass"]))
    assert not fork_available(spec([str(tmp_path / "python"), "-m", "ipykernel_launcher"]))
    custom = {"kernel_provisioner": {"provisioner_name": "remote-provisioner"}}
    assert not fork_available(spec(["python", "-m", "ipykernel_launcher"], metadata=custom))
    assert not fork_available(None)


# ------------------------------------------------------------------------------------
# What the kernel sees
# ------------------------------------------------------------------------------------


def test_forked_kernel_is_a_fresh_process_like_a_spawned_one(tmp_path: Path) -> None:
    env = dict(os.environ, MILLRUN_FORK_TEST="hello")
    log_path = tmp_path / "kernel.log"

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        template = start_template()
        with log_path.open("wb") as log:
            async with (
                kernel(cwd=str(tmp_path), env=env, stdout=log, stderr=log) as (km1, kc1),
                kernel(cwd=str(tmp_path), env=env) as (_km2, kc2),
                kernel(AsyncKernelManager, cwd=str(tmp_path), env=env) as (_km3, kc3),
            ):
                assert isinstance(km1.provisioner, ForkProvisioner)
                first, second, spawned = await probe(kc1), await probe(kc2), await probe(kc3)
                first["template_fds"] = {
                    name: os.readlink(f"/proc/{template.pid}/fd/{name}")
                    for name in os.listdir(f"/proc/{template.pid}/fd")
                }
                first["psutil"] = {
                    "cmdline": psutil.Process(first["pid"]).cmdline(),
                    "environ": psutil.Process(first["pid"]).environ(),
                }
                pid = first["pid"]
                first["template_pid"] = template.pid
        return first, second, spawned, {"pid": pid}

    start_template()  # started with the usual umask; kernels must get the parent's current one
    old_umask = os.umask(0o027)
    try:
        first, second, spawned, after = asyncio.run(main())
    finally:
        os.umask(old_umask)
    template_pid = first["template_pid"]

    # its own process, session and working directory
    assert len({first["pid"], second["pid"], template_pid, os.getpid()}) == 4
    assert first["ppid"] == template_pid
    assert first["sid"] == first["pid"]
    assert first["cwd"] == second["cwd"] == str(tmp_path)
    # fresh random state in each fork
    assert first["random"] != second["random"]
    # the environment it was given, the same as a spawned kernel's
    assert first["env"]["MILLRUN_FORK_TEST"] == "hello"
    assert first["env"]["JPY_PARENT_PID"] == str(os.getpid())
    assert "MILLRUN_FORK_PAD" not in first["env"]
    assert first["env"] == spawned["env"]
    # argv, sys.path, threads and modules as in a spawned kernel
    assert first["argv"][0] == spawned["argv"][0]
    assert first["argv"][0].endswith("ipykernel_launcher.py")
    assert first["argv"][1] == "-f"
    assert first["orig_argv"][1:3] == ["-m", "ipykernel_launcher"]
    assert first["path"] == spawned["path"]
    assert first["threads"] == spawned["threads"]
    assert first["main_file"] == spawned["main_file"]
    assert first["umask"] == spawned["umask"] == "0027"
    assert set(first["modules"]) <= set(spawned["modules"])
    # the template's objects, frozen for the fork, are thawed: the collector sees them all
    assert first["gc"] == spawned["gc"] == [True, spawned["gc"][1], 0]
    # /proc shows the kernel's command line and environment, not the template's
    assert first["psutil"]["cmdline"] == first["orig_argv"]
    assert first["psutil"]["environ"]["MILLRUN_FORK_TEST"] == "hello"
    assert "MILLRUN_FORK_PAD" not in first["psutil"]["environ"]

    # descriptors: stdin a (closed) pipe like the launcher's, the log we passed, and
    # nothing of the template's: not its channel socket, not its log
    fds = first["fds"]
    assert fds["0"].startswith("pipe:")
    assert str(log_path) in fds.values()
    template_only = set(first["template_fds"].values()) - {"/dev/null"}
    assert any(target.startswith("socket:") for target in template_only), template_only
    assert any(target.endswith("template.log") for target in template_only), template_only
    assert not template_only & set(fds.values())
    # and otherwise only kinds of descriptors a spawned kernel has (zmq's sockets, eventfds
    # and epolls, IPython's history database); their number varies with zmq's timing
    assert set(fd_kinds(first)) <= set(fd_kinds(spawned)) | {"pipe:"}

    # gone after shutdown_kernel(now=True)
    assert wait_gone(after["pid"], 5)


def test_numpy_preload_is_reseeded_per_kernel() -> None:
    async def main() -> list[dict[str, Any]]:
        async with (
            kernel(NumpyForkKernelManager) as (km1, kc1),
            kernel(NumpyForkKernelManager) as (_km2, kc2),
        ):
            assert isinstance(km1.provisioner, ForkProvisioner)
            assert km1.provisioner.preload == ("numpy",)
            return [await probe(kc1), await probe(kc2)]

    first, second = asyncio.run(main())
    assert first["numpy_random"] is not None
    assert first["numpy_random"] != second["numpy_random"]
    assert first["random"] != second["random"]
    assert first["ppid"] == second["ppid"] == start_template(("numpy",)).pid


async def printed(kc: Any, msg_id: str, text: str, timeout: float = 30) -> None:
    """Until the cell ``msg_id`` has printed ``text``, so its code is running."""
    deadline = time.monotonic() + timeout
    seen = ""
    while text not in seen:
        try:
            msg = await kc.get_iopub_msg(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"Waited {timeout:g} s in vain for the cell to print {text!r}; it printed {seen!r}"
            ) from None
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            seen += msg["content"]["text"]


async def interrupted(km: AsyncKernelManager, kc: Any, tries: int = 5) -> dict[str, Any]:
    """Interrupt until the running cell replies, as a user presses the button again.

    On Python 3.10 a SIGINT sent the moment the cell prints is now and then acted
    on only when the cell's sleep ends (about one run in fifty of this test waited
    out the whole sleep; the reply was KeyboardInterrupt, late).  A second SIGINT
    interrupts the sleep; one that arrives after the cell has ended is ignored by
    the idle kernel.  So this checks that the signal reaches the kernel, not how soon.
    """
    for _ in range(tries):
        await km.interrupt_kernel()
        try:
            reply: dict[str, Any] = await kc.get_shell_msg(timeout=3)
        except queue.Empty:
            continue
        return reply
    raise AssertionError(f"{tries} interrupts, 3 s apart, and the cell has not replied")


def test_interrupt_exit_status_and_restart() -> None:
    async def main() -> None:
        async with kernel() as (km, kc):
            provisioner = km.provisioner
            assert isinstance(provisioner, ForkProvisioner)
            # SIGINT reaches the kernel and becomes KeyboardInterrupt, as with spawn
            msg_id = kc.execute("import time; print('sleeping', flush=True); time.sleep(30)")
            await printed(kc, msg_id, "sleeping")  # the cell is running
            reply = await interrupted(km, kc)
            assert reply["parent_header"]["msg_id"] == msg_id
            assert reply["content"]["ename"] == "KeyboardInterrupt"
            # a restart forks a new kernel
            old_pid = kernel_pid(km)
            await km.restart_kernel(now=True)
            await kc.wait_for_ready(timeout=30)
            assert km.provisioner is provisioner  # kept, with its cached ports
            assert kernel_pid(km) != old_pid
            assert wait_gone(old_pid, 5)
            # the exit status comes back through the template
            kc.execute("import os; os._exit(3)")
            deadline = time.monotonic() + 10
            while await km.is_alive():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert await provisioner.poll() == 3

    asyncio.run(main())


def test_start_kernel_returns_once_the_kernel_listens(tmp_path: Path) -> None:
    """With ipc transport (as the execution layer uses), the sockets exist on return."""

    class IpcForkKernelManager(ForkKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(tmp_path / "ipc")

    async def main() -> None:
        km = IpcForkKernelManager(kernel_name="python3")
        await km.start_kernel()
        try:
            assert all(Path(f"{km.ip}-{port}").exists() for port in km.ports)
            kc = km.client()
            kc.start_channels()
            kc.kernel_info()
            reply = await kc.get_shell_msg(timeout=10)
            assert reply["msg_type"] == "kernel_info_reply"
            kc.stop_channels()
        finally:
            await km.shutdown_kernel(now=True)

    asyncio.run(main())


def test_missing_cwd_raises_like_popen(tmp_path: Path) -> None:
    async def main() -> None:
        km = ForkKernelManager(kernel_name="python3")
        with pytest.raises(FileNotFoundError):
            await km.start_kernel(cwd=str(tmp_path / "missing"))
        km.cleanup_connection_file()

    asyncio.run(main())


def test_non_ipykernel_command_is_refused() -> None:
    async def main() -> None:
        km = ForkKernelManager(kernel_name="python3")
        provisioner = make_provisioner(km)
        with pytest.raises(ForkUnavailable, match="does not run ipykernel_launcher"):
            await provisioner.launch_kernel(["/bin/sleep", "10"], env=dict(os.environ))

    asyncio.run(main())


# ------------------------------------------------------------------------------------
# Template lifetime
# ------------------------------------------------------------------------------------


def test_shutdown_templates_stops_the_template() -> None:
    info = start_template()
    assert start_template().pid == info.pid  # shared, not one per call
    assert not gone(info.pid)
    shutdown_templates()
    assert wait_gone(info.pid, 5)
    assert start_template().pid != info.pid  # and the next use starts a fresh one


def test_template_and_its_kernels_exit_when_the_parent_dies(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, os
        from jupyter_client.manager import AsyncKernelManager
        from pytest_millrun.forkserver import make_provisioner, start_template

        class KM(AsyncKernelManager):
            async def _async_pre_start_kernel(self, **kw):
                self.provisioner = make_provisioner(self)
                return await super()._async_pre_start_kernel(**kw)

        async def main():
            km = KM(kernel_name="python3")
            await km.start_kernel()
            print(start_template().pid, km.provisioner.pid, flush=True)
            os._exit(0)  # no atexit, no shutdown: the template must notice by itself

        asyncio.run(main())
        """
    )
    env = dict(os.environ, TMPDIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    template_pid, kernel_pid = map(int, done.stdout.split())
    assert wait_gone(template_pid, 5), "the template outlived its parent"
    assert wait_gone(kernel_pid, 5), "the kernel outlived its template"


def test_crashed_template_takes_its_kernels_and_fork_mode_with_it() -> None:
    async def main() -> None:
        async with kernel() as (km, _kc):
            provisioner = km.provisioner
            pid = kernel_pid(km)
            template_pid = psutil.Process(pid).ppid()
            os.kill(template_pid, signal.SIGKILL)
            assert wait_gone(pid, 5)  # PR_SET_PDEATHSIG
            deadline = time.monotonic() + 5
            while await km.is_alive():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert isinstance(provisioner, ForkProvisioner)
            assert await provisioner.poll() == -signal.SIGKILL
        with pytest.raises(ForkUnavailable, match=f"template \\(pid {template_pid}\\) died"):
            async with kernel():
                pass  # pragma: no cover
        shutdown_templates()  # an explicit restart clears the verdict
        async with kernel() as (km2, kc2):
            assert await run_code(kc2, "print(6 * 7)") == ("42\n", None)
            assert psutil.Process(kernel_pid(km2)).ppid() not in (template_pid, 0)

    asyncio.run(main())


def test_template_that_cannot_start_raises_fork_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "ipykernel"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('no kernel here')\n")
    env = dict(os.environ, PYTHONPATH=str(broken.parent))
    with pytest.raises(ForkUnavailable, match="no kernel here"):
        start_template(env=env)
    with pytest.raises(ForkUnavailable, match="no kernel here"):  # remembered, not retried
        start_template(env=env)


def test_preload_failure_is_a_note_not_an_error() -> None:
    info = start_template(("no_such_module_for_millrun",))
    assert info.notes
    assert "no_such_module_for_millrun" in info.notes[0]
    assert "ModuleNotFoundError" in info.notes[0]


def _start_template_in_worker() -> tuple[int, int]:
    return os.getpid(), start_template().pid


def test_a_forked_worker_gets_its_own_template() -> None:
    parent_template = start_template().pid
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        worker_pid, worker_template = pool.submit(_start_template_in_worker).result(timeout=60)
    assert worker_pid != os.getpid()
    assert worker_template != parent_template
    assert start_template().pid == parent_template  # the parent's is untouched
    assert wait_gone(worker_template, 5), "the worker's template outlived the worker"


# ------------------------------------------------------------------------------------
# End to end, and the point of it all
# ------------------------------------------------------------------------------------


def test_papermill_runs_a_notebook_on_a_forked_kernel(tmp_path: Path) -> None:
    import papermill

    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell("import os\nprint(x * 2, os.getppid())")]
    source, output = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, str(source))

    papermill.execute_notebook(
        str(source),
        str(output),
        parameters={"x": 21},
        kernel_manager_class=ForkKernelManager,
        progress_bar=False,
    )
    executed = nbformat.read(str(output), as_version=4)
    text = "".join(o.get("text", "") for o in executed.cells[-1].outputs)
    product, parent = text.split()
    assert product == "42"
    assert int(parent) == start_template().pid


def test_templates_beyond_the_cap_replace_the_least_recently_used_idle_one() -> None:
    shutdown_templates()
    preloads = [("colorsys",), ("wave",), ("fractions",), ("decimal",), ("statistics",)]
    pids = [start_template(preload).pid for preload in preloads]
    assert len(set(pids)) == 5
    assert wait_gone(pids[0], 5), "the oldest idle template made room"
    alive = [p for p in psutil.Process().children() if is_template(p)]
    assert len(alive) == 4


def test_template_side_modules_load_without_the_package(tmp_path: Path) -> None:
    """The template imports its modules under a private name, not as ``pytest_millrun``: they
    must work there (relative imports within the template side only) and bring in nothing of
    the parent's side."""
    probe = tmp_path / "probe.py"
    # The bootstrap's loading step on its own: everything up to ``template.serve``.
    loading = forkserver.client.BOOTSTRAP.split("    before = set(sys.modules)\n", 1)[1]
    loading = loading.split("    added = ", 1)[0]
    probe.write_text(
        "import importlib, importlib.machinery, importlib.util, json, sys\n"
        "def load():\n" + loading + "    return template\n"
        "template = load()\n"
        "assert callable(template.serve)\n"
        "print(json.dumps(sorted(name for name in sys.modules if 'millrun' in name)))\n"
    )
    package_dir = os.path.dirname(forkserver.client.__file__)
    out = subprocess.run(
        [sys.executable, str(probe), package_dir],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    template_side = ["child", "proctitle", "protocol", "template_process"]
    assert json.loads(out) == ["_millrun_forkserver"] + [
        f"_millrun_forkserver.{name}" for name in template_side
    ]
