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
:func:`unstamp` after a failure that left an earlier output in place.  An output on
object storage is uploaded with its entry, and the entry is also kept in a small
sidecar object beside it (:func:`publish`), which is all a warm run reads of it
(:mod:`.sidecars` says why).
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

from pytest_millrun.cache import sidecars
from pytest_millrun.cache.key_changes import key_changes
from pytest_millrun.cache.keys import (
    DEFAULT_HASH_LIMIT_MIB,
    CacheKey,
    digest,
    input_digests,
    job_key,
    resolve_inputs,
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
from pytest_millrun.core.storage import StorageOptions
from pytest_millrun.coverage.stored_lines import COVERAGE_ENTRY, unusable, write_data_file

if TYPE_CHECKING:
    from pytest_millrun.core.data import ExecutionResult
    from pytest_millrun.coverage.kernel_settings import KernelCoverage

#: The entry of ``metadata.millrun`` that holds a passing run's key.
CACHE_ENTRY = "cache"
#: The entry's field that says why a passing run kept no key (what it read changed meanwhile).
UNUSABLE = "unusable"


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
    #: With outputs on object storage: fsspec's keywords for its filesystem (credentials).
    storage_options: StorageOptions = field(default_factory=dict, repr=False)


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
    url: str | None = None,
) -> tuple[Verdict, CacheKey | None]:
    """One job's verdict and the key its pass will record: the one check every front end makes.

    The CLI and the API call it for every job before dispatch, the plugin where each
    item runs (an xdist worker too).  A notebook that cannot be keyed runs, saying why;
    the run itself reports an unreadable notebook.  ``url``: where ``output`` is uploaded
    (object storage), which is checked instead.
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
    return check_output(output, key, settings, notebook=notebook, url=url), key


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
    output: Path,
    key: CacheKey,
    settings: CacheSettings,
    *,
    notebook: Path | None = None,
    url: str | None = None,
) -> Verdict:
    """Whether ``output`` is a passing run's output for exactly this key, and if not, why.

    With ``url`` (an output on object storage) its sidecar is read instead of the whole
    output (:mod:`.sidecars`), and the object's version stands for the output's digest.
    The key made before the run holds no ``reads``: the stored key's are digested
    again (the same paths, as they are now, under the key's read settings).
    """
    started = time.perf_counter()

    def miss(*reasons: str) -> Verdict:
        return Verdict(False, reasons, seconds=time.perf_counter() - started)

    if settings.force:
        return miss(f"forced ({settings.force_option})")
    stored = _local_entry(output) if url is None else _remote_entry(url, settings.storage_options)
    if isinstance(stored, str):
        return miss(stored)
    entry = stored.entry
    if isinstance(entry, dict) and entry.get(UNUSABLE):
        return miss(*(f"its last run kept no key: {reason}" for reason in entry[UNUSABLE]))
    if not isinstance(entry, dict) or not isinstance(entry.get("parts"), dict):
        return miss("no passing output")
    if (changed := stored.changed()) is not None:
        return miss(changed)
    parts = {name: part for name, part in entry["parts"].items() if name != "reads"}
    reasons = key_changes(parts, key.parts, entry.get("distributions") or {}, key.distributions)
    read = entry["parts"].get("reads")
    if not reasons and isinstance(read, dict):
        folder = (notebook or output).parent.resolve()
        found = ReadSettings.from_json(key.reads or {})
        reasons = read_changes(read, current_reads(read, folder, found))
    if reasons:
        return miss(*reasons)
    if settings.coverage is not None and (why := unusable(stored.lines, settings.coverage)):
        return miss(why)
    values, notes = stored.recorded()
    return Verdict(
        True, (), values, notes, time.perf_counter() - started,
        coverage_lines=stored.lines if settings.coverage is not None else None,
        read_set=tuple(describe(read)) if isinstance(read, dict) else (),
    )  # fmt: skip


@dataclass(frozen=True)
class _Stored:
    """An output's cache entry as found, and what a hit needs besides, read when needed."""

    entry: Any
    #: Why the output is not what its entry was stamped on (changed since), or None.
    changed: Callable[[], str | None]
    recorded: Callable[[], tuple[dict[str, Any], dict[str, str]]]
    lines: Any = None


def _local_entry(output: Path) -> _Stored | str:
    """A local output's entry, from its own metadata; or why there is none to check."""
    from pytest_millrun.core.values import recorded_from_notebook

    try:
        with output.open(encoding="utf-8") as handle:
            nb = json.load(handle)
    except FileNotFoundError:
        return "no output"
    except (OSError, ValueError):
        return "output unreadable"
    metadata = nb.get("metadata") if isinstance(nb, dict) else None
    marker = metadata.get(OUTPUT_MARKER) if isinstance(metadata, dict) else None
    if not isinstance(marker, dict):
        return "output not written by millrun"
    entry: Any = marker.get(CACHE_ENTRY)

    def changed() -> str | None:
        same = entry.get("output") == output_digest(nb)
        return None if same else "output changed since its run"

    return _Stored(entry, changed, lambda: recorded_from_notebook(nb), marker.get(COVERAGE_ENTRY))


def _remote_entry(url: str, storage_options: StorageOptions) -> _Stored | str:
    """An output's entry on object storage, from its sidecar; or why there is none to check.

    The sidecar (fetched with the run's others when :func:`sidecars.prefetch` ran) and the
    object's version from its folder's listing (once a run): never the output itself.
    """
    from pytest_millrun.core.values import decode

    try:
        entry = sidecars.read_sidecar(url, storage_options)
        if entry is None:
            there = sidecars.current_version(url, storage_options) is not None
            return "no passing output" if there else "no output"
    except OSError as exc:
        return f"output unreadable ({exc})"

    def changed() -> str | None:
        try:
            now = sidecars.current_version(url, storage_options)
        except OSError as exc:
            return f"output unreadable ({exc})"
        if now is None:
            return "no output"
        same = now and now == entry.get(sidecars.VERSION)
        return None if same else "output changed since its run"

    def recorded() -> tuple[dict[str, Any], dict[str, str]]:
        values, notes = entry.get("recorded"), entry.get("recorded_notes")
        return decode(values) if isinstance(values, dict) else {}, dict(notes or {})

    return _Stored(entry, changed, recorded, entry.get(COVERAGE_ENTRY))


def publish(output: Path, url: str, storage_options: StorageOptions) -> None:
    """After ``output`` (a local file, stamped or not) was uploaded to ``url``: keep its entry
    in the sidecar beside it for the next run's check, or remove an earlier one.

    Raises OSError when the storage refuses (an earlier sidecar then no longer matches the
    output's version, so the next run runs it).
    """
    from pytest_millrun.core.storage import version
    from pytest_millrun.core.values import encode, recorded_from_notebook

    try:
        with output.open(encoding="utf-8") as handle:
            nb = json.load(handle)
        marker = nb["metadata"][OUTPUT_MARKER]
        entry = dict(marker[CACHE_ENTRY])
    except (OSError, ValueError, KeyError, TypeError):
        sidecars.remove_sidecar(url, storage_options)  # no key: a failed or cut-short run
        return
    if not entry.get(UNUSABLE):
        values, notes = recorded_from_notebook(nb)
        entry.update(recorded=encode(values), recorded_notes=notes)
        if marker.get(COVERAGE_ENTRY) is not None:
            entry[COVERAGE_ENTRY] = marker[COVERAGE_ENTRY]
    entry[sidecars.VERSION] = version(url, storage_options)  # as a listing will show it
    sidecars.write_sidecar(url, entry, storage_options)


def cached_result(
    notebook: Path,
    variation_id: str,
    parameters: Mapping[str, Any],
    output: Path | str,
    verdict: Verdict,
    coverage: KernelCoverage | None = None,
) -> ExecutionResult:
    """A passing result read back from a hit's output, without running anything.

    ``output``: the output's path, or the URL it has on object storage (as results name it).

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
