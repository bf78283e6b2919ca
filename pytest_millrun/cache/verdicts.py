"""Incremental runs: whether a variation's last passing output still answers for it.

Where the record lives: in the output notebook itself, as
``metadata.millrun.cache`` (see :data:`CACHE_ENTRY`), written only after a run
passed: the key's parts (:mod:`pytest_millrun.cache.keys`), the
distributions behind its environment digest, and a digest of the rest of the
notebook.  So an output folder is its own cache: restored by CI (``actions/cache``
on ``.millrun/``) it gives hits with nothing else; concurrent runs (xdist, a
pool, Dask) never share a file, since each variation owns its output; and an
output changed by hand, failed or cut short since has no valid entry, so it runs.

The three front ends share :func:`check_output` (before a job is dispatched, or
where a plugin item runs) and the execution calls :func:`stamp` after a pass and
:func:`unstamp` after a failure that left an earlier output in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_millrun.cache.keys import (
    DEFAULT_HASH_LIMIT_MIB,
    CacheKey,
    digest,
    input_digests,
    job_key,
    resolve_inputs,
    too_large,
)
from pytest_millrun.cache.reads import (
    ReadSettings,
    current_reads,
    describe,
    read_changes,
    read_settings,
)
from pytest_millrun.core.discovery import OUTPUT_MARKER
from pytest_millrun.core.globs import path_regexes
from pytest_millrun.coverage.stored_lines import COVERAGE_ENTRY, unusable, write_data_file

if TYPE_CHECKING:
    from pytest_millrun.core.data import ExecutionResult
    from pytest_millrun.coverage.kernel_settings import KernelCoverage

#: The entry of ``metadata.millrun`` that holds a passing run's key.
CACHE_ENTRY = "cache"
#: The entry's field that says why a passing run kept no key (what it read changed meanwhile).
UNUSABLE = "unusable"
#: At most this many changed distributions are named in a reason.
_NAMED = 3


@dataclass(frozen=True)
class CacheSettings:
    """The cache options of a run, as every front end resolves them."""

    enabled: bool = False
    force: bool = False
    #: Globs of the declared input files, relative to ``base``.
    inputs: tuple[str, ...] = ()
    base: Path | None = None
    #: Globs, relative to ``base``, of files that are never inputs nor reads (logs, scratch).
    ignore: tuple[str, ...] = ()
    #: Files read above this size (MiB) are known by size, mtime and inode.
    hash_limit_mib: int = DEFAULT_HASH_LIMIT_MIB
    #: The run's output folder (its files are never reads); None: outputs beside notebooks.
    output_root: Path | None = None
    #: How the front end spells the force option, for the reason a forced variation runs.
    force_option: str = "force=True"
    #: With kernels measured: the settings a hit's stored lines must have been measured
    #: with (see :mod:`pytest_millrun.coverage.stored_lines`); a hit then counts them.
    coverage: KernelCoverage | None = None


@dataclass(frozen=True)
class Verdict:
    """What the check found: a hit (the output answers for the key) or why the variation runs."""

    hit: bool
    reasons: tuple[str, ...] = ()
    recorded: Mapping[str, Any] = field(default_factory=dict)
    record_notes: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    #: A hit's stored coverage lines, when the run measures kernels.
    coverage_lines: Mapping[str, Any] | None = None
    #: A hit's read set, as ``-vv`` lists it (:func:`pytest_millrun.cache.reads.describe`).
    read_set: tuple[str, ...] = ()


class RunInputs:
    """The declared inputs of a run, hashed once: each job's key takes their digests."""

    def __init__(self, settings: CacheSettings) -> None:
        base = settings.base or Path.cwd()
        self.globs = settings.inputs
        self.ignore_globs = settings.ignore
        self.ignore = path_regexes(settings.ignore, base)
        files, self.unmatched = resolve_inputs(settings.inputs, base, self.ignore)
        self.hash_limit_mib = settings.hash_limit_mib
        self.digests = input_digests(files, base, self.hash_limit_mib)
        self.base = base
        self._more: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, str]] = {}
        #: Globs of a suite section's ``inputs`` that matched nothing, once each.
        self.unmatched_more: list[str] = []

    def with_more(self, globs: Sequence[str], ignore: Sequence[str] = ()) -> dict[str, str]:
        """The run's inputs and a suite section's own (absolute globs), hashed once per run.

        ``ignore``: the section's own ignore globs (absolute), besides the run's.
        """
        if not globs and not ignore:
            return self.digests
        key = (tuple(globs), tuple(ignore))
        if key not in self._more:
            left_out = (*self.ignore, *path_regexes(ignore, self.base))
            files, empty = resolve_inputs((*self.globs, *globs), self.base, left_out)
            self.unmatched_more += [g for g in empty if g in globs and g not in self.unmatched_more]
            self._more[key] = input_digests(files, self.base, self.hash_limit_mib)
        return self._more[key]


