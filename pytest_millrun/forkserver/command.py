"""Runs in the parent: which kernel commands a template of this interpreter can run.

Why apart: both the provisioner (is this kernelspec forkable?) and the template
registry (which interpreter flags does the template need?) read a kernel command
the way ``python [flags] -m ipykernel_launcher args`` does.  Pure logic, no processes.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: Interpreter options that may precede ``-m ipykernel_launcher`` in a kernelspec; the
#: template is started with the same ones, since they cannot change after start-up.
_SIMPLE_FLAGS: Final = frozenset(
    {"-B", "-b", "-bb", "-d", "-E", "-I", "-O", "-OO", "-P", "-q", "-R", "-s", "-S", "-u", "-v"}
)

_KERNEL_MODULES: Final = ("ipykernel_launcher", "ipykernel")


@dataclass(frozen=True)
class KernelCommand:
    """A kernel command line split the way ``python [flags] -m module args`` reads it."""

    flags: tuple[str, ...]
    module: str
    args: tuple[str, ...]


def _is_this_interpreter(executable: str) -> bool:
    """Whether ``executable`` runs the very interpreter (and environment) we run in.

    ``python``/``python3``/``python3.X`` are what jupyter_client itself replaces
    with ``sys.executable``.  A path must resolve to the same binary *from the
    same directory*: a virtualenv's ``bin/python`` is a symlink to the base
    interpreter, yet a different environment (its ``pyvenv.cfg`` is found next
    to the link), so realpath alone would confuse the two.
    """
    if not sys.executable:
        return False
    major, minor = sys.version_info[:2]
    if executable in {"python", f"python{major}", f"python{major}.{minor}"}:
        return True
    path = os.path.expanduser(executable)
    if os.sep not in path:
        found = shutil.which(path)
        if found is None:
            return False
        path = found
    path = os.path.abspath(path)
    here = os.path.abspath(sys.executable)
    return os.path.realpath(os.path.dirname(path)) == os.path.realpath(
        os.path.dirname(here)
    ) and os.path.realpath(path) == os.path.realpath(here)


def parse_kernel_argv(argv: Sequence[str]) -> KernelCommand | None:
    """Split ``[python, *flags, -m, ipykernel_launcher, *args]``; None for anything else."""
    if len(argv) < 3 or not _is_this_interpreter(argv[0]):
        return None
    flags: list[str] = []
    index = 1
    while index < len(argv) and argv[index] != "-m":
        arg = argv[index]
        if arg in ("-X", "-W"):
            if index + 1 >= len(argv):
                return None
            flags += [arg, argv[index + 1]]
            index += 2
        elif (arg.startswith(("-X", "-W")) and len(arg) > 2) or arg in _SIMPLE_FLAGS:
            flags.append(arg)
            index += 1
        else:
            return None
    if index + 1 >= len(argv) or argv[index + 1] not in _KERNEL_MODULES:
        return None
    return KernelCommand(tuple(flags), argv[index + 1], tuple(argv[index + 2 :]))


def platform_supports_fork() -> bool:
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "fork")
        and hasattr(socket, "send_fds")
        and hasattr(socket, "AF_UNIX")
    )
