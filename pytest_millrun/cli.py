"""The ``millrun`` command: the API's run, in parallel, with progress and a summary.

Exit status: 0 when every run passed, 1 when any failed, 2 for bad usage or
bad input (a missing path, a broken params file), 130 when interrupted.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from pytest_millrun.cache.keys import unmatched_message
from pytest_millrun.cli_output import Progress, is_tty, stale_line, summary
from pytest_millrun.config.option_table import Option, OptionError, options_of
from pytest_millrun.config.option_values import BadValue, parse
from pytest_millrun.config.run_config import RunConfig, from_cli
from pytest_millrun.core.data import ExecutionResult, RunInterrupted
from pytest_millrun.core.discovery import MillrunParameterWarning
from pytest_millrun.core.naming import OutputPathError
from pytest_millrun.core.params import ParamsError
from pytest_millrun.core.suite import MillrunSuiteWarning
from pytest_millrun.pipeline import runner
from pytest_millrun.pipeline.watching import watched
from pytest_millrun.report.page import check_report_path, write_report
from pytest_millrun.results import check_results_path, write_results
from pytest_millrun.snapshots.scope import Folder

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Unused snapshot entries listed before the rest is only counted.
UNUSED_LINES = 20
F = TypeVar("F", bound=Callable[..., Any])


def _click_param(option: Option) -> Callable[[F], F]:
    """The click argument or option of one row of the table."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return parse(option, value)
        except BadValue as exc:
            raise click.BadParameter(exc.reason) from None

    if option.cli_argument:
        exists = click.Path(exists=True, dir_okay=option.kind != "file", path_type=Path)
        return click.argument(option.name, type=exists, metavar=option.cli[0])
    declared = (*option.cli, option.name)
    help = option.cli_help or option.help
    if option.kind == "flag" and "/" in option.cli[0]:
        return click.option(*declared, default=option.default, show_default=True, help=help)
    if option.kind == "flag":
        return click.option(*declared, is_flag=True, help=help)
    if option.kind == "level":
        return click.option(*declared, count=True, help=help)
    settings: dict[str, Any] = {"metavar": option.cli_metavar, "help": help}
    if option.kind in ("file", "folder"):
        # text, made a Path by the config: an output URL (s3://...) must reach it intact
        settings["type"] = click.Path(file_okay=option.kind == "file", path_type=str)
    elif option.kind in ("seconds", "tolerance"):
        settings.update(type=float, callback=check)
    elif option.kind == "choice":
        settings.update(type=click.Choice(option.choices), default=option.default)
        settings.update(show_default=True, metavar=None)
    elif option.kind == "count":
        settings.update(type=click.IntRange(min=1), default=option.cli_default, show_default=True)
    return click.option(*declared, **settings)


def table_options(function: F) -> F:
    """Every CLI row of the option table as a click parameter, in the table's order."""
    for option in reversed(options_of("cli")):
        function = _click_param(option)(function)
    return function


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
@table_options
@click.version_option(package_name="pytest-millrun", prog_name="millrun")
def main(**params: Any) -> None:
    """Run every notebook in NOTEBOOK_DIR_OR_FILE once per parameter variation in PARAMS.

    Runs go in parallel, every executed notebook is saved (failed ones too), and
    a summary at the end lists each failure with its cell, error and output file.
    Exit status: 0 all passed, 1 some failed, 2 bad usage or input, 130 interrupted.
    """
    _quiet_libraries()
    try:
        config = from_cli(params)
    except OptionError as exc:
        _fail_usage(str(exc))
    planned, results_file, report_file = _plan(config)
    jobs = planned.jobs
    progress = Progress(
        len(jobs), min(config.workers, len(jobs)), bar=not config.no_progress and is_tty()
    )
    progress.verbose = config.verbose
    if planned.split.unmatched:
        message = unmatched_message(planned.split.unmatched, config.base, "--cache-inputs")
        click.secho(f"warning: {message}", fg="yellow", err=True)
    progress.workers = min(config.workers, len(planned.to_run))
    stale = planned.stale.describe("--clean") if planned.stale is not None else None
    started = time.monotonic()
    with watched(planned, log_output=config.log_output) as (planned, channel):
        progress.watch(channel)
        try:
            results = _run(planned, progress)
        except RunInterrupted as exc:
            progress.close()
            _write_table(exc.results, results_file, config.base)
            _write_report(exc.results, report_file, config.base, config.params)
            stale_line(stale)
            summary(exc.results, time.monotonic() - started, planned=len(jobs))
            sys.exit(EXIT_INTERRUPTED)
        finally:
            progress.close()  # (a second close does nothing)
    table_written = _write_table(results, results_file, config.base)
    assert config.notebook_dir_or_file is not None  # the command's first argument
    folders = [Folder(".", config.recursive)] if config.notebook_dir_or_file.is_dir() else []
    matched = _check_snapshots(results, config, folders)
    report_written = _write_report(results, report_file, config.base, config.params)
    stale_line(stale)
    summary(results, time.monotonic() - started)
    if not (table_written and report_written):
        sys.exit(EXIT_USAGE)
    sys.exit(0 if matched and all(r.passed for r in results) else EXIT_FAILED)


def _plan(config: RunConfig) -> tuple[runner.PlannedRun, Path | None, Path | None]:
    """The planned run and the checked results and report paths; exit 2 on bad input."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MillrunParameterWarning)
            warnings.simplefilter("always", MillrunSuiteWarning)
            planned = runner.plan(config, find_stale=True)
        notebooks = [job.notebook for job in planned.jobs]
        results_file = report_file = None
        if config.results is not None:
            results_file = check_results_path(config.results, notebooks)
        if config.report is not None:
            report_file = check_report_path(config.report, notebooks)
    except (ParamsError, FileNotFoundError, OutputPathError, ValueError) as exc:
        _fail_usage(str(exc))
    except runner.ClusterError as exc:  # a worker lacks what the run needs
        _fail_usage(str(exc))
    for warning in caught:
        click.secho(f"warning: {warning.message}", fg="yellow", err=True)
    return planned, results_file, report_file


def _run(planned: runner.PlannedRun, progress: Progress) -> list[ExecutionResult]:
    """The run on the dispatcher its options name; a cluster that cannot run it exits 2."""
    config = planned.config

    def on_start(slots: int) -> None:
        progress.workers = min(slots, len(planned.to_run))

    dispatcher = runner.dispatcher_for(config, parallel=config.workers > 1, on_start=on_start)
    try:
        return runner.run(planned, dispatcher, progress.update)
    except runner.ClusterError as exc:
        progress.close()
        _fail_usage(str(exc))
        raise  # not reached: _fail_usage exits


def _check_snapshots(
    ran: Sequence[ExecutionResult], config: RunConfig, folders: Sequence[Folder]
) -> bool:
    """The snapshot check, before the summary; False when a run differs from its snapshot.

    (Or, with ``--snapshot-strict``, when an entry is unused.)
    """
    folder = config.snapshots
    if folder is None:
        return True
    from pytest_millrun.snapshots.checks import check_results

    update, strict = config.snapshot_update, config.snapshot_strict
    try:
        failures, summary = check_results(
            ran, folder, config.base, update=update, tolerance=config.tolerance, folders=folders,
            figure_tolerance=config.figures,
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
