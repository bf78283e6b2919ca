"""Incremental runs end to end: real kernels; the plugin (and xdist), the command, the API, Dask."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_markdown_cell

from millrun_testing import write_notebook, write_params
from pytest_millrun import execute_run

#: Reads a declared input (scale.txt) and an undeclared one (note.txt, a read the kernel
#: records); fails for x == 13.
CELLS = [
    "scale = float(open('scale.txt').read())",
    "note = open('note.txt').read()",
    "assert x != 13, 'unlucky'\ntotal = x * scale",
]


def project(root: Path, xs: list[int], ini: str = "") -> Path:
    notebook = write_notebook(root / "nbs" / "calc.ipynb", CELLS, params="x = 1")
    (root / "nbs" / "scale.txt").write_text("2.0")
    (root / "nbs" / "note.txt").write_text("hello")
    write_params(root / "params.json", {"x": xs})
    (root / "pytest.ini").write_text(
        "[pytest]\nmillrun_params = params.json\nmillrun_record = total\nmillrun_cache = true\n"
        f"millrun_cache_inputs = nbs/scale.txt\n{ini}"
    )
    return notebook


def edit(notebook: Path, index: int, source: str) -> None:
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells[index].source = source
    nbformat.write(nb, str(notebook))


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k in ("passed", "failed", "cached")}


def ran(result: pytest.RunResult) -> list[str]:
    """The ``-v`` reasons, as ``nodeid: reason`` lines."""
    prefix = "millrun: ran "
    return [line[len(prefix) :] for line in result.outlines if line.startswith(prefix)]


def stored_key(output: Path) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(output.read_text())["metadata"]["millrun"]["cache"]
    return entry


def test_each_part_of_the_key_reruns_what_it_should_and_nothing_else(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = project(pytester.path, [1, 2, 3])
    out = pytester.path / ".millrun" / "nbs"
    assert outcomes(pytester.runpytest()) == {"passed": 3}
    key = stored_key(out / "0-calc.ipynb")
    assert key["parts"]["inputs"] == {"nbs/scale.txt": key["parts"]["inputs"]["nbs/scale.txt"]}
    assert key["parts"]["parameters"].keys() == {"x"}
    assert key["parts"]["record"] == ["total"]

    warm = pytester.runpytest("-v")
    assert outcomes(warm) == {"cached": 3}
    assert ran(warm) == []
    warm.stdout.fnmatch_lines(["*calc[[]0[]] CACHED*"])
    assert "ccc" in pytester.runpytest().stdout.str()

    nb = nbformat.read(str(notebook), as_version=4)  # markdown, outputs, ids: not in the key
    nb.cells.insert(1, new_markdown_cell("# Notes"))
    nb.cells[2].execution_count = 5
    nbformat.write(nb, str(notebook))
    assert outcomes(pytester.runpytest()) == {"cached": 3}

    edit(notebook, 4, "assert x != 13, 'unlucky'\ntotal = x * scale + 0")  # code cell 4
    result = pytester.runpytest("-v")
    assert outcomes(result) == {"passed": 3}
    assert ran(result) == [f"nbs/calc.ipynb::calc[{i}]: code cell 4 changed" for i in range(3)]

    write_params(pytester.path / "params.json", {"x": [1, 2, 4]})
    result = pytester.runpytest("-v")
    assert outcomes(result) == {"passed": 1, "cached": 2}
    assert ran(result) == ["nbs/calc.ipynb::calc[2]: parameters changed (x)"]

    (pytester.path / "nbs" / "note.txt").write_text("not declared, but read: seen")
    result = pytester.runpytest("-v")
    assert outcomes(result) == {"passed": 3}
    assert ran(result) == [f"nbs/calc.ipynb::calc[{i}]: read note.txt changed" for i in range(3)]
    assert outcomes(pytester.runpytest()) == {"cached": 3}
    (pytester.path / "nbs" / "scale.txt").write_text("3.0")
    result = pytester.runpytest("-v")
    assert outcomes(result) == {"passed": 3}
    assert ran(result)[0] == "nbs/calc.ipynb::calc[0]: input nbs/scale.txt changed"

    result = pytester.runpytest("-v", "--millrun-record", "total,scale")
    assert outcomes(result) == {"passed": 3}
    assert ran(result)[0].endswith("recorded names changed")
    assert outcomes(pytester.runpytest("--millrun-record", "total,scale")) == {"cached": 3}

    # another kernelspec (the same Python under another name) is another key
    kernels = pytester.path / "jupyter" / "kernels" / "other"
    kernels.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]}
    (kernels / "kernel.json").write_text(
        json.dumps({**spec, "display_name": "Other", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(pytester.path / "jupyter"))
    result = pytester.runpytest(
        "-v", "--millrun-kernel", "other", "--millrun-record", "total,scale"
    )
    assert outcomes(result) == {"passed": 3}
    assert ran(result)[0].endswith("kernel changed (python3, python -> other, python)")
    assert outcomes(
        pytester.runpytest("--millrun-kernel", "other", "--millrun-record", "total,scale")
    ) == {"cached": 3}

    # a stored environment that differs names the distribution that changed
    output = out / "1-calc.ipynb"
    nb_json = json.loads(output.read_text())
    entry = nb_json["metadata"]["millrun"]["cache"]
    real = entry["distributions"]["pytest"]
    entry["distributions"]["pytest"] = "0.1"
    entry["parts"]["environment"]["distributions"] = "older"
    output.write_text(json.dumps(nb_json))
    result = pytester.runpytest(
        "-v", "--millrun-kernel", "other", "--millrun-record", "total,scale"
    )
    assert outcomes(result) == {"passed": 1, "cached": 2}
    assert ran(result) == [f"nbs/calc.ipynb::calc[1]: environment changed (pytest 0.1 -> {real})"]


def test_failed_edited_and_missing_outputs_rerun_and_cached_values_are_reported(
    pytester: pytest.Pytester,
) -> None:
    project(
        pytester.path,
        [1, 13, 3],
        "millrun_results = table.json\nmillrun_snapshots = snaps\n",
    )
    out = pytester.path / ".millrun" / "nbs"
    first = pytester.runpytest("--millrun-snapshot-update")
    assert outcomes(first) == {"passed": 2, "failed": 1}
    assert "cache" not in json.loads((out / "1-calc.ipynb").read_text())["metadata"]["millrun"]

    # the report imports matplotlib: in a process of its own, as in-process runs drop the
    # modules they import and a later import in this process would mix two copies
    args = ("-v", "--junitxml=junit.xml", "--millrun-report", "report.html")
    result = pytester.runpytest_subprocess(*args)
    assert outcomes(result) == {"cached": 2, "failed": 1}
    assert ran(result) == ["nbs/calc.ipynb::calc[1]: no passing output"]
    junit = (pytester.path / "junit.xml").read_text()
    assert junit.count('<property name="millrun_cached" value="true"') == 2
    table = json.loads((pytester.path / "table.json").read_text())
    assert [(r["status"], r["cached"], r.get("value.total")) for r in table] == [
        ("passed", True, 2.0),
        ("failed", False, None),
        ("passed", True, 6.0),
    ]
    assert (
        "2 of 3, read back from earlier passing runs" in (pytester.path / "report.html").read_text()
    )

    # the cached values still meet their snapshots: a wrong one fails the cached variation
    snapshot = pytester.path / "snaps" / "nbs" / "calc.json"
    snapshot.write_text(snapshot.read_text().replace("6.0", "7.0"))
    result = pytester.runpytest("-k", "calc[2]")
    assert outcomes(result) == {"failed": 1}
    result.stdout.fnmatch_lines(["Recorded values of [[]2[]] differ from the snapshot*"])
    assert outcomes(pytester.runpytest("-k", "calc[2]", "--millrun-snapshot-update")) == {
        "cached": 1
    }

    text = (out / "0-calc.ipynb").read_text()
    (out / "0-calc.ipynb").write_text(text.replace('"total": 2.0', '"total": 2.5'))
    (out / "2-calc.ipynb").unlink()
    result = pytester.runpytest("-v", "-k", "not calc[1]")
    assert outcomes(result) == {"passed": 2}
    assert ran(result) == [
        "nbs/calc.ipynb::calc[0]: output changed since its run",
        "nbs/calc.ipynb::calc[2]: no output",
    ]

    result = pytester.runpytest("-v", "--millrun-force", "-k", "calc[0]")
    assert outcomes(result) == {"passed": 1}
    assert ran(result) == ["nbs/calc.ipynb::calc[0]: forced (--millrun-force)"]
    assert outcomes(pytester.runpytest("-k", "not calc[1]")) == {"cached": 2}


def test_under_xdist_workers_check_their_items_and_clean_output_keeps_cached_ones(
    pytester: pytest.Pytester,
) -> None:
    project(pytester.path, [1, 2, 3, 4], "millrun_results = table.csv\n")
    out = pytester.path / ".millrun" / "nbs"
    stale = out / "9-calc.ipynb"
    assert outcomes(pytester.runpytest_subprocess("-n", "2")) == {"passed": 4}
    stale.write_text((out / "0-calc.ipynb").read_text())  # an output this run does not write
    result = pytester.runpytest_subprocess("-n", "2", "-v", "--millrun-clean-output")
    assert outcomes(result) == {"cached": 4}
    assert not stale.exists()
    assert len(list(out.glob("*-calc.ipynb"))) == 4
    assert (pytester.path / "table.csv").read_text().count(",passed,true,") == 4
    (pytester.path / "nbs" / "scale.txt").write_text("5")
    result = pytester.runpytest_subprocess("-n", "2", "-v")
    assert outcomes(result) == {"passed": 4}
    assert sorted(ran(result)) == [
        f"nbs/calc.ipynb::calc[{i}]: input nbs/scale.txt changed" for i in range(4)
    ]


def test_the_command_and_the_api_share_the_cache_and_dispatch_only_what_runs(
    tmp_path: Path,
) -> None:
    notebook = project(tmp_path, [1, 2])
    params, out = tmp_path / "params.json", tmp_path / "out"
    cold = execute_run(
        notebook.parent, params, out, record=["total"], cache=True, cache_inputs=["scale.txt"],
        use_multiprocessing=True, workers=2,
    )  # fmt: skip
    assert [(r.cached, r.cache_reasons, r.recorded) for r in cold] == [
        (False, ("no output",), {"total": 2.0}),
        (False, ("no output",), {"total": 4.0}),
    ]
    millrun = [sys.executable, "-m", "pytest_millrun", str(notebook.parent), str(params)]
    common = ["--output-dir", str(out), "--record", "total", "--cache", "--no-progress"]
    common += ["--cache-inputs", "scale.txt,missing/*.csv", "--results", str(tmp_path / "t.csv")]
    warm = subprocess.run([*millrun, *common], capture_output=True, text=True)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "[1/2] CACHED calc.ipynb [0]" in warm.stderr
    assert "'missing/*.csv' matched no file" in warm.stderr
    assert "0 passed, 2 cached, 0 failed" in warm.stdout
    assert (tmp_path / "t.csv").read_text().count(",passed,true,") == 2

    edit(notebook, 2, "note = 'changed'")
    again = subprocess.run([*millrun, *common, "-v"], capture_output=True, text=True)
    assert "calc.ipynb [1]: code cell 3 changed" in again.stderr
    assert "2 passed, 0 failed" in again.stdout

    seen: list[str] = []
    warm_api = execute_run(
        notebook.parent, params, out, record=["total"], cache=True, cache_inputs=["scale.txt"],
        use_multiprocessing=True, on_result=lambda r: seen.append(r.variation_id),
    )  # fmt: skip
    assert [r.cached for r in warm_api] == [True, True]
    assert seen == ["0", "1"]
    assert [r.recorded for r in warm_api] == [{"total": 2.0}, {"total": 4.0}]
    forced = execute_run(notebook.parent, params, out, record=["total"], force=True)
    assert [r.cache_reasons for r in forced] == [("forced (force=True)",)] * 2


def test_on_dask_only_the_changed_variation_is_submitted_and_suite_inputs_count(
    tmp_path: Path,
) -> None:
    distributed = pytest.importorskip("distributed")
    notebook = project(tmp_path, [1, 2, 3])
    params, out = tmp_path / "params.json", tmp_path / "out"

    def suite(xs: list[int]) -> None:  # the notebook's own inputs, relative to params.json
        write_params(
            params,
            {
                "notebooks": {
                    "nbs/calc.ipynb": {
                        "variations": [{"x": x} for x in xs],
                        "inputs": ["nbs/scale.txt"],
                    }
                }
            },
        )

    suite([1, 2, 3])
    execute_run(notebook.parent, params, out, cache=True)
    suite([1, 5, 3])
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):  # fmt: skip
        results = execute_run(notebook.parent, params, out, cache=True, dask=client)
        submitted = client.run_on_scheduler(
            lambda dask_scheduler: sum(
                1 for key in dask_scheduler.tasks if "run_job_on_worker" in str(key)
            )
        )
    assert [r.cached for r in results] == [True, False, True]
    assert results[1].cache_reasons == ("parameters changed (x)",)
    assert submitted <= 1
    (notebook.parent / "scale.txt").write_text("4")
    again = execute_run(notebook.parent, params, out, cache=True)
    assert [r.cache_reasons for r in again] == [("input scale.txt changed",)] * 3


def test_ignored_files_are_never_in_the_key_from_any_front_end(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    project(pytester.path, [1], ini="millrun_cache_ignore = **/debug.txt\n")
    nbs = pytester.path / "nbs"
    (nbs / "debug.txt").write_text("noise")
    inputs = ("--millrun-cache-inputs", "nbs/*.txt")
    assert outcomes(pytester.runpytest(*inputs)) == {"passed": 1}
    (nbs / "debug.txt").write_text("more noise")
    assert outcomes(pytester.runpytest(*inputs)) == {"cached": 1}
    result = pytester.runpytest(*inputs, "--millrun-cache-ignore", "nbs/other.txt", "-v")
    assert ran(result) == [
        "nbs/calc.ipynb::calc[0]: input nbs/debug.txt added; ignored globs changed"
    ]
    bad = pytester.runpytest("--millrun-cache-hash-limit", "1GB")
    assert "--millrun-cache-hash-limit / millrun_cache_hash_limit must be" in bad.stderr.str()

    millrun = [sys.executable, "-m", "pytest_millrun", str(nbs), str(pytester.path / "params.json")]
    common = ["--output-dir", str(tmp_path / "cli"), "--cache", "--cache-inputs", "*.txt"]
    common += ["--cache-ignore", "debug.txt", "--no-progress"]
    assert subprocess.run([*millrun, *common], capture_output=True).returncode == 0
    (nbs / "debug.txt").write_text("noise again")
    warm = subprocess.run([*millrun, *common], capture_output=True, text=True)
    assert "0 passed, 1 cached, 0 failed" in warm.stdout, warm.stdout + warm.stderr

    def api() -> list[bool]:
        results = execute_run(
            nbs, [{"x": 1}], tmp_path / "api", cache=True, cache_inputs=["*.txt"],
            cache_ignore=["debug.txt"], cache_hash_limit=0,
        )  # fmt: skip
        return [r.cached for r in results]

    assert api() == [False]
    (nbs / "debug.txt").write_text("and again")
    assert api() == [True]
    with pytest.raises(ValueError, match="cache_hash_limit must be a whole number of MiB"):
        execute_run(nbs, [{"x": 1}], tmp_path / "api", cache=True, cache_hash_limit=-1)
