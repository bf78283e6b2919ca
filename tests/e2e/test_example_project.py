"""The README's example project, run through the plugin as its README says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from millrun_testing import output_files

EXAMPLE = Path(__file__).resolve().parents[2] / "example_project"


def test_example_project_passes_every_variation_and_keeps_every_output(
    pytester: pytest.Pytester,
) -> None:
    shutil.copytree(EXAMPLE, pytester.path / "example_project")
    result = pytester.runpytest(
        "--millrun-params", "example_project/params.json", "example_project/notebooks"
    )
    result.assert_outcomes(passed=12)  # 3 notebooks x 4 loans
    outputs = output_files(pytester.path / ".millrun" / "example_project" / "notebooks")
    assert outputs == sorted(
        f"{folder}{i}-{stem}.ipynb"
        for folder, stem in [("", "amortization"), ("", "monthly_payment"),
                             ("reports/", "total_interest")]
        for i in range(4)
    )  # fmt: skip
    saved = json.loads(
        (pytester.path / ".millrun/example_project/notebooks/0-monthly_payment.ipynb").read_text()
    )
    printed = "".join(
        "".join(o.get("text", "")) for c in saved["cells"] for o in c.get("outputs", [])
    )
    assert "200,000 at 3.50% over 15 years: 1,429.77 a month" in printed
