"""Runs in the parent: the jupyter_client kernel provisioner that forks instead of spawning.

Why: a :class:`~jupyter_client.provisioning.LocalProvisioner` whose
``launch_kernel`` asks a template (or takes a spare) instead of
``subprocess.Popen``, so that the kernel manager, nbclient and papermill work
unchanged; and :func:`fork_available`, which says when a kernelspec can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from .client import ForkedKernel, ForkUnavailable, TemplateInfo
from .command import KernelCommand, parse_kernel_argv, platform_supports_fork
from .spares import Spare, prepare_spare, take_spare
from .template_registry import launch, normalize_preload


def fork_available(kernel_spec: Any) -> bool:
    """Whether kernels of ``kernel_spec`` can be forked from a template here.

    True on Linux when the spec's ``argv`` runs ``ipykernel_launcher`` (or
    ``ipykernel``) with the running interpreter and the spec does not ask for a
    provisioner of its own.  ``kernel_spec`` is a jupyter_client ``KernelSpec``
    (or anything with ``argv``), or an argv list.
    """
    if not platform_supports_fork() or kernel_spec is None:
        return False
    if isinstance(kernel_spec, (list, tuple)):
        argv = list(kernel_spec)
    else:
        argv = list(getattr(kernel_spec, "argv", None) or [])
        metadata = getattr(kernel_spec, "metadata", None) or {}
        wanted = metadata.get("kernel_provisioner") if isinstance(metadata, dict) else None
        if isinstance(wanted, dict) and wanted.get("provisioner_name") not in (
            None,
            "local-provisioner",
        ):
            return False
    if not all(isinstance(arg, str) for arg in argv):
        return False
    return parse_kernel_argv(argv) is not None


_LISTEN_WAIT: Final = 5.0


def _tcp_listening_ports() -> set[int] | None:
    """Local TCP ports in LISTEN state in this network namespace; None if unknowable."""
    ports: set[int] = set()
    readable = False
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, encoding="ascii", errors="replace") as table:
                lines = table.read().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # 0A == TCP_LISTEN
                with contextlib.suppress(ValueError):
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if readable else None


def _stream_fd(stream: Any, default_fd: int) -> tuple[int, int | None]:
    """(fd to hand the kernel, fd we opened and must close) for a Popen-style argument.

    ``None`` inherits the parent's stream as Popen would; ``DEVNULL`` and
    ``PIPE`` (which needs a Popen to read it) become /dev/null (-1); a file
    object gives its descriptor, or -- without one -- its ``.name`` is opened.
    """
    if stream is None:
        try:
            os.fstat(default_fd)
        except OSError:
            return -1, None
        return default_fd, None
    if isinstance(stream, int):
        return (stream, None) if stream >= 0 else (-1, None)
    with contextlib.suppress(Exception):
        stream.flush()
    try:
        return int(stream.fileno()), None
    except (AttributeError, OSError, ValueError):
        pass
    name = getattr(stream, "name", None)
    if isinstance(name, (str, Path)):
        with contextlib.suppress(OSError):
            opened = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            return opened, opened
    return -1, None


class ForkProvisioner(LocalProvisioner):
    """A LocalProvisioner that forks kernels from a warm template instead of spawning them.

    Everything before the launch (connection file, ports, kernel command,
    environment) is LocalProvisioner's; only the process differs.  ``preload``
    names extra modules for the template to import (a separate template per
    distinct list).  The kernel handle is :attr:`forked` (a :class:`ForkedKernel`);
    ``process`` stays None because there is no ``Popen``.
    """

    preload: tuple[str, ...] = ()
    #: Modules the notebooks imported in their last runs: the template imports them too,
    #: leaving out any that proves unfit to fork (see :mod:`.template_registry`).
    learned: tuple[str, ...] = ()
    forked: ForkedKernel | None = None
    #: The folder of a spare kernel this launch took over (its connection file and
    #: sockets; see :func:`spare_kernels`), for the caller to remove when done; and
    #: the spare's log, which holds the kernel's stdout and stderr when it was adopted.
    spare_folder: Path | None = None
    spare_log: Path | None = None
    _spare: Spare | None = None
    _launched = False

    @property
    def has_process(self) -> bool:
        return self.forked is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        if self.kernel_id is None and km is not None:
            self.kernel_id = km.kernel_id  # made after the provisioner, on first start
        # A restart keeps the manager's connection file and the client connected to it,
        # so only a first launch may take a spare (with its own ports and key).
        spare = None if self._launched else take_spare()
        if spare is not None:
            if (
                km is not None
                and km.transport == spare.info.get("transport")
                and km.kernel_name == spare.info.get("kernel_name")
                and str(getattr(km, "transport_encryption", "disabled")).lower() == "disabled"
                and not self.ports_cached
                and spare.cwd == kwargs.get("cwd")
            ):
                # The manager takes the spare's connection file as its own, so that the
                # kernel command matches it (launch_kernel checks the rest), and as already
                # written: the spare may still be starting, reading that file, and the
                # manager's write (remove, create empty, fill) would let it read nothing.
                km.load_connection_info(spare.info)
                km.connection_file = spare.connection_file
                km._connection_file_written = True
                self._spare = spare
                self.spare_folder = spare.folder
            else:
                spare.discard()
        try:
            result: dict[str, Any] = await super().pre_launch(**kwargs)
        except BaseException:
            taken, self._spare = self._spare, None
            if taken is not None:
                taken.discard()
            raise
        return result

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Fork the kernel from the template, or take the spare forked for it (see
        :func:`spare_kernels`); kwargs as for ``subprocess.Popen``."""
        spare, self._spare = self._spare, None
        try:
            forked, command, argv, cwd, env, independent = self._fork_or_adopt(cmd, spare, kwargs)
        except BaseException:
            if spare is not None:
                spare.kill()
            if self.spare_folder is not None:
                shutil.rmtree(self.spare_folder, ignore_errors=True)
            raise
        self._launched = True
        if not independent:
            kernel_name = str(getattr(self.parent, "kernel_name", ""))
            prepare_spare(command, argv, cwd, env, (self.preload, self.learned), kernel_name)
        self.forked = forked
        self.pid = forked.pid
        self.pgid = forked.pid  # the kernel leads its own session and process group
        self.cwd = cwd
        await self._wait_until_listening(forked)
        connection_info: KernelConnectionInfo = self.connection_info
        return connection_info

    def _fork_or_adopt(
        self, cmd: list[str], spare: Spare | None, kwargs: dict[str, Any]
    ) -> tuple[ForkedKernel, KernelCommand, list[str], str, dict[str, str], bool]:
        scrubbed = LocalProvisioner._scrub_kwargs(kwargs)
        argv = [os.path.expanduser(str(arg)) for arg in cmd]
        command = parse_kernel_argv(argv)
        if command is None:
            raise ForkUnavailable(
                f"the kernel command {argv!r} does not run ipykernel_launcher on this "
                f"interpreter ({sys.executable})"
            )
        given_env = scrubbed.get("env")
        env = {str(k): str(v) for k, v in (os.environ if given_env is None else given_env).items()}
        independent = bool(scrubbed.get("independent", False))
        if not independent:
            env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher does
        cwd = os.fspath(scrubbed.get("cwd") or os.getcwd())
        if spare is not None:
            wanted = (argv, env, cwd, (self.preload, self.learned))
            if (
                (spare.argv, spare.env, spare.cwd, spare.preload) == wanted
                and spare.alive()
                and spare.kernel.template_current()
            ):
                self.spare_log = spare.folder / "kernel.log"
                return spare.kernel, command, argv, cwd, env, independent
            spare.kill()  # its connection file and socket paths are this launch's now
        stdout_fd, opened_out = _stream_fd(scrubbed.get("stdout"), 1)
        stderr_arg = scrubbed.get("stderr")
        if stderr_arg == subprocess.STDOUT:
            stderr_fd, opened_err = stdout_fd, None
        else:
            stderr_fd, opened_err = _stream_fd(stderr_arg, 2)
        try:
            forked = launch(
                command,
                argv,
                cwd,
                env,
                stdout_fd,
                stderr_fd,
                independent,
                self.preload,
                self._note_template,
                self.learned,
            )
        finally:
            for fd in (opened_out, opened_err):
                if fd is not None:
                    os.close(fd)
        return forked, command, argv, cwd, env, independent

    async def _wait_until_listening(self, forked: ForkedKernel) -> None:
        """Return once the kernel has bound its ports (or died, or ``_LISTEN_WAIT`` passed).

        A forked kernel binds within tens of milliseconds, but a client that
        connects before that is refused and retries only after ZeroMQ's 100 ms
        reconnect interval, and ``wait_for_ready`` then also misses its first
        IOPub probe (another 200 ms).  Waiting here, cheaply, lets the client's
        first connection succeed, which is most of fork mode's gain in
        ready-time.  Best effort: when readiness cannot be observed it returns.
        """
        info = self.connection_info
        ports = {
            port
            for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
            if isinstance(port := info.get(name), int) and port > 0
        }
        transport, ip = info.get("transport"), info.get("ip")
        if not ports or not isinstance(ip, str):
            return

        def listening() -> bool:
            if transport == "ipc":
                return all(os.path.exists(f"{ip}-{port}") for port in ports)
            if transport == "tcp":
                bound = _tcp_listening_ports()
                return bound is None or ports <= bound
            return True

        deadline = time.monotonic() + _LISTEN_WAIT
        while not listening():
            if forked.poll() is not None or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.005)

    def _note_template(self, info: TemplateInfo) -> None:
        self.log.debug("Started kernel template pid %d (preload %s)", info.pid, info.preload)
        for note in info.notes:
            self.log.warning("Kernel template: %s", note)

    async def poll(self) -> int | None:
        if self.forked is None:
            return 0
        return self.forked.poll()

    async def wait(self) -> int | None:
        forked = self.forked
        if forked is None:
            return 0
        while (code := forked.poll()) is None:
            await asyncio.sleep(0.02)
        forked.close()
        self.forked = None  # has_process is now False, as after LocalProvisioner.wait
        return code

    async def send_signal(self, signum: int) -> None:
        """Signal the kernel's process group (the kernel and what it started), like spawn."""
        forked = self.forked
        if forked is None:
            return
        if forked.poll() is None:
            try:
                os.killpg(forked.pid, signum)
                return
            except OSError:
                pass
        else:  # leftovers of its group, if any; an empty group is fine
            with contextlib.suppress(OSError):
                os.killpg(forked.pid, signum)
        forked.send_signal(signum)

    async def kill(self, restart: bool = False) -> None:
        if self.forked is not None:
            await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        if self.forked is not None:
            await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        forked = self.forked
        if forked is not None and forked.poll() is not None:
            forked.close()
            self.forked = None
        await super().cleanup(restart=restart)


def make_provisioner(
    km: Any, preload: tuple[str, ...] = (), learned: tuple[str, ...] = ()
) -> ForkProvisioner:
    """A ForkProvisioner for kernel manager ``km``, built as KernelProvisionerFactory does.

    Install it with ``self.provisioner = make_provisioner(self)`` before calling
    ``super()._async_pre_start_kernel()``.  On a restart ``km`` already has a
    provisioner, and it must survive: it holds the cached ports, and a fresh one
    would pick new ports that the kernel (reading the kept connection file) and
    the connected client never hear of.  So the ForkProvisioner already
    installed is returned as it is, and one replacing a LocalProvisioner (a
    kernel first spawned) takes over its ports.
    """
    existing = getattr(km, "provisioner", None)
    if isinstance(existing, ForkProvisioner):
        existing.preload = normalize_preload(preload)
        existing.learned = normalize_preload(learned)
        return existing
    provisioner = ForkProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
    provisioner.preload = normalize_preload(preload)
    provisioner.learned = normalize_preload(learned)
    if isinstance(existing, LocalProvisioner):
        provisioner.ports_cached = existing.ports_cached
        provisioner.connection_info = existing.connection_info
    return provisioner
