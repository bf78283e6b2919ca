"""The pytest plugin end to end: pytester, real kernels, real papermill, real xdist."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from millrun_testing import assert_no_kernels_left, output_files, write_notebook, write_params

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
KERNELS = pytest.mark.usefixtures("kernel_start")  # for tests that start kernels, in both modes


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    """Two notebooks (one fails when y == 2), one in a subfolder, and a dict-of-lists params."""
    root = pytester.path
    write_notebook(root / "nbs" / "add.ipynb", ["result = x + y", "print('sum', result)"])
    write_notebook(root / "nbs" / "sub" / "divide.ipynb", ["result = x / (y - 2)"])
    write_params(root / "params.json", {"x": [1, 45], "y": [2, 3]})
    return root


def test_without_the_option_no_notebook_is_collected(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest("nbs", "--collect-only", "-q")
    result.assert_outcomes()
    assert "ipynb" not in result.stdout.str()


def test_plain_run_does_not_import_papermill(pytester: pytest.Pytester, project: Path) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys
        def test_papermill_not_loaded():
            assert "papermill" not in sys.modules
        """
    )
    pytester.runpytest_subprocess("test_plain.py").assert_outcomes(passed=1)


def test_collects_one_item_per_notebook_and_variation_with_index_ids(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest("--millrun-params", "params.json", "nbs", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "nbs/add.ipynb::add[[]0[]]",
            "nbs/add.ipynb::add[[]1[]]",
            "nbs/sub/divide.ipynb::divide[[]0[]]",
            "nbs/sub/divide.ipynb::divide[[]1[]]",
            "4 tests collected*",
        ]
    )


