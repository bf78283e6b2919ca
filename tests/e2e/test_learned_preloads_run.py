"""Learned preloads (issue 34) and restarted templates (issue 32), with real kernels.

The modules preloaded here live in a site-packages folder of the test's own (the user
site of a private ``PYTHONUSERBASE``, put on ``PYTHONPATH``), so nothing but this test
ever imports them: a kernel that finds one in ``sys.modules`` before its notebook
imported it got it from its template.  Each module appends the pid of the process that
imports it to a log, which tells a template's import from a kernel's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from millrun_testing import assert_no_kernels_left, write_notebook, write_params

MARKER = """\
import os
with open(os.environ["PL_LOG"], "a") as log:
    log.write(f"{__name__} {os.getpid()}\\n")
"""

#: A module that starts a thread when imported: a template that imported it could not fork.
THREADED = MARKER + """\
import threading, time
threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="plthread-sleeper").start()
"""

#: The notebook's one cell: were the modules there before it imported them, and who ran it.
CELL = """\
import json, os, sys
had = {name: name in sys.modules for name in ("plmarker", "plthread")}
import plmarker, plthread
parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
print(json.dumps({"had": had, "pid": os.getpid(), "forked": "millrun-fork-template" in parent}))
"""


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private site-packages folder holding ``plmarker`` and ``plthread``, importable."""
    base = tmp_path / "userbase"
    monkeypatch.setenv("PYTHONUSERBASE", str(base))
    found = subprocess.run(
        [sys.executable, "-c", "import site; print(site.getusersitepackages())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    site = Path(found.stdout.strip())
    site.mkdir(parents=True)
    (site / "plmarker.py").write_text(MARKER)
    (site / "plthread.py").write_text(THREADED)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PL_LOG", str(tmp_path / "imports.log"))
    monkeypatch.setenv("MILLRUN_KERNEL_START", "fork")
    return site


def imports_log(tmp_path: Path) -> list[tuple[str, int]]:
    path = tmp_path / "imports.log"
    lines = path.read_text().split("\n") if path.exists() else []
    return [(line.split()[0], int(line.split()[1])) for line in lines if line]


def cell_reports(outputs: list[Path]) -> list[dict[str, object]]:
    reports = []
    for output in outputs:
        nb = json.loads(output.read_text())
        texts = [
            "".join(out.get("text", ""))
            for cell in nb["cells"]
            for out in cell.get("outputs", [])
            if out.get("name") == "stdout"
        ]
        reports.append(json.loads(texts[-1]))
    return reports


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "--millrun-params", "p.json", "nb", *args
    )  # fmt: skip


def plugin_setup(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nb" / "uses.ipynb", [CELL], params="x = 0")
    write_params(pytester.path / "p.json", {"x": [1, 2]})


def plugin_outputs(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".millrun").rglob("*.ipynb"))


@pytest.mark.usefixtures("site_dir")
def test_second_plugin_run_preloads_what_the_first_imported_and_drops_a_thread_starter(
    pytester: pytest.Pytester, tmp_path: Path, kernel_tmp: Path
) -> None:
    plugin_setup(pytester)
    run_pytest(pytester, "-n", "0").assert_outcomes(passed=2)
    first = cell_reports(plugin_outputs(pytester))
    assert all(r["had"] == {"plmarker": False, "plthread": False} for r in first)
    assert all(r["forked"] for r in first)
    record = json.loads(plugin_outputs(pytester)[0].read_text())["metadata"]["millrun"]
    assert record["preloads"]["imported"] == ["plmarker", "plthread"]

    second = run_pytest(pytester, "-n", "0", "-v")
    second.assert_outcomes(passed=2)
    kernels = cell_reports(plugin_outputs(pytester))
    # plmarker came from the template; plthread, which starts a thread, was dropped, the
    # run still forked its kernels (no fall back to spawning), and -v said so once
    assert all(r["had"] == {"plmarker": True, "plthread": False} for r in kernels)
    assert all(r["forked"] for r in kernels)
    said = [line for line in second.outlines if "plthread is not preloaded" in line]
    assert len(said) == 1
    assert "started Python threads" in said[0]
    assert "ForkFallbackWarning" not in second.stdout.str()
    pids = {int(str(r["pid"])) for r in kernels}
    marker_imports = [pid for name, pid in imports_log(tmp_path) if name == "plmarker"]
    assert not pids & set(marker_imports[2:]), "the second run's kernels imported nothing"

    before = len(imports_log(tmp_path))
    third = run_pytest(pytester, "-n", "0", "-v")
    third.assert_outcomes(passed=2)
    assert "plthread is not preloaded" not in third.stdout.str(), "said once"
    thread_imports = [pid for name, pid in imports_log(tmp_path)[before:] if name == "plthread"]
    kernels = cell_reports(plugin_outputs(pytester))
    assert sorted(thread_imports) == sorted(int(str(r["pid"])) for r in kernels), (
        "remembered: no template tried plthread again, only the kernels imported it"
    )
    assert_no_kernels_left(kernel_tmp)


@pytest.mark.usefixtures("site_dir")
def test_learned_preloads_under_xdist(pytester: pytest.Pytester) -> None:
    plugin_setup(pytester)
    run_pytest(pytester, "-n", "2").assert_outcomes(passed=2)
    run_pytest(pytester, "-n", "2").assert_outcomes(passed=2)
    kernels = cell_reports(plugin_outputs(pytester))
    assert all(r["had"] == {"plmarker": True, "plthread": False} for r in kernels)
    assert all(r["forked"] for r in kernels)


@pytest.mark.usefixtures("site_dir")
def test_preload_none_turns_learning_off(pytester: pytest.Pytester) -> None:
    plugin_setup(pytester)
    run_pytest(pytester).assert_outcomes(passed=2)
    run_pytest(pytester, "--millrun-preload", "none").assert_outcomes(passed=2)
    kernels = cell_reports(plugin_outputs(pytester))
    assert all(r["had"] == {"plmarker": False, "plthread": False} for r in kernels)
    record = json.loads(plugin_outputs(pytester)[0].read_text())["metadata"]["millrun"]
    assert "preloads" not in record, "nothing recorded either"


@pytest.mark.usefixtures("site_dir")
def test_modules_measured_by_cov_are_never_preloaded(pytester: pytest.Pytester) -> None:
    plugin_setup(pytester)
    run_pytest(pytester, "--cov=plmarker").assert_outcomes(passed=2)
    run_pytest(pytester, "--cov=plmarker").assert_outcomes(passed=2)
    kernels = cell_reports(plugin_outputs(pytester))
    assert all(r["had"] == {"plmarker": False, "plthread": False} for r in kernels)
    run_pytest(pytester).assert_outcomes(passed=2)  # without --cov it is preloaded again
    kernels = cell_reports(plugin_outputs(pytester))
    assert all(r["had"]["plmarker"] for r in kernels)


@pytest.mark.usefixtures("site_dir")
def test_command_learns_from_its_outputs(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nb" / "uses.ipynb", [CELL], params="x = 0")
    write_params(tmp_path / "p.json", {"x": [1, 2]})
    command = [sys.executable, "-m", "pytest_millrun", "nb", "p.json", "--output-dir", "out",
               "--no-progress", "--workers", "1"]  # fmt: skip
    for verbose in ([], ["-v"]):
        done = subprocess.run(
            command + verbose, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).count("plthread is not preloaded") == 1
    kernels = cell_reports(sorted((tmp_path / "out").glob("*.ipynb")))
    assert all(r["had"] == {"plmarker": True, "plthread": False} for r in kernels)
    assert all(r["forked"] for r in kernels)
    record = json.loads(sorted((tmp_path / "out").glob("*.ipynb"))[0].read_text())
    assert "plthread" in record["metadata"]["millrun"]["preloads"]["unsafe"]


#: Reads the preloaded local module; the first variation then changes it (a new size too).
LOCAL_CELL = """\
import helper
print(helper.VALUE)
if x == 1:
    with open(helper.__file__, "w") as f:
        f.write("VALUE = 'changed, and longer'\\n")
"""


def test_changed_preloaded_local_module_is_seen_by_the_next_kernel(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, kernel_tmp: Path
) -> None:
    lib = pytester.path / "lib"
    lib.mkdir()
    (lib / "helper.py").write_text("VALUE = 'first'\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")]))
    write_notebook(pytester.path / "nb" / "local.ipynb", [LOCAL_CELL], params="x = 0")
    write_params(pytester.path / "p.json", {"x": [1, 2, 3]})
    result = run_pytest(
        pytester, "-n", "0", "--millrun-preload", "helper", "--millrun-kernel-start", "fork"
    )
    result.assert_outcomes(passed=3)
    values = {}
    for output in plugin_outputs(pytester):
        nb = json.loads(output.read_text())
        x = nb["metadata"]["papermill"]["parameters"]["x"]
        values[x] = "".join(nb["cells"][-1]["outputs"][0]["text"]).strip()
    assert values == {1: "first", 2: "changed, and longer", 3: "changed, and longer"}
    assert_no_kernels_left(kernel_tmp)


