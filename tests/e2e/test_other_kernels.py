"""Notebooks of other languages end to end: bash_kernel (a fixture installs it), R where present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from millrun_testing import write_notebook, write_params

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

PARAMS = [{"NAME": "bob smith", "COUNT": 2}, {"NAME": "it's", "COUNT": 7}]


@pytest.fixture
def languages(pytester: pytest.Pytester, bash_kernel: str) -> Path:
    """A bash notebook that fails when COUNT >= 5, a headerless bash text notebook, and a
    notebook for an R kernel named ``r``, which is not installed (Debian's IRkernel is
    ``ir``), as papermill's test notebook."""
    root = pytester.path
    write_notebook(
        root / "greet.ipynb",
        ['echo "hello $NAME"', 'test "$COUNT" -lt 5'],
        params="NAME=nobody\nCOUNT=1",
        kernel=bash_kernel,
        language="bash",
    )
    write_notebook(
        root / "model.ipynb", ['cat("hello", NAME)'], params="NAME <- 'x'", kernel="r", language="R"
    )
    (root / "count.sh").write_text(  # a text notebook without a header: jupytext finds bash
        '# %% tags=["parameters"]\nNAME=nobody\nCOUNT=1\n\n# %%\necho "$NAME counts $COUNT"\n'
    )
    write_params(root / "params.json", PARAMS)
    return root


def stdout_of(output: Path) -> str:
    cells = json.loads(output.read_text())["cells"]
    return "".join(
        "".join(out.get("text", "")) for cell in cells for out in cell.get("outputs", ())
    )


def test_a_bash_notebook_over_two_variations_and_an_r_notebook_without_its_kernel(
    pytester: pytest.Pytester, languages: Path
) -> None:
    result = pytester.runpytest(
        "--millrun-params",
        "params.json",
        "-n",
        "2",
        "--millrun-strict-params",
        "-W",
        "error::pytest_millrun.execution.kernels.ForkFallbackWarning",
        "--millrun-text-notebooks",
        "*.sh",
    )
    result.assert_outcomes(passed=3, failed=3)
    text = result.stdout.str()
    flat = " ".join(text.split())
    # parameters through papermill's bash translator, quoted for the shell
    assert stdout_of(languages / ".millrun" / "0-greet.ipynb") == "hello bob smith\n"
    assert stdout_of(languages / ".millrun" / "1-greet.ipynb") == "hello it's\n"
    assert stdout_of(languages / ".millrun" / "0-count.ipynb") == "bob smith counts 2\n"
    # an error without an ename: where, and what it says
    result.stdout.fnmatch_lines(["FAILED greet.ipynb::greet[[]1[]] - Error in cell [[]4[]]: 1"])
    # no false warning; strict mode says it cannot check instead of refusing
    assert "declares nothing" not in text
    assert (
        "greet.ipynb is written in bash: papermill cannot read the names its parameters cell "
        "declares, so the params' keys (COUNT, NAME) are not checked against it; papermill "
        "injects them after that cell all the same. --millrun-strict-params cannot check them "
        "either."
    ) in flat
    # the missing R kernel: advice for R, no library traceback
    result.stdout.fnmatch_lines(["FAILED model.ipynb::model[[]0[]] - NoSuchKernel: r"])
    assert "It is written in R: install a Jupyter kernel for R, e.g. IRkernel" in flat
    assert "ipykernel install" not in text
    assert "Traceback" not in text
    assert "ForkFallbackWarning" not in text  # bash spawns, silently, in fork mode too


def test_recording_variables_of_a_bash_notebook_is_refused_before_it_runs(
    pytester: pytest.Pytester, languages: Path
) -> None:
    result = pytester.runpytest("--millrun-params", "params.json", "--millrun-record", "COUNT")
    result.assert_outcomes(errors=2)  # model.ipynb is R: refused too, before its kernel is sought
    flat = " ".join(result.stdout.str().split())
    assert (
        "--millrun-record reads variables from Python kernels, but "
        f"{languages / 'greet.ipynb'} is written in bash, so its variables cannot be read."
    ) in flat
    assert not (languages / ".millrun" / "0-greet.ipynb").exists()


def has_r_kernel() -> bool:
    return shutil.which("R") is not None and "ir" in KernelSpecManager().find_kernel_specs()


@pytest.mark.skipif(
    not has_r_kernel(), reason="no R kernel: apt-get install r-base-core r-cran-irkernel"
)
def test_an_r_notebook_takes_parameters_and_records_its_scraps(tmp_path: Path) -> None:
    from pytest_millrun import execute_run
    from pytest_millrun.core.discovery import MillrunParameterWarning

    write_notebook(
        tmp_path / "model.ipynb",
        [
            'cat("hello", NAME, "\\n")',
            "IRdisplay::publish_mimebundle(list('application/scrapbook.scrap.json+json' = "
            "list(name = 'total', data = COUNT * 2, encoder = 'json', version = 1)))",
        ],
        params="NAME <- 'nobody'\nCOUNT <- 1",
        kernel="ir",
        language="R",
    )
    with pytest.warns(MillrunParameterWarning, match="is written in R: papermill cannot read"):
        results = execute_run(tmp_path / "model.ipynb", PARAMS, output_dir=tmp_path / "out")
    assert [r.recorded for r in results] == [{"total": 4}, {"total": 14}]
    assert stdout_of(tmp_path / "out" / "0-model.ipynb") == "hello bob smith \n"
    assert stdout_of(tmp_path / "out" / "1-model.ipynb") == "hello it's \n"
