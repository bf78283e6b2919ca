"""Runs in the host: how kernels measure, taken from the ``Coverage`` that measures the front end.

Why one frozen value: the front end decides once whether kernels are measured
(pytest-cov's controller in the plugin, the started ``Coverage`` of ``coverage run``
for the command and the API) and the value then travels with each job, through a
process pool too, into the kernel (:mod:`pytest_millrun.inkernel.coverage_start`).
It holds coverage's own serialised configuration, so a kernel measures with exactly
the host's source, include, omit, branch, plugins and static context, whatever file
they came from; and a digest of the settings that decide which lines are recorded,
which a cached variation's stored lines must match to count (see
:mod:`pytest_millrun.coverage.stored_lines`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

#: Variables that make coverage start by itself in a new interpreter (coverage's ``.pth``
#: hook, set by ``[run] patch = subprocess`` or by hand; pytest-cov 6's ``COV_CORE_*``).
#: Kept from kernels and fork templates: a kernel is measured by millrun, once (a kernel
#: ended by SIGKILL would never save what such a start measured), and a template not at all.
PROCESS_START_VARIABLES = frozenset(
    {
        "COVERAGE_PROCESS_START",
        "COVERAGE_PROCESS_CONFIG",
        "COV_CORE_SOURCE",
        "COV_CORE_CONFIG",
        "COV_CORE_DATAFILE",
    }
)

#: What a kernel's recorded lines depend on, besides the code: a stored record made with
#: other values of these does not stand for a run now.
_MEASURING_OPTIONS = (
    "branch",
    "cover_pylib",
    "source",
    "source_pkgs",
    "source_dirs",
    "run_include",
    "run_omit",
    "plugins",
    "context",
)
_DIGEST_SCHEMA = 1


@dataclass(frozen=True)
class KernelCoverage:
    """How the kernels of a run measure coverage, and where their data goes."""

    #: ``CoverageConfig.serialize()`` of the host's configuration, paths made absolute.
    config: str
    #: The folder the host's relative settings mean (the kernel starts coverage there).
    topdir: str
    #: The host's data file: kernels write ``<data_file>.<suffix>`` files beside it.
    data_file: str
    #: Whether coverage stores file names relative to ``topdir`` (``[run] relative_files``).
    relative_files: bool
    #: A digest of the settings that decide which lines are recorded (see module doc).
    digest: str
    #: The dynamic context of the lines (``--cov-context=test``: ``<nodeid>|run``), if any.
    context: str | None = None

    def in_context(self, context: str | None) -> KernelCoverage:
        """The same settings for lines recorded under ``context`` (one test item's)."""
        return dataclasses.replace(self, context=context)

    def moved_under(self, folder: str) -> KernelCoverage:
        """The same settings for a kernel whose project lies below ``folder`` at the host's
        paths (a Dask task shipped to a worker without the host's files).

        The absolute paths (source folders, absolute include and omit patterns, the data
        file, the project folder) move below ``folder``; the digest stays, being relative
        to the project folder, so the lines come back as the host's.  Runs where coverage
        is installed: the worker, which measures.
        """
        from coverage.config import CoverageConfig

        def move(entries: Any) -> Any:
            if entries is None:
                return None
            return [folder + entry if os.path.isabs(entry) else entry for entry in entries]

        config = CoverageConfig.deserialize(self.config)
        config.data_file = folder + self.data_file
        config.source = move(config.source)
        config.source_dirs = move(config.source_dirs)
        config.run_include = move(config.run_include)
        config.run_omit = move(config.run_omit)
        return dataclasses.replace(
            self, config=config.serialize(), topdir=folder + self.topdir,
            data_file=folder + self.data_file,
        )  # fmt: skip


def measuring_coverage() -> Any | None:
    """The started ``Coverage`` measuring this process (``coverage run``), or None.

    Never imports coverage: a process that has not imported it is not measured.
    """
    module = sys.modules.get("coverage")
    current = getattr(getattr(module, "Coverage", None), "current", None)
    return current() if callable(current) else None


class KernelCoverageError(Exception):
    """The host's coverage cannot be handed to kernels (the message says why and the fix)."""


def kernel_coverage(cov: Any, topdir: str | None = None) -> KernelCoverage:
    """The kernels' settings from the host's ``Coverage`` (started in ``topdir``, default cwd).

    Paths are made absolute against ``topdir`` here rather than by ``serialize``
    (which uses the current folder): pytest-cov's controller knows the folder it
    started in.  Raises :class:`KernelCoverageError` for a coverage older than 7.10.3,
    which cannot serialise its configuration.
    """
    if not hasattr(cov.config, "serialize"):
        version = getattr(sys.modules.get("coverage"), "__version__", "?")
        raise KernelCoverageError(
            f"coverage {version} cannot hand its settings to notebook kernels, so the lines "
            f"they run are not measured; kernels are measured with coverage 7.10.3 or later "
            f"(pip install -U coverage pytest-cov)."
        )
    base = os.path.abspath(topdir or os.getcwd())
    config = copy.deepcopy(cov.config)
    config.data_file = os.path.join(base, os.path.expanduser(str(config.data_file)))
    if config.source is not None:
        config.source = [_absolute_if_exists(base, entry) for entry in config.source]
    config.source_dirs = [os.path.join(base, entry) for entry in config.source_dirs]
    return KernelCoverage(
        config=config.serialize(),
        topdir=base,
        data_file=config.data_file,
        relative_files=bool(config.relative_files),
        digest=settings_digest(config, base),
    )


def _absolute_if_exists(base: str, entry: str) -> str:
    """A ``source`` entry is a folder when one exists by that name, else a package name."""
    path = os.path.join(base, os.path.expanduser(entry))
    return os.path.abspath(path) if os.path.exists(path) else entry


def settings_digest(config: Any, topdir: str) -> str:
    """A digest of ``config``'s measuring options, with paths under ``topdir`` made relative.

    Relative, so that the same project measured from another checkout folder gives
    the same digest.
    """

    def portable(value: Any) -> Any:
        if isinstance(value, list):
            return [portable(item) for item in value]
        if isinstance(value, str) and os.path.isabs(value):
            relative = os.path.relpath(value, topdir)
            return value if relative.startswith(os.pardir) else relative.replace(os.sep, "/")
        return value

    options = {name: portable(getattr(config, name, None)) for name in _MEASURING_OPTIONS}
    text = json.dumps({"schema": _DIGEST_SCHEMA, **options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def without_process_start(env: dict[str, str]) -> dict[str, str]:
    """``env`` without :data:`PROCESS_START_VARIABLES` (a kernel's or a template's)."""
    return {name: value for name, value in env.items() if name not in PROCESS_START_VARIABLES}


def measured_modules(settings: KernelCoverage) -> frozenset[str]:
    """Top-level module names the kernels' coverage measures by name (``--cov=pkg``,
    ``source_pkgs``) or by folder (the folder's own name and the modules in it).

    A fork template must not preload them: their import-time lines would run before
    coverage starts in the kernel, and be reported as missed.
    """
    import base64

    try:  # coverage's serialised config: base64 of a JSON object
        config = json.loads(base64.b64decode(settings.config))
    except ValueError:
        return frozenset()
    if not isinstance(config, dict):
        return frozenset()
    names: set[str] = set()
    keys = ("source", "source_pkgs", "source_dirs")
    for entry in [str(entry) for key in keys for entry in config.get(key) or ()]:
        if os.path.isdir(entry):
            names.add(os.path.basename(os.path.normpath(entry)))
            with contextlib.suppress(OSError):
                names.update(name.removesuffix(".py") for name in os.listdir(entry))
        else:
            names.add(entry.partition(".")[0])
    return frozenset(name for name in names if name.isidentifier())
