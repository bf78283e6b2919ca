"""Every option of a run, declared once for the pytest plugin, the ``millrun`` command and the API.

Why one table: an option used to be declared three or four times (click decorators,
the plugin's ``addoption``/``addini`` list, ``execute_run``'s signature, the snapshot
glue's own parsing), and adding one took ten edits.  Each :class:`Option` row says what
the option means and how each front end spells it; ``pytest_addoption`` and the
click command are generated from the rows, the docs' reference reads them, and a
unit test holds ``execute_run``'s explicit signature equal to them.  Resolving the
values into a :class:`~pytest_millrun.config.run_config.RunConfig` is in
:mod:`pytest_millrun.config.run_config`.

Plain data only (parsing the values is :mod:`pytest_millrun.config.option_values`): the
plugin imports this module in every pytest run (``pytest_addoption`` needs it), so it
imports neither pytest nor click.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

#: How a value is read from text (the pytest command line or ini file, the CLI):
#: ``flag`` a switch; ``text`` as given; ``file``/``folder``/``path`` a path (``path``:
#: either; the CLI's arguments must exist); ``seconds`` a number > 0; ``tolerance`` a
#: number >= 0; ``list`` comma-separated; ``choice`` one of ``choices``; ``count`` an
#: integer >= 1; ``mib`` an integer >= 0 (a size in MiB); ``level`` how many times a
#: switch is given (``-vv``: 2); ``object`` a Python value only the API takes (an
#: executor, a callback).
Kind = Literal[
    "flag", "text", "file", "folder", "path", "seconds", "tolerance", "list", "choice", "count",
    "mib", "level", "object",
]  # fmt: skip
FrontEnd = Literal["pytest", "cli", "api"]


class OptionError(ValueError):
    """An option's value a front end cannot use; the message says which and how to fix it.

    Each front end shows it its own way: pytest as a usage error, the ``millrun``
    command as ``Error: ...`` with exit status 2, the API as this ``ValueError``.
    """


@dataclass(frozen=True)
class Option:
    """One option: its meaning, and its name in each front end that has it (None: not there)."""

    #: The :class:`RunConfig` field the option resolves into.
    name: str
    kind: Kind
    #: The help text: pytest's (a capital, no final period) and the CLI's unless ``cli_help``
    #: (an option only the CLI has keeps the CLI's form, with its period).
    help: str
    #: The value when not given, as ``execute_run`` declares it.
    default: Any = None
    #: The part after ``--millrun-`` (and ``millrun_`` in the ini key); ``""`` is ``--millrun``.
    pytest: str | None = None
    metavar: str | None = None
    #: The click declarations: ``("--timeout",)``, ``("-v", "--verbose")``,
    #: ``("--recursive/--no-recursive",)``, or ``("PARAMS",)`` for a positional argument.
    cli: tuple[str, ...] = ()
    cli_help: str | None = None
    #: The CLI's metavar when it differs from pytest's (None: click's own, e.g. FLOAT).
    cli_metavar: str | None = None
    #: The CLI's default when it differs (shown in ``--help``), e.g. the CPU count.
    cli_default: Any = None
    #: The keyword of ``execute_run``.
    api: str | None = None
    #: One of ``execute_run``'s first parameters, which stay positional.
    api_positional: bool = False
    choices: tuple[str, ...] = ()

    @property
    def pytest_flag(self) -> str:
        assert self.pytest is not None
        return f"--millrun-{self.pytest}" if self.pytest else "--millrun"

    @property
    def ini(self) -> str:
        """The ini key, which is also the ``dest`` of the command-line option."""
        assert self.pytest is not None
        return f"millrun_{self.pytest.replace('-', '_')}" if self.pytest else "millrun"

    @property
    def cli_flag(self) -> str:
        """The CLI's long flag as messages name it (``--recursive`` of ``--recursive/--no-...``)."""
        return self.cli[-1].split("/")[0]

    @property
    def cli_argument(self) -> bool:
        return bool(self.cli) and not self.cli[0].startswith("-")

    def spelled(self, front_end: FrontEnd) -> str:
        """How ``front_end``'s messages name the option."""
        if front_end == "pytest":
            return self.pytest_flag
        if front_end == "cli":
            return self.cli_flag
        assert self.api is not None
        return self.api


