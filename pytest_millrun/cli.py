"""The ``millrun`` command: the API's run, in parallel, with progress and a summary.

Exit status: 0 when every run passed, 1 when any failed, 2 for bad usage or
bad input (a missing path, a broken params file), 130 when interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import click

from pytest_millrun.cache.keys import unmatched_message
from pytest_millrun.cache.verdicts import CacheSettings
from pytest_millrun.cli_output import Progress, is_tty, stale_line, summary
from pytest_millrun.core.data import ExecutionResult, OptionNames, RunInterrupted
from pytest_millrun.core.discovery import (
    MillrunParameterWarning,
    UndeclaredParameterError,
    notebook_folder,
)
from pytest_millrun.core.naming import OutputPathError
from pytest_millrun.core.params import ParamsError
from pytest_millrun.core.suite import MillrunSuiteWarning
from pytest_millrun.core.suite_file import load_suite
from pytest_millrun.core.text_notebooks import parse_globs
from pytest_millrun.core.values import parse_record
from pytest_millrun.dispatch.jobs import Job, RunOptions
from pytest_millrun.execution.execute import resolve_kernel_start
from pytest_millrun.pipeline.cache_split import CacheSplit
from pytest_millrun.pipeline.planning import plan_run, planned_outputs
from pytest_millrun.pipeline.stale_outputs import handle_stale_outputs
from pytest_millrun.report.page import check_report_path, write_report
from pytest_millrun.results import check_results_path, write_results
from pytest_millrun.snapshots.figures import DEFAULT_FIGURE_TOLERANCE, kernel_backend
from pytest_millrun.snapshots.scope import Folder

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Unused snapshot entries listed before the rest is only counted.
UNUSED_LINES = 20
#: The options a failure's advice names, as this command spells them.
OPTION_NAMES = OptionNames("--timeout", "--notebook-timeout", "--kernel", "--output-dir")


def _components(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be a positive number of seconds")
    return value


def _tolerance(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not 0 <= value < float("inf"):
        raise click.BadParameter("must be a number >= 0")
    return value


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  millrun ./Notebooks_Dir params.json --prepend x_values,y_values,results
  millrun calc.ipynb params.json --output-dir out --append run --workers 4

PARAMS is a JSON or YAML file holding a list of dicts (one per variation), a dict
of equal-length lists, or a suite (grid, variations, constants, notebooks, prepend,
append; see docs/suites.md). An output is named PREPEND-...-STEM-APPEND-....ipynb, where a
component that is a parameter name gives that variation's value and any other
text is kept as is; with no components the variation's index is prepended.""",
)
@click.argument(
    "notebook_dir_or_file",
    type=click.Path(exists=True, path_type=Path),
    metavar="NOTEBOOK_DIR_OR_FILE",
)
@click.argument("params", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the executed notebooks.  [default: beside each notebook]",
)
@click.option("--prepend", metavar="A,B", help="Comma-separated components before the stem.")
@click.option("--append", metavar="C,D", help="Comma-separated components after the stem.")
@click.option(
    "--recursive/--no-recursive",
    default=False,
    show_default=True,
    help="Also run notebooks in subfolders (their folders are mirrored in --output-dir).",
)
@click.option("--exclude-glob-pattern", metavar="P", help="Skip notebooks matching this glob.")
@click.option(
    "--include-glob-pattern",
    metavar="P",
    help="Run the files matching this glob instead.  [default: *.ipynb and text notebooks]",
)
@click.option(
    "--text-notebooks",
    metavar="GLOB,GLOB",
    help="Comma-separated globs (relative to the notebook folder) of text files to run as "
    "jupytext notebooks even without a jupytext header (needs pytest-millrun[jupytext]).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default=True,
    help="Notebook runs at once, over all notebooks and variations.",
)
@click.option(
    "--dask",
    metavar="ADDRESS|local",
    help="Run on a Dask cluster: a scheduler address (tcp://host:8786), or local for a cluster "
    "of --workers processes on this machine.  Needs pytest-millrun[dask].",
)
@click.option("--kernel", metavar="NAME", help="Kernel for every notebook.  [default: its own]")
@click.option(
    "--timeout",
    type=float,
    callback=_positive,
    metavar="SECONDS",
    help="Per-cell time limit.  [default: none]",
)
@click.option(
    "--notebook-timeout",
    type=float,
    callback=_positive,
    metavar="SECONDS",
    help="Whole-notebook time limit; the partial output is kept.  [default: none]",
)
@click.option(
    "--kernel-start",
    type=click.Choice(["auto", "fork", "spawn"]),
    default="auto",
    show_default=True,
    help="fork: kernels forked from a warm template where the kernelspec runs ipykernel on "
    "this Python (auto's choice); spawn: started as papermill does.",
)
@click.option(
    "--preload",
    metavar="MODULES",
    help="Comma-separated modules the fork template imports once, e.g. numpy,pandas.",
)
@click.option(
    "--record",
    metavar="NAMES",
    help="Comma-separated variables read after each notebook's last cell and recorded "
    "with its scrapbook scraps; GLOB:NAME only in the notebooks GLOB matches.",
)
@click.option(
    "--results",
    "results_file",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Write a table of every run (status, parameters, recorded values): .csv, .json or .jsonl.",
)
@click.option(
    "--snapshots",
    "snapshots_dir",
    type=click.Path(path_type=Path, file_okay=False),
    metavar="DIR",
    help="Compare each run's recorded values with its snapshot in DIR; a difference fails.",
)
@click.option(
    "--snapshot-update", is_flag=True, help="Write missing and changed snapshots instead."
)
@click.option(
    "--snapshot-strict",
    is_flag=True,
    help="Fail when a snapshot entry has no variation left (a variation or notebook gone).",
)
@click.option(
    "--snapshot-figures",
    is_flag=True,
    help="Compare each run's figures (image outputs) with baselines beside its snapshot too.",
)
@click.option(
    "--figure-tolerance",
    type=float,
    callback=_tolerance,
    metavar="RMS",
    help="RMS difference (0-255) a figure may have from its baseline [default: 2].",
)
@click.option(
    "--rtol",
    type=float,
    callback=_tolerance,
    help="Relative tolerance of snapshot numbers [default: 1e-9].",
)
@click.option(
    "--atol",
    type=float,
    callback=_tolerance,
    help="Absolute tolerance of snapshot numbers [default: 0].",
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Write a self-contained HTML report of every run (grid, table, failures, charts).",
)
@click.option(
    "--strict-params",
    is_flag=True,
    help="Refuse parameters a notebook's parameters cell does not declare.",
)
@click.option(
    "--clean",
    is_flag=True,
    help="Before the run, remove outputs of these notebooks that earlier runs wrote and this "
    "run does not (only files millrun wrote).",
)
@click.option(
    "--cache",
    is_flag=True,
    help="Run only variations whose last passing output no longer matches their code cells, "
    "parameters, kernel, options, environment or --cache-inputs files; read the others back.",
)
@click.option("--force", is_flag=True, help="With --cache: run everything, record fresh keys.")
@click.option(
    "--cache-inputs",
    metavar="GLOBS",
    help="Comma-separated globs (relative to the notebook folder) of data files the notebooks "
    "read: part of the cache key, by content.",
)
@click.option("-v", "--verbose", is_flag=True, help="Say why each variation ran (with --cache).")
@click.option("--no-progress", is_flag=True, help="Print one line per finished run, no bar.")
@click.version_option(package_name="pytest-millrun", prog_name="millrun")
def main(
    notebook_dir_or_file: Path,
    params: Path,
    output_dir: Path | None,
    prepend: str | None,
    append: str | None,
    recursive: bool,
    exclude_glob_pattern: str | None,
    include_glob_pattern: str | None,
    text_notebooks: str | None,
    workers: int,
    dask: str | None,
    kernel: str | None,
    timeout: float | None,
    notebook_timeout: float | None,
    kernel_start: str,
    preload: str | None,
    record: str | None,
    results_file: Path | None,
    snapshots_dir: Path | None,
    snapshot_update: bool,
    snapshot_strict: bool,
    snapshot_figures: bool,
    figure_tolerance: float | None,
    rtol: float | None,
    atol: float | None,
    report_file: Path | None,
    strict_params: bool,
    clean: bool,
    cache: bool,
    force: bool,
    cache_inputs: str | None,
    verbose: bool,
    no_progress: bool,
) -> None:
    """Run every notebook in NOTEBOOK_DIR_OR_FILE once per parameter variation in PARAMS.

    Runs go in parallel, every executed notebook is saved (failed ones too), and
    a summary at the end lists each failure with its cell, error and output file.
    Exit status: 0 all passed, 1 some failed, 2 bad usage or input, 130 interrupted.
    """
    _quiet_libraries()
    for flag, given in (
        ("--snapshot-update", snapshot_update),
        ("--snapshot-strict", snapshot_strict),
        ("--snapshot-figures", snapshot_figures),
    ):
        if given and snapshots_dir is None:
            _fail_usage(f"{flag} needs --snapshots DIR (the folder of the snapshots).")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MillrunParameterWarning)
            warnings.simplefilter("always", MillrunSuiteWarning)
            variations = load_suite(params)
            spec = parse_record(record, "--record")
            jobs = plan_run(
                notebook_dir_or_file,
                variations,
                output_dir=output_dir,
                prepend=_components(prepend),
                append=_components(append),
                recursive=recursive,
                exclude_glob_pattern=exclude_glob_pattern,
                include_glob_pattern=include_glob_pattern,
                strict_params=strict_params,
                text_notebooks=parse_globs(text_notebooks),
                record=spec,
                kernel_name=kernel,
            )
        if results_file is not None:
            results_file = check_results_path(results_file, [job.notebook for job in jobs])
        if report_file is not None:
            report_file = check_report_path(report_file, [job.notebook for job in jobs])
    except (
        ParamsError,
        FileNotFoundError,
        OutputPathError,
        UndeclaredParameterError,
        ValueError,
    ) as exc:
        _fail_usage(str(exc))
    for warning in caught:
        click.secho(f"warning: {warning.message}", fg="yellow", err=True)
    stale = handle_stale_outputs(planned_outputs(jobs), clean=clean).describe("--clean")

    root = notebook_folder(notebook_dir_or_file)
    options = RunOptions(
        kernel_name=kernel,
        cell_timeout=timeout,
        notebook_timeout=notebook_timeout,
        kernel_start=resolve_kernel_start(kernel_start),
        preload=tuple(_components(preload)),
        option_names=OPTION_NAMES,
    )
    cache_settings = CacheSettings(
        enabled=cache or force,
        force=force,
        inputs=tuple(_components(cache_inputs)),
        base=root,
        force_option="--force",
    )
    progress = Progress(len(jobs), min(workers, len(jobs)), bar=not no_progress and is_tty())
    progress.verbose = verbose
    started = time.monotonic()
    figures = None
    if snapshot_figures:
        figures = DEFAULT_FIGURE_TOLERANCE if figure_tolerance is None else figure_tolerance
    split = CacheSplit(jobs, cache_settings, options, progress.update)
    if split.unmatched:
        message = unmatched_message(split.unmatched, root, "--cache-inputs")
        click.secho(f"warning: {message}", fg="yellow", err=True)
    progress.workers = min(workers, len(split.to_run))
    try:
        with contextlib.ExitStack() as stack:
            if figures is not None:
                stack.enter_context(kernel_backend())
            results = split.run(lambda todo, _: _dispatch(dask, workers, todo, options, progress))
    except RunInterrupted as exc:
        progress.close()
        _write_table(exc.results, results_file, root)
        _write_report(exc.results, report_file, root, params)
        stale_line(stale)
        summary(exc.results, time.monotonic() - started, planned=len(jobs))
        sys.exit(EXIT_INTERRUPTED)
    progress.close()
    table_written = _write_table(results, results_file, root)
    folders = [Folder(".", recursive)] if notebook_dir_or_file.is_dir() else []
    matched = _check_snapshots(
        results, snapshots_dir, root, folders, snapshot_update, snapshot_strict, rtol, atol,
        figures,
    )  # fmt: skip
    report_written = _write_report(results, report_file, root, params)
    stale_line(stale)
    summary(results, time.monotonic() - started)
    if not (table_written and report_written):
        sys.exit(EXIT_USAGE)
    sys.exit(0 if matched and all(r.passed for r in results) else EXIT_FAILED)


