"""The kernels' coverage settings as the plugin reads them from real pytest-cov (no kernel).

Each run is a pytest subprocess whose one test writes down what
:func:`pytest_millrun.plugin.coverage_glue.item_coverage` gives for it (in a file: an xdist
worker's output is not shown).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TEST = """
import json
import pytest
from pytest_millrun.plugin.coverage_glue import item_coverage


def test_one(request):
    found = item_coverage(request.node)
    with open("settings.json", "w") as file:
        json.dump(found and {
            "topdir": found.topdir, "data_file": found.data_file, "context": found.context,
        }, file)
"""

NOT_MEASURED = """
import pytest
from pytest_millrun.plugin.coverage_glue import item_coverage


@pytest.mark.no_cover
def test_not_measured(request):
    assert item_coverage(request.node) is None
"""


def settings_seen(pytester: pytest.Pytester, *args: str) -> dict[str, str] | None:
    pytester.makepyfile(test_glue=TEST)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    found: dict[str, str] | None = json.loads((pytester.path / "settings.json").read_text())
    return found


def test_without_cov_no_kernel_is_measured(pytester: pytest.Pytester) -> None:
    assert settings_seen(pytester) is None
    assert settings_seen(pytester, "--cov=.", "--no-cov") is None


def test_with_cov_kernels_write_beside_pytest_covs_data_file(pytester: pytest.Pytester) -> None:
    found = settings_seen(pytester, "--cov=.", "--cov-report=")
    assert found == {
        "topdir": str(pytester.path),
        "data_file": str(pytester.path / ".coverage"),
        "context": None,
    }


def test_test_contexts_label_the_kernels_lines_with_the_items_id(
    pytester: pytest.Pytester,
) -> None:
    found = settings_seen(pytester, "--cov=.", "--cov-report=", "--cov-context=test")
    assert found is not None
    assert found["context"] == "test_glue.py::test_one|run"


def test_an_xdist_worker_reads_its_own_controller(pytester: pytest.Pytester) -> None:
    (pytester.path / ".coveragerc").write_text("[run]\ndata_file = cov/data\n")
    Path(pytester.path, "cov").mkdir()
    found = settings_seen(pytester, "--cov=.", "--cov-report=", "-n", "2")
    assert found is not None
    assert found["data_file"] == str(pytester.path / "cov" / "data")


def test_an_item_marked_no_cover_is_not_measured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_not_measured=NOT_MEASURED)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--cov=.", "--cov-report=")
    result.assert_outcomes(passed=1)
