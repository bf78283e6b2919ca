"""The documentation's reference, generated from the code when the site is built.

A MkDocs hook (``hooks:`` in ``mkdocs.yml``): a page that holds a marker such as
``<!-- millrun:pytest-options -->`` gets it replaced by Markdown made from what
the code declares, so an option added to the plugin, the CLI or the API shows up
in the docs without anyone editing a page, and no help text is copied by hand.

- ``pytest-options``: every ``--millrun*`` option and ``millrun*`` ini key, read
  from the option table (:mod:`pytest_millrun.config.option_table`) that the
  plugin's ``pytest_addoption`` walks;
- ``cli-options`` and ``cli-help``: the ``millrun`` command's parameters and its
  ``--help`` output, from the click command the same table generates (click adds
  the defaults it shows);
- ``api``: a mkdocstrings directive for every public name of ``pytest_millrun``,
  at the module that defines it (so moving code between modules moves nothing here);
- ``api-keywords``: ``execute_run``'s keywords with their defaults and meanings, from
  the same table (a unit test holds the signature equal to it).

Nothing here reaches a network.  ``tests`` import :func:`expand` to check the
generated page against the parsers.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

#: A marker stands alone on its line (one quoted in a sentence or a table is left as it is).
MARKER = re.compile(r"^<!-- millrun:([a-z-]+) -->$", flags=re.M)
#: The width of the generated ``--help`` text: what fits a code block of the theme.
HELP_WIDTH = 88


@dataclass(frozen=True)
class PytestOption:
    """One row of the pytest reference: an option, its ini key, or both."""

    option: str | None  # "--millrun-params"
    metavar: str | None
    ini: str | None  # "millrun_params"
    ini_type: str | None
    help: str


def pytest_options() -> list[PytestOption]:
    """Every ``--millrun*`` option with its ``millrun*`` ini key, from the option table.

    The table is what ``pytest_addoption`` declares; ``tests`` hold this list equal to
    what ``pytest --help`` prints.
    """
    from pytest_millrun.config.option_table import options_of

    return [
        PytestOption(
            option=option.pytest_flag,
            metavar=option.metavar,
            ini=option.ini,
            ini_type="bool" if option.kind == "flag" else "string",
            help=option.help,
        )
        for option in options_of("pytest")
    ]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def pytest_options_table() -> str:
    """Two columns, so the help has room: the option over its ini key, then the meaning."""
    lines = ["| option / ini key | meaning |", "| --- | --- |"]
    for row in pytest_options():
        names = []
        if row.option is not None:
            names.append(f"`{row.option} {row.metavar}`" if row.metavar else f"`{row.option}`")
        if row.ini is not None:
            kind = f" ({row.ini_type})" if row.ini_type and row.ini_type != "string" else ""
            names.append(f"`{row.ini}`{kind}")
        lines.append(f"| {'<br>'.join(names)} | {_cell(row.help)} |")
    return "\n".join(lines)


def _cli_command() -> Any:
    return importlib.import_module("pytest_millrun.cli").main


def _cli_context(command: Any) -> Any:
    import click

    settings = {**command.context_settings, "terminal_width": HELP_WIDTH}
    settings["max_content_width"] = HELP_WIDTH
    return click.Context(command, info_name="millrun", **settings)


def cli_options() -> list[tuple[str, str]]:
    """(the option with its metavar, its help with the default) for every CLI option."""
    import click

    command = _cli_command()
    ctx = _cli_context(command)
    rows = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            record = param.get_help_record(ctx)
            if record is not None:
                rows.append((record[0], record[1]))
    return rows


def cli_arguments() -> list[str]:
    """The CLI's positional arguments, as its usage line names them."""
    import click

    command = _cli_command()
    return [
        str(p.human_readable_name)
        for p in command.get_params(_cli_context(command))
        if isinstance(p, click.Argument)
    ]


def cli_options_table() -> str:
    lines = ["| option | meaning |", "| --- | --- |"]
    for opts, help in cli_options():
        lines.append(f"| `{opts}` | {_cell(help)} |")
    return "\n".join(lines)


def cli_help() -> str:
    """``millrun --help`` as a terminal shows it (``HELP_WIDTH`` columns)."""
    command = _cli_command()
    text = command.get_help(_cli_context(command))
    return f"```text\n$ millrun --help\n{text}\n```"


def api_keywords_table() -> str:
    """``execute_run``'s keywords from the option table: its signature is held equal to it."""
    from pytest_millrun.config.option_table import options_of

    lines = ["| keyword | default | meaning |", "| --- | --- | --- |"]
    for option in options_of("api"):
        if option.api_positional and option.api in ("notebook_dir_or_file", "bulk_params"):
            continue
        help_text = option.cli_help or option.help  # the CLI's words: paths as the API's
        lines.append(f"| `{option.api}` | `{option.default!r}` | {_cell(help_text)} |")
    return "\n".join(lines)


def public_api() -> list[tuple[str, str]]:
    """(name, its defining module's dotted path) of each public name but the version."""
    import inspect

    package = importlib.import_module("pytest_millrun")
    names = []
    for name in package.__all__:
        if name.startswith("__"):
            continue
        value = getattr(package, name)
        names.append((name, f"{value.__module__}.{value.__qualname__}"))
    # the functions first (what a user calls), then the classes (what comes back or is raised)
    return sorted(names, key=lambda n: inspect.isclass(getattr(package, n[0])))


def api_directives() -> str:
    return "\n\n".join(f"::: {target}" for _, target in public_api())


@dataclass(frozen=True)
class CodeBlock:
    """A fenced code block of a page, for the tests that run or check the pages' examples."""

    language: str  # "sh", "python", "" ...
    body: str
    before: str  # the last non-blank line above the opening fence ("" at the top)


def code_blocks(markdown: str) -> list[CodeBlock]:
    """Every fenced block, fences paired in order (a closing fence never opens one)."""
    blocks: list[CodeBlock] = []
    lines = markdown.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        opening = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", lines[index])
        if not opening:
            index += 1
            continue
        fence, language = opening.groups()
        above = [line.strip() for line in lines[:index] if line.strip()]
        end = index + 1
        while end < len(lines) and not lines[end].rstrip().startswith(fence):
            end += 1
        body = "".join(lines[index + 1 : end])
        blocks.append(CodeBlock(language, body, above[-1] if above else ""))
        index = end + 1
    return blocks


GENERATORS = {
    "pytest-options": pytest_options_table,
    "cli-options": cli_options_table,
    "cli-help": cli_help,
    "api": api_directives,
    "api-keywords": api_keywords_table,
}


def expand(markdown: str) -> str:
    """The page with every ``<!-- millrun:NAME -->`` marker replaced; an unknown one is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(
                f"Unknown reference marker <!-- millrun:{name} -->; "
                f"known: {', '.join(sorted(GENERATORS))}."
            )
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs' hook: expand the markers of any page that has some."""
    return expand(markdown) if MARKER.search(markdown) else markdown
