"""The cache key of one (notebook, variation): everything that decides what its run computes.

Why parts, not one hash: a re-run should say *why* it re-runs ("code cell 4
changed", "input data/prices.csv changed"), so the key is kept as a small
mapping of named parts (each a digest, or a short list of digests) and stored
whole in the output notebook; two keys are equal when their parts are.  What
the parts hold, exactly, is documented in ``docs/incremental.md``:

* ``cells``: one digest per code cell, of its source and of the tags that change
  how it runs (:data:`EXECUTION_TAGS`), a text notebook's as jupytext reads
  them; markdown, outputs, execution counts, cell ids and other metadata are
  not in it;
* ``kernel``: the kernel's name (after ``--millrun-kernel``) and language;
* ``parameters``: a digest per parameter of the variation; ``record``: the names;
* ``options``: a digest per papermill keyword that reaches the engine, except
  those that only limit time or change what is shown (:data:`NEUTRAL_OPTIONS`);
* ``millrun``/``schema``: the package version and this key's own version;
* ``environment``: the kernel's interpreter (executable, version) and a digest
  of its installed distributions (names and versions; the list itself is kept
  beside the key, so a re-run can name what changed);
* ``inputs``: a digest of every declared input file's content;
* ``ignore``: the globs of files never in the key, when there are any;
* ``reads``: added after a passing run, what it read (:mod:`pytest_millrun.cache.reads`).

Reading the environment and hashing inputs happen once per run and process
(:func:`forget` starts a new run); a file's size and mtime only save a re-hash
within a run, never across runs.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Version of the key's layout: a change makes every stored key differ.
SCHEMA = 2
#: Cell tags that change what a cell does when run (papermill's and nbclient's).
EXECUTION_TAGS = frozenset(
    {"parameters", "injected-parameters", "raises-exception", "skip-execution"}
)
#: papermill / nbclient keywords that change neither what runs nor what is recorded.
NEUTRAL_OPTIONS = frozenset(
    {
        "execution_timeout",
        "start_timeout",
        "startup_timeout",
        "timeout",
        "iopub_timeout",
        "shell_timeout_interval",
        "interrupt_on_timeout",
        "progress_bar",
        "log_output",
        "stdout_file",
        "stderr_file",
        "autosave_cell_every",
        "request_save_on_cell_execute",
        "shutdown_kernel",
        "cwd",  # millrun runs every notebook in its own folder anyway
    }
)
#: Files larger than this (MiB) are known by size, mtime and inode, not by their content.
DEFAULT_HASH_LIMIT_MIB = 1024
#: The kernelspec executables jupyter_client replaces by the current interpreter.
_THIS_PYTHON = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info)}
_DIGEST_CHARS = 16

_lock = threading.Lock()
_environments: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
#: Kernels' environments as the Dask workers that run them have them (:func:`environments_of`).
_elsewhere: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
#: A file's digest by its (device, inode, size, mtime, ctime): no path to resolve on a hit.
_files: dict[tuple[int, int, int, int, int], str] = {}
_notebooks: dict[tuple[str, int, int], tuple[dict[str, Any], list[str]]] = {}
_memos: dict[str, dict[Any, Any]] = {}


class CacheInputWarning(UserWarning):
    """A declared input glob matched no file: it is named, and keys simply hold no file for it."""


@dataclass(frozen=True)
class CacheKey:
    """A key's parts (plain JSON) and the distributions its environment digest was made of."""

    parts: Mapping[str, Any]
    distributions: Mapping[str, str] = field(default_factory=dict)
    #: How the run records what it reads (:class:`pytest_millrun.cache.reads.ReadSettings`
    #: as JSON), so that its pass can add the ``reads`` part; None records nothing.
    reads: Mapping[str, Any] | None = None

    @property
    def digest(self) -> str:
        return digest(self.parts, length=64)


def forget() -> None:
    """Start a new run: environments, input files, notebooks and listings are read again."""
    with _lock:
        _environments.clear()
        _files.clear()
        _notebooks.clear()
        for memo in _memos.values():
            memo.clear()


def run_memo(name: str) -> dict[Any, Any]:
    """A memory of digests made once per run, emptied by :func:`forget` with the others."""
    with _lock:
        return _memos.setdefault(name, {})


