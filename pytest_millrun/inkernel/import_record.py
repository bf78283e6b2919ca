"""Runs inside the notebook's kernel: which installed third-party modules the run imported.

Sent as source by :mod:`pytest_millrun.execution.import_recording` (standard library
only, any Python 3, nothing left in the user's namespace).  :func:`start` notes what the
kernel had before the first cell; :func:`finish` makes one pass over ``sys.modules`` at
the end.  What it finds is what a fork template preloads on the next run (issue 34).

A forked kernel already holds what its template preloaded (the template lists those
top-level names as ``sys._millrun_preloaded``): a notebook that uses one of them never
imports it again, so it counts when the notebook's globals hold it (``import numpy as
np``, ``from pandas import DataFrame``); else the list would keep every module once
preloaded, whoever needs it.
"""

from __future__ import annotations

from typing import Any


def start() -> tuple[set[str], set[str]]:
    """(top-level modules the kernel had before its first cell, those its template preloaded)."""
    import sys

    preloaded = set(getattr(sys, "_millrun_preloaded", None) or ())
    before = {name for name in list(sys.modules) if "." not in name} - preloaded
    return before, preloaded


def finish(before: set[str], preloaded: set[str], user: dict[str, Any]) -> list[str]:
    """The top-level names of the modules the run imported that live under site-packages
    (not the standard library, not the notebook's own folder), and the submodules of those
    the notebook's globals hold (``import matplotlib.pyplot as plt``), sorted."""
    import contextlib
    import os
    import site
    import sys
    import sysconfig
    import types

    paths = sysconfig.get_paths()
    shared = [paths.get("purelib", ""), paths.get("platlib", "")]
    with contextlib.suppress(Exception):  # a virtualenv's old site module may lack them
        shared += [*site.getsitepackages(), site.getusersitepackages()]
    roots = tuple(os.path.join(os.path.realpath(root), "") for root in shared if root)
    used = set()
    held = set()  # submodules the notebook holds (``plt``): worth preloading by their full name
    for value in list(user.values()):
        if isinstance(value, types.ModuleType):
            name = value.__name__
            held.add(str(name))
        elif isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
            name = getattr(value, "__module__", None) or ""
        else:
            name = type(value).__module__
        used.add(str(name).partition(".")[0])
    found = []
    for name, module in list(sys.modules.items()):
        if "." in name or name in before or name.startswith("_millrun"):
            continue
        if name in preloaded and name not in used:
            continue
        file = getattr(module, "__file__", None)
        places = [file] if isinstance(file, str) else list(getattr(module, "__path__", None) or ())
        for place in places:
            path = os.path.realpath(str(place))
            if path.startswith(roots):  # a module beside the notebook is not (a venv may be)
                found.append(name)
                break
    found += [name for name in held if "." in name and name.partition(".")[0] in found]
    return sorted(found)
