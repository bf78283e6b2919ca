"""The plugin's results table: rows built where items run, written once where reports meet.

Each notebook item's row (see :class:`pytest_millrun.results.ResultRow`) is
built in the process that ran it and travels on its test report as the extra
attribute ``millrun_row``, plain JSON data: pytest-xdist serialises a report's
attributes to the controller the way it does ``user_properties``, and pytest
gives them back as attributes there.  The controller (or the only process,
without xdist) gathers them in ``pytest_runtest_logreport`` and writes the
table once at the end of the session, in collection order, whatever happened;
the HTML report (:mod:`pytest_millrun.report.page`) is made from the same rows.

An item cut short by Ctrl-C or SIGTERM has no call report (pytest re-raises
the interrupt before making one), so its row is taken from the interruption
itself; on an xdist worker it goes to the controller in ``workeroutput``.  The
setup report carries a provisional ``interrupted`` row, which is all a
controller interrupted together with its workers may get.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_millrun.core.files import relative
from pytest_millrun.results import ResultRow, write_results

ROW_ATTRIBUTE = "millrun_row"


class ResultsTable:
    """Registered by the plugin when it is on; writes only when a results file was asked for."""

    def __init__(
        self, config: pytest.Config, path: Path | None, report: Path | None = None
    ) -> None:
        self.config = config
        self.path = path
        self.report = report
        self.report_written: Path | None = None
        self.worker = hasattr(config, "workerinput")
        self.order: list[str] = []
        self.rows: dict[str, dict[str, Any]] = {}
        self.interrupted: dict[str, dict[str, Any]] = {}
        self.written: Path | None = None
        self.write_error = ""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        if call.when in ("setup", "call"):
            row = self._row(item, report, call)
            if row is not None:
                setattr(report, ROW_ATTRIBUTE, row.to_json())

    def _row(self, item: pytest.Item, report: Any, call: Any) -> ResultRow | None:
        from pytest_millrun.plugin.items import NotebookItem

        if not isinstance(item, NotebookItem):
            return None
        root = self.config.rootpath
        if item.result is not None and call.when == "call":
            row = ResultRow.from_result(item.result, root)
            if report.outcome == "failed" and row.status == "passed" and call.excinfo:
                # the notebook ran, a check after it failed (a snapshot difference)
                headline = str(call.excinfo.value).strip().splitlines()[0]
                row = dataclasses.replace(row, status="failed", error=headline)
            return row
        if call.when == "setup" and report.outcome == "passed":
            # provisional, until the call's report replaces it: what an xdist controller
            # keeps of an item whose worker is interrupted before it can report
            return ResultRow(
                notebook=relative(item.path, root),
                variation=item.variation_id,
                status="interrupted",
                output=relative(item.output, root),
                error="interrupted: cut short before it finished",
                params=dict(item.variation),
            )
        error = ""
        if report.outcome == "failed" and call.excinfo is not None:
            error = call.excinfo.exconly().strip().splitlines()[0]
        return ResultRow(
            notebook=relative(item.path, root),
            variation=item.variation_id,
            status="skipped" if report.outcome == "skipped" else "failed",
            duration_s=round(report.duration, 3),
            output=relative(item.output, root) if item.output.exists() else "",
            error=error,
            params=dict(item.variation),
            traceback=str(report.longrepr) if error else "",
        )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, Any, None]:
        outcome = yield
        from pytest_millrun.core.data import ExecutionInterrupted

        excinfo = outcome.excinfo
        if excinfo is not None and isinstance(excinfo[1], ExecutionInterrupted):
            row = ResultRow.from_result(excinfo[1].result, self.config.rootpath).to_json()
            self.interrupted[item.nodeid] = row
            self.rows[item.nodeid] = row

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        from pytest_millrun.plugin.state import collection_order_key

        collected = self.config.stash.get(collection_order_key, None)  # before longest first
        self.order = collected or [item.nodeid for item in session.items]

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if not self.order:  # every worker collects the same items
            self.order = list(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        row = getattr(report, ROW_ATTRIBUTE, None)
        if isinstance(row, dict):
            self.rows[report.nodeid] = row

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", None) or {}
        self.rows.update(output.get("millrun_interrupted", {}))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker:
            workeroutput = getattr(self.config, "workeroutput", None)
            if workeroutput is not None and self.interrupted:
                workeroutput["millrun_interrupted"] = dict(self.interrupted)
            return
        table = self.table() if self.path is not None or self.report is not None else []
        try:
            if self.path is not None:
                self.written = write_results(table, self.path)
        except OSError as exc:
            self.write_error = f"could not write the results table {self.path}: {exc}"
        try:
            if self.report is not None:
                self.report_written = self._write_report(table, self.report)
        except OSError as exc:
            self.write_error = f"could not write the HTML report {self.report}: {exc}"
        if self.write_error and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    def _write_report(self, table: list[ResultRow], path: Path) -> Path:
        import shlex

        from pytest_millrun.plugin.state import session_key
        from pytest_millrun.report.page import write_report

        settings = self.config.stash[session_key].settings
        args = " ".join(shlex.quote(str(a)) for a in self.config.invocation_params.args)
        return write_report(
            table,
            path,
            root=self.config.rootpath,
            command=f"pytest {args}".strip(),
            params_file=relative(settings.params_file, self.config.rootpath)
            if settings.params_file
            else None,
        )

    def table(self) -> list[ResultRow]:
        """The rows in collection order (any row of an unknown item last)."""
        position = {nodeid: index for index, nodeid in enumerate(self.order)}
        ordered = sorted(self.rows, key=lambda nodeid: position.get(nodeid, len(position)))
        return [ResultRow.from_json(self.rows[nodeid]) for nodeid in ordered]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.write_error:
            terminalreporter.write_line(f"millrun: {self.write_error}", red=True, bold=True)
        count = len(self.rows)
        if self.written is not None:
            terminalreporter.write_line(
                f"millrun: {count} row{'s' if count != 1 else ''} written to {self.written}"
            )
        if self.report_written is not None:
            terminalreporter.write_line(f"millrun: HTML report written to {self.report_written}")
