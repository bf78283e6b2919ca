"""The kernel session's composition without a kernel: which requests a run makes, and the
in-kernel source they carry, run here in a namespace standing for the notebook's."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_millrun.execution import kernel_session
from pytest_millrun.execution.kernel_requests import builtin_parts
from pytest_millrun.execution.kernel_session import (
    CELL_REQUEST,
    HOME,
    EndReply,
    KernelSession,
    KernelSessionPart,
    end_expression,
)
from pytest_millrun.execution.recording import Recorder


class Counter(KernelSessionPart):
    """Counts cells in the kernel; reports the count at the end."""

    name = "counter"

    def start_code(self) -> str:
        return "cells = 0"

    def cell_code(self) -> str:
        return "cells += 1"

    def end_code(self) -> str:
        return "payload = {'cells': cells, 'x': user_namespace.get('x')}"


class Progress(KernelSessionPart):
    """Host side only, for any kernel."""

    name = "progress"
    languages = None

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def cell_started(self, cell_index: int, cell: Any) -> None:
        self.seen.append(("started", cell_index))

    def cell_finished(self, cell_index: int, cell: Any, execute_reply: Mapping[str, Any]) -> None:
        self.seen.append(("finished", cell_index))


class Broken(KernelSessionPart):
    name = "broken"

    def start_code(self) -> str:
        return "raise OSError('no coverage here')"

    def end_code(self) -> str:
        return "payload = 1"


class Reported(KernelSessionPart):
    name = "reported"

    def __init__(self) -> None:
        self.replies: list[EndReply] = []

    def end_code(self) -> str:
        return "payload = [1, float('nan')]"

    def read_end(self, reply: EndReply) -> Any:
        self.replies.append(reply)
        return super().read_end(reply)


@pytest.fixture
def kernel_namespace() -> Iterator[dict[str, Any]]:
    """A notebook's namespace, and no session module left over in this process."""
    yield {"x": 3, "exec": "a notebook's own", "json": 1, "globals": None}
    sys.modules.pop(HOME, None)