def key_for(
    notebook: Path,
    variation: Mapping[str, Any],
    inputs: RunInputs | None,
    *,
    kernel_name: str | None,
    record: Sequence[str],
    papermill_kwargs: Mapping[str, Any],
    more_inputs: Sequence[str] = (),
    more_ignore: Sequence[str] = (),
) -> CacheKey:
    """The key of one job: the run's declared inputs and, from a suite, its notebook's own."""
    ignore: list[str] = []
    if inputs is not None:
        ignore = [*inputs.ignore_globs, *(_relative(g, inputs.base) for g in more_ignore)]
    return job_key(
        notebook,
        variation,
        kernel_name=kernel_name,
        record=record,
        papermill_kwargs=papermill_kwargs,
        inputs=inputs.with_more(more_inputs, more_ignore) if inputs is not None else {},
        ignore=ignore,
    )


def _relative(pattern: str, base: Path) -> str:
    """A suite's absolute glob as the key holds it: relative to the run's base when under it."""
    root = os.path.join(os.path.abspath(base), "")
    return pattern[len(root) :] if pattern.startswith(root) else pattern


#: Why a variation with no key runs: its notebook cannot be read (the run says why).
NO_KEY = "no cache key: the notebook cannot be read"


def verdict_for(
    notebook: Path,
    variation: Mapping[str, Any],
    output: Path,
    inputs: RunInputs,
    settings: CacheSettings,
    *,
    kernel_name: str | None,
    record: Sequence[str],
    papermill_kwargs: Mapping[str, Any],
    more_inputs: Sequence[str] = (),
    more_ignore: Sequence[str] = (),
) -> tuple[Verdict, CacheKey | None]:
    """One job's verdict and the key its pass will record: the one check every front end makes.

    The CLI and the API call it for every job before dispatch, the plugin where each
    item runs (an xdist worker too).  A notebook that cannot be keyed runs, saying why;
    the run itself reports an unreadable notebook.
    """
    try:
        key = key_for(
            notebook, variation, inputs, kernel_name=kernel_name, record=record,
            papermill_kwargs=papermill_kwargs, more_inputs=more_inputs, more_ignore=more_ignore,
        )  # fmt: skip
    except (OSError, ValueError):
        return Verdict(False, (NO_KEY,)), None
    reads = read_settings_for(notebook, output, settings, more_ignore)
    key = dataclasses.replace(key, reads=reads.as_json())
    return check_output(output, key, settings, notebook=notebook), key


def read_settings_for(
    notebook: Path, output: Path, settings: CacheSettings, more_ignore: Sequence[str] = ()
) -> ReadSettings:
    """What a job's reads leave out: the output folder (or, beside the notebook, its output)."""
    folder = notebook.parent.resolve()
    root = settings.output_root.resolve() if settings.output_root is not None else None
    exclude = [root] if root is not None and not folder.is_relative_to(root) else [output]
    return read_settings(
        folder,
        base=settings.base or Path.cwd(),
        exclude=exclude,
        ignore=[*settings.ignore, *more_ignore],
        hash_limit_mib=settings.hash_limit_mib,
    )


def output_digest(nb: Mapping[str, Any]) -> str:
    """A digest of the whole output notebook except its own cache entry."""
    metadata = dict(nb.get("metadata") or {})
    marker = dict(metadata.get(OUTPUT_MARKER) or {})
    marker.pop(CACHE_ENTRY, None)
    metadata[OUTPUT_MARKER] = marker
    return digest({**nb, "metadata": metadata}, length=64)


