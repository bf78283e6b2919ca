"""The plugin's options: their table, and their resolution into :class:`Settings`.

Why a module of its own: which ``--millrun-*`` options exist, their ``millrun_*``
ini twins and help texts, and how command line, ini and defaults combine are
plain data and one pure-ish function, separate from the hooks in
:mod:`pytest_millrun.plugin.hooks` that use them.  The hooks stay there (this module
registers none): ``pytest_addoption`` walks :data:`OPTIONS` and
``pytest_configure`` calls :func:`resolve_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_millrun.cache.verdicts import CacheSettings
    from pytest_millrun.core.data import KernelStart, OptionNames
    from pytest_millrun.core.params import Variation
    from pytest_millrun.core.suite import Suite
    from pytest_millrun.core.values import RecordSpec


@dataclass(frozen=True)
class Settings:
    """The plugin's options, resolved once: command line, then ini, then default."""

    enabled: bool
    params_file: Path | None
    variations: list[Variation]
    output_dir: Path
    prepend: tuple[str, ...]
    append: tuple[str, ...]
    kernel: str | None
    timeout: float | None
    notebook_timeout: float | None
    strict_params: bool
    kernel_start: KernelStart = "auto"
    preload: tuple[str, ...] = ()
    #: The params file read as a suite (seed forms too); None without a params file.
    suite: Suite | None = None
    clean_output: bool = False
    #: ``--millrun-record``'s names and ``GLOB:name`` entries; None without the option
    record: RecordSpec | None = None
    results: Path | None = None
    report: Path | None = None
    #: Globs (relative to the rootdir) of text files that are notebooks without a jupytext header.
    text_notebooks: tuple[str, ...] = ()
    #: With --millrun-cache (or --millrun-force); None without.
    cache: CacheSettings | None = None


@dataclass(frozen=True)
class Option:
    name: str  # the part after --millrun-, and after millrun_ in the ini key
    help: str
    flag: bool = False
    metavar: str | None = None

    @property
    def cli(self) -> str:
        return f"--millrun-{self.name}" if self.name else "--millrun"

    @property
    def ini(self) -> str:
        return f"millrun_{self.name.replace('-', '_')}" if self.name else "millrun"

    @property
    def dest(self) -> str:
        return self.ini


OPTIONS = (
    Option("", "Collect *.ipynb notebooks and run each once with its own defaults", flag=True),
    Option(
        "params",
        "JSON or YAML file of parameter variations (a list of dicts, a dict of equal-length "
        "lists, or a suite with per-notebook variations); implies --millrun",
        metavar="FILE",
    ),
    Option(
        "output-dir",
        "Folder for the executed notebooks, mirroring the notebooks' folders "
        "(default: .millrun under the rootdir)",
        metavar="DIR",
    ),
    Option(
        "prepend",
        "Comma-separated components put before the notebook stem in ids and output names: "
        "a parameter name gives its value, anything else is literal",
        metavar="A,B",
    ),
    Option("append", "Comma-separated components put after the notebook stem", metavar="C,D"),
    Option(
        "kernel", "Kernel to run every notebook with (default: each notebook's own)", metavar="NAME"
    ),
    Option("timeout", "Per-cell time limit in seconds (default: none)", metavar="SECONDS"),
    Option(
        "notebook-timeout",
        "Whole-notebook time limit in seconds; the partial output is kept (default: none)",
        metavar="SECONDS",
    ),
    Option(
        "kernel-start",
        "How kernels start: fork (from a warm template, the default where the kernelspec "
        "runs ipykernel on this interpreter), spawn (as papermill does) or auto",
        metavar="MODE",
    ),
    Option(
        "preload",
        "Comma-separated modules the fork template imports once, so each kernel has them "
        "at no cost (e.g. numpy,pandas)",
        metavar="MODULES",
    ),
    Option(
        "clean-output",
        "Before the run, remove outputs of the notebooks under test that earlier runs "
        "wrote and this run does not (only files carrying millrun's output marker)",
        flag=True,
    ),
    Option(
        "record",
        "Comma-separated variables read after the last cell of every notebook and recorded "
        "with its scrapbook scraps (a name not defined then fails that variation); GLOB:NAME "
        "records NAME only in the notebooks GLOB matches, and a suite's record key adds more",
        metavar="NAMES",
    ),
    Option(
        "results",
        "Write a table of every variation (status, parameters, recorded values) to FILE; "
        ".csv, .json or .jsonl",
        metavar="FILE",
    ),
    Option(
        "report",
        "Write a self-contained HTML report of every variation (status grid, table, "
        "failures, charts) to FILE",
        metavar="FILE",
    ),
    Option(
        "text-notebooks",
        "Comma-separated globs (relative to the rootdir) of text files to run as jupytext "
        "notebooks even without a jupytext header (needs pytest-millrun[jupytext])",
        metavar="GLOB,GLOB",
    ),
    Option(
        "cache",
        "Run only the variations whose last passing output no longer matches: its code cells, "
        "parameters, kernel, options, environment or --millrun-cache-inputs files changed "
        "(the others pass, read back from their outputs)",
        flag=True,
    ),
    Option(
        "force",
        "With --millrun-cache: run every selected variation anyway and record fresh keys",
        flag=True,
    ),
    Option(
        "cache-inputs",
        "Comma-separated globs, relative to the rootdir, of the data files the notebooks read: "
        "part of the cache key, by content",
        metavar="GLOBS",
    ),
    Option(
        "strict-params",
        "Make a variation key that the notebook's parameters cell does not declare "
        "a collection error instead of a warning",
        flag=True,
    ),
    # the snapshot checks' options: resolved by pytest_millrun.plugin.snapshot_glue.configure
    Option(
        "snapshots",
        "Compare each passing variation's recorded values with the snapshot stored for it "
        "in DIR (one JSON file per notebook)",
        metavar="DIR",
    ),
    Option(
        "snapshot-update",
        "Write missing snapshots and rewrite changed ones instead of failing",
        flag=True,
    ),
    Option(
        "snapshot-strict",
        "Fail the run when a snapshot entry has no variation left (a variation or notebook gone)",
        flag=True,
    ),
    Option(
        "snapshot-figures",
        "Compare each passing variation's figures (image outputs) with baselines stored beside "
        "its snapshot too",
        flag=True,
    ),
    # the default is pytest_millrun.snapshots.figures' DEFAULT_FIGURE_TOLERANCE
    Option(
        "figure-tolerance",
        "RMS difference (0-255) a figure may have from its baseline (default: 2)",
        metavar="RMS",
    ),
    # the defaults are pytest_millrun.snapshots.store' (a unit test keeps them equal)
    Option("rtol", "Relative tolerance of snapshot numbers (default: 1e-09)", metavar="RTOL"),
    Option("atol", "Absolute tolerance of snapshot numbers (default: 0)", metavar="ATOL"),
)


