"""What a saved notebook tells of a failed run, without kernels: the lines a cell printed
before its error, and the note for a run an exit stopped early."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_millrun.execution.failures import early_exit_note, printed_lines


def cell(outputs: list[dict[str, object]], status: str = "completed", count: int = 1) -> dict:
    return {
        "cell_type": "code",
        "execution_count": count,
        "metadata": {"papermill": {"status": status}},
        "outputs": outputs,
        "source": "",
    }


def test_early_exit_note_counts_the_code_cells_that_never_ran() -> None:
    exit_output = {"output_type": "error", "ename": "SystemExit", "evalue": "", "traceback": []}
    cells = [
        cell([]),
        cell([exit_output], "failed", 2),
        {"cell_type": "markdown", "metadata": {}, "source": "notes"},
        cell([], "pending", None),  # type: ignore[arg-type]
        cell([], "pending", None),  # type: ignore[arg-type]
    ]
    note = early_exit_note(Path("/x/stop.ipynb"), cells)
    assert note == "stop.ipynb: stopped by SystemExit in cell [2]; 2 later cells not run."
    assert early_exit_note(Path("stop.ipynb"), cells[:3]) is None  # nothing was left out
    assert early_exit_note(Path("stop.ipynb"), [cell([]), cell([], "pending")]) is None


def test_printed_lines_skip_papermills_markers_and_keep_the_last_lines(tmp_path: Path) -> None:
    marker = {"cell_type": "markdown", "metadata": {"tags": ["papermill-error-cell-tag"]}}
    printed = [
        {"output_type": "stream", "name": "stdout", "text": ["one\n", "two\n"]},
        {"output_type": "display_data", "data": {"text/plain": "shown"}, "metadata": {}},
        {"output_type": "stream", "name": "stderr", "text": "UsageError: no such magic.\n"},
    ]
    saved = tmp_path / "out.ipynb"
    saved.write_text(json.dumps({"cells": [marker, cell([]), marker, cell(printed)]}))
    assert printed_lines(saved, 1) == "one\ntwo\nUsageError: no such magic."
    assert printed_lines(saved, 1, lines=1) == "UsageError: no such magic."
    assert printed_lines(saved, 0) == ""
    assert printed_lines(saved, 5) == ""
    assert printed_lines(tmp_path / "missing.ipynb", 1) == ""
