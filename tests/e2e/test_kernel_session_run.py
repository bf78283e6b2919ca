"""The kernel session protocol with real kernels: a test-only part, registered the way a later
feature registers one, runs its start code in the kernel (forked or spawned, never the fork
template), its cell code after every cell, and gets its end payload back, after a failing
cell too; a bash kernel is sent no Python at all."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from millrun_testing import write_notebook
from pytest_millrun.execution.execute import execute_notebook
from pytest_millrun.execution.kernel_session import EndReply, KernelSessionPart

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class CellCounter(KernelSessionPart):
    """Counts cells in the kernel and on the host; says at the end in which process it ran."""

    name = "cell_counter"

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []

    def start_code(self) -> str:
        return (
            "import os\n"
            "start_pid, parent_pid = os.getpid(), os.getppid()\n"
            "with open(f'/proc/{parent_pid}/cmdline', 'rb') as parent:\n"
            "    parent_name = parent.read().split(b'\\0')[0].decode()\n"
            "cells = 0\n"
        )

    def cell_code(self) -> str:
        return "cells += 1"

    def end_code(self) -> str:
        return (
            "payload = {'start_pid': start_pid, 'end_pid': os.getpid(), "
            "'parent_pid': parent_pid, 'parent_name': parent_name, 'cells': cells, "
            "'left_in_user': sorted({'cells', 'start_pid', 'payload', 'os'} & set(user_namespace))}"
        )

    def cell_started(self, cell_index: int, cell: Any) -> None:
        self.started.append(cell_index)

    def cell_finished(self, cell_index: int, cell: Any, execute_reply: Mapping[str, Any]) -> None:
        self.finished.append(cell_index)

    def read_end(self, reply: EndReply) -> dict[str, Any]:
        return {
            "kernel": reply.payload,
            "error": reply.error,
            "host_started": self.started,
            "host_finished": self.finished,
        }


def executed_code_cells(output: Path) -> list[int]:
    cells = json.loads(output.read_text())["cells"]
    return [i for i, cell in enumerate(cells) if cell.get("execution_count") is not None]


def check_where_it_ran(kernel: dict[str, Any], kernel_start: str) -> None:
    assert kernel["start_pid"] == kernel["end_pid"]  # start and end in the same kernel process
    assert kernel["start_pid"] != kernel["parent_pid"]  # not in the template: its child
    forked = kernel["parent_name"].startswith("millrun-fork-template")
    assert forked == (kernel_start == "fork"), kernel["parent_name"]
    assert kernel["left_in_user"] == []


def test_a_part_starts_in_the_kernel_counts_every_cell_and_reports_at_the_end(
    tmp_path: Path, kernel_start: str
) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", ["a = x + y", "# markdown-like", "b = a * 2"])
    output = tmp_path / "out" / "nb.ipynb"
    result = execute_notebook(
        notebook, output, {"x": 5}, record=["b"], session_parts=[CellCounter]
    )
    assert result.passed, result.error
    assert result.recorded == {"b": 14}  # the recorder shares the one end request
    report = result.kernel_report["cell_counter"]
    assert report["error"] == ""
    check_where_it_ran(report["kernel"], kernel_start)
    ran = executed_code_cells(output)  # parameters, injected parameters, the three cells
    assert len(ran) == 5
    assert report["kernel"]["cells"] == len(ran)
    assert report["host_started"] == report["host_finished"] == ran


def test_a_failing_cell_still_gets_the_end_request_but_records_nothing(
    tmp_path: Path, kernel_start: str
) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", ["a = 1", "raise ValueError('late')", "b = 2"])
    output = tmp_path / "out" / "nb.ipynb"
    result = execute_notebook(notebook, output, {}, record=["a"], session_parts=[CellCounter])
    assert result.error is not None
    assert result.error.ename == "ValueError"  # the cell's error, not a recording problem
    assert result.recorded == {}  # recorded values only after every cell ran, as before
    report = result.kernel_report["cell_counter"]
    check_where_it_ran(report["kernel"], kernel_start)
    ran = executed_code_cells(output)  # parameters, a = 1 and the failing cell, which counts
    assert report["kernel"]["cells"] == len(ran) == 3
    assert report["host_started"] == report["host_finished"] == [0, 1, 2]  # papermill adds
    # its error markers to the saved notebook later, so its indices are shifted there


def test_a_bash_kernel_is_sent_no_python_and_a_python_part_is_told_why(
    tmp_path: Path, bash_kernel: str
) -> None:
    notebook = write_notebook(
        tmp_path / "greet.ipynb", ['echo "hello $NAME"'], params="NAME=nobody",
        kernel=bash_kernel, language="bash",
    )  # fmt: skip
    output = tmp_path / "out" / "greet.ipynb"
    result = execute_notebook(
        notebook, output, {"NAME": "bob"}, kernel_start="spawn", session_parts=[CellCounter]
    )
    assert result.passed, result.error
    report = result.kernel_report["cell_counter"]
    assert report == {
        "kernel": None,
        "error": "it is a bash kernel, not python",
        "host_started": [],
        "host_finished": [],
    }