def check_output(
    output: Path, key: CacheKey, settings: CacheSettings, *, notebook: Path | None = None
) -> Verdict:
    """Whether ``output`` is a passing run's output for exactly this key, and if not, why.

    The key made before the run holds no ``reads``: the stored key's are digested
    again (the same paths, as they are now, under the key's read settings).
    """
    from pytest_millrun.core.values import recorded_from_notebook

    started = time.perf_counter()

    def miss(*reasons: str) -> Verdict:
        return Verdict(False, reasons, seconds=time.perf_counter() - started)

    if settings.force:
        return miss(f"forced ({settings.force_option})")
    try:
        with output.open(encoding="utf-8") as handle:
            nb = json.load(handle)
    except FileNotFoundError:
        return miss("no output")
    except (OSError, ValueError):
        return miss("output unreadable")
    metadata = nb.get("metadata") if isinstance(nb, dict) else None
    marker = metadata.get(OUTPUT_MARKER) if isinstance(metadata, dict) else None
    if not isinstance(marker, dict):
        return miss("output not written by millrun")
    entry = marker.get(CACHE_ENTRY)
    if isinstance(entry, dict) and entry.get(UNUSABLE):
        return miss(*(f"its last run kept no key: {reason}" for reason in entry[UNUSABLE]))
    if not isinstance(entry, dict) or not isinstance(entry.get("parts"), dict):
        return miss("no passing output")
    if entry.get("output") != output_digest(nb):
        return miss("output changed since its run")
    stored = {name: part for name, part in entry["parts"].items() if name != "reads"}
    reasons = key_changes(stored, key.parts, entry.get("distributions") or {}, key.distributions)
    read = entry["parts"].get("reads")
    if not reasons and isinstance(read, dict):
        folder = (notebook or output).parent.resolve()
        found = ReadSettings.from_json(key.reads or {})
        reasons = read_changes(read, current_reads(read, folder, found))
    if reasons:
        return miss(*reasons)
    lines = marker.get(COVERAGE_ENTRY)
    if settings.coverage is not None and (why := unusable(lines, settings.coverage)):
        return miss(why)
    values, notes = recorded_from_notebook(nb)
    return Verdict(
        True, (), values, notes, time.perf_counter() - started,
        coverage_lines=lines if settings.coverage is not None else None,
        read_set=tuple(describe(read)) if isinstance(read, dict) else (),
    )  # fmt: skip


def cached_result(
    notebook: Path,
    variation_id: str,
    parameters: Mapping[str, Any],
    output: Path,
    verdict: Verdict,
    coverage: KernelCoverage | None = None,
) -> ExecutionResult:
    """A passing result read back from a hit's output, without running anything.

    With kernels measured (``coverage``), the lines its run executed count again: they
    are written as a data file beside the host's, under ``coverage``'s context.
    """
    from pytest_millrun.core.data import ExecutionResult

    if coverage is not None and verdict.coverage_lines is not None:
        write_data_file(verdict.coverage_lines, coverage)

    return ExecutionResult(
        notebook=notebook,
        variation_id=variation_id,
        parameters=dict(parameters),
        output=output,
        status="passed",
        duration=verdict.seconds,
        recorded=dict(verdict.recorded),
        record_notes=dict(verdict.record_notes),
        cached=True,
        read_set=verdict.read_set,
    )


def key_changes(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_distributions: Mapping[str, str] | None = None,
    new_distributions: Mapping[str, str] | None = None,
) -> list[str]:
    """Why a stored key is not the current one, part by part; empty when they are equal."""
    if old == new:
        return []
    reasons: list[str] = []
    if old.get("schema") != new.get("schema"):
        return ["cache key schema changed"]
    if old.get("millrun") != new.get("millrun"):
        reasons.append(f"millrun version changed ({old.get('millrun')} -> {new.get('millrun')})")
    reasons += _cell_changes(old.get("cells") or [], new.get("cells") or [])
    old_kernel, new_kernel = old.get("kernel") or {}, new.get("kernel") or {}
    if old_kernel != new_kernel:
        reasons.append(
            f"kernel changed ({_kernel_words(old_kernel)} -> {_kernel_words(new_kernel)})"
        )
    reasons += _mapping_changes("parameter", old.get("parameters"), new.get("parameters"))
    if old.get("record") != new.get("record"):
        reasons.append("recorded names changed")
    reasons += _mapping_changes("option", old.get("options"), new.get("options"))
    old_env, new_env = old.get("environment") or {}, new.get("environment") or {}
    if old_env != new_env:
        reasons.append(
            _environment_words(old_env, new_env, old_distributions or {}, new_distributions or {})
        )
    reasons += _input_changes(old.get("inputs") or {}, new.get("inputs") or {})
    if old.get("ignore") != new.get("ignore"):
        reasons.append("ignored globs changed")
    known = {"schema", "millrun", "cells", "kernel", "parameters", "record", "options"}
    known |= {"environment", "inputs", "ignore"}
    if not reasons and any(old.get(k) != new.get(k) for k in set(old) | set(new) - known):
        reasons.append("cache key changed")
    return reasons or ["cache key changed"]


