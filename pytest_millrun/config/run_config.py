"""The run configuration: every option's value, resolved once by the front end that got it.

Why one frozen dataclass: the pytest plugin (command line over ini over default), the
``millrun`` command (click's parsed arguments) and ``execute_run`` (its keywords) each
turn their own sources into the same :class:`RunConfig`, checked the same way, so what
runs below them never asks which front end it serves.  A value no front end can use is
an :class:`~pytest_millrun.config.option_table.OptionError` carrying the whole message;
each front end shows it its own way.  The options themselves are declared in
:mod:`pytest_millrun.config.option_table`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_millrun.config.option_table import BY_NAME, FrontEnd, Option, OptionError, options_of
from pytest_millrun.config.option_values import BadValue, parse
from pytest_millrun.core.data import API_OPTION_NAMES, KernelStart, OptionNames, Order
from pytest_millrun.core.values import RecordSpec
from pytest_millrun.snapshots.figures import DEFAULT_FIGURE_TOLERANCE
from pytest_millrun.snapshots.store import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance

if TYPE_CHECKING:
    import pytest

    from pytest_millrun.cache.verdicts import CacheSettings
    from pytest_millrun.core.params import Variation
    from pytest_millrun.core.suite import Suite
    from pytest_millrun.dispatch.jobs import RunOptions
    from pytest_millrun.dispatch.ship_manifest import ShipSettings

SNAPSHOT_FLAGS = ("snapshot_update", "snapshot_strict", "snapshot_figures")


@dataclass(frozen=True)
class RunConfig:
    """Every option of one run, typed and checked; paths as the front end resolved them."""

    front_end: FrontEnd = "api"
    #: The folder relative globs (text notebooks, cache inputs) resolve against: the
    #: rootdir (pytest), the notebook folder (CLI, API).
    base: Path = field(default_factory=Path)
    #: The options given on pytest's command line (they win over a suite's; the ini's lose).
    command_line: frozenset[str] = frozenset()
    notebook_dir_or_file: Path | None = None
    #: pytest: notebooks collected at all (``--millrun`` or a params file); always on elsewhere.
    enabled: bool = True
    #: The parameters as given: a params file, or the API's list or dict.
    params: Any = None
    #: The params file read as a suite (seed forms too): the plugin reads it here; the CLI
    #: and the API where the run starts (None here).
    suite: Suite | None = None
    output_dir: Path | None = None
    #: The output dir given as a URL (``s3://bucket/prefix``): outputs are uploaded there.
    output_url: str | None = None
    #: fsspec's keywords for the output URL's filesystem (the API's; credentials, never shown).
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    prepend: tuple[str, ...] = ()
    append: tuple[str, ...] = ()
    recursive: bool = False
    exclude: str | None = None
    include: str | None = None
    text_notebooks: tuple[str, ...] = ()
    use_multiprocessing: bool = False
    workers: int = 1
    executor: Any = None
    dask: Any = None
    ship_limit: int = 200
    ship_exclude: tuple[str, ...] = ()
    #: Which runs start first (:mod:`pytest_millrun.pipeline.run_order`).
    order: Order = "longest-first"
    kernel_name: str | None = None
    cell_timeout: float | None = None
    notebook_timeout: float | None = None
    kernel_start: KernelStart = "auto"
    preload: tuple[str, ...] = ()
    record: RecordSpec = field(default_factory=RecordSpec)
    results: Path | None = None
    snapshots: Path | None = None
    snapshot_update: bool = False
    snapshot_strict: bool = False
    snapshot_figures: bool = False
    figure_tolerance: float = DEFAULT_FIGURE_TOLERANCE
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    report: Path | None = None
    on_result: Callable[[Any], None] | None = None
    strict_params: bool = False
    clean_output: bool = False
    cache: bool = False
    force: bool = False
    cache_inputs: tuple[str, ...] = ()
    cache_ignore: tuple[str, ...] = ()
    cache_hash_limit: int = 1024
    verbose: int = 0
    no_progress: bool = False
    log_output: bool = False
    #: The API's other keywords, for papermill and nbclient.
    papermill_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: How the front end spells the options a failure's advice names.
    option_names: OptionNames = API_OPTION_NAMES

    @property
    def params_file(self) -> Path | None:
        return self.params if isinstance(self.params, Path) else None

    @property
    def variations(self) -> list[Variation]:
        """Everyone's variations (a suite's top level), or one run with the notebook's defaults."""
        return list(self.suite.top.variations) if self.suite is not None else [{}]

    @property
    def figures(self) -> float | None:
        """The figure check's tolerance, or None without the figure check."""
        return self.figure_tolerance if self.snapshot_figures else None

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(rtol=self.rtol, atol=self.atol)

    @property
    def cache_settings(self) -> CacheSettings:
        from pytest_millrun.cache.verdicts import CacheSettings

        return CacheSettings(
            enabled=self.cache or self.force,
            force=self.force,
            inputs=self.cache_inputs,
            base=self.base,
            force_option=advice_name(BY_NAME["force"], self.front_end),
            ignore=self.cache_ignore,
            hash_limit_mib=self.cache_hash_limit,
            output_root=self.output_dir,
            storage_options=self.storage_options,
        )

    @property
    def ship_settings(self) -> ShipSettings:
        """How files go to Dask workers that do not see this machine's."""
        from pytest_millrun.core.globs import path_regexes
        from pytest_millrun.dispatch.ship_manifest import ShipSettings

        return ShipSettings(
            limit_mib=self.ship_limit,
            exclude=path_regexes(self.ship_exclude, self.base),
            limit_option=advice_name(BY_NAME["ship_limit"], self.front_end),
            exclude_option=advice_name(BY_NAME["ship_exclude"], self.front_end),
        )

    def run_options(self) -> RunOptions:
        """What every job of the run shares, as pool and Dask workers receive it."""
        from pytest_millrun.core.learned_preloads import named_preloads
        from pytest_millrun.dispatch.jobs import RunOptions

        return RunOptions(
            kernel_name=self.kernel_name,
            cell_timeout=self.cell_timeout,
            notebook_timeout=self.notebook_timeout,
            kernel_start=self.kernel_start,
            preload=named_preloads(self.preload),
            papermill_kwargs=self.papermill_kwargs,
            option_names=self.option_names,
            storage_options=self.storage_options,
        )


