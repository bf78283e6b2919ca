"""The docs' generated reference against the parsers, and the README as the front door.

The reference page is made at build time by ``tools/docs_reference.py`` (a MkDocs
hook).  These tests expand the real page with it and compare what it lists with
what ``pytest --help`` and ``millrun --help`` print in a fresh process, so an option
that the generator misses, or one it invents, fails here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from millrun_testing import load_docs_tools

#: The repository: the folder above this file's that holds pyproject.toml (tests/ or tests/unit/).
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "reference.md"
WORKFLOW = ROOT / "docs" / "ci" / "notebooks.yml"


def _clean_env() -> dict[str, str]:
    """This run's environment without pytest's own variables (PYTEST_ADDOPTS, xdist's ...)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def _help_of(*command: str, cwd: Path) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_docs_tools()


@pytest.fixture(scope="module")
def page(generator: ModuleType) -> str:
    expanded: str = generator.expand(REFERENCE.read_text(encoding="utf-8"))
    return expanded


@pytest.fixture(scope="module")
def pytest_help(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``pytest --help`` in an empty folder: every installed plugin's options and ini keys."""
    return _help_of(sys.executable, "-m", "pytest", "--help", cwd=tmp_path_factory.mktemp("help"))


@pytest.fixture(scope="module")
def cli_help() -> str:
    """``millrun --help`` in a fresh process, as a user's terminal gets it."""
    return _help_of(sys.executable, "-m", "pytest_millrun", "--help", cwd=ROOT)


@pytest.fixture(scope="module")
def parser_options(pytest_help: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--millrun[\w-]*)", pytest_help))


@pytest.fixture(scope="module")
def parser_inis(pytest_help: str) -> set[str]:
    # after the heading "[pytest] ini-options in the first ..." (pytest 9: "configuration options")
    ini_part = re.split(r"^\[pytest\] .*$", pytest_help, maxsplit=1, flags=re.M)[1]
    return set(re.findall(r"^ +(millrun\w*) \(\w+\):", ini_part, flags=re.M))


def _section(page: str, heading: str) -> str:
    """The text under a ``## `` heading of the page, up to the next one."""
    start = page.index(f"\n## {heading}")
    end = page.find("\n## ", start + 1)
    return page[start : end if end != -1 else None]


def _first_column(section: str) -> str:
    return "\n".join(line.split(" | ")[0] for line in section.splitlines() if line.startswith("|"))


def test_the_reference_lists_exactly_the_parsers_millrun_options_and_ini_keys(
    page: str, parser_options: set[str], parser_inis: set[str]
) -> None:
    assert len(parser_options) > 10
    assert "--millrun-params" in parser_options
    assert len(parser_inis) > 10
    assert "millrun_params" in parser_inis
    listed = _first_column(_section(page, "pytest options"))
    assert set(re.findall(r"`(--millrun[\w-]*)", listed)) == parser_options
    assert set(re.findall(r"`(millrun\w*)`", listed)) == parser_inis


def test_the_reference_lists_every_cli_option_and_shows_the_real_help(
    page: str, cli_help: str
) -> None:
    help_text = cli_help
    options_part = help_text.split("\nOptions:\n", 1)[1]
    options = set(re.findall(r"^ {2}((?:-\w, )?--[\w-]+(?: / --[\w-]+)?)", options_part, re.M))
    names = {name for option in options for name in re.findall(r"--?[\w-]+", option)}
    assert {"--output-dir", "--workers", "--help", "-h"} <= names
    section = _section(page, "The `millrun` command")
    assert set(re.findall(r"(?<![\w-])(--?[\w][\w-]*)", _first_column(section))) >= names - {
        "-h"  # click's help record of --help reads "-h, --help"
    }
    shown = section.split("```text\n$ millrun --help\n", 1)[1].split("```", 1)[0]
    assert re.sub(r"\s", "", shown) == re.sub(r"\s", "", help_text)  # whatever the wrap width


def test_the_reference_documents_every_public_name_at_its_defining_module(page: str) -> None:
    package = importlib.import_module("pytest_millrun")
    public = {name for name in package.__all__ if not name.startswith("__")}
    documented = {}
    for target in re.findall(r"^::: ([\w.]+)$", _section(page, "Python API"), flags=re.M):
        module, _, name = target.rpartition(".")
        documented[name] = getattr(importlib.import_module(module), name)
    assert set(documented) == public
    for name, value in documented.items():
        assert value is getattr(package, name)


def test_the_reference_lists_every_keyword_of_execute_run_with_its_default(page: str) -> None:
    import inspect

    import millrun

    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", _section(page, "Python API"), flags=re.M)
    documented = dict(rows)
    signature = inspect.signature(millrun.execute_run).parameters
    keywords = {
        name: repr(parameter.default)
        for name, parameter in signature.items()
        if parameter.kind is not parameter.VAR_KEYWORD
        and name not in ("notebook_dir_or_file", "bulk_params")
    }
    assert documented == keywords


def test_an_unknown_marker_is_an_error_naming_it(generator: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"millrun:nope .*known: api, api-keywords, cli-help"):
        generator.expand("text\n<!-- millrun:nope -->\ntext")
    quoted = "the marker `<!-- millrun:api -->` in a sentence"
    assert generator.expand(quoted) == quoted


def test_the_ci_workflow_uses_only_options_that_exist(parser_options: set[str]) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = workflow["jobs"]["notebooks"]["steps"]
    commands = " ".join(step["run"] for step in steps if "run" in step)
    used = set(re.findall(r"(?<![\w-])(--millrun[\w-]*)", commands))
    assert {"--millrun-params", "--millrun-snapshots"} <= used
    assert used <= parser_options
    assert "--millrun-snapshot-update" not in used  # CI checks; it never accepts a change


def _readme_commands() -> list[str]:
    blocks = load_docs_tools().code_blocks(README.read_text(encoding="utf-8"))
    return [block.body.rstrip("\n") for block in blocks]


def test_the_readme_fits_on_a_screen_and_starts_with_its_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= 8 * 1024
    setup, tests = _readme_commands()[:2]
    assert setup.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")
    assert "example_project/notebooks" in setup
    assert tests == (
        'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/pytest -n 2'
    )
    assert "mkdocs serve" in text


def test_ci_runs_the_readmes_test_command_and_its_example_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    setup, tests = _readme_commands()[:2]
    assert tests in ci  # the whole line, as the README gives it
    example = setup.rsplit(" && ", 1)[1]
    assert any(line.endswith(example.removeprefix(".venv/bin/")) for line in ci)


def test_sphinx_roles_in_docstrings_become_inline_code() -> None:
    spec = importlib.util.spec_from_file_location(
        "griffe_sphinx_roles", ROOT / "tools" / "griffe_sphinx_roles.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "raises :class:`RunFailedError`; see :func:`~pytest_millrun.results.write_results`"
    assert module.plain(text) == "raises `RunFailedError`; see `write_results`"
    assert module.plain(":mod:`pytest_millrun.snapshots`") == "`pytest_millrun.snapshots`"


def _documents() -> dict[str, str]:
    pages = [*sorted((ROOT / "docs").glob("**/*.md")), README]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in pages}


def test_every_pytest_option_the_pages_name_exists(parser_options: set[str]) -> None:
    unknown = {
        (name, option.rstrip("-"))
        for name, text in _documents().items()
        for option in re.findall(r"(?<![\w-])(--millrun[\w-]*)", text)
        if option.rstrip("-") not in parser_options
    }
    assert not unknown, "pages name options pytest does not have"


def test_every_option_of_the_pages_millrun_commands_exists(
    cli_help: str, generator: ModuleType
) -> None:
    known = set(re.findall(r"(?<![\w-])(--[\w-]+)", cli_help.split("\nOptions:\n", 1)[1]))
    unknown = set()
    for name, text in _documents().items():
        for block in generator.code_blocks(text):
            for line in block.body.replace("\\\n", " ").splitlines():  # continued lines joined
                if line.startswith("millrun "):
                    unknown |= {(name, o) for o in re.findall(r" (--[\w-]+)", line)} - {
                        (name, o) for o in known
                    }
    assert not unknown, "the pages' millrun commands use options it does not have"