def test_ids_are_built_from_prepend_and_append_components(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest(
        "--millrun-params", "params.json", "nbs", "--collect-only", "-q",
        "--millrun-prepend", "x", "--millrun-append", "y,final",
    )  # fmt: skip
    result.stdout.fnmatch_lines(
        ["nbs/add.ipynb::add[[]1-2-final[]]", "nbs/add.ipynb::add[[]45-3-final[]]"]
    )


@KERNELS
def test_pass_and_fail_outcomes_and_every_output_saved(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest("--millrun-params", "params.json", "nbs", "--millrun-prepend", "x")
    result.assert_outcomes(passed=3, failed=1)
    assert output_files(project / ".millrun") == [
        "nbs/1-add.ipynb",
        "nbs/45-add.ipynb",
        "nbs/sub/1-divide.ipynb",
        "nbs/sub/45-divide.ipynb",
    ]
    saved = json.loads((project / ".millrun/nbs/1-add.ipynb").read_text())
    assert saved["metadata"]["papermill"]["parameters"] == {"x": 1, "y": 2}
    assert saved["metadata"]["millrun"]["variation"] == "1"
    printed = [o for c in saved["cells"] for o in c.get("outputs", []) if o.get("name") == "stdout"]
    assert "".join(printed[0]["text"]) == "sum 3\n"


@KERNELS
def test_failure_report_names_error_cell_source_traceback_and_output(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest("--millrun-params", "params.json", "nbs/sub")
    result.assert_outcomes(passed=1, failed=1)
    output = project / ".millrun/nbs/sub/0-divide.ipynb"
    result.stdout.fnmatch_lines(
        [
            "*_ divide.ipynb[[]0[]] _*",
            "ZeroDivisionError: division by zero in cell [[]3[]]",
            "Cell source:",
            "    result = x / (y - 2)",
            "Traceback:",
            "*ZeroDivisionError*",
            f"Output:    {output}",
        ]
    )
    saved = json.loads(output.read_text())
    assert any(
        o.get("ename") == "ZeroDivisionError" for c in saved["cells"] for o in c.get("outputs", [])
    )


@KERNELS
def test_same_stem_in_two_folders_never_share_an_output(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "a" / "calc.ipynb")
    write_notebook(pytester.path / "b" / "calc.ipynb")
    pytester.runpytest("--millrun", "a", "b").assert_outcomes(passed=2)
    assert output_files(pytester.path / ".millrun") == ["a/0-calc.ipynb", "b/0-calc.ipynb"]


@KERNELS
def test_k_selects_variations_by_id(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest(
        "--millrun-params", "params.json", "nbs", "--millrun-prepend", "x", "-k", "45"
    )
    result.assert_outcomes(passed=2)
    assert output_files(project / ".millrun") == ["nbs/45-add.ipynb", "nbs/sub/45-divide.ipynb"]


@KERNELS
def test_xdist_gives_the_same_outcomes_and_report(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest_subprocess("--millrun-params", "params.json", "nbs", "-n", "2")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["ZeroDivisionError: division by zero in cell [[]3[]]", "Output:*"])
    assert len(output_files(project / ".millrun")) == 4


def test_header_names_params_file_count_and_output_dir(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest("--millrun-params", "params.json", "nbs", "--collect-only")
    result.stdout.fnmatch_lines(
        [f"millrun: 2 variations from {project / 'params.json'}, outputs in {project / '.millrun'}"]
    )


@KERNELS
def test_ini_options_are_used_and_the_command_line_wins(
    pytester: pytest.Pytester, project: Path
) -> None:
    pytester.makeini(
        """
        [pytest]
        millrun_params = params.json
        millrun_output_dir = runs
        millrun_append = y
        """
    )
    result = pytester.runpytest("nbs/add.ipynb", "--millrun-append", "x")
    result.assert_outcomes(passed=2)
    assert output_files(project / "runs") == ["nbs/add-1.ipynb", "nbs/add-45.ipynb"]


@pytest.mark.parametrize(
    ("ini", "expected"),
    [
        (
            "millrun = true",
            ["nbs/add.ipynb::add[[]0[]]", "nbs/sub/divide.ipynb::divide[[]0[]]", "2 tests*"],
        ),
        (
            "millrun_params = params.json\nmillrun_prepend = x",
            ["nbs/add.ipynb::add[[]1[]]", "nbs/add.ipynb::add[[]45[]]", "4 tests collected*"],
        ),
    ],
    ids=["millrun", "millrun_prepend"],
)
def test_collection_ini_keys_take_effect(
    pytester: pytest.Pytester, project: Path, ini: str, expected: list[str]
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest("nbs", "--collect-only", "-q")
    result.stdout.fnmatch_lines(expected)


def test_ini_strict_params_refuses_an_undeclared_key(
    pytester: pytest.Pytester, project: Path
) -> None:
    write_params(project / "typo.json", {"x": [1], "typo": [2]})
    pytester.makeini("[pytest]\nmillrun_params = typo.json\nmillrun_strict_params = true\n")
    result = pytester.runpytest("nbs", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "does not declare 'typo'" in result.stderr.str()


@pytest.mark.parametrize(
    ("ini", "line"),
    [
        ("millrun_timeout = 2", "TimeoutError: the per-cell time limit ran out in cell [[]2[]]"),
        # its clock includes the kernel start, so on a busy machine no cell may have run yet
        ("millrun_notebook_timeout = 2", "TimeoutError: timed out after 2 s*"),
        ("millrun_kernel = nosuchkernel", "NoSuchKernel: nosuchkernel"),
    ],
    ids=["millrun_timeout", "millrun_notebook_timeout", "millrun_kernel"],
)
def test_execution_ini_keys_take_effect(pytester: pytest.Pytester, ini: str, line: str) -> None:
    write_notebook(pytester.path / "nbs" / "slow.ipynb", ["import time\ntime.sleep(60)"])
    pytester.makeini(f"[pytest]\nmillrun = true\n{ini}\n")
    result = pytester.runpytest("nbs")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([line])


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_kernel_start_and_preload_ini_keys_take_effect(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    log = tmp_path / "started.log"  # written by each kernel: see kernel_startup.py
    monkeypatch.setenv("MILLRUN_TEST_START_LOG", str(log))
    # the ini key is explicit, so it wins over the variable that only "auto" consults
    monkeypatch.setenv("MILLRUN_KERNEL_START", "spawn" if mode == "fork" else "fork")
    preloaded = mode == "fork"  # nothing else imports tabnanny; only a template preloads
    write_notebook(
        pytester.path / "nbs" / "probe.ipynb",
        [f"import sys\nassert ('tabnanny' in sys.modules) is {preloaded}"],
    )
    pytester.makeini(
        f"[pytest]\nmillrun = true\nmillrun_kernel_start = {mode}\nmillrun_preload = tabnanny\n"
    )
    pytester.runpytest("nbs").assert_outcomes(passed=1)
    assert set(log.read_text().split()) == {mode}  # a spare forked ahead logs too


def test_kernel_option_overrides_the_notebooks_kernel_and_the_ini_key(
    pytester: pytest.Pytester,
) -> None:
    write_notebook(pytester.path / "nbs" / "a.ipynb", kernel="notebook-kernel")
    pytester.makeini("[pytest]\nmillrun_kernel = ini-kernel\n")
    result = pytester.runpytest("--millrun", "nbs", "--millrun-kernel", "python3")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"x": [1, 2], "y": [1]}', "unequal lengths ('x' has 2, 'y' has 1)"),
        ("{not json", "is not valid JSON"),
        ("[]", "is an empty list"),
        ('["a"]', "entry 0 is a str"),
        ('{"x": "12"}', "the value of 'x' is a str"),
        ("7", "neither a list of dicts nor a dict of lists"),
    ],
)
def test_bad_params_file_is_a_usage_error_without_traceback(
    pytester: pytest.Pytester, project: Path, content: str, message: str
) -> None:
    (project / "bad.json").write_text(content)
    result = pytester.runpytest("--millrun-params", "bad.json", "nbs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: Params file {project / 'bad.json'}*"])
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_missing_params_file_is_a_usage_error(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest("--millrun-params", "nope.json", "nbs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "does not exist" in result.stderr.str()


@KERNELS
def test_checkpoints_and_outputs_are_never_collected(
    pytester: pytest.Pytester, project: Path
) -> None:
    write_notebook(project / "nbs" / ".ipynb_checkpoints" / "add-checkpoint.ipynb")
    pytester.runpytest("--millrun-params", "params.json", "nbs/add.ipynb").assert_outcomes(passed=2)
    # outputs inside the tree, in an output dir under the collected folder, and copied elsewhere
    (project / "nbs" / "copied-output.ipynb").write_text(
        (project / ".millrun/nbs/0-add.ipynb").read_text()
    )
    result = pytester.runpytest("--millrun-params", "params.json", ".millrun", "--collect-only")
    result.assert_outcomes()
    pytester.runpytest("--millrun-params", "params.json", "nbs", "--millrun-output-dir", "nbs/out")
    result = pytester.runpytest(
        "--millrun-params", "params.json", "nbs", "--millrun-output-dir", "nbs/out",
        "--collect-only", "-q",
    )  # fmt: skip
    result.stdout.fnmatch_lines(["4 tests collected*"])
    assert "checkpoint" not in result.stdout.str()
    assert "copied-output" not in result.stdout.str()


def test_checkpoints_are_skipped_even_where_pytest_would_recurse_into_them(
    pytester: pytest.Pytester, project: Path
) -> None:
    # pytest's default norecursedirs (".*" among them) hides checkpoint folders by itself;
    # with none, only millrun's own rule keeps them out.
    pytester.makeini("[pytest]\nnorecursedirs =\n")
    write_notebook(project / "nbs" / ".ipynb_checkpoints" / "add-checkpoint.ipynb")
    write_notebook(project / "nbs" / "sub" / ".ipynb_checkpoints" / "divide-checkpoint.ipynb")
    write_notebook(project / "nbs" / "sub" / ".hidden" / "kept.ipynb")  # pytest does recurse
    result = pytester.runpytest("--millrun", "nbs", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["nbs/sub/.hidden/kept.ipynb::kept[[]0[]]", "3 tests collected*"])
    assert "checkpoint" not in result.stdout.str()


@KERNELS
def test_unreadable_notebook_is_its_own_collection_error_and_others_run(
    pytester: pytest.Pytester, project: Path
) -> None:
    (project / "nbs" / "broken.ipynb").write_text("{ this is not json")
    result = pytester.runpytest("--millrun-params", "params.json", "nbs")
    result.assert_outcomes(passed=3, failed=1, errors=1)
    result.stdout.fnmatch_lines([f"Notebook {project / 'nbs' / 'broken.ipynb'} is not valid JSON*"])


@KERNELS
def test_hostile_parameter_value_stays_inside_the_output_dir(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nb" / "calc.ipynb", ["print(name)"], params="name = 'a'")
    write_params(pytester.path / "p.json", [{"name": "../../x"}, {"name": "/etc/passwd"}])
    result = pytester.runpytest("--millrun-params", "p.json", "nb", "--millrun-prepend", "name")
    result.assert_outcomes(passed=2)
    written = sorted(p for p in pytester.path.rglob("*.ipynb") if ".millrun" in p.parts)
    # unsafe characters become _, and a hash of the value keeps different values apart
    assert [re.sub("_[0-9a-f]{8}-", "_<hash>-", p.name) for p in written] == [
        "___.._x_<hash>-calc.ipynb", "_etc_passwd_<hash>-calc.ipynb",
    ]  # fmt: skip
    assert all((pytester.path / ".millrun") in p.parents for p in written)


def test_output_equal_to_an_input_notebook_is_refused(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nb" / "calc.ipynb")
    write_notebook(pytester.path / "nb" / "0-calc.ipynb")
    before = (pytester.path / "nb" / "0-calc.ipynb").read_text()
    result = pytester.runpytest(
        "--millrun", "nb/calc.ipynb", "nb/0-calc.ipynb", "--millrun-output-dir", "."
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "which is an input notebook" in result.stderr.str()
    assert (pytester.path / "nb" / "0-calc.ipynb").read_text() == before


@KERNELS
def test_output_path_goes_into_junitxml(pytester: pytest.Pytester, project: Path) -> None:
    pytester.runpytest("--millrun-params", "params.json", "nbs/add.ipynb", "--junitxml=report.xml")
    tree = ET.parse(pytester.path / "report.xml")
    values = [p.get("value") for p in tree.iter("property") if p.get("name") == "millrun_output"]
    assert values == [
        str(project / ".millrun/nbs/0-add.ipynb"),
        str(project / ".millrun/nbs/1-add.ipynb"),
    ]


@KERNELS
def test_no_kernel_process_is_left_after_the_run(
    pytester: pytest.Pytester, project: Path, kernel_tmp: Path
) -> None:
    result = pytester.runpytest_subprocess("--millrun-params", "params.json", "nbs", "-n", "2")
    result.assert_outcomes(passed=3, failed=1)
    assert_no_kernels_left(kernel_tmp, within=10)  # generous: the point is that none stays


@KERNELS
def test_kernel_runs_in_the_notebook_folder(pytester: pytest.Pytester) -> None:
    folder = pytester.path / "deep" / "folder"
    write_notebook(
        folder / "cwd.ipynb", [f"import os\nassert os.getcwd() == {str(folder)!r}, os.getcwd()"]
    )
    pytester.runpytest("--millrun", "deep").assert_outcomes(passed=1)


@KERNELS
def test_millrun_flag_runs_each_notebook_once_with_defaults(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "calc.ipynb", ["assert (x, y) == (1, 2)"])
    result = pytester.runpytest("--millrun", "calc.ipynb", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["calc.ipynb::calc[[]0[]] PASSED*"])


def test_plugin_can_be_disabled(pytester: pytest.Pytester, project: Path) -> None:
    pytester.makeini("[pytest]\nmillrun = true\n")  # the plugin on would collect both
    result = pytester.runpytest("nbs", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["nbs/add.ipynb::add[[]0[]]", "2 tests collected*"])
    result = pytester.runpytest("-p", "no:millrun", "nbs", "--collect-only", "-q")
    result.assert_outcomes()
    assert "ipynb" not in result.stdout.str()


def test_help_lists_every_option_in_the_millrun_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    for option in ["--millrun ", "--millrun-params=FILE", "--millrun-output-dir=DIR",
                   "--millrun-prepend=A,B", "--millrun-append=C,D", "--millrun-kernel=NAME",
                   "--millrun-timeout=SECONDS", "--millrun-notebook-timeout=SECONDS",
                   "--millrun-strict-params"]:  # fmt: skip
        assert option in result.stdout.str(), option
    for ini in ["millrun_params", "millrun_output_dir", "millrun_strict_params"]:
        assert ini in result.stdout.str()


def test_empty_folder_says_no_notebook_was_found_and_where(pytester: pytest.Pytester) -> None:
    (pytester.path / "empty").mkdir()
    write_notebook(pytester.path / "full" / "a.ipynb")
    result = pytester.runpytest("--millrun", "empty", "-n", "2")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert result.stdout.str().count("millrun: no notebook found under empty:") == 1
    deselected = pytester.runpytest("--millrun", "full", "-k", "nothing")
    assert deselected.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert "no notebook found" not in deselected.stdout.str()
