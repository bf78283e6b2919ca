"""The plugin's snapshot checks: compared where items run, written once where reports meet.

After a notebook item's call passes, its recorded values are compared with its
snapshot in the process that ran it (an xdist worker reads the file; nothing
writes it during the run).  A difference fails the item with the table.  With
``--millrun-snapshot-update`` the item passes instead and its change travels
on the call report as the attribute ``millrun_snapshot`` (plain JSON, as the
results table's rows do); the controller (or the only process) gathers them
and writes each file once at the end of the session, so no worker races
another on a file and none is lost.  Every item's setup report carries
``millrun_snapshot_key`` (notebook, variation id, how many variations the
notebook has) so the controller knows which notebooks ran whole.

Unused entries are decided per snapshot file (see
:mod:`pytest_millrun.snapshots.scope` and :meth:`SnapshotChecks.scope`):
reported by default, failing the run with ``--millrun-snapshot-strict``,
removed by an update.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Generator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pytest

from pytest_millrun.snapshots.checks import SnapshotReader, change_for, format_check
from pytest_millrun.snapshots.store import (
    Change,
    SnapshotFileError,
    Summary,
    Tolerance,
    apply_changes,
)

if TYPE_CHECKING:
    from pytest_millrun.config.run_config import RunConfig
    from pytest_millrun.snapshots.scope import Scope

CHANGE_ATTRIBUTE = "millrun_snapshot"
KEY_ATTRIBUTE = "millrun_snapshot_key"
UPDATE_HINT = "--millrun-snapshot-update"
STRICT_HINT = "--millrun-snapshot-strict"
SELECT_HINT = "add -k EXPRESSION"


class SnapshotMismatch(AssertionError):
    """A variation's values differ from its snapshot; the message is the report."""


def configure(config: pytest.Config, settings: RunConfig) -> None:
    """Register the checks when ``--millrun-snapshots`` (or its ini key) names a folder."""
    if settings.snapshots is None:
        return
    if settings.snapshot_figures:
        from pytest_millrun.snapshots.figures import kernel_backend

        stack = contextlib.ExitStack()
        stack.enter_context(kernel_backend())
        config.add_cleanup(stack.close)
    checks = SnapshotChecks(
        config,
        settings.snapshots,
        settings.tolerance,
        settings.snapshot_update,
        settings.snapshot_strict,
        settings.figures,
    )
    config.pluginmanager.register(checks, "millrun-snapshots")


def _notebook(item: pytest.Item) -> str:
    from pytest_millrun.core.files import relative

    return relative(item.path, item.config.rootpath)


