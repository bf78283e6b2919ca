"""The once-per-cell papermill engine, with real kernels: the same notebook as papermill's
own engine, written about half as often, and as current as papermill's at every cell
boundary, after a failure and after an interrupted run."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import papermill
import papermill.iorw
import pytest

from millrun_testing import kernels_not_logged, write_notebook
from pytest_millrun.execution.execute import execute_notebook

pytestmark = pytest.mark.usefixtures("kernel_start")

#: Times, paths, and cell ids (papermill gives its injected cell a random one).
VOLATILE = {"start_time", "end_time", "duration", "execution", "input_path", "output_path", "id"}


def comparable(path: Path) -> Any:
    """The notebook without what differs between any two runs, and our output marker."""

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items() if k not in VOLATILE | {"millrun"}}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return scrub(json.loads(path.read_text()))


@pytest.mark.parametrize(
    ("cells", "status"),
    [
        (["print(x)", "y * 2", "import sys; print('e', file=sys.stderr)"], "passed"),
        (["print('ok')", "1 / 0", "never = 1"], "failed"),
    ],
    ids=["passing", "failing-cell"],
)
def test_output_is_the_one_papermills_own_engine_writes(
    tmp_path: Path, cells: list[str], status: str
) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", cells)
    ours = execute_notebook(notebook, tmp_path / "ours.ipynb", {"x": 5})
    assert ours.status == status
    theirs = tmp_path / "theirs.ipynb"
    with contextlib.suppress(Exception), kernels_not_logged():
        papermill.execute_notebook(
            str(notebook), str(theirs), parameters={"x": 5}, progress_bar=False
        )
    assert comparable(tmp_path / "ours.ipynb") == comparable(theirs)


def test_writes_once_per_cell_plus_the_final_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = [f"v{i} = {i}" for i in range(8)]
    notebook = write_notebook(tmp_path / "nb.ipynb", cells)  # + parameters + injected = 10
    writes: list[str] = []
    real_write = papermill.iorw.write_ipynb

    def counting_write(nb: Any, path: str, *args: Any, **kwargs: Any) -> None:
        writes.append(path)
        real_write(nb, path, *args, **kwargs)

    for module in ("papermill.iorw", "papermill.engines", "papermill.execute"):
        monkeypatch.setattr(f"{module}.write_ipynb", counting_write)
    result = execute_notebook(notebook, tmp_path / "out.ipynb", {"x": 1})
    assert result.status == "passed"
    assert len(writes) == 10 + 1  # papermill's engine: 2 * 10 + 3


def test_partial_output_shows_finished_cells_and_the_running_one(tmp_path: Path) -> None:
    release = tmp_path / "release"
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "print('first done')",
            f"import os, time\nwhile not os.path.exists({str(release)!r}):\n    time.sleep(0.02)",
        ],
    )
    partial = tmp_path / "out" / ".nb.partial.ipynb"
    worker = threading.Thread(
        target=execute_notebook, args=(notebook, tmp_path / "out" / "nb.ipynb", {"x": 1})
    )
    worker.start()
    try:
        deadline = time.monotonic() + 60
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                seen = json.loads(partial.read_text())
            except (OSError, ValueError):  # not there yet, or caught mid-write
                seen = {}
            if seen and seen["cells"][-1]["metadata"]["papermill"]["status"] == "running":
                break
            time.sleep(0.02)
        statuses = [cell["metadata"]["papermill"]["status"] for cell in seen["cells"]]
        assert statuses == ["completed", "completed", "completed", "running"]
        assert "first done" in "".join(seen["cells"][2]["outputs"][0]["text"])
    finally:
        release.touch()
        worker.join(60)
    assert not partial.exists()
    assert (tmp_path / "out" / "nb.ipynb").exists()


def test_a_dead_kernel_leaves_the_cells_before_it_as_papermills_engine_does(
    tmp_path: Path,
) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", ["print('kept')", "import os; os._exit(3)"])
    result = execute_notebook(notebook, tmp_path / "ours.ipynb", {"x": 1})
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.kind == "kernel-died"
    theirs = tmp_path / "theirs.ipynb"
    with pytest.raises(Exception, match="Kernel died"), kernels_not_logged():
        papermill.execute_notebook(
            str(notebook), str(theirs), parameters={"x": 1}, progress_bar=False
        )
    # the dying cell itself may or may not have had its execute_input message read
    assert comparable(tmp_path / "ours.ipynb")["cells"][:3] == comparable(theirs)["cells"][:3]
    assert "kept" in "".join(comparable(theirs)["cells"][2]["outputs"][0]["text"])


def test_papermill_metadata_is_what_a_plain_papermill_call_records(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", ["result = x + y"])
    output = tmp_path / "out" / "0-nb.ipynb"
    assert execute_notebook(notebook, output, {"x": 5}).passed
    ours = json.loads(output.read_text())
    with kernels_not_logged():
        papermill.execute_notebook(
            str(notebook), str(output), parameters={"x": 5}, progress_bar=False
        )
    theirs = json.loads(output.read_text())
    times = {"start_time", "end_time", "duration"}

    def fields(nb: dict[str, Any]) -> tuple[Any, ...]:
        meta = {k: v for k, v in nb["metadata"]["papermill"].items() if k not in times}
        cells = [
            {k: v for k, v in cell["metadata"]["papermill"].items() if k not in times}
            for cell in nb["cells"]
        ]
        return meta, cells, sorted(nb["metadata"]["papermill"])

    assert ours["metadata"]["papermill"]["input_path"] == str(notebook)
    assert ours["metadata"]["papermill"]["output_path"] == str(output)
    assert fields(ours) == fields(theirs)