@pytest.mark.usefixtures("site_dir")
def test_api_learns_from_its_outputs(tmp_path: Path, kernel_tmp: Path) -> None:
    from pytest_millrun import execute_run

    write_notebook(tmp_path / "nb" / "uses.ipynb", [CELL], params="x = 0")
    for _run in range(2):
        [result] = execute_run(tmp_path / "nb", {"x": [1]}, output_dir=tmp_path / "out")
        assert result.passed
    assert result.kernel_report["imports"]["imported"] == ["plmarker", "plthread"]
    [kernel] = cell_reports([Path(str(result.output))])
    assert kernel["had"] == {"plmarker": True, "plthread": False}
    assert_no_kernels_left(kernel_tmp)


def test_a_preloaded_pyplot_still_draws_inline_figures_into_the_output(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template imports pyplot before the kernel chose its inline backend: the kernel
    must still show figures, as one that imported pyplot itself does."""
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("MILLRUN_KERNEL_START", "fork")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    cell = "import matplotlib.pyplot as plt\nplt.plot([1, x, 3])\nplt.show()"
    write_notebook(pytester.path / "nbs" / "plot.ipynb", [cell], params="x = 1")
    write_params(pytester.path / "p.json", {"x": [1, 2]})
    args = ["-p", "no:randomly", "--millrun-params", "p.json", "nbs"]
    for _ in range(2):  # the second run's template preloads what the first imported
        pytester.runpytest_subprocess(*args).assert_outcomes(passed=2)
        for output in sorted((pytester.path / ".millrun").rglob("*.ipynb")):
            nb = json.loads(output.read_text())
            shown = [o for o in nb["cells"][-1]["outputs"] if "image/png" in o.get("data", {})]
            assert len(shown) == 1, (output.name, nb["cells"][-1]["outputs"])
    learned = json.loads(next((pytester.path / ".millrun").rglob("*.ipynb")).read_text())
    assert "matplotlib.pyplot" in json.dumps(learned["metadata"]["millrun"])
    assert_no_kernels_left(pytester.path)
