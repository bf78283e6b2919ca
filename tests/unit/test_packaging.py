"""One version everywhere: the installed distribution, both packages, the command, pytest.

The version is written once, in ``pytest_millrun/__init__.py`` (hatch reads it
into the distribution's metadata at build time, see ``[tool.hatch.version]``);
``millrun --version`` and pytest's header (``plugins: millrun-X``) read the
metadata.  An editable install whose metadata is older than the source (the
version bumped, the package not reinstalled) fails here.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import millrun
import pytest_millrun

REPO = Path(__file__).resolve().parents[2]


def _installed() -> str:
    return importlib.metadata.version("pytest-millrun")


def test_both_packages_say_the_installed_distributions_version() -> None:
    assert pytest_millrun.__version__ == _installed(), (
        f"pytest_millrun/__init__.py says {pytest_millrun.__version__}, the installed metadata "
        f"{_installed()}: reinstall (pip install -e .)"
    )
    assert millrun.__version__ == pytest_millrun.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", pytest_millrun.__version__)


def test_millrun_dash_dash_version_says_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"millrun, version {pytest_millrun.__version__}"


def test_pytests_header_names_the_plugin_with_it(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("def test_nothing():\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (plugins,) = [line for line in done.stdout.splitlines() if line.startswith("plugins:")]
    assert f"millrun-{pytest_millrun.__version__}" in plugins.split(": ", 1)[1].split(", ")


def test_the_version_is_written_in_one_place() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject.split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"(?m)^version\s*=", project), "[project] must not repeat the version"
    assert re.search(r'(?m)^dynamic = \[.*"version"', project)
    assert '[tool.hatch.version]\npath = "pytest_millrun/__init__.py"' in pyproject
    init = (REPO / "pytest_millrun" / "__init__.py").read_text(encoding="utf-8")
    assert re.findall(r'(?m)^__version__ = "(.+)"$', init) == [pytest_millrun.__version__]
