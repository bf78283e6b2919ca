"""The Getting-started page's shell commands, run as a reader would run them.

The commands are read from ``docs/getting-started.md`` itself (every ``sh`` block,
in order, but one right after a ``docs-test: skip`` comment), never copied here,
so the first page a user reads cannot drift from what works.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from millrun_testing import load_docs_tools

#: The repository: the folder above this file's that holds pyproject.toml (tests/ or tests/unit/).
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
PAGE = ROOT / "docs" / "getting-started.md"
SKIP = "<!-- docs-test: skip"


def shell_blocks(markdown: str) -> list[str]:
    """The page's ``sh`` blocks, in order, without those a skip comment precedes."""
    blocks = load_docs_tools().code_blocks(markdown)
    return [b.body for b in blocks if b.language == "sh" and not b.before.startswith(SKIP)]


def test_shell_blocks_are_found_in_order_and_skips_honoured() -> None:
    page = (
        "<!-- docs-test: skip (installs) -->\n```sh\npip install x\n```\n\ntext\n"
        "```json\n{}\n```\nprose, not shell\n"
        "```sh\necho one\n```\n```text\nnot shell\n```\n```sh\necho two\necho three\n```\n"
    )
    assert shell_blocks(page) == ["echo one\n", "echo two\necho three\n"]


def test_the_getting_started_commands_run_on_the_example_project(tmp_path: Path) -> None:
    blocks = shell_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 3, "the page's runnable examples were not found"
    shutil.copytree(
        ROOT / "example_project",
        tmp_path / "example_project",
        ignore=shutil.ignore_patterns("loans.csv", "report.html", "report_files", ".*"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # the reader's activated venv: this interpreter's pytest and millrun come first
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for block in blocks:
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{block}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    with open(tmp_path / "example_project" / "loans.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == 12
    assert {row["status"] for row in rows} == {"passed"}
    assert all(row["value.payment"] for row in rows)
    assert (tmp_path / "example_project" / "report.html").stat().st_size > 0
    assert (tmp_path / "runs" / "loans.csv").exists()
