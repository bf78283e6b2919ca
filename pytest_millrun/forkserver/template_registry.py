"""Runs in the parent: this process's templates, one per preload list, flags and environment.

Why: templates are started lazily, shared by every launch with the same key,
given up for the process once one dies unasked, stopped at exit, and forgotten in a
forked child (xdist, process pools) so that each process gets its own.  Layers
above (:mod:`.spares`) hook their own clean-up in with :func:`on_shutdown` and
:func:`on_fork_child`, so that imports go one way.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from .client import (
    ForkedKernel,
    ForkUnavailable,
    PreloadUnsafe,
    Template,
    TemplateGone,
    TemplateInfo,
    TemplateKey,
)
from .command import KernelCommand, platform_supports_fork

#: Environment variables read once at interpreter start-up or at import time by the
#: preloaded libraries.  A fork inherits the template's reading of them, so kernels whose
#: values differ get a template of their own.
_STARTUP_ENV_NAMES: Final = frozenset(
    {"DISPLAY", "HOME", "LANG", "LANGUAGE", "MPLBACKEND", "VECLIB_MAXIMUM_THREADS"}
)
_STARTUP_ENV_PREFIXES: Final = ("PYTHON", "LC_", "IPYTHON", "JUPYTER", "PYDEVD_", "DEBUGPY_")

#: At most this many templates (distinct preload/flags/start-up environments) per process.
_MAX_TEMPLATES: Final = 4


def _startup_env(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The part of ``env`` a template bakes in at start-up (see ``_STARTUP_ENV_NAMES``)."""
    return tuple(
        sorted(
            (name, value)
            for name, value in env.items()
            if name.startswith(_STARTUP_ENV_PREFIXES)
            or name.endswith("_NUM_THREADS")
            or name in _STARTUP_ENV_NAMES
        )
    )


def normalize_preload(preload: Iterable[str]) -> tuple[str, ...]:
    names: list[str] = []
    for name in preload:
        name = name.strip()
        if name and name not in names:
            names.append(name)
    return tuple(names)


_TEMPLATES: dict[TemplateKey, Template] = {}
_BROKEN: dict[TemplateKey, str] = {}
#: Templates replaced because a preloaded local module changed: stopped once idle.
_RETIRED: list[Template] = []
#: Learned preloads found unfit to fork in this process, and why: never tried again here,
#: and reported (see :func:`unsafe_preloads`) so the front end remembers them across runs.
_UNSAFE: dict[str, str] = {}
_LOCK = threading.Lock()
_HOOKS_INSTALLED = False
_SHUTDOWN_HOOKS: list[Callable[[], None]] = []
_FORK_CHILD_HOOKS: list[Callable[[], None]] = []


def on_shutdown(hook: Callable[[], None]) -> None:
    """Run ``hook`` first in :func:`shutdown_templates` (a layer above stops its kernels)."""
    _SHUTDOWN_HOOKS.append(hook)


def on_fork_child(hook: Callable[[], None]) -> None:
    """Run ``hook`` where this module forgets the parent's templates in a forked child."""
    _FORK_CHILD_HOOKS.append(hook)


def _forget_templates_in_child() -> None:
    """After ``os.fork()`` in a parent (ProcessPoolExecutor, xdist): start from scratch."""
    global _LOCK
    _LOCK = threading.Lock()
    for hook in _FORK_CHILD_HOOKS:
        hook()
    for template in [*_TEMPLATES.values(), *_RETIRED]:
        template.abandon()
    _TEMPLATES.clear()
    _RETIRED.clear()
    _BROKEN.clear()


def _install_hooks() -> None:
    global _HOOKS_INSTALLED
    if not _HOOKS_INSTALLED:
        _HOOKS_INSTALLED = True
        atexit.register(shutdown_templates)
        os.register_at_fork(after_in_child=_forget_templates_in_child)


def _template_key(
    flags: Sequence[str], preload: Sequence[str], env: Mapping[str, str], learned: Sequence[str]
) -> TemplateKey:
    preloads = normalize_preload(preload)
    learned = tuple(name for name in normalize_preload(learned) if name not in preloads)
    return (os.getpid(), tuple(flags), preloads, learned, _startup_env(env))


def unsafe_preloads() -> dict[str, str]:
    """The learned preloads this process found unfit to fork, and why."""
    with _LOCK:
        return dict(_UNSAFE)