# --- the table ---------------------------------------------------------------------------

OPTIONS: tuple[Option, ...] = (
    # what runs
    Option(
        "notebook_dir_or_file", "path", "The notebook, or the folder of notebooks, to run",
        cli=("NOTEBOOK_DIR_OR_FILE",), api="notebook_dir_or_file", api_positional=True,
    ),
    Option(
        "enabled", "flag", "Collect *.ipynb notebooks and run each once with its own defaults",
        default=False, pytest="",
    ),
    Option(
        "params", "file",
        "JSON or YAML file of parameter variations (a list of dicts, a dict of equal-length "
        "lists, or a suite with per-notebook variations); implies --millrun",
        pytest="params", metavar="FILE", cli=("PARAMS",), api="bulk_params", api_positional=True,
    ),
    # where the outputs go and how they are named
    Option(
        "output_dir", "folder",
        "Folder for the executed notebooks, mirroring the notebooks' folders "
        "(default: .millrun under the rootdir)",
        pytest="output-dir", metavar="DIR", cli=("--output-dir",),
        cli_help="Folder for the executed notebooks.  [default: beside each notebook]",
        api="output_dir", api_positional=True,
    ),
    Option(
        "storage_options", "object",
        "fsspec's keywords for the filesystem of an output_dir given as a URL (key, secret, "
        "endpoint_url, ...), never shown; without it, the filesystem's own environment and "
        "config", api="storage_options",
    ),
    Option(
        "prepend", "list",
        "Comma-separated components put before the notebook stem in ids and output names: "
        "a parameter name gives its value, anything else is literal",
        pytest="prepend", metavar="A,B", cli=("--prepend",),
        cli_help="Comma-separated components before the stem.", cli_metavar="A,B",
        api="output_prepend_components", api_positional=True,
    ),
    Option(
        "append", "list", "Comma-separated components put after the notebook stem",
        pytest="append", metavar="C,D", cli=("--append",),
        cli_help="Comma-separated components after the stem.", cli_metavar="C,D",
        api="output_append_components", api_positional=True,
    ),
    # which files are notebooks
    Option(
        "recursive", "flag",
        "Also run notebooks in subfolders (their folders are mirrored in --output-dir).",
        default=False, cli=("--recursive/--no-recursive",), api="recursive", api_positional=True,
    ),
    Option(
        "exclude", "text", "Skip notebooks matching this glob.",
        cli=("--exclude-glob-pattern",), cli_metavar="P",
        api="exclude_glob_pattern", api_positional=True,
    ),
    Option(
        "include", "text",
        "Run the files matching this glob instead.  [default: *.ipynb and text notebooks]",
        cli=("--include-glob-pattern",), cli_metavar="P",
        api="include_glob_pattern", api_positional=True,
    ),
    Option(
        "text_notebooks", "list",
        "Comma-separated globs (relative to the rootdir) of text files to run as jupytext "
        "notebooks even without a jupytext header (needs pytest-millrun[jupytext])",
        default=(), pytest="text-notebooks", metavar="GLOB,GLOB", cli=("--text-notebooks",),
        cli_help="Comma-separated globs (relative to the notebook folder) of text files to run "
        "as jupytext notebooks even without a jupytext header (needs pytest-millrun[jupytext]).",
        cli_metavar="GLOB,GLOB", api="text_notebooks",
    ),
    # where and how many at once
    Option(
        "use_multiprocessing", "flag", "Run the pairs in one process pool of workers processes",
        default=False, api="use_multiprocessing", api_positional=True,
    ),
    Option(
        "workers", "count",
        "Worker processes of the cluster --millrun-dask local starts (default: the CPU count)",
        pytest="dask-workers", metavar="N", cli=("--workers",),
        cli_help="Notebook runs at once, over all notebooks and variations.",
        cli_default=os.cpu_count() or 1, api="workers",
    ),
    Option(
        "executor", "object", "A concurrent.futures.Executor to run the pairs with",
        api="executor",
    ),
    Option(
        "dask", "object",
        "Run the selected items on a Dask cluster, all submitted once collection is over: a "
        "scheduler address (tcp://host:8786), or local for a cluster of --millrun-dask-workers "
        "processes on this machine (needs pytest-millrun[dask]; not with -n)",
        pytest="dask", metavar="ADDRESS|local", cli=("--dask",),
        cli_help="Run on a Dask cluster: a scheduler address (tcp://host:8786), or local for a "
        "cluster of --workers processes on this machine.  Needs pytest-millrun[dask].",
        cli_metavar="ADDRESS|local", api="dask",
    ),
    # the default is dispatch.ship_manifest's DEFAULT_SHIP_LIMIT_MIB (a unit test keeps them equal)
    Option(
        "ship_limit", "mib",
        "Size in MiB of the files a run may ship to Dask workers that do not see this "
        "machine's files: notebooks, their folders and what their last runs read (default: 200)",
        default=200, pytest="dask-ship-limit", metavar="MIB", cli=("--ship-limit",),
        cli_help="Size in MiB of the files a run may ship to Dask workers that do not see this "
        "machine's files (default: 200).",
        cli_metavar="MIB", api="ship_limit",
    ),
    Option(
        "ship_exclude", "list",
        "Comma-separated globs, relative to the rootdir, of files never shipped to Dask workers "
        "that do not see this machine's files",
        default=(), pytest="dask-ship-exclude", metavar="GLOBS", cli=("--ship-exclude",),
        cli_help="Comma-separated globs (relative to the notebook folder) of files never "
        "shipped to Dask workers that do not see this machine's files.",
        cli_metavar="GLOBS", api="ship_exclude",
    ),
    Option(
        "order", "choice",
        "Which notebook runs start first: longest-first (by the last run's durations, unknown "
        "ones first) or collection (the order they are found in)",
        default="longest-first", pytest="order", metavar="ORDER", cli=("--order",),
        cli_help="Which runs start first: longest-first (by the last run's durations) or "
        "collection.",
        api="order", choices=("longest-first", "collection"),
    ),
    # the kernels
    Option(
        "kernel_name", "text", "Kernel to run every notebook with (default: each notebook's own)",
        pytest="kernel", metavar="NAME", cli=("--kernel",),
        cli_help="Kernel for every notebook.  [default: its own]", cli_metavar="NAME",
        api="kernel_name",
    ),
    Option(
        "cell_timeout", "seconds", "Per-cell time limit in seconds (default: none)",
        pytest="timeout", metavar="SECONDS", cli=("--timeout",),
        cli_help="Per-cell time limit.  [default: none]", cli_metavar="SECONDS",
        api="execution_timeout",
    ),
    Option(
        "notebook_timeout", "seconds",
        "Whole-notebook time limit in seconds; the partial output is kept (default: none)",
        pytest="notebook-timeout", metavar="SECONDS", cli=("--notebook-timeout",),
        cli_help="Whole-notebook time limit; the partial output is kept.  [default: none]",
        cli_metavar="SECONDS", api="notebook_timeout",
    ),
    Option(
        "kernel_start", "choice",
        "How kernels start: fork (from a warm template, the default where the kernelspec "
        "runs ipykernel on this interpreter), spawn (as papermill does) or auto",
        default="auto", pytest="kernel-start", metavar="MODE", cli=("--kernel-start",),
        cli_help="fork: kernels forked from a warm template where the kernelspec runs ipykernel "
        "on this Python (auto's choice); spawn: started as papermill does.",
        api="kernel_start", choices=("auto", "fork", "spawn"),
    ),
    Option(
        "preload", "list",
        "Comma-separated modules the fork template imports once, so each kernel has them "
        "at no cost (e.g. numpy,pandas), on top of those the notebooks imported last time; "
        "none preloads nothing",
        default=(), pytest="preload", metavar="MODULES", cli=("--preload",),
        cli_help="Comma-separated modules the fork template imports once, e.g. numpy,pandas, "
        "besides those the notebooks imported last time; none: no preloads at all.",
        cli_metavar="MODULES", api="preload",
    ),
    # what a run records and writes
    Option(
        "record", "list",
        "Comma-separated variables read after the last cell of every notebook and recorded "
        "with its scrapbook scraps (a name not defined then fails that variation); GLOB:NAME "
        "records NAME only in the notebooks GLOB matches, and a suite's record key adds more",
        default=(), pytest="record", metavar="NAMES", cli=("--record",),
        cli_help="Comma-separated variables read after each notebook's last cell and recorded "
        "with its scrapbook scraps; GLOB:NAME only in the notebooks GLOB matches.",
        cli_metavar="NAMES", api="record",
    ),
    Option(
        "results", "file",
        "Write a table of every variation (status, parameters, recorded values) to FILE; "
        ".csv, .json or .jsonl",
        pytest="results", metavar="FILE", cli=("--results",),
        cli_help="Write a table of every run (status, parameters, recorded values): .csv, .json "
        "or .jsonl.",
        cli_metavar="FILE",
    ),
    # values and figures against snapshots
    Option(
        "snapshots", "folder",
        "Compare each passing variation's recorded values with the snapshot stored for it "
        "in DIR (one JSON file per notebook)",
        pytest="snapshots", metavar="DIR", cli=("--snapshots",),
        cli_help="Compare each run's recorded values with its snapshot in DIR; a difference fails.",
        cli_metavar="DIR", api="snapshots",
    ),
    Option(
        "snapshot_update", "flag",
        "Write missing snapshots and rewrite changed ones instead of failing",
        default=False, pytest="snapshot-update", cli=("--snapshot-update",),
        cli_help="Write missing and changed snapshots instead.", api="snapshot_update",
    ),
    Option(
        "snapshot_strict", "flag",
        "Fail the run when a snapshot entry has no variation left (a variation or notebook gone)",
        default=False, pytest="snapshot-strict", cli=("--snapshot-strict",),
        cli_help="Fail when a snapshot entry has no variation left (a variation or notebook gone).",
        api="snapshot_strict",
    ),
    Option(
        "snapshot_figures", "flag",
        "Compare each passing variation's figures (image outputs) with baselines stored beside "
        "its snapshot too",
        default=False, pytest="snapshot-figures", cli=("--snapshot-figures",),
        cli_help="Compare each run's figures (image outputs) with baselines beside its snapshot "
        "too.",
        api="snapshot_figures",
    ),
    # the defaults named in these help texts are pytest_millrun.snapshots' (a unit test
    # keeps them equal)
    Option(
        "figure_tolerance", "tolerance",
        "RMS difference (0-255) a figure may have from its baseline (default: 2)",
        pytest="figure-tolerance", metavar="RMS", cli=("--figure-tolerance",),
        cli_help="RMS difference (0-255) a figure may have from its baseline [default: 2].",
        cli_metavar="RMS", api="figure_tolerance",
    ),
    Option(
        "rtol", "tolerance", "Relative tolerance of snapshot numbers (default: 1e-09)",
        pytest="rtol", metavar="RTOL", cli=("--rtol",),
        cli_help="Relative tolerance of snapshot numbers [default: 1e-9].", api="rtol",
    ),
    Option(
        "atol", "tolerance", "Absolute tolerance of snapshot numbers (default: 0)",
        pytest="atol", metavar="ATOL", cli=("--atol",),
        cli_help="Absolute tolerance of snapshot numbers [default: 0].", api="atol",
    ),
    Option(
        "report", "file",
        "Write a self-contained HTML report of every variation (status grid, table, "
        "failures, charts) to FILE",
        pytest="report", metavar="FILE", cli=("--report",),
        cli_help="Write a self-contained HTML report of every run (grid, table, failures, "
        "charts).",
        cli_metavar="FILE",
    ),
    Option(
        "on_result", "object", "Called with each result as it comes", api="on_result",
    ),
    # refusals and housekeeping
    Option(
        "strict_params", "flag",
        "Make a variation key that the notebook's parameters cell does not declare "
        "a collection error instead of a warning",
        default=False, pytest="strict-params", cli=("--strict-params",),
        cli_help="Refuse parameters a notebook's parameters cell does not declare.",
        api="strict_params",
    ),
    Option(
        "clean_output", "flag",
        "Before the run, remove outputs of the notebooks under test that earlier runs "
        "wrote and this run does not (only files carrying millrun's output marker)",
        default=False, pytest="clean-output", cli=("--clean",),
        cli_help="Before the run, remove outputs of these notebooks that earlier runs wrote and "
        "this run does not (only files millrun wrote).",
        api="clean_output",
    ),
    # the cache
    Option(
        "cache", "flag",
        "Run only the variations whose last passing output no longer matches: its code cells, "
        "parameters, kernel, options, environment or --millrun-cache-inputs files changed "
        "(the others pass, read back from their outputs)",
        default=False, pytest="cache", cli=("--cache",),
        cli_help="Run only variations whose last passing output no longer matches their code "
        "cells, parameters, kernel, options, environment or --cache-inputs files; read the "
        "others back.",
        api="cache",
    ),
    Option(
        "force", "flag", "With --millrun-cache: run every selected variation anyway and record "
        "fresh keys",
        default=False, pytest="force", cli=("--force",),
        cli_help="With --cache: run everything, record fresh keys.", api="force",
    ),
    Option(
        "cache_inputs", "list",
        "Comma-separated globs, relative to the rootdir, of the data files the notebooks read: "
        "part of the cache key, by content",
        default=(), pytest="cache-inputs", metavar="GLOBS", cli=("--cache-inputs",),
        cli_help="Comma-separated globs (relative to the notebook folder) of data files the "
        "notebooks read: part of the cache key, by content.",
        cli_metavar="GLOBS", api="cache_inputs",
    ),
    Option(
        "cache_ignore", "list",
        "Comma-separated globs, relative to the rootdir, of files that are never part of the "
        "cache key though the notebooks touch them (logs, scratch files)",
        default=(), pytest="cache-ignore", metavar="GLOBS", cli=("--cache-ignore",),
        cli_help="Comma-separated globs (relative to the notebook folder) of files that are "
        "never part of the cache key though the notebooks touch them (logs, scratch files).",
        cli_metavar="GLOBS", api="cache_ignore",
    ),
    # the default is cache.keys' DEFAULT_HASH_LIMIT_MIB (a unit test keeps them equal)
    Option(
        "cache_hash_limit", "mib",
        "Size in MiB above which a file of the cache key is known by its size, mtime and inode "
        "instead of its content (default: 1024)",
        default=1024, pytest="cache-hash-limit", metavar="MIB", cli=("--cache-hash-limit",),
        cli_help="Size in MiB above which a file of the cache key is known by its size, mtime "
        "and inode instead of its content (default: 1024).",
        cli_metavar="MIB", api="cache_hash_limit",
    ),
    # the terminal
    Option(
        "log_output", "flag",
        "Show each code cell's stdout and stderr lines as they come, prefixed by the item's id",
        default=False, pytest="log-output", cli=("--log-output",),
        cli_help="Show each code cell's stdout and stderr lines as they come, prefixed by the "
        "notebook and variation.",
    ),
    Option(
        "verbose", "level",
        "Say why each variation ran (with --cache); -vv also lists what each one read.",
        default=0,
        cli=("-v", "--verbose"),
    ),
    Option(
        "no_progress", "flag", "Print one line per finished run, no bar.", default=False,
        cli=("--no-progress",),
    ),
)  # fmt: skip

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def options_of(front_end: FrontEnd) -> tuple[Option, ...]:
    """The rows ``front_end`` has, in the table's order."""
    if front_end == "pytest":
        return tuple(o for o in OPTIONS if o.pytest is not None)
    if front_end == "cli":
        return tuple(o for o in OPTIONS if o.cli)
    return tuple(o for o in OPTIONS if o.api is not None)