class SnapshotChecks:
    def __init__(
        self,
        config: pytest.Config,
        directory: Path,
        tolerance: Tolerance,
        update: bool,
        strict: bool = False,
        figure_tolerance: float | None = None,
    ) -> None:
        self.config = config
        self.directory = directory
        self.update = update
        self.strict = strict
        self.figures = figure_tolerance is not None
        self.reader = SnapshotReader(directory, tolerance, figure_tolerance, not update)
        self.worker = hasattr(config, "workerinput")
        self.changes: dict[tuple[str, str], Change] = {}
        #: notebook -> the ids of its variations that ran, and how many it has
        self.ran: dict[str, set[str]] = {}
        self.planned: dict[str, int] = {}
        #: folders (relative to the rootdir) where something was deselected or failed to collect
        self.filtered: set[str] = set()
        self.summary: Summary | None = None
        self.failing = False
        self.error = ""

    # ------------------------------------------------------ where items run

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        """After pytest's own ``runtest`` call; not reached when the notebook failed."""
        from pytest_millrun.plugin.items import NotebookItem

        result = getattr(item, "result", None)
        if isinstance(item, NotebookItem) and result is not None and result.passed:
            self._check(item, result.recorded, result.output)

    def _check(self, item: Any, recorded: Any, output: Path | None) -> None:
        from pytest_millrun.snapshots.figures import FiguresUnavailableError

        notebook = _notebook(item)
        try:
            check = self.reader.check(notebook, item.variation_id, recorded, output)
        except (SnapshotFileError, FiguresUnavailableError) as exc:
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
            count = getattr(item.parent, "variation_count", -1)
            setattr(report, KEY_ATTRIBUTE, [_notebook(item), item.variation_id, count])
        elif call.when == "call":
            if call.excinfo is not None and isinstance(call.excinfo.value, SnapshotMismatch):
                report.longrepr = str(call.excinfo.value)
            change = item.stash.get(_change_key, None)
            if change is not None:
                setattr(report, CHANGE_ATTRIBUTE, change.to_json())

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.filtered.add(_folder(_notebook(item)))

    # ------------------------------------------------------ where reports meet

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.filtered.add(_folder(report.nodeid.partition("::")[0]))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        key = getattr(report, KEY_ATTRIBUTE, None)
        if isinstance(key, list) and len(key) == 3:
            notebook, variation, count = key
            self.ran.setdefault(notebook, set()).add(variation)
            self.planned[notebook] = count
        change = getattr(report, CHANGE_ATTRIBUTE, None)
        if isinstance(change, dict):
            parsed = Change.from_json(change)
            self.changes[(parsed.notebook, parsed.variation)] = parsed

    def scope(self, session: pytest.Session) -> Scope:
        """What this run saw, for its unused entries (syrupy's rule, by exact ids).

        A notebook counts when every variation it has reported (so -k, -m,
        --deselect, --lf, --sw, a node id or an -x stop leave it unchecked).
        A notebook gone counts when its folder lies under a folder argument
        (or testpaths), the run had no -k, -m, --deselect, --lf or --sw, and
        nothing in that folder was deselected or failed to collect.  An
        interrupted run decides nothing.
        """
        from pytest_millrun.snapshots.scope import Folder, Scope

        root = self.config.rootpath
        if session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return Scope(root)
        whole = {nb: ids for nb, ids in self.ran.items() if len(ids) == self.planned.get(nb)}
        partial = sorted(set(self.ran) - set(whole))
        filtered = self.filtered | {_folder(nb) for nb in partial}
        option = self.config.option
        selecting = (
            getattr(option, "keyword", "")
            or getattr(option, "markexpr", "")
            or getattr(option, "deselect", None)
            or getattr(option, "lf", False)
            or getattr(option, "stepwise", False)
            or getattr(option, "stepwise_skip", False)
        )
        folders: list[Folder] = []
        base = self.config.invocation_params.dir
        for arg in [] if selecting else self.config.args:
            path, separator, _ = arg.partition("::")
            folder = (base / path).resolve()
            if separator or not folder.is_dir():
                continue
            with contextlib.suppress(ValueError):
                folders.append(Folder(folder.relative_to(root.resolve()).as_posix()))
        return Scope(root, whole, partial, folders, sorted(filtered))

    def _ignored(self, path: Path) -> bool:
        """Whether this run would not have collected ``path`` (``--ignore``, norecursedirs ...)."""
        if self.config.hook.pytest_ignore_collect(collection_path=path, config=self.config):
            return True
        patterns = self.config.getini("norecursedirs") if path.suffix != ".ipynb" else []
        return any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker:
            return
        from pytest_millrun.snapshots.scope import unused_in_scope

        try:
            unused = unused_in_scope(self.directory, self.scope(session), self._ignored)
            if self.update:
                self.summary = apply_changes(
                    self.directory, sorted(self.changes.values(), key=_order), unused
                )
            else:
                self.summary = Summary(
                    unused=unused.names(self.directory), unchecked=len(unused.unchecked)
                )
        except (OSError, SnapshotFileError) as exc:
            self.error = f"could not write the snapshots in {self.directory}: {exc}"
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
            return
        self.failing = self.strict and not self.update and bool(self.summary.unused)
        if self.failing and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.error:
            terminalreporter.write_line(f"millrun: {self.error}", red=True, bold=True)
            return
        summary = self.summary
        if summary is None or (not self.update and not summary.unused):
            return
        strict = STRICT_HINT if self.failing else ""
        terminalreporter.write_line(
            f"millrun {summary.describe(self.update, UPDATE_HINT, strict)}", red=self.failing
        )
        unused = [] if self.update else summary.unused
        for name in unused[:20]:
            terminalreporter.write_line(f"  unused: {name}")
        if len(unused) > 20:
            terminalreporter.write_line(f"  ... and {len(unused) - 20} more")


def _folder(notebook: str) -> str:
    """The folder of a notebook given relative to the rootdir (posix; ``.`` the rootdir)."""
    return PurePosixPath(notebook).parent.as_posix()


def _order(change: Change) -> tuple[str, str]:
    return change.notebook, change.variation


_change_key = pytest.StashKey[Change]()