def _get_template(key: TemplateKey, env: Mapping[str, str]) -> tuple[Template, bool]:
    """The running template for ``key``, starting one if needed.  (template, fresh)."""
    if not platform_supports_fork():
        raise ForkUnavailable("fork mode needs Linux with fork and SCM_RIGHTS support")
    with _LOCK:
        _install_hooks()
        _close_idle_retired()
        current = _TEMPLATES.get(key)
        if current is not None and current.alive() and current.stale() is None:
            return current, False
        if current is not None and current.alive():  # its preloaded local module changed
            _TEMPLATES.pop(key, None)
            _RETIRED.append(current)
            current = None
        if current is not None:  # it died unasked: no second template for this key
            _TEMPLATES.pop(key, None)
            current.close(timeout=1.0)
            _BROKEN[key] = f"the kernel template (pid {current.pid}) died"
        if key in _BROKEN:
            raise ForkUnavailable(_BROKEN[key])
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _evict_idle_template()
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            raise ForkUnavailable(
                f"already {_MAX_TEMPLATES} kernel templates in this process (one per distinct "
                f"preload list, interpreter flags and start-up environment)"
            )
        template = _start_probing(key, env)
        _TEMPLATES[key] = template
        return template, True


def _start_probing(key: TemplateKey, env: Mapping[str, str]) -> Template:
    """Start the template for ``key``, without each learned preload that proves unfit to fork.

    The template imports the learned preloads one by one and stops at the first that
    starts a thread (or dies importing it); that one is left out, remembered, and the
    template started again: one start more per unfit module, the first time only.
    (The caller holds _LOCK.)
    """
    while True:
        learned = [name for name in key[3] if name not in _UNSAFE]
        template = Template(key, env, learned)
        try:
            template.start()
        except PreloadUnsafe as exc:
            if exc.module not in learned:  # not ours to leave out: give up as before
                _BROKEN[key] = str(exc)
                raise
            _UNSAFE[exc.module] = exc.why
            continue
        except ForkUnavailable as exc:
            _BROKEN[key] = str(exc)
            raise
        return template


def _close_idle_retired() -> None:
    """Stop the replaced templates whose kernels have all ended (caller holds _LOCK)."""
    for template in list(_RETIRED):
        if template.idle():
            _RETIRED.remove(template)
            template.close(timeout=1.0)


def _evict_idle_template() -> None:
    """Stop the least recently used template that has no kernel running (caller holds _LOCK).

    One process rarely needs more than one template; a long-lived one that
    cycles through many preload lists or environments keeps the recent ones.
    """
    for key, template in sorted(_TEMPLATES.items(), key=lambda item: item[1].last_used):
        if template.idle():
            _TEMPLATES.pop(key, None)
            template.close(timeout=1.0)
            return


def start_template(
    preload: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    python_flags: Sequence[str] = (),
    learned: Sequence[str] = (),
) -> TemplateInfo:
    """Start (or find) this process's template now instead of at the first kernel launch.

    Useful to take the template's own boot off the first execution's clock,
    e.g. at pytest session start.  ``env`` defaults to ``os.environ``.
    """
    environment = dict(os.environ if env is None else env)
    key = _template_key(python_flags, preload, environment, learned)
    template, _fresh = _get_template(key, environment)
    assert template.info is not None
    return template.info


def shutdown_templates() -> None:
    """Stop this process's templates (and any kernels still running from them).

    Registered with ``atexit`` when the first template starts; safe to call any
    time -- the next launch starts a new template.
    """
    for hook in _SHUTDOWN_HOOKS:
        hook()
    with _LOCK:
        mine = [key for key in _TEMPLATES if key[0] == os.getpid()]
        templates = [_TEMPLATES.pop(key) for key in mine]
        templates += [template for template in _RETIRED if template.owner_pid == os.getpid()]
        _RETIRED.clear()
        _BROKEN.clear()
    for template in templates:
        template.close()


def launch(
    command: KernelCommand,
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    stdout_fd: int,
    stderr_fd: int,
    independent: bool,
    preload: Sequence[str],
    on_new_template: Callable[[TemplateInfo], None],
    learned: Sequence[str] = (),
) -> ForkedKernel:
    """Fork a kernel from this process's template for ``env``.

    A template that died under us (killed, out of memory) is not restarted:
    fork mode is given up for the process with :class:`ForkUnavailable`, so the
    caller can fall back to spawning and say so once.
    """
    key = _template_key(command.flags, preload, env, learned)
    template, fresh = _get_template(key, env)
    if fresh and template.info is not None:
        on_new_template(template.info)
    try:
        pid, pidfd = template.fork(command, argv, cwd, env, stdout_fd, stderr_fd, independent)
    except TemplateGone as exc:
        raise _crashed(key, template, str(exc)) from None
    return ForkedKernel(template, pid, pidfd, list(argv))


def _crashed(key: TemplateKey, template: Template, why: str) -> ForkUnavailable:
    """Remember that this template died unasked; later launches fail at once."""
    message = f"the kernel template (pid {template.pid}) died: {why}.{template.log_tail()}"
    with _LOCK:
        _BROKEN[key] = message
        if _TEMPLATES.get(key) is template:
            _TEMPLATES.pop(key, None)
    template.close(timeout=1.0)
    return ForkUnavailable(message)
