"""Suites: the data a params file becomes, per-notebook sections, grids, mark rules.

A suite gives each notebook glob its own variations, id components, recorded
names and inputs, and carries mark rules; how a params file is read into one is
:mod:`pytest_millrun.core.suite_file`'s concern.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_millrun.core.globs import glob_match, glob_matches_a_file
from pytest_millrun.core.params import (
    ParamsError,
    Variation,
)

SUITE_KEYS = (
    "grid", "variations", "constants", "notebooks", "prepend", "append", "record", "marks"
)  # fmt: skip
#: What a suite under ``notebooks`` may hold: its own variations, components and records.
SUB_SUITE_KEYS = (
    "grid", "variations", "constants", "prepend", "append", "record", "inputs", "ignore"
)  # fmt: skip
RULE_KEYS = ("notebooks", "where", "ids")
#: pytest marks that need arguments a rule cannot give, and the one millrun sets itself.
RESERVED_MARKS = ("millrun", "parametrize", "usefixtures", "filterwarnings", "skipif")
SCALARS = (str, int, float, bool, type(None))


class SuiteError(ParamsError):
    """A suite that cannot be run as written; one paragraph naming the key and the fix."""


class MillrunSuiteWarning(UserWarning):
    """A params file that reads otherwise than it looks, or a mark rule that matched nothing."""


@dataclass(frozen=True)
class Section:
    """The variations and id components of the top level or of one ``notebooks`` glob."""

    label: str
    glob: str | None
    variations: tuple[Variation, ...]
    prepend: tuple[str, ...] | None = None
    append: tuple[str, ...] | None = None
    line: int | None = None
    #: variables its notebooks record after their last cell (the command line's add to them)
    record: tuple[str, ...] = ()
    #: Globs of the data files these notebooks read, absolute (``--millrun-cache``'s key).
    inputs: tuple[str, ...] = ()
    #: Globs of files these notebooks touch that are no input of theirs (logs), absolute.
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class MarkRule:
    """One entry of ``marks``: which items (all conditions must hold) get which mark."""

    label: str
    line: int | None
    name: str
    reason: str | None
    notebooks: str | None = None
    where: Mapping[str, Any] = field(default_factory=dict)
    ids: str | None = None

    def matches(self, relative_notebook: str, variation: Variation, variation_id: str) -> bool:
        if self.notebooks is not None and not glob_match(self.notebooks, relative_notebook):
            return False
        if self.ids is not None and not fnmatch.fnmatchcase(variation_id, self.ids):
            return False
        return all(k in variation and same_value(variation[k], v) for k, v in self.where.items())


@dataclass(frozen=True)
class Suite:
    """Which variations, components and marks each notebook gets; seed forms included.

    A seed-form file is a suite of one section that every notebook gets, so the
    front ends have a single path.  ``base`` is the folder globs are relative to.
    """

    source: str
    base: Path
    top: Section
    sections: tuple[Section, ...] = ()
    marks: tuple[MarkRule, ...] = ()
    is_suite: bool = False

    def relative(self, notebook: Path) -> str:
        """The notebook's path relative to ``base``, with ``/``, as globs see it."""
        rel = os.path.relpath(notebook.resolve(), self.base.resolve())
        return rel.replace(os.sep, "/")

    def section_for(self, notebook: Path) -> Section:
        rel = self.relative(notebook)
        matched = [s for s in self.sections if s.glob is not None and glob_match(s.glob, rel)]
        if len(matched) > 1:
            raise SuiteError(
                f"{self.source}: the notebook {rel} matches both notebooks globs "
                f"{matched[0].glob!r} and {matched[1].glob!r}, so it is unclear which variations "
                f"it gets. Make the globs exclusive (name the notebook in one of them only)."
            )
        return matched[0] if matched else self.top

    def marks_for(self, notebook: Path, variation: Variation, variation_id: str) -> list[MarkRule]:
        rel = self.relative(notebook)
        return [rule for rule in self.marks if rule.matches(rel, variation, variation_id)]

    def unmatched_globs(self, matched: Iterable[str | None]) -> list[tuple[Section, str]]:
        """A warning for each notebooks glob that matched no notebook of the run, and no file
        under ``base`` either.

        Such a glob is most likely a typo, and its notebook quietly gets the top level.  A
        glob whose notebooks exist but are not part of this run (a subset was asked for) is
        not.
        """
        used = set(matched)
        return [
            (
                section,
                f"{self.source}: the notebooks glob {section.glob!r} matches no file under "
                f"{self.base}, so its variations run nowhere. Globs are relative to the params "
                f"file's folder; check it against the notebooks' paths.",
            )
            for section in self.sections
            if section.glob not in used
            and section.glob is not None
            and not glob_matches_a_file(self.base, section.glob)
        ]

    def describe(self) -> list[str]:
        """How many variations each part of the suite gives, for the report header."""
        lines = [f"{count_variations(len(self.top.variations))} for {self.top.label}"]
        lines += [f"{count_variations(len(s.variations))} for {s.label}" for s in self.sections]
        return lines


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[Variation]:
    """Every combination of the axes, as nested loops in the grid's key order.

    The first axis varies slowest and the last fastest (``itertools.product``
    order), so the order depends on the file alone and is the same in every
    process.
    """
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def pick_components(
    explicit: Sequence[str], own: tuple[str, ...] | None, fallback: Sequence[str] = ()
) -> tuple[str, ...]:
    """A front end's explicit components win, then the suite section's, then the fallback.

    The fallback is the plugin's ini setting: a project-wide default that a
    suite refines, while the command line is the user's word for this run.
    """
    if explicit:
        return tuple(explicit)
    return own if own is not None else tuple(fallback)


def marker_kwargs(variation: Variation) -> dict[str, Any]:
    """The variation's scalar parameters, which ``-m "millrun(name=value)"`` can select."""
    return {k: v for k, v in variation.items() if isinstance(v, SCALARS)}


def same_value(a: Any, b: Any) -> bool:
    """Equal, and not merely because True == 1."""
    return isinstance(a, bool) == isinstance(b, bool) and bool(a == b)


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def count_variations(n: int) -> str:
    return f"{n} variation{'s' if n != 1 else ''}"