def digest(value: Any, *, length: int = _DIGEST_CHARS) -> str:
    """A SHA-256 of ``value`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def code_cell_digests(nb: Mapping[str, Any]) -> list[str]:
    """One digest per code cell: its source and its execution tags, nothing else."""
    digests = []
    for cell in nb.get("cells", ()):
        if not isinstance(cell, Mapping) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        metadata = cell.get("metadata")
        tags = metadata.get("tags", ()) if isinstance(metadata, Mapping) else ()
        own = sorted(tag for tag in tags if isinstance(tag, str) and tag in EXECUTION_TAGS)
        digests.append(digest([source, own]))
    return digests


def notebook_kernel(
    nb: Mapping[str, Any], kernel_name: str | None, language: str | None
) -> dict[str, Any]:
    """The kernel a run uses (the override, else the notebook's, else python3) and its language."""
    metadata = _mapping(nb.get("metadata"))
    spec, info = _mapping(metadata.get("kernelspec")), _mapping(metadata.get("language_info"))
    name = kernel_name or spec.get("name") or "python3"
    return {"name": name, "language": language or info.get("name") or spec.get("language") or ""}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def option_digests(papermill_kwargs: Mapping[str, Any]) -> dict[str, str]:
    """A digest per keyword that can change what runs (:data:`NEUTRAL_OPTIONS` left out)."""
    return {
        name: digest(value)
        for name, value in sorted(papermill_kwargs.items())
        if name not in NEUTRAL_OPTIONS and name not in ("kernel_name", "language")
    }


def resolve_inputs(
    globs: Sequence[str], base: Path, ignore: Sequence[str] = ()
) -> tuple[list[Path], list[str]]:
    """The files the globs match under ``base`` (sorted, once each), and the globs matching none.

    ``ignore``: :func:`~pytest_millrun.core.globs.path_regexes` of files left out
    (``--millrun-cache-ignore``); a glob whose files are all ignored still matched.
    """
    from pytest_millrun.core.globs import matches_any

    found: dict[Path, None] = {}
    empty: list[str] = []
    for pattern in globs:
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        matches = sorted(Path(p) for p in glob.glob(full, recursive=True) if os.path.isfile(p))
        if not matches:
            empty.append(pattern)
        kept = (p for p in matches if not matches_any(os.path.abspath(p), ignore))
        found.update(dict.fromkeys(kept))
    return sorted(found), empty


def unmatched_message(globs: Sequence[str], base: Path, option: str) -> str:
    listed = ", ".join(repr(g) for g in globs)
    return (
        f"{option} {listed} matched no file under {base.resolve()}: the cache key holds no "
        f"input for {'it' if len(globs) == 1 else 'them'}. Check the glob (relative to that "
        f"folder)."
    )


def input_digests(
    files: Iterable[Path], base: Path, hash_limit_mib: int = DEFAULT_HASH_LIMIT_MIB
) -> dict[str, str]:
    """``relative path -> digest`` of each input file (:func:`sized_digest`)."""
    result = {}
    for path in files:
        try:
            name = path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            name = str(path)
        result[name] = sized_digest(path, hash_limit_mib)
    return result


#: How a digest of a file known by its size, mtime and inode begins.
STAT_DIGEST = "stat:"


def sized_digest(path: Path, hash_limit_mib: int = DEFAULT_HASH_LIMIT_MIB) -> str:
    """A file's content digest, or above the limit ``stat:size:mtime:inode``.

    Why: a 10 GB dataset would be hashed on every run; its size, mtime and inode
    tell a changed file from an unchanged one as ``make`` does, and a ``-v`` reason
    says when that is how a change was seen.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    if stat.st_size > hash_limit_mib * (1 << 20):
        return f"{STAT_DIGEST}{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"
    return _content_digest(path, stat)


def too_large(digest: str) -> str:
    """What a reason adds for a file known by size, mtime and inode (above the hash limit)."""
    return " (size, mtime or inode; too large to hash)" if digest.startswith(STAT_DIGEST) else ""


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's content; its size and mtime only spare a re-hash in this run."""
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return _content_digest(path, stat)


def _content_digest(path: Path, stat: os.stat_result) -> str:
    """``file_digest`` of a file already stat-ed, made once per run while it is unchanged.

    Known by its device and inode (the same file under any name or link, with no path to
    resolve: a hit re-checks thousands of reads per variation), and by its size, mtime
    and ctime, which any write changes (ctime even when the mtime is set back).
    """
    memo = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    with _lock:
        known = _files.get(memo)
    if known is not None:
        return known
    sha = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    except OSError:
        return "unreadable"
    value = sha.hexdigest()[:_DIGEST_CHARS]
    with _lock:
        _files[memo] = value
    return value


def read_notebook(notebook: Path) -> tuple[dict[str, Any], list[str]]:
    """The notebook and its code cells' digests, read once per run while unchanged.

    A text notebook (jupytext) is read through jupytext, as it runs: its key holds the
    code cells jupytext finds, so an edit to its markdown changes nothing.
    """
    from pytest_millrun.core.discovery import read_notebook as read_any_notebook

    stat = notebook.stat()
    memo = (str(notebook), stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _notebooks.get(memo)
    if known is None:
        nb = read_any_notebook(notebook)
        known = (nb, code_cell_digests(nb))
        with _lock:
            _notebooks[memo] = known
    return known


@contextlib.contextmanager
def environments_of(
    found: Mapping[str, tuple[dict[str, Any], dict[str, str]]],
) -> Iterator[None]:
    """Keys made meanwhile hold these kernels' environments: the Dask workers' that run them.

    Why: a job that ran on a worker is stamped with the worker's environment, so the
    check before the next run on that cluster must compare the workers' too, not the
    client's (whose interpreter may be another, or lack what the workers have).
    """
    with _lock:
        _elsewhere.update(found)
    try:
        yield
    finally:
        with _lock:
            for name in found:
                _elsewhere.pop(name, None)


def kernel_environment(kernel_name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The kernel's interpreter and the digest of its distributions, and the distributions.

    A kernelspec that runs Python (``python``, or a path to a Python) is asked for its
    version and installed distributions: this process itself when it is this
    interpreter, else one short subprocess.  Any other kernel is known by its
    kernelspec's command only.  Within :func:`environments_of`, the workers' say.
    """
    with _lock:
        known = _elsewhere.get(kernel_name) or _environments.get(kernel_name)
    if known is not None:
        return known
    found = _read_environment(kernel_name)
    with _lock:
        _environments[kernel_name] = found
    return found


def _read_environment(kernel_name: str) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:  # pragma: no cover - jupyter_client comes with papermill
        return {"kernel": "unknown"}, {}
    try:
        argv = list(KernelSpecManager().get_kernel_spec(kernel_name).argv)
    except NoSuchKernel:
        return {"kernel": "not installed"}, {}
    command = argv[0] if argv else ""
    if command in _THIS_PYTHON or _same_file(command, sys.executable):
        executable, version, distributions = (
            sys.executable,
            platform.python_version(),
            this_distributions(),
        )
    elif Path(command).name.startswith("python"):
        executable = shutil.which(command) or command
        version, distributions = _other_python(executable)
    else:
        return {"command": argv[:1] + [a for a in argv[1:] if "{" not in a]}, {}
    environment = {
        "executable": executable,
        "python": version,
        "distributions": digest(distributions),
    }
    return environment, distributions


def this_distributions() -> dict[str, str]:
    """Installed distributions of this interpreter, ``normalised name -> version``."""
    import importlib.metadata

    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_normalise(name), dist.version)
    return dict(sorted(found.items()))


_OTHER_PYTHON_SCRIPT = (
    "import importlib.metadata as m, json, platform, re\n"
    "d = {}\n"
    "for x in m.distributions():\n"
    "    n = x.metadata['Name']\n"
    "    if n: d.setdefault(re.sub(r'[-_.]+', '-', n).lower(), x.version)\n"
    "print(json.dumps({'python': platform.python_version(), 'd': dict(sorted(d.items()))}))\n"
)


def _other_python(executable: str) -> tuple[str, dict[str, str]]:
    try:
        done = subprocess.run(
            [executable, "-c", _OTHER_PYTHON_SCRIPT],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        data = json.loads(done.stdout)
        return str(data["python"]), {str(k): str(v) for k, v in data["d"].items()}
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return "unknown", {}


def _same_file(a: str, b: str) -> bool:
    path = shutil.which(a) if a else None
    return path is not None and os.path.realpath(path) == os.path.realpath(b)


def _normalise(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def millrun_version() -> str:
    """This package's installed version (read once; no import of the package's front ends)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("pytest-millrun")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "unknown"


def job_key(
    notebook: Path,
    variation: Mapping[str, Any],
    *,
    kernel_name: str | None,
    record: Sequence[str],
    papermill_kwargs: Mapping[str, Any],
    inputs: Mapping[str, str],
    ignore: Sequence[str] = (),
) -> CacheKey:
    """The key of one job; ``inputs`` as :func:`input_digests` gives them.

    ``ignore``: the globs of files never in the key, as given (a change re-runs: what
    the last run's reads left out is not what this run would leave out).
    """
    nb, cells = read_notebook(notebook)
    kernel = notebook_kernel(nb, kernel_name, papermill_kwargs.get("language"))
    environment, distributions = kernel_environment(kernel["name"])
    parts = {
        "schema": SCHEMA,
        "millrun": millrun_version(),
        "cells": cells,
        "kernel": kernel,
        "parameters": {name: digest(value) for name, value in variation.items()},
        "record": list(record),
        "options": option_digests(papermill_kwargs),
        "environment": environment,
        "inputs": dict(inputs),
    }
    if ignore:
        parts["ignore"] = sorted(ignore)
    return CacheKey(parts, distributions)
