"""The plugin's snapshot checks: compared where items run, written once where reports meet.

After a notebook item's call passes, its recorded values are compared with its
snapshot in the process that ran it (an xdist worker reads the file; nothing
writes it during the run).  A difference fails the item with the table.  With
``--millrun-snapshot-update`` the item passes instead and its change travels
on the call report as the attribute ``millrun_snapshot`` (plain JSON, as the
results table's rows do); the controller (or the only process) gathers them
and writes each file once at the end of the session, so no worker races
another on a file and none is lost.  Every item's setup report carries
``millrun_snapshot_key`` so the controller knows which variations exist.

Unused entries are computed only on a full, unfiltered run (see
:meth:`SnapshotChecks.full_run`), and removed only by an update on one.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_millrun.outputs.snapshot_files import (
    Change,
    SnapshotFileError,
    Summary,
    Tolerance,
    ToleranceError,
    apply_changes,
    check_tolerance,
    unused_entries,
)
from pytest_millrun.outputs.snapshots import SnapshotReader, change_for, format_check

CHANGE_ATTRIBUTE = "millrun_snapshot"
KEY_ATTRIBUTE = "millrun_snapshot_key"
UPDATE_HINT = "--millrun-snapshot-update"
SELECT_HINT = "add -k EXPRESSION"


class SnapshotMismatch(AssertionError):
    """A variation's values differ from its snapshot; the message is the report."""


def _raw(config: pytest.Config, name: str) -> tuple[Any, Path]:
    ini = f"millrun_{name.replace('-', '_')}"
    value = config.getoption(ini)
    if value is not None:
        return value, config.invocation_params.dir
    return config.getini(ini), config.inipath.parent if config.inipath else config.rootpath


def configure(config: pytest.Config) -> None:
    """Register the checks when ``--millrun-snapshots`` (or its ini key) names a folder."""
    value, base = _raw(config, "snapshots")
    tolerance = Tolerance()
    try:
        for name in ("rtol", "atol"):
            raw = _raw(config, name)[0]
            if raw not in (None, ""):
                number = check_tolerance(raw, f"--millrun-{name} / millrun_{name}")
                tolerance = Tolerance(
                    rtol=number if name == "rtol" else tolerance.rtol,
                    atol=number if name == "atol" else tolerance.atol,
                )
    except ToleranceError as exc:
        raise pytest.UsageError(str(exc)) from None
    update = bool(_raw(config, "snapshot-update")[0])
    if not value:
        if update:
            raise pytest.UsageError(
                "--millrun-snapshot-update needs a snapshot folder: give --millrun-snapshots DIR "
                "(or the ini key millrun_snapshots)."
            )
        return
    directory = (base / value).resolve()
    if directory.exists() and not directory.is_dir():
        raise pytest.UsageError(
            f"--millrun-snapshots {value}: {directory} is a file, not a folder. Name a folder."
        )
    config.pluginmanager.register(
        SnapshotChecks(config, directory, tolerance, update), "millrun-snapshots"
    )


def _notebook(item: pytest.Item) -> str:
    from pytest_millrun.outputs.files import relative

    return relative(item.path, item.config.rootpath)