def _check_snapshots(
    ran: Sequence[ExecutionResult],
    folder: Path | None,
    root: Path,
    folders: Sequence[Folder],
    update: bool,
    strict: bool,
    rtol: float | None,
    atol: float | None,
    figure_tolerance: float | None = None,
) -> bool:
    """The snapshot check, before the summary; False when a run differs from its snapshot.

    (Or, with ``strict``, when an entry is unused.)
    """
    if folder is None:
        return True
    from pytest_millrun.snapshots.checks import check_results
    from pytest_millrun.snapshots.store import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance

    tolerance = Tolerance(
        rtol=DEFAULT_RTOL if rtol is None else rtol, atol=DEFAULT_ATOL if atol is None else atol
    )
    try:
        failures, summary = check_results(
            ran, folder, root, update=update, tolerance=tolerance, folders=folders,
            figure_tolerance=figure_tolerance,
        )  # fmt: skip
    except OSError as exc:
        click.secho(f"Error: could not write the snapshots in {folder}: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    for failure in failures:
        click.secho(failure, fg="red")
        click.echo()
    failing = strict and not update and bool(summary.unused)
    if update or summary.unused:
        strict_flag = "--snapshot-strict" if failing else ""
        click.secho(summary.describe(update, "--snapshot-update", strict_flag),
                    fg="red" if failing else None)  # fmt: skip
    for name in [] if update else summary.unused[:UNUSED_LINES]:
        click.echo(f"  unused: {name}")
    if not update and len(summary.unused) > UNUSED_LINES:
        click.echo(f"  ... and {len(summary.unused) - UNUSED_LINES} more")
    return not failures and not failing


def _write_table(ran: Sequence[ExecutionResult], path: Path | None, root: Path) -> bool:
    """The results table, before the summary, whose last line accounts for every planned run.

    A table that cannot be written is reported and makes the exit status 2, after the
    summary, so the runs' own outcome is still shown.
    """
    if path is None:
        return True
    try:
        write_results(ran, path, root=root)
    except OSError as exc:
        click.secho(f"Error: could not write the results table {path}: {exc}", fg="red", err=True)
        return False
    click.echo(f"results: {len(ran)} row{'s' if len(ran) != 1 else ''} written to {path}")
    return True


def _dispatch(
    dask: str | None, workers: int, jobs: Sequence[Job], options: RunOptions, progress: Progress
) -> list[ExecutionResult]:
    from pytest_millrun.dispatch.dask_client import ClusterError
    from pytest_millrun.dispatch.dispatchers import make_dispatcher

    def on_start(slots: int) -> None:
        progress.workers = min(slots, len(jobs))

    dispatcher = make_dispatcher(
        workers=workers, parallel=workers > 1, dask=dask, on_start=on_start
    )
    try:
        return dispatcher.run(jobs, options, progress.update)
    except ClusterError as exc:
        progress.close()
        _fail_usage(str(exc))
        raise  # not reached: _fail_usage exits


def _write_report(
    ran: Sequence[ExecutionResult], path: Path | None, root: Path, params: Path
) -> bool:
    """The HTML report from the same rows, written as the table is (see :func:`_write_table`)."""
    if path is None:
        return True
    command = " ".join(shlex.quote(arg) for arg in ["millrun", *sys.argv[1:]])
    try:
        write_report(ran, path, root=root, command=command, params_file=params)
    except OSError as exc:
        click.secho(f"Error: could not write the HTML report {path}: {exc}", fg="red", err=True)
        return False
    click.echo(f"report: written to {path}")
    return True


def _fail_usage(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _quiet_libraries() -> None:
    """Our own report says what failed; papermill's and nbclient's log lines would repeat it."""
    for name in ("papermill", "traitlets", "nbclient", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