def run_start(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<start>", "exec"), namespace)


def ask(expression: str, namespace: dict[str, Any]) -> Any:
    """What ipykernel does with a user expression: eval it in the user's namespace, show it."""
    return json.loads(repr(eval(expression, namespace)))


def test_builtin_parts_and_the_recorder_make_one_start_request_and_nothing_per_cell() -> None:
    session = KernelSession([*builtin_parts(), Recorder(["a"])])
    code = session.start("python")
    assert code is not None
    assert code.index("point_faulthandler_at_the_real_stderr()") < code.index(
        "relay_stderr_through_a_process_that_outlives_the_kernel()"
    )
    assert session.needs_engine  # the recorder's end request

    class Client:
        pass

    client = Client()
    session.install_cell_hooks(client)
    assert vars(client) == {}  # no nbclient hook, so no call and no round trip per cell


def test_a_session_without_end_or_cell_work_leaves_the_engine_alone() -> None:
    session = KernelSession([*builtin_parts(), Recorder([])])
    assert not session.needs_engine


def test_nothing_python_reaches_a_bash_kernel() -> None:
    recorder, progress = Recorder(["a"]), Progress()
    session = KernelSession([*builtin_parts(), Counter(), recorder, progress])
    assert session.start("bash") is None
    session._cell_started(cell={}, cell_index=0)
    assert progress.seen == [("started", 0)]  # a host-side part of any language still sees cells
    assert not session._cell_request
    session.end(None, failed=False)  # asks no kernel: no client needed
    assert recorder.kernel_error == "it is a bash kernel, not python"
    problem = recorder.problem(Path("greet.ipynb"))
    assert problem is not None
    assert "Recording variables needs a Python (IPython) kernel" in problem[1]
    assert session.report == {}


def test_parts_need_distinct_names() -> None:
    with pytest.raises(ValueError, match="distinct, non-empty names"):
        KernelSession([Counter(), Counter()])
    with pytest.raises(ValueError, match="distinct, non-empty names"):
        KernelSession([KernelSessionPart()])


def test_kernel_code_is_for_python_kernels_only() -> None:
    class BashPart(Counter):
        name = "bash_part"
        languages = frozenset({"bash"})

    with pytest.raises(ValueError, match="bash_part sends Python"):
        KernelSession([BashPart()])


def test_start_cells_and_end_run_in_one_namespace_per_part_and_leave_the_user_none(
    kernel_namespace: dict[str, Any],
) -> None:
    session = KernelSession([Counter(), Recorder(["x", "y"])])
    code = session.start("Python")
    assert code is not None
    before = set(kernel_namespace)
    run_start(code, kernel_namespace)
    for _cell in range(3):
        exec(CELL_REQUEST, kernel_namespace)
    counter = end_expression("counter", session.sources["counter"][2], kept=True)
    assert ask(counter, kernel_namespace) == {"cells": 3, "x": 3}
    record = end_expression("record", session.sources["record"][2], kept=False)
    assert ask(record, kernel_namespace) == {"values": {"x": 3}, "notes": {}, "missing": ["y"]}
    assert set(kernel_namespace) - before <= {"__builtins__"}  # exec adds it; a kernel has it
    assert kernel_namespace["exec"] == "a notebook's own"
    assert list(sys.modules[HOME].namespaces) == ["counter"]  # only the part that needs it


def test_start_only_parts_run_in_order_and_leave_no_session_module(
    kernel_namespace: dict[str, Any],
) -> None:
    class First(KernelSessionPart):
        name = "first"

        def start_code(self) -> str:
            return "import sys\nsys.millrun_test_order = ['first']\nraise OSError('ignored')"

    class Second(KernelSessionPart):
        name = "second"

        def start_code(self) -> str:
            return "import sys\nsys.millrun_test_order.append('second')"

    code = KernelSession([First(), Second()]).start("python")
    assert code is not None
    before = dict(kernel_namespace)
    try:
        run_start(code, kernel_namespace)
        assert sys.millrun_test_order == ["first", "second"]  # type: ignore[attr-defined]
    finally:
        vars(sys).pop("millrun_test_order", None)
    assert HOME not in sys.modules
    assert {k: v for k, v in kernel_namespace.items() if k != "__builtins__"} == before


def test_in_ipython_cell_code_runs_from_its_events_not_from_a_request_per_cell(
    kernel_namespace: dict[str, Any],
) -> None:
    session = KernelSession([Counter()])
    code = session.start("python", "ipython")
    assert code is not None
    assert not session._cell_request
    run_start(code, kernel_namespace)  # no IPython shell in this process: the part is told
    with pytest.raises(RuntimeError, match="no IPython shell here to run its code after each"):
        eval(end_expression("counter", session.sources["counter"][2], kept=True), kernel_namespace)


def test_a_part_whose_start_failed_says_so_at_the_end_and_stops_no_other(
    kernel_namespace: dict[str, Any],
) -> None:
    session = KernelSession([Broken(), Counter()])
    code = session.start("python")
    assert code is not None
    run_start(code, kernel_namespace)
    exec(CELL_REQUEST, kernel_namespace)
    with pytest.raises(RuntimeError, match="its start code failed: OSError: no coverage here"):
        eval(end_expression("broken", session.sources["broken"][2], kept=True), kernel_namespace)
    counter = end_expression("counter", session.sources["counter"][2], kept=True)
    assert ask(counter, kernel_namespace)["cells"] == 1


class FakeReplies:
    """A client whose kernel answers the end request with ``content`` (the parsing only)."""

    def __init__(self, *contents: dict[str, Any]) -> None:
        self.contents = list(contents)
        self.asked: list[dict[str, Any]] = []
        self.kc = self

    def execute(self, code: str, **kwargs: Any) -> str:
        self.asked.append(kwargs)
        return "id"

    def wait_for_reply(self, msg_id: str) -> dict[str, Any]:
        return {"content": self.contents.pop(0)}


def ok(text: str) -> dict[str, Any]:
    return {"status": "ok", "data": {"text/plain": text}}


def test_the_end_request_hands_each_part_its_own_reply() -> None:
    reported, recorder = Reported(), Recorder(["a"])
    session = KernelSession([reported, recorder])
    session.start("python")
    client = FakeReplies(
        {"status": "aborted"},  # ipykernel still clearing its queue after an error: asked again
        {
            "status": "ok",
            "user_expressions": {
                "millrun:reported": ok("[1, NaN]"),
                "millrun:record": {"status": "error", "ename": "NameError", "evalue": "read"},
            },
        },
    )
    session.end(client, failed=False)
    assert len(client.asked) == 2
    assert set(client.asked[0]["user_expressions"]) == {"millrun:reported", "millrun:record"}
    assert client.asked[0]["silent"] is True
    assert reported.replies[0].payload[0] == 1
    assert recorder.kernel_error == "NameError: read"
    assert list(session.report) == ["reported"]


def test_after_a_failed_cell_only_the_parts_that_want_it_are_asked() -> None:
    reported, recorder = Reported(), Recorder(["a"])
    session = KernelSession([reported, recorder])
    session.start("python")
    client = FakeReplies({"status": "ok", "user_expressions": {"millrun:reported": ok("{]")}})
    session.end(client, failed=True)
    assert set(client.asked[0]["user_expressions"]) == {"millrun:reported"}
    assert reported.replies == [EndReply(error="unreadable reply '{]'")]
    assert not recorder.asked  # recorded values keep their rule: only after every cell ran
    assert session.report == {}


def test_a_missing_reply_reads_as_no_reply() -> None:
    reply = kernel_session._end_reply({"status": "ok"}, "millrun:x")
    assert reply == EndReply(error="no reply")