def _cell_changes(old: Sequence[str], new: Sequence[str]) -> list[str]:
    if list(old) == list(new):
        return []
    if len(old) != len(new):
        return [f"code cells added or removed ({len(old)} -> {len(new)})"]
    changed = [str(i + 1) for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    if len(changed) == 1:
        return [f"code cell {changed[0]} changed"]
    return [f"code cells {', '.join(changed)} changed"]


def _kernel_words(kernel: Mapping[str, Any]) -> str:
    name = kernel.get("name") or "?"
    return f"{name}, {kernel['language']}" if kernel.get("language") else str(name)


def _mapping_changes(what: str, old: Any, new: Any) -> list[str]:
    old, new = dict(old or {}), dict(new or {})
    if old == new:
        return []
    names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return [f"{what}s changed ({', '.join(names)})"]


def _environment_words(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_distributions: Mapping[str, str],
    new_distributions: Mapping[str, str],
) -> str:
    if old.get("executable") != new.get("executable") or old.get("python") != new.get("python"):
        return (
            f"environment changed (interpreter {old.get('executable', '?')} "
            f"{old.get('python', '')} -> {new.get('executable', '?')} {new.get('python', '')})"
        ).replace(" )", ")")
    if old.get("distributions") != new.get("distributions") and (
        old_distributions or new_distributions
    ):
        changes = []
        for name in sorted(set(old_distributions) | set(new_distributions)):
            a, b = old_distributions.get(name), new_distributions.get(name)
            if a == b:
                continue
            if a is None:
                changes.append(f"{name} {b} added")
            elif b is None:
                changes.append(f"{name} {a} removed")
            else:
                changes.append(f"{name} {a} -> {b}")
        if changes:
            more = f", {len(changes) - _NAMED} more" if len(changes) > _NAMED else ""
            return f"environment changed ({', '.join(changes[:_NAMED])}{more})"
    return "environment changed"


def _input_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    reasons = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            reasons.append(f"input {name} added")
        elif name not in new:
            reasons.append(f"input {name} removed")
        elif old[name] != new[name]:
            reasons.append(f"input {name} changed{too_large(old[name])}")
    return reasons


def stamp(output: Path, key: CacheKey, reads: Mapping[str, Any] | None = None) -> None:
    """Record ``key`` in a passing run's output, with the digest of what the run wrote.

    ``reads``: the run's ``reads`` part (:func:`pytest_millrun.cache.reads.reads_part`),
    added to the key's parts.
    """
    parts = {**key.parts, "reads": dict(reads)} if reads is not None else dict(key.parts)
    full = dataclasses.replace(key, parts=parts)
    _write_entry(
        output,
        lambda nb: {
            "key": full.digest,
            "parts": parts,
            "distributions": dict(key.distributions),
            "output": output_digest(nb),
        },
    )


def stamp_unusable(output: Path, reasons: Sequence[str]) -> None:
    """Record in a passing run's output why it keeps no key, for the next run's ``-v``."""
    _write_entry(output, lambda nb: {UNUSABLE: list(reasons)})


def _write_entry(output: Path, entry: Callable[[Any], dict[str, Any]]) -> None:
    try:
        with output.open(encoding="utf-8") as handle:
            nb = json.load(handle)
    except (OSError, ValueError):
        return  # nothing to vouch for: the next run finds no entry and runs
    marker = nb.setdefault("metadata", {}).setdefault(OUTPUT_MARKER, {})
    marker.pop(CACHE_ENTRY, None)
    marker[CACHE_ENTRY] = entry(nb)
    replace_json(output, nb)


def unstamp(output: Path) -> None:
    """Remove the entry of an earlier pass from an output a failed run did not replace."""
    try:
        with output.open(encoding="utf-8") as handle:
            nb = json.load(handle)
    except (OSError, ValueError):
        return
    marker = (nb.get("metadata") or {}).get(OUTPUT_MARKER)
    if isinstance(marker, dict) and marker.pop(CACHE_ENTRY, None) is not None:
        replace_json(output, nb)


def replace_json(output: Path, nb: Any) -> None:
    """Write the notebook as nbformat does (indent 1, sorted keys), by a rename."""
    text = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    fd, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        with contextlib.suppress(OSError):
            os.chmod(temporary, output.stat().st_mode & 0o777)
        os.replace(temporary, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
