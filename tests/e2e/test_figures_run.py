"""Figure snapshots end to end: real kernels drawing with matplotlib, the plugin (also under
xdist), the command and the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from millrun import SnapshotMismatchError, execute_run
from millrun_testing import write_notebook, write_params

pytest.importorskip("matplotlib")

#: The curve's end depends on shift.txt; the bars exist while bars.txt does.
CURVE = (
    "import os\nimport matplotlib.pyplot as plt\n"
    "shift = float(open('shift.txt').read())\n"
    "fig, ax = plt.subplots(figsize=(3, 2), dpi=50)\n"
    "ax.plot([0, 1, 2], [0, x, x + shift])\n"
    "ax.set_ylim(-3, 6)\nax.set_xticks([])\nax.set_yticks([])\nplt.show()"
)
BARS = (
    "if os.path.exists('bars.txt'):\n"
    "    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)\n"
    "    ax.bar([0, 1], [1, 2])\n    plt.show()\n"
    "total = x"
)


def project(root: Path, cities: list[str]) -> Path:
    """A notebook with a curve (named by position) and bars (named by a tag)."""
    path = write_notebook(root / "nbs" / "plot.ipynb", [CURVE, BARS], params="x = 1.0\ncity = 'a'")
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[2].metadata["tags"] = ["figure=bars"]
    nbformat.write(nb, str(path))
    (root / "nbs" / "shift.txt").write_text("1.0")
    (root / "nbs" / "bars.txt").write_text("")
    write_params(root / "params.json", {"x": [1.0, 2.0, 3.0][: len(cities)], "city": cities})
    (root / "pytest.ini").write_text(
        "[pytest]\nmillrun_params = params.json\nmillrun_prepend = city\n"
        "millrun_record = total\nmillrun_snapshots = snaps\nmillrun_snapshot_figures = true\n"
    )
    return root / "snaps" / "nbs"


def test_update_writes_baselines_a_rerun_passes_and_a_moved_curve_fails_with_the_rms(
    pytester: pytest.Pytester,
) -> None:
    snaps = project(pytester.path, ["oslo", "rome"])
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*No snapshot for [[]oslo[]]*"])

    result = pytester.runpytest("--millrun-snapshot-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*2 written, 0 updated, 0 unchanged, 0 unused; figures: 4 written*"]
    )
    oslo = snaps / "plot.figures" / "oslo"
    assert sorted(p.name for p in oslo.iterdir()) == ["bars.png", "cell2-1.png"]
    assert json.loads((snaps / "plot.json").read_text())["oslo"] == {
        "figures": ["cell2-1", "bars"],
        "values": {"total": 1.0},
    }
    baselines = {p: p.read_bytes() for p in snaps.rglob("*.png")}

    result = pytester.runpytest("--millrun-snapshot-update")  # every check passes: a rerun
    result.stdout.fnmatch_lines(["*0 written, 0 updated, 2 unchanged, 0 unused"])
    assert {p: p.read_bytes() for p in snaps.rglob("*.png")} == baselines  # no churn

    (pytester.path / "nbs" / "shift.txt").write_text("-1.0")  # the curve turns down
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*Figures of [[]oslo[]] differ from the snapshot in *plot.json (1 figure):",
            "  figure cell2-1: RMS * > tolerance 2; see "
            "*/.millrun/nbs/oslo-plot.figures/cell2-1.{expected,got,diff}.png",
        ]
    )
    failures = pytester.path / ".millrun" / "nbs" / "oslo-plot.figures"
    assert sorted(p.name for p in failures.iterdir()) == [
        "cell2-1.diff.png", "cell2-1.expected.png", "cell2-1.got.png"
    ]  # fmt: skip
    rms = float(result.stdout.str().split("figure cell2-1: RMS ")[1].split()[0])
    assert 2 < rms < 60
    result = pytester.runpytest("--millrun-figure-tolerance", "60")
    result.assert_outcomes(passed=2)
    assert not failures.exists()  # a passing check leaves no old images behind

    data = json.loads((snaps / "plot.json").read_text())
    data["oslo"]["figure_tolerances"] = {"cell2-1": 60}  # hand-edited, for one figure
    (snaps / "plot.json").write_text(json.dumps(data))
    pytester.runpytest().assert_outcomes(passed=1, failed=1)

    # the curve changed and the bars are gone: an update rewrites the one, removes the other
    (pytester.path / "nbs" / "bars.txt").unlink()
    result = pytester.runpytest("-k", "rome")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "  figure bars: not produced (the snapshot has it); "
            "see */rome-plot.figures/bars.expected.png"
        ]
    )
    result = pytester.runpytest("--millrun-snapshot-update")
    result.stdout.fnmatch_lines(
        ["*0 written, 2 updated, 0 unchanged, 0 unused; figures: 1 written, 2 removed"]
    )
    data = json.loads((snaps / "plot.json").read_text())
    assert data["oslo"]["figure_tolerances"] == {"cell2-1": 60}  # kept, and so is its baseline
    assert (oslo / "cell2-1.png").read_bytes() == baselines[oslo / "cell2-1.png"]
    assert data["rome"] == {"figures": ["cell2-1"], "values": {"total": 2.0}}
    assert sorted(p.name for p in snaps.rglob("*.png")) == ["cell2-1.png", "cell2-1.png"]


def test_under_xdist_every_baseline_is_written_once_and_unused_figures_go_with_their_entry(
    pytester: pytest.Pytester,
) -> None:
    snaps = project(pytester.path, ["oslo", "rome", "lima"])
    result = pytester.runpytest_subprocess("--millrun-snapshot-update", "-n", "2")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["*3 written, 0 updated, 0 unchanged, 0 unused; figures: 6 written*"]
    )
    assert sorted(p.relative_to(snaps).as_posix() for p in snaps.rglob("*.png")) == [
        f"plot.figures/{city}/{name}.png"
        for city in ("lima", "oslo", "rome")
        for name in ("bars", "cell2-1")
    ]
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=3)
    project(pytester.path, ["oslo", "rome"])  # lima is gone
    result = pytester.runpytest_subprocess("nbs", "-n", "2", "--millrun-snapshot-update")
    result.stdout.fnmatch_lines(
        ["*2 unchanged, 1 unused (1 removed); figures: 0 written, 2 removed"]
    )
    assert not (snaps / "plot.figures" / "lima").exists()


def test_the_command_and_the_api_compare_figures(tmp_path: Path) -> None:
    project(tmp_path, ["oslo"])
    snaps = tmp_path / "snaps"

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest_millrun", "nbs", "params.json", "--prepend", "city",
             "--record", "total", "--snapshots", "snaps", "--snapshot-figures", "--workers", "1",
             *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=180,
            env={**os.environ, "MPLBACKEND": "Agg"},  # which would draw no figure in a notebook
        )  # fmt: skip

    done = command("--snapshot-update")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "figures: 2 written" in done.stdout
    assert sorted(p.name for p in (snaps / "plot.figures" / "oslo").iterdir()) == [
        "bars.png", "cell2-1.png"
    ]  # fmt: skip
    assert command().returncode == 0
    (tmp_path / "nbs" / "shift.txt").write_text("-1.0")
    done = command("--report", "report.html")
    assert done.returncode == 1
    assert "figure cell2-1: RMS " in done.stdout
    page = (tmp_path / "report.html").read_text()
    assert "<h3>plot.ipynb [oslo] figure cell2-1</h3>" in page  # expected, got, diff inline
    assert page.count('<img src="data:image/png;base64,') == 3
    assert command("--figure-tolerance", "60").returncode == 0

    run = {
        "output_dir": tmp_path / "out", "output_prepend_components": ["city"],
        "record": ["total"], "snapshots": snaps, "snapshot_figures": True,
    }  # fmt: skip
    with pytest.raises(SnapshotMismatchError, match=r"figure cell2-1: RMS .* > tolerance 2"):
        execute_run(tmp_path / "nbs", {"x": [1.0], "city": ["oslo"]}, **run)
    assert (tmp_path / "out" / "oslo-plot.figures" / "cell2-1.diff.png").is_file()
    execute_run(tmp_path / "nbs", {"x": [1.0], "city": ["oslo"]}, figure_tolerance=60, **run)
    with pytest.raises(ValueError, match="snapshot_figures=True needs snapshots="):
        execute_run(tmp_path / "nbs", {"x": [1.0]}, snapshot_figures=True)
