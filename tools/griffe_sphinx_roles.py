"""A griffe extension for the docs: the package's Sphinx habits read well in Markdown.

The package's docstrings use reStructuredText roles (``:class:`RunFailedError```,
``:func:`~pytest_millrun.results.write_results```), which mkdocstrings would show
as they are: each becomes inline code of the name (the last part after a ``~``).
And attributes are documented by ``#:`` comments above them, as Sphinx's autodoc
reads them, which griffe does not: they become the attribute's docstring.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def plain(text: str) -> str:
    """``:class:`~a.b.C``` -> ```C```, ``:mod:`a.b``` -> ```a.b```."""

    def code(match: re.Match[str]) -> str:
        short, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if short else target}`"

    return ROLE.sub(code, text)


def comment_above(lines: list[str], lineno: int) -> str:
    """The ``#:`` comment lines right above line ``lineno`` (1-based), without the markers."""
    found: list[str] = []
    index = lineno - 2
    while index >= 0 and lines[index].strip().startswith("#:"):
        found.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return " ".join(found)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None and obj.is_attribute and obj.lineno is not None:
            text = comment_above(obj.lines_collection[obj.filepath], obj.lineno)  # type: ignore[index]
            if text:
                obj.docstring = griffe.Docstring(text, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