class SnapshotChecks:
    def __init__(
        self, config: pytest.Config, directory: Path, tolerance: Tolerance, update: bool
    ) -> None:
        self.config = config
        self.directory = directory
        self.update = update
        self.reader = SnapshotReader(directory, tolerance)
        self.worker = hasattr(config, "workerinput")
        self.changes: dict[tuple[str, str], Change] = {}
        self.used: dict[str, list[str]] = {}
        self.collected = -1
        self.deselected = False
        self.collect_errors = False
        self.summary: Summary | None = None
        self.error = ""

    # ------------------------------------------------------ where items run

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        """After pytest's own ``runtest`` call; not reached when the notebook failed."""
        from pytest_millrun.plugin.items import NotebookItem

        result = getattr(item, "result", None)
        if isinstance(item, NotebookItem) and result is not None and result.passed:
            self._check(item, result.recorded)

    def _check(self, item: Any, recorded: Any) -> None:
        notebook = _notebook(item)
        try:
            check = self.reader.check(notebook, item.variation_id, recorded)
        except SnapshotFileError as exc:
            raise SnapshotMismatch(str(exc)) from None
        if check.state == "empty":
            return
        if self.update:
            item.stash[_change_key] = change_for(notebook, item.variation_id, check, recorded)
        elif check.state != "matches":
            raise SnapshotMismatch(
                format_check(
                    check, item.variation_id, update_hint=UPDATE_HINT, select_hint=SELECT_HINT
                )
            )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        from pytest_millrun.plugin.items import NotebookItem

        if not isinstance(item, NotebookItem):
            return
        if call.when == "setup":
            setattr(report, KEY_ATTRIBUTE, [_notebook(item), item.variation_id])
        elif call.when == "call":
            if call.excinfo is not None and isinstance(call.excinfo.value, SnapshotMismatch):
                report.longrepr = str(call.excinfo.value)
            change = item.stash.get(_change_key, None)
            if change is not None:
                setattr(report, CHANGE_ATTRIBUTE, change.to_json())

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected = len(session.items)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        if items:
            self.deselected = True

    # ------------------------------------------------------ where reports meet

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors = True

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.collected = max(self.collected, len(ids))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        key = getattr(report, KEY_ATTRIBUTE, None)
        if isinstance(key, list) and len(key) == 2:
            ids = self.used.setdefault(key[0], [])
            if key[1] not in ids:
                ids.append(key[1])
        change = getattr(report, CHANGE_ATTRIBUTE, None)
        if isinstance(change, dict):
            parsed = Change.from_json(change)
            self.changes[(parsed.notebook, parsed.variation)] = parsed

    def full_run(self, session: pytest.Session) -> bool:
        """Whether every variation there is ran: no selection of any kind, no early stop.

        Conservative: any -k/-m/--deselect, path or node-id argument, --lf/--ff
        subset, stepwise, deselection by a plugin, collection error, -x stop or
        interruption makes a run partial, and then nothing is called unused.
        """
        option = self.config.option
        if getattr(option, "keyword", "") or getattr(option, "markexpr", ""):
            return False
        if getattr(option, "deselect", None) or getattr(option, "lf", False):
            return False
        if getattr(option, "stepwise", False) or getattr(option, "stepwise_skip", False):
            return False
        if self.config.args_source == pytest.Config.ArgsSource.ARGS:
            return False
        if self.deselected or self.collect_errors or session.shouldstop or session.shouldfail:
            return False
        if session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return False
        reported = sum(len(ids) for ids in self.used.values())
        return self.collected >= 0 and reported == self.collected

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker:
            return
        used = self.used if self.full_run(session) else None
        try:
            if self.update:
                self.summary = apply_changes(
                    self.directory, sorted(self.changes.values(), key=_order), used
                )
            elif used is not None:
                self.summary = Summary(unused=unused_entries(self.directory, used))
        except (OSError, SnapshotFileError) as exc:
            self.error = f"could not write the snapshots in {self.directory}: {exc}"
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.error:
            terminalreporter.write_line(f"millrun: {self.error}", red=True, bold=True)
            return
        summary = self.summary
        if summary is None or (not self.update and not summary.unused):
            return
        terminalreporter.write_line(f"millrun {summary.describe(self.update)}")
        unused = summary.unused or []
        for name in unused[:20]:
            terminalreporter.write_line(f"  unused: {name}")
        if len(unused) > 20:
            terminalreporter.write_line(f"  ... and {len(unused) - 20} more")


def _order(change: Change) -> tuple[str, str]:
    return change.notebook, change.variation


_change_key = pytest.StashKey[Change]()
