"""The option table and the run configuration: one declaration, three front ends, one result.

No kernel runs here: pytest's configurations are parsed in process (``pytester.parseconfig``),
the ``millrun`` command's arguments by click without invoking the run, and ``execute_run``'s
keywords through the same resolution it calls first.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from pytest_millrun import execute_run
from pytest_millrun.cli import main
from pytest_millrun.config.option_table import OPTIONS, OptionError, options_of
from pytest_millrun.config.run_config import RunConfig, from_api, from_cli, from_pytest
from pytest_millrun.snapshots.figures import DEFAULT_FIGURE_TOLERANCE

POSITIONAL = [
    "notebook_dir_or_file",
    "bulk_params",
    "output_dir",
    "output_prepend_components",
    "output_append_components",
    "recursive",
    "exclude_glob_pattern",
    "include_glob_pattern",
    "use_multiprocessing",
]


def test_execute_run_takes_exactly_the_tables_api_keywords_with_their_defaults() -> None:
    parameters = dict(inspect.signature(execute_run).parameters)
    assert parameters.pop("kwargs").kind is inspect.Parameter.VAR_KEYWORD  # papermill's
    rows = {option.api: option for option in options_of("api")}
    assert set(parameters) == set(rows)
    assert list(parameters)[: len(POSITIONAL)] == POSITIONAL
    assert [o.api for o in OPTIONS if o.api_positional] == POSITIONAL
    for name, parameter in parameters.items():
        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert (parameter.kind is positional) == (name in POSITIONAL), name
        if name not in ("notebook_dir_or_file", "bulk_params"):  # the two required ones
            assert parameter.default == rows[name].default, name


def test_every_row_of_the_table_is_a_field_of_the_run_config() -> None:
    resolved = {"front_end", "base", "command_line", "suite", "papermill_kwargs", "option_names",
                "output_url"}  # fmt: skip
    fields = {field.name for field in dataclasses.fields(RunConfig)}
    assert fields - resolved == {option.name for option in OPTIONS}


def test_the_command_has_exactly_the_tables_cli_rows_in_its_order() -> None:
    ctx = click.Context(main, info_name="millrun", **main.context_settings)  # click keeps its help
    help_option = main.get_help_option(ctx)
    names = [p.name for p in main.get_params(ctx) if p is not help_option and p.name != "version"]
    assert names == [option.name for option in options_of("cli")]


def test_pytest_has_exactly_the_tables_plugin_options_and_ini_keys(
    pytester: pytest.Pytester,
) -> None:
    config = pytester.parseconfig()
    for option in options_of("pytest"):
        assert config.getoption(option.ini) is None  # declared, not given
        assert config.getini(option.ini) in ("", False)
    # a row the table does not have is not an option
    assert not hasattr(config.option, "millrun_retries")


def test_help_texts_of_pytest_options_start_with_a_capital_and_end_without_a_period() -> None:
    for option in options_of("pytest"):
        assert option.help[0].isupper(), option.name
        assert not option.help.endswith("."), option.name


def test_the_figure_default_is_the_figure_checks() -> None:
    assert RunConfig().figure_tolerance == DEFAULT_FIGURE_TOLERANCE
    assert "(default: 2)" in next(o.help for o in OPTIONS if o.name == "figure_tolerance")


# --- pytest: command line over ini over default, paths relative to where each was given ----


def test_the_command_line_wins_over_the_ini_file_which_wins_over_the_default(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        "[pytest]\nmillrun_timeout = 5\nmillrun_prepend = a, b\nmillrun_strict_params = true\n"
    )
    config = from_pytest(pytester.parseconfig("--millrun-timeout", "7", "--millrun-append", "z"))
    assert config.cell_timeout == 7.0  # command line over ini
    assert config.prepend == ("a", "b")  # the ini's
    assert config.append == ("z",)
    assert config.strict_params is True  # an ini bool
    assert config.notebook_timeout is None  # the default
    assert config.kernel_start == "auto"
    assert config.command_line == frozenset({"cell_timeout", "append"})
    assert config.output_dir == pytester.path / ".millrun"
    assert config.option_names.timeout == "--millrun-timeout"


def test_paths_are_relative_to_where_each_was_given(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = pytester.makeini("[pytest]\nmillrun_results = out/table.csv\nmillrun_snapshots = s\n")
    here = pytester.mkdir("here")
    monkeypatch.chdir(here)
    config = from_pytest(
        pytester.parseconfig("-c", str(ini), "--rootdir", str(pytester.path), "--millrun-report",
                             "r.html", "--millrun-output-dir", "o")
    )  # fmt: skip
    assert config.results == pytester.path / "out" / "table.csv"  # the ini file's folder
    assert config.snapshots == pytester.path / "s"
    assert config.report == here / "r.html"  # the current folder
    assert config.output_dir == here / "o"


def test_the_params_file_is_read_as_a_suite_and_turns_notebooks_on(
    pytester: pytest.Pytester,
) -> None:
    (pytester.path / "params.json").write_text(json.dumps([{"x": 1}, {"x": 2}]))
    off = from_pytest(pytester.parseconfig("--millrun-timeout", "3"))
    assert not off.enabled
    assert off.variations == [{}]
    on = from_pytest(pytester.parseconfig("--millrun-params", "params.json"))
    assert on.enabled
    assert on.params_file == pytester.path / "params.json"
    assert on.variations == [{"x": 1}, {"x": 2}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--millrun-timeout", "-1"],
         "--millrun-timeout / millrun_timeout must be a positive number of seconds, not '-1'."),
        (["--millrun-notebook-timeout", "soon"], "--millrun-notebook-timeout / "
         "millrun_notebook_timeout must be a positive number of seconds, not 'soon'."),
        (["--millrun-kernel-start", "vfork"], "--millrun-kernel-start / millrun_kernel_start "
         "must be one of auto, fork, spawn, not 'vfork'."),
        (["--millrun-order", "shortest"], "--millrun-order / millrun_order must be one of "
         "longest-first, collection, not 'shortest'."),
        (["--millrun-rtol", "-1"],
         "--millrun-rtol / millrun_rtol must be a number >= 0 (e.g. 1e-9), not '-1'."),
        (["--millrun-figure-tolerance", "x"], "--millrun-figure-tolerance / "
         "millrun_figure_tolerance must be a number >= 0 (e.g. 1e-9), not 'x'."),
        (["--millrun", "--millrun-snapshot-update"], "--millrun-snapshot-update needs a snapshot "
         "folder: give --millrun-snapshots DIR (or the ini key millrun_snapshots)."),
        (["--millrun-results", "a.ipynb"], "The results file"),
        (["--millrun-report", "a.ipynb"], "The report file"),
        (["--millrun-record", "not a name"], "'not a name'"),
        (["--millrun-params", "missing.json"], "missing.json"),
        (["--millrun-snapshots", "afile"], "afile is a file, not a folder. Name a folder."),
    ],
)  # fmt: skip
def test_a_bad_plugin_option_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    (pytester.path / "afile").write_text("")
    with pytest.raises(OptionError) as caught:
        from_pytest(pytester.parseconfig(*args))
    assert message in str(caught.value)
    done = pytester.runpytest_subprocess(*args)
    assert done.ret == pytest.ExitCode.USAGE_ERROR
    done.stderr.fnmatch_lines([f"*{message}*"])


def test_snapshot_flags_in_the_ini_wait_while_notebooks_are_off(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmillrun_snapshot_strict = true\n")
    assert from_pytest(pytester.parseconfig()).snapshot_strict is True


# --- the CLI and the API --------------------------------------------------------------------


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    (tmp_path / "nbs").mkdir()
    (tmp_path / "params.json").write_text("[{}]")
    return tmp_path


def _cli(*args: str) -> RunConfig:
    ctx = main.make_context("millrun", list(args))
    return from_cli(ctx.params)


CLI_ARGS = [
    "nbs", "params.json", "--output-dir", "out", "--prepend", "a,b", "--append", "c",
    "--recursive", "--exclude-glob-pattern", "x*", "--include-glob-pattern", "*.ipynb",
    "--text-notebooks", "*.py, *.md", "--workers", "3", "--kernel", "python3", "--timeout", "5",
    "--notebook-timeout", "60", "--kernel-start", "spawn", "--preload", "numpy,pandas",
    "--record", "y,*.ipynb:z", "--snapshots", "snaps", "--snapshot-update", "--snapshot-strict",
    "--snapshot-figures", "--figure-tolerance", "3", "--rtol", "0.1", "--atol", "0.2",
    "--strict-params", "--clean", "--cache", "--force", "--cache-inputs", "data/*",
    "--order", "collection", "--cache-ignore", "**/*.log", "--cache-hash-limit", "0",
]  # fmt: skip
API_KEYWORDS: dict[str, Any] = {
    "output_dir": "out", "output_prepend_components": ["a", "b"],
    "output_append_components": ["c"], "recursive": True, "exclude_glob_pattern": "x*",
    "include_glob_pattern": "*.ipynb", "text_notebooks": "*.py, *.md", "workers": 3,
    "kernel_name": "python3", "execution_timeout": 5, "notebook_timeout": 60,
    "kernel_start": "spawn", "preload": ["numpy", "pandas"], "record": ["y", "*.ipynb:z"],
    "snapshots": "snaps", "snapshot_update": True, "snapshot_strict": True,
    "snapshot_figures": True, "figure_tolerance": 3, "rtol": 0.1, "atol": 0.2,
    "strict_params": True, "clean_output": True, "cache": True, "force": True,
    "cache_inputs": ["data/*"], "order": "collection", "cache_ignore": ["**/*.log"],
    "cache_hash_limit": 0,
}  # fmt: skip


def _api(**given: Any) -> RunConfig:
    keywords = {o.api: o.default for o in options_of("api")}
    keywords.update(notebook_dir_or_file="nbs", bulk_params=[{}], **given)
    return from_api(keywords, {})


def test_the_cli_and_the_api_resolve_the_same_values_to_the_same_fields(
    sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(sweep)
    cli, api = _cli(*CLI_ARGS), _api(**API_KEYWORDS)
    differ = {"front_end", "option_names", "params", "verbose", "no_progress"}
    for field in dataclasses.fields(RunConfig):
        if field.name not in differ:
            assert getattr(cli, field.name) == getattr(api, field.name), field.name
    assert cli.cell_timeout == 5.0
    assert cli.order == "collection"
    assert cli.record.names == ("y",)
    assert cli.cache_settings.base == api.cache_settings.base == Path("nbs")
    assert cli.cache_settings.force_option == "--force"
    assert cli.cache_settings.ignore == ("**/*.log",)
    assert cli.cache_settings.hash_limit_mib == 0
    assert api.cache_settings.force_option == "force=True"
    assert cli.figures == 3.0
    assert cli.tolerance.rtol == 0.1


def test_defaults_are_the_same_from_the_cli_and_the_api(
    sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(sweep)
    cli, api = _cli("nbs", "params.json"), _api()
    for field in dataclasses.fields(RunConfig):
        if field.name not in {"front_end", "option_names", "params"}:
            assert getattr(cli, field.name) == getattr(api, field.name), field.name
    assert cli.option_names.timeout == "--timeout"
    assert api.option_names.timeout == "execution_timeout="


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--snapshot-update"], "Error: --snapshot-update needs --snapshots DIR (the folder of "
         "the snapshots)."),
        (["--snapshots", "s", "--snapshot-figures", "--figure-tolerance", "-2"],
         "Invalid value for '--figure-tolerance': must be a number >= 0"),
        (["--timeout", "0"], "Invalid value for '--timeout': must be a positive number of seconds"),
        (["--kernel-start", "vfork"], "'vfork' is not one of 'auto', 'fork', 'spawn'"),
        (["--record", "a b"], "Error: --record: 'a b'"),
        (["--workers", "0"], "Invalid value for '--workers'"),
    ],
)  # fmt: skip
def test_a_bad_cli_option_is_exit_status_2_naming_it(
    sweep: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(sweep)
    done = CliRunner().invoke(main, ["nbs", "params.json", *args])
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split())


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"snapshot_update": True}, "snapshot_update=True needs snapshots= (the folder of the "
         "snapshots)."),
        ({"snapshots": "s", "rtol": -1}, "rtol must be a number >= 0 (e.g. 1e-9), not -1."),
        ({"kernel_start": "vfork"}, "kernel_start must be one of auto, fork, spawn, not 'vfork'."),
        ({"order": "random"}, "order must be one of longest-first, collection, not 'random'."),
        ({"record": ["a b"]}, "record: 'a b'"),
    ],
)  # fmt: skip
def test_a_bad_api_keyword_is_a_value_error_naming_it(
    sweep: Path, monkeypatch: pytest.MonkeyPatch, given: dict[str, Any], message: str
) -> None:
    monkeypatch.chdir(sweep)
    with pytest.raises(ValueError, match=re.escape(message)):
        execute_run("nbs", [{}], **given)
    assert sorted(p.name for p in sweep.iterdir()) == ["nbs", "params.json"]  # nothing ran


def test_the_api_keeps_papermills_own_timeout_and_worker_values(
    sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(sweep)
    config = _api(execution_timeout=-1, workers=0)  # nbclient's "no limit"; the CPU count
    assert config.cell_timeout == -1
    assert config.workers >= 1


def test_storage_options_go_to_the_cache_and_the_jobs_and_are_never_shown() -> None:
    pytest.importorskip("fsspec")
    secret = {"key": "K", "secret": "sEcReT", "client_kwargs": {"region_name": "r"}}
    config = _api(output_dir="memory://runs", storage_options=secret, cache=True)
    assert config.cache_settings.storage_options == secret
    assert config.run_options().storage_options == secret
    shown = repr(config) + repr(config.cache_settings) + repr(config.run_options())
    assert "sEcReT" not in shown


def test_storage_options_need_a_mapping_and_an_output_url() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(OptionError, match=r"storage_options= takes a mapping .* not a str\."):
        _api(output_dir="memory://runs", storage_options="key=sEcReT")
    with pytest.raises(OptionError, match=r"storage_options= is for an output_dir given as a URL"):
        _api(output_dir="out", storage_options={"anon": True})