def option_names() -> OptionNames:
    """The flags a failure's advice names, as this plugin spells them."""
    from pytest_millrun.core.data import OptionNames

    cli = {option.name: option.cli for option in OPTIONS}
    return OptionNames(
        timeout=cli["timeout"],
        notebook_timeout=cli["notebook-timeout"],
        kernel=cli["kernel"],
        output_dir=cli["output-dir"],
    )


def resolve_settings(config: pytest.Config) -> Settings:
    """Command line over ini over default; paths relative to where each was given."""
    # the modules below only where an option is given: a plain pytest run imports none
    cli_base = config.invocation_params.dir
    ini_base = config.inipath.parent if config.inipath else config.rootpath

    def raw(name: str) -> tuple[Any, Path]:
        option = next(o for o in OPTIONS if o.name == name)
        value = config.getoption(option.dest)
        if value is not None:
            return value, cli_base
        return config.getini(option.ini), ini_base

    def path(name: str) -> Path | None:
        value, base = raw(name)
        return (base / value).resolve() if value else None

    def number(name: str) -> float | None:
        value, _ = raw(name)
        if value in (None, ""):
            return None
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if seconds <= 0:
            raise pytest.UsageError(
                f"--millrun-{name} / millrun_{name.replace('-', '_')} must be a positive number "
                f"of seconds, not {value!r}."
            )
        return seconds

    def components(name: str) -> tuple[str, ...]:
        value, _ = raw(name)
        return tuple(part.strip() for part in (value or "").split(",") if part.strip())

    def kernel_start() -> KernelStart:
        value = raw("kernel-start")[0] or "auto"
        if value == "auto":
            return "auto"
        from pytest_millrun.core.data import KERNEL_START_MODES

        if value not in KERNEL_START_MODES:
            raise pytest.UsageError(
                f"--millrun-kernel-start / millrun_kernel_start must be one of "
                f"{', '.join(KERNEL_START_MODES)}, not {value!r}."
            )
        mode: KernelStart = value
        return mode

    def results() -> Path | None:
        target = path("results")
        if target is None:
            return None
        from pytest_millrun.results import ResultsPathError, check_results_path

        try:
            return check_results_path(target)
        except ResultsPathError as exc:
            raise pytest.UsageError(str(exc)) from None

    def report() -> Path | None:
        target = path("report")
        if target is None:
            return None
        from pytest_millrun.report.page import check_report_path
        from pytest_millrun.results import ResultsPathError

        try:
            return check_report_path(target)
        except ResultsPathError as exc:
            raise pytest.UsageError(str(exc)) from None

    def record() -> RecordSpec | None:
        value = raw("record")[0]
        if not value:
            return None
        from pytest_millrun.core.values import RecordNameError, parse_record

        try:
            return parse_record(value)
        except RecordNameError as exc:
            raise pytest.UsageError(str(exc)) from None

    def cache() -> CacheSettings | None:
        force = bool(raw("force")[0])
        if not (raw("cache")[0] or force):
            return None
        from pytest_millrun.cache.verdicts import CacheSettings

        return CacheSettings(
            enabled=True,
            force=force,
            inputs=components("cache-inputs"),
            base=config.rootpath,
            force_option="--millrun-force",
        )

    params_file = path("params")
    enabled = bool(raw("")[0]) or params_file is not None
    variations: list[Variation] = [{}]
    suite = None
    if params_file is not None:
        from pytest_millrun.core.params import ParamsError
        from pytest_millrun.core.suite_file import load_suite

        try:
            suite = load_suite(params_file)
        except ParamsError as exc:
            raise pytest.UsageError(str(exc)) from None
        variations = list(suite.top.variations)
    output_dir = path("output-dir") or config.rootpath / ".millrun"
    if enabled:
        from pytest_millrun.core.naming import OutputPathError, check_output_folder

        try:
            check_output_folder(output_dir, "--millrun-output-dir")
        except OutputPathError as exc:
            raise pytest.UsageError(str(exc)) from None
    return Settings(
        enabled=enabled,
        params_file=params_file,
        variations=variations,
        output_dir=output_dir,
        prepend=components("prepend"),
        append=components("append"),
        kernel=raw("kernel")[0] or None,
        timeout=number("timeout"),
        notebook_timeout=number("notebook-timeout"),
        strict_params=bool(raw("strict-params")[0]),
        kernel_start=kernel_start(),
        preload=components("preload"),
        suite=suite,
        clean_output=bool(raw("clean-output")[0]),
        record=record(),
        results=results(),
        report=report(),
        text_notebooks=components("text-notebooks"),
        cache=cache(),
    )