def advice_name(option: Option, front_end: FrontEnd) -> str:
    """How a message tells the user to set ``option``: ``--timeout``, ``execution_timeout=``."""
    if front_end != "api":
        return option.spelled(front_end)
    return f"{option.api}=True" if option.kind == "flag" else f"{option.api}="


def option_names(front_end: FrontEnd) -> OptionNames:
    """The flags a failure's advice names, as ``front_end`` spells them."""
    return OptionNames(
        timeout=advice_name(BY_NAME["cell_timeout"], front_end),
        notebook_timeout=advice_name(BY_NAME["notebook_timeout"], front_end),
        kernel=advice_name(BY_NAME["kernel_name"], front_end),
        output_dir=advice_name(BY_NAME["output_dir"], front_end),
    )


def _parsed(
    front_end: FrontEnd, raw: Mapping[str, Any], named: Callable[[Option], str]
) -> dict[str, Any]:
    """Each given value parsed by its row; a bad one is an :class:`OptionError` naming it."""
    values: dict[str, Any] = {}
    for option in options_of(front_end):
        if option.name not in raw:
            continue
        value = raw[option.name]
        if front_end == "api" and option.kind in ("seconds", "count", "file", "folder", "path"):
            # typed by the caller: papermill's -1 (no limit) and workers=0 (the CPU count)
            # kept as they always were; paths as given, relative to the current folder
            values[option.name] = value
            continue
        try:
            values[option.name] = parse(option, value)
        except BadValue as exc:
            raise OptionError(f"{named(option)} {exc.reason}, not {value!r}.") from None
    return values


def _snapshot_needs_folder(front_end: FrontEnd, values: Mapping[str, Any]) -> None:
    if values.get("snapshots") or not values.get("enabled", True):
        return  # the plugin off: an ini file's snapshot flags wait for a run that uses them
    for name in SNAPSHOT_FLAGS:
        if not values.get(name):
            continue
        option = BY_NAME[name]
        if front_end == "pytest":
            raise OptionError(
                f"{option.pytest_flag} needs a snapshot folder: give --millrun-snapshots DIR "
                f"(or the ini key millrun_snapshots)."
            )
        given, folder = advice_name(option, front_end), advice_name(BY_NAME["snapshots"], front_end)
        folder += " DIR" if front_end == "cli" else ""
        raise OptionError(f"{given} needs {folder} (the folder of the snapshots).")


