"""Snapshot checks end to end: real kernels, the plugin (also under xdist), the command, the API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from millrun import MillrunSnapshotWarning, SnapshotMismatchError, execute_run
from millrun_testing import write_notebook, write_params

#: The value depends on scale.txt beside the notebook, so a test can change what it computes.
CELLS = ["scale = float(open('scale.txt').read())\ntotal = x * scale\nlabel = city"]


def project(root: Path, cities: list[str]) -> Path:
    write_notebook(root / "nbs" / "calc.ipynb", CELLS, params="x = 1.0\ncity = 'a'")
    (root / "nbs" / "scale.txt").write_text("2.0")
    write_params(root / "params.json", {"x": [1.0, 4.0, 5.0][: len(cities)], "city": cities})
    (root / "pytest.ini").write_text(
        "[pytest]\nmillrun_params = params.json\nmillrun_prepend = city\n"
        "millrun_record = total,label\nmillrun_snapshots = snaps\n"
    )
    return root / "snaps" / "nbs" / "calc.json"


@pytest.fixture
def snap(pytester: pytest.Pytester) -> Path:
    return project(pytester.path, ["oslo", "rome"])


def test_first_run_fails_with_the_hint_then_update_writes_and_rerun_passes(
    pytester: pytest.Pytester, snap: Path
) -> None:
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [f"*No snapshot for ?oslo? in {snap}. Run with --millrun-snapshot-update to write it*"]
    )
    assert not snap.exists()

    result = pytester.runpytest("--millrun-snapshot-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["millrun snapshots: 2 written, 0 updated, 0 unchanged, 0 unused"])
    assert json.loads(snap.read_text()) == {
        "oslo": {"values": {"label": "oslo", "total": 2.0}},
        "rome": {"values": {"label": "rome", "total": 8.0}},
    }
    assert snap.read_text().startswith('{\n  "oslo": {\n    "values": {\n      "label"')

    before = snap.read_text()
    pytester.runpytest().assert_outcomes(passed=2)
    result = pytester.runpytest("--millrun-snapshot-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["millrun snapshots: 0 written, 0 updated, 2 unchanged, 0 unused"])
    assert snap.read_text() == before


def test_changes_within_the_tolerance_pass_and_beyond_fail_with_the_table(
    pytester: pytest.Pytester, snap: Path
) -> None:
    pytester.runpytest("--millrun-snapshot-update").assert_outcomes(passed=2)
    scale = pytester.path / "nbs" / "scale.txt"
    scale.write_text("2.0000000001")  # 5e-11 relative: inside the default rtol 1e-9
    pytester.runpytest().assert_outcomes(passed=2)

    scale.write_text("2.002")
    result = pytester.runpytest("--millrun-results", "table.json")
    result.assert_outcomes(failed=2)
    rows = json.loads((pytester.path / "table.json").read_text())
    assert [(r["status"], r["error"][:25]) for r in rows] == [
        ("failed", "Recorded values of [oslo]"),
        ("failed", "Recorded values of [rome]"),
    ]
    result.stdout.fnmatch_lines(
        [
            f"*Recorded values of ?rome? differ from the snapshot in {snap} (1 difference):",
            "name * expected * got * abs diff * rel diff * tolerance",
            "total * 8.0 * 8.008 * 0.008 * 0.001 * rtol=1e-09 atol=0",
            "Run with --millrun-snapshot-update to accept (add -k EXPRESSION to accept only some).",
        ]
    )
    pytester.runpytest("--millrun-rtol", "0.01").assert_outcomes(passed=2)

    data = json.loads(snap.read_text())
    data["rome"]["tolerances"] = {"total": {"rtol": 0.01}}  # hand-edited, for one value
    snap.write_text(json.dumps(data))
    pytester.runpytest().assert_outcomes(passed=1, failed=1)

    result = pytester.runpytest("--millrun-snapshot-update", "-k", "oslo")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["*0 written, 1 updated, 0 unchanged, 0 unused; unused not checked in 1 file *"]
    )
    data = json.loads(snap.read_text())
    assert data["oslo"] == {"values": {"label": "oslo", "total": 2.002}}
    assert data["rome"] == {
        "tolerances": {"total": {"rtol": 0.01}},
        "values": {"label": "rome", "total": 8.0},
    }  # not selected: left as it was


def test_unused_entries_are_found_by_exact_ids_in_runs_with_a_path_or_testpaths(
    pytester: pytest.Pytester, snap: Path
) -> None:
    other = pytester.path / "nbs" / "sub" / "other.ipynb"
    write_notebook(other, ["total = x\nlabel = city"], params="x = 1.0\ncity = 'a'")
    pytester.runpytest("--millrun-snapshot-update", "nbs").assert_outcomes(passed=4)
    project(pytester.path, ["oslo", "lima"])  # rome is gone, lima new
    other.unlink()  # and so is a notebook

    # -k: calc ran in part, and nothing is said of the notebook gone
    result = pytester.runpytest("nbs", "-k", "lima", "--millrun-snapshot-update")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["millrun snapshots: 1 written, 0 updated, 0 unchanged, 0 unused; unused not checked in "
         "1 file (not every variation of its notebook ran)"]
    )  # fmt: skip
    assert sorted(json.loads(snap.read_text())) == ["lima", "oslo", "rome"]
    assert (snap.parent / "sub" / "other.json").exists()

    # a path argument: reported (by default the run passes; strict fails it)
    result = pytester.runpytest("nbs")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result = pytester.runpytest("nbs", "--millrun-snapshot-strict")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "millrun snapshots: 3 unused (--millrun-snapshot-update on a run of their notebooks "
            "removes them); they fail the run (--millrun-snapshot-strict)",
            "  unused: nbs/calc.json [[]rome[]]",
            "  unused: nbs/sub/other.json [[]oslo[]]",
            "  unused: nbs/sub/other.json [[]rome[]]",
        ]
    )

    # testpaths: an update removes them, and then nothing is unused
    (pytester.path / "pytest.ini").write_text(
        (pytester.path / "pytest.ini").read_text() + "testpaths = nbs\n"
    )
    result = pytester.runpytest("--millrun-snapshot-update", "--millrun-snapshot-strict")
    result.stdout.fnmatch_lines(["*0 updated, 2 unchanged, 3 unused (3 removed)"])
    assert result.ret == 0
    assert sorted(json.loads(snap.read_text())) == ["lima", "oslo"]
    assert sorted(p.name for p in snap.parent.rglob("*")) == ["calc.json", "sub"]
    result = pytester.runpytest("--millrun-snapshot-strict")
    assert result.ret == 0
    assert "millrun snapshots" not in result.stdout.str()


def test_under_xdist_every_update_lands(pytester: pytest.Pytester) -> None:
    snap = project(pytester.path, ["oslo", "rome", "lima"])
    write_notebook(pytester.path / "nbs" / "more" / "twice.ipynb", ["total = 2 * x\nlabel = city"],
                   params="x = 1.0\ncity = 'a'")  # fmt: skip
    result = pytester.runpytest_subprocess("--millrun-snapshot-update", "-n", "2")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["millrun snapshots: 6 written, 0 updated, 0 unchanged, 0 unused"])
    assert sorted(json.loads(snap.read_text())) == ["lima", "oslo", "rome"]
    twice = json.loads((snap.parent / "more" / "twice.json").read_text())
    assert {k: v["values"]["total"] for k, v in twice.items()} == {
        "oslo": 2.0, "rome": 8.0, "lima": 10.0
    }  # fmt: skip
    assert sorted(p.name for p in snap.parent.rglob("*")) == [
        "calc.json", "more", "twice.json"
    ]  # fmt: skip
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=6)

    project(pytester.path, ["oslo", "rome"])  # lima is gone
    (pytester.path / "nbs" / "more" / "twice.ipynb").unlink()
    result = pytester.runpytest_subprocess("nbs", "-n", "2", "--millrun-snapshot-strict")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["millrun snapshots: 4 unused *", "  unused: nbs/calc.json [[]lima[]]",
         "  unused: nbs/more/twice.json [[]lima[]]"]
    )  # fmt: skip
    result = pytester.runpytest_subprocess("nbs", "-n", "2", "--millrun-snapshot-update")
    result.stdout.fnmatch_lines(["*0 updated, 2 unchanged, 4 unused (4 removed)"])
    assert sorted(json.loads(snap.read_text())) == ["oslo", "rome"]
    assert not (snap.parent / "more" / "twice.json").exists()


def test_the_command_and_the_api_check_and_update(tmp_path: Path) -> None:
    snap = project(tmp_path, ["oslo", "rome"])
    snaps = tmp_path / "snaps"

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest_millrun", "nbs", "params.json", "--prepend", "city",
             "--record", "total,label", "--snapshots", "snaps", "--workers", "1", *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=180,
        )  # fmt: skip

    done = command()
    assert done.returncode == 1, done.stderr
    assert "No snapshot for [oslo]" in done.stdout
    assert "--snapshot-update" in done.stdout
    done = command("--snapshot-update")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "snapshots: 2 written, 0 updated, 0 unchanged, 0 unused" in done.stdout
    written = json.loads((snaps / "calc.json").read_text())
    assert written["rome"]["values"] == {"label": "rome", "total": 8.0}

    (tmp_path / "nbs" / "scale.txt").write_text("3.0")
    done = command()
    assert done.returncode == 1
    row = ["total", "8.0", "12.0", "4", "0.5", "rtol=1e-09", "atol=0"]
    assert row in [line.split() for line in done.stdout.splitlines()]

    params = {"x": [1.0, 4.0], "city": ["oslo", "rome"]}
    with pytest.raises(SnapshotMismatchError) as info:
        execute_run(
            tmp_path / "nbs", params, output_dir=tmp_path / "out",
            output_prepend_components=["city"], record=["total", "label"], snapshots=snaps,
        )  # fmt: skip
    assert "2 of 2 runs differ from their snapshots" in str(info.value)
    assert "snapshot_update=True" in str(info.value)
    execute_run(
        tmp_path / "nbs", {"x": [1.0], "city": ["oslo"]}, output_dir=tmp_path / "out",
        output_prepend_components=["city"], record=["total", "label"], snapshots=snaps,
        snapshot_update=True,
    )  # fmt: skip
    assert list(json.loads((snaps / "calc.json").read_text())) == ["oslo"]  # the API's run is full
    (snaps / "calc.json").write_text(
        json.dumps({**json.loads((snaps / "calc.json").read_text()), "old": {"values": {}}})
    )
    with pytest.warns(MillrunSnapshotWarning, match="1 unused"):
        execute_run(
            tmp_path / "nbs", {"x": [1.0], "city": ["oslo"]}, output_dir=tmp_path / "out",
            output_prepend_components=["city"], record=["total", "label"], snapshots=snaps,
        )  # fmt: skip
    assert not snap.exists()  # the plugin's layout (under nbs/) was never used here
    unused = r"1 unused snapshot entry:\n  calc.json \[old\]"
    with pytest.raises(SnapshotMismatchError, match=unused):
        execute_run(
            tmp_path / "nbs", {"x": [1.0], "city": ["oslo"]}, output_dir=tmp_path / "out",
            output_prepend_components=["city"], record=["total", "label"], snapshots=snaps,
            snapshot_strict=True,
        )  # fmt: skip
    (snaps / "other.json").write_text('{"a": {"values": {}}}')  # its notebook is gone...
    with pytest.raises(SnapshotMismatchError) as info:
        execute_run(
            tmp_path / "nbs" / "calc.ipynb", {"x": [1.0], "city": ["oslo"]},
            output_dir=tmp_path / "out", output_prepend_components=["city"],
            record=["total", "label"], snapshots=snaps, snapshot_strict=True,
        )  # fmt: skip
    assert info.value.unused == ["calc.json [old]"]  # ...but a run of one notebook cannot tell
    (snaps / "other.json").unlink()
    done = command("--snapshot-strict")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "they fail the run (--snapshot-strict)" in done.stdout
    assert "  unused: calc.json [old]" in done.stdout
    assert "  unused: calc.json [rome]" not in done.stdout  # rome is in this run's params
