"""Runs in the parent: the template's program, the source it is started with.

Why apart: the program is the one piece of the template the parent holds, and the longest;
:mod:`.client` starts it (``sys.executable -c BOOTSTRAP``) and talks to what it becomes.
It imports the kernel's modules, then the preloads (named ones; then the learned ones one
by one, stopping at the first that starts a thread, see :mod:`.template_registry`), then
:mod:`.template_process`, whose ``serve`` reports what happened to the parent.
"""

from __future__ import annotations

from typing import Final

#: Imported by the template before anything else: without them there is nothing to gain.
ESSENTIAL_IMPORTS: Final = ("ipykernel.kernelapp",)

#: Imported by every ipykernel 7 kernel during its start anyway, so importing them in the
#: template changes nothing the user can see (``sys.modules`` stays a subset of a spawned
#: kernel's) but takes them off each kernel's critical path.  Missing ones are skipped.
WARM_IMPORTS: Final = (
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "tornado.gen",
    "tornado.locks",
    "tornado.queues",
    "tornado.platform.asyncio",
    "sqlite3",
    # debugpy/pydevd, the largest part of a kernel's own start-up.  Its import reads
    # PYDEVD_*/DEBUGPY_* and sets PYDEVD_USE_FRAME_EVAL; both are handled (template key,
    # replayed environment changes).
    "ipykernel.debugger",
)


#: The template's program.  It imports the kernel's modules *before* the fork server's, so
#: that ``sys.modules`` entries added only by the latter can be dropped in each kernel;
#: then :mod:`.template_process` from this folder as the private package ``_millrun_forkserver``
#: (its ``__init__`` is not run: the parent's side stays out of the template).
#: The forked child returns from ``serve`` with a job and runs it here, at the top of the
#: stack, so the kernel ends through the interpreter's normal shutdown like
#: ipykernel_launcher.
BOOTSTRAP: Final = """\
import sys
if sys.path and sys.path[0] == '' and not getattr(sys.flags, 'safe_path', False):
    del sys.path[0]


def _millrun_template():
    import importlib
    import importlib.machinery
    import importlib.util
    import json
    import os

    spec = json.loads(sys.argv[4])
    env_before = dict(os.environ)
    problems = {}
    for name in spec['essential'] + spec['warm']:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            problems[name] = f'{type(exc).__name__}: {exc}'
    machinery = set(sys.modules)
    for name in spec['preload']:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            problems[name] = f'{type(exc).__name__}: {exc}'
    unsafe = None
    import threading
    for name in spec['learned'] if threading.active_count() == 1 else ():
        os.write(2, f'millrun-probing {name}\\n'.encode())
        try:
            importlib.import_module(name)
        except BaseException as exc:
            problems[name] = f'{type(exc).__name__}: {exc}'
        if threading.active_count() > 1:
            unsafe = name
            break
    if spec['learned']:
        os.write(2, b'millrun-probed\\n')
    loaded = sorted(set(sys.modules) - machinery)
    sys._millrun_preloaded = sorted({n.partition('.')[0] for n in loaded})
    before = set(sys.modules)
    package = importlib.machinery.ModuleSpec('_millrun_forkserver', None, is_package=True)
    package.submodule_search_locations = [sys.argv[1]]
    sys.modules[package.name] = importlib.util.module_from_spec(package)
    template = importlib.import_module('_millrun_forkserver.template_process')
    added = sorted(set(sys.modules) - before)
    env_set = {k: v for k, v in os.environ.items() if env_before.get(k) != v}
    spec['unsafe'] = unsafe
    spec['local'] = template.local_files(loaded)
    return template.serve(int(sys.argv[2]), int(sys.argv[3]), spec, problems, added, env_set)


_millrun_job = _millrun_template()
del _millrun_template
if _millrun_job is not None:
    _millrun_job()
"""