def _record(value: Any, front_end: FrontEnd) -> RecordSpec:
    from pytest_millrun.core.values import RecordNameError, parse_record

    option = BY_NAME["record"]
    try:
        return parse_record(value or None, option.spelled(front_end))
    except RecordNameError as exc:
        raise OptionError(str(exc)) from None


def _build(front_end: FrontEnd, values: dict[str, Any], **resolved: Any) -> RunConfig:
    """The config from parsed values: defaults for the absent, the checks every front end makes."""
    _snapshot_needs_folder(front_end, values)
    record = _record(values.pop("record", None), front_end)
    for name in ("figure_tolerance", "rtol", "atol", "cache_hash_limit", "ship_limit"):
        if values.get(name) is None:
            values.pop(name, None)  # the field's default
    workers = values.pop("workers", None) or os.cpu_count() or 1
    _check_storage_options(values)
    if _output_url(values.get("output_dir"), front_end, values) is not None:
        values["output_url"] = str(values.pop("output_dir"))
    for name in ("output_dir", "results", "report", "snapshots", "notebook_dir_or_file"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    return RunConfig(
        front_end=front_end,
        option_names=option_names(front_end),
        record=record,
        workers=workers,
        **{**values, **resolved},
    )


def _check_storage_options(values: dict[str, Any]) -> None:
    """The API's ``storage_options``: a mapping, for an output dir given as a URL."""
    from pytest_millrun.core.storage import url_scheme

    given = values.pop("storage_options", None)
    if given is None:
        return
    if not isinstance(given, Mapping):
        raise OptionError(
            f"storage_options= takes a mapping of fsspec's keywords for the output URL's "
            f"filesystem (such as {{'anon': False}}), not a {type(given).__name__}."
        )
    if url_scheme(values.get("output_dir")) is None:
        raise OptionError(
            "storage_options= is for an output_dir given as a URL (s3://bucket/prefix, ...), "
            "and the output_dir here is a local folder. Leave storage_options= out, or give a URL."
        )
    values["storage_options"] = dict(given)


def _output_url(value: Any, front_end: FrontEnd, values: Mapping[str, Any]) -> str | None:
    """The output dir when it is a URL, checked; never made a local path (``s3:`` folders).

    Refused for now with figure snapshots, which read the figures back out of the outputs.
    """
    from pytest_millrun.core.storage import StorageError, check_output_url, redacted, url_scheme

    if url_scheme(value) is None:
        return None
    option = BY_NAME["output_dir"]
    named = f"{option.pytest_flag} / {option.ini}" if front_end == "pytest" else None
    try:
        check_output_url(value, named or advice_name(option, front_end))
    except StorageError as exc:
        raise OptionError(str(exc)) from None
    if values.get("snapshot_figures"):
        given = advice_name(BY_NAME["snapshot_figures"], front_end)
        raise OptionError(
            f"{given} reads the figures back out of the outputs, which it cannot do from "
            f"{redacted(value)} yet. Leave {given} out, or give a local folder."
        )
    return str(value)


def from_cli(params: Mapping[str, Any]) -> RunConfig:
    """The ``millrun`` command's config from click's parsed parameters (keyed by row name)."""
    values = _parsed("cli", params, lambda option: option.cli_flag)
    target = values["notebook_dir_or_file"] = Path(values["notebook_dir_or_file"])
    values["params"] = Path(params["params"])
    return _build("cli", values, base=target if target.is_dir() else target.parent)


def from_api(keywords: Mapping[str, Any], papermill_kwargs: Mapping[str, Any]) -> RunConfig:
    """``execute_run``'s config from its keywords (keyed by the API's names)."""
    by_api = {option.api: option for option in options_of("api")}
    raw = {by_api[name].name: value for name, value in keywords.items()}
    params = raw.pop("params")
    values = _parsed("api", raw, lambda option: str(option.api))
    target = Path(values["notebook_dir_or_file"])
    return _build(
        "api",
        values,
        params=params,
        base=target if target.is_dir() else target.parent,
        papermill_kwargs=dict(papermill_kwargs),
    )


def from_pytest(config: pytest.Config) -> RunConfig:
    """The plugin's config: command line over ini over default; paths relative to where given."""
    cli_base = config.invocation_params.dir
    ini_base = config.inipath.parent if config.inipath else config.rootpath
    raw: dict[str, Any] = {}
    where: dict[str, Path] = {}
    command_line: set[str] = set()
    for option in options_of("pytest"):
        value = config.getoption(option.ini)
        if value is not None:
            raw[option.name], where[option.name] = value, cli_base
            command_line.add(option.name)
        else:
            raw[option.name], where[option.name] = config.getini(option.ini), ini_base
    values = _parsed("pytest", raw, lambda option: f"{option.pytest_flag} / {option.ini}")
    url = _output_url(values.get("output_dir"), "pytest", values)
    if url is not None:  # outputs execute to a local staging folder, then go to the URL
        from pytest_millrun.core.storage import staging_folder

        values["output_url"], values["output_dir"] = url, None
        where["output_dir"] = staging_folder()
    for option in options_of("pytest"):
        if option.kind in ("file", "folder", "path"):
            given = values.get(option.name)
            values[option.name] = (where[option.name] / given).resolve() if given else None
    return _pytest_checks(config, values, raw, frozenset(command_line), where)


def _pytest_checks(
    config: pytest.Config, values: dict[str, Any], raw: Mapping[str, Any],
    command_line: frozenset[str], where: Mapping[str, Path],
) -> RunConfig:  # fmt: skip
    """What only the plugin checks at configure: the params file, the output, results files."""
    values["enabled"] = bool(values.get("enabled")) or values.get("params") is not None
    suite = None
    if values.get("params") is not None:
        from pytest_millrun.core.params import ParamsError
        from pytest_millrun.core.suite_file import load_suite

        try:
            suite = load_suite(values["params"])
        except ParamsError as exc:
            raise OptionError(str(exc)) from None
    values["output_dir"] = values.get("output_dir") or config.rootpath / ".millrun"
    if values.get("output_url") is not None:
        values["output_dir"] = where["output_dir"]
    if values["enabled"]:
        from pytest_millrun.core.naming import OutputPathError, check_output_folder

        try:
            check_output_folder(values["output_dir"], "--millrun-output-dir")
        except OutputPathError as exc:
            raise OptionError(str(exc)) from None
    _check_files(values)
    _dask_checks(config, values, command_line)
    snapshots = values.get("snapshots")
    if snapshots is not None and snapshots.exists() and not snapshots.is_dir():
        raise OptionError(
            f"--millrun-snapshots {raw['snapshots']}: {snapshots} is a file, not a folder. "
            f"Name a folder."
        )
    return _build(
        "pytest", values, base=config.rootpath, suite=suite, command_line=command_line
    )


def _check_files(values: dict[str, Any]) -> None:
    """The results table and the report: refused now when they would replace what they cannot."""
    from pytest_millrun.results import ResultsPathError, check_results_path

    try:
        if values.get("results") is not None:
            values["results"] = check_results_path(values["results"])
        if values.get("report") is not None:
            from pytest_millrun.report.page import check_report_path

            values["report"] = check_report_path(values["report"])
    except ResultsPathError as exc:
        raise OptionError(str(exc)) from None


def _dask_checks(
    config: pytest.Config, values: Mapping[str, Any], command_line: frozenset[str]
) -> None:
    """``--millrun-dask`` replaces xdist (one place decides where items run); its workers
    option sizes only the local cluster; ``distributed`` must be there before collecting."""
    dask = values.get("dask")
    if dask is None:
        if "workers" in command_line:
            raise OptionError(
                "--millrun-dask-workers sizes the cluster of --millrun-dask local; give "
                "--millrun-dask local too, or leave --millrun-dask-workers out."
            )
        return
    if "workers" in command_line and dask != "local":
        raise OptionError(
            f"--millrun-dask-workers sizes the cluster of --millrun-dask local; the cluster at "
            f"{dask} has the workers it has. Leave --millrun-dask-workers out."
        )
    xdist = config.getoption("numprocesses", None) or config.getoption("tx", None)
    if xdist and not hasattr(config, "workerinput"):
        raise OptionError(
            f"--millrun-dask {dask} runs the items on a Dask cluster, and -n / --tx would "
            f"spread them over pytest-xdist workers too: use one. Drop -n (and --tx) to run "
            f"on Dask, or drop --millrun-dask (the ini key millrun_dask) to use xdist."
        )
    import importlib.util

    if values.get("enabled") and importlib.util.find_spec("distributed") is None:
        from pytest_millrun.dispatch.cluster_errors import INSTALL_HINT

        raise OptionError(f"--millrun-dask {dask} needs the distributed package. {INSTALL_HINT}")
