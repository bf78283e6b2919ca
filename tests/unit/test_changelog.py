"""CHANGELOG.md keeps the form of keepachangelog.com, so a release is a rename of a heading.

The release steps (docs/development.md) turn ``## [Unreleased]`` into
``## [X.Y.Z] - YYYY-MM-DD``; that is all it takes only while every entry sits under
a type of change and every version heading has its link.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import Version

import pytest_millrun

CHANGELOG = Path(__file__).resolve().parents[2] / "CHANGELOG.md"
TYPES = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]
RELEASED = re.compile(r"## \[(\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?)\] - (\d{4}-\d{2}-\d{2})")


def _sections() -> list[tuple[str, list[str]]]:
    """(level-2 heading, its lines) in order."""
    sections: list[tuple[str, list[str]]] = []
    for line in CHANGELOG.read_text(encoding="utf-8").splitlines()[1:]:
        if line.startswith("## "):
            sections.append((line, []))
        elif sections:
            sections[-1][1].append(line)
    return sections


def test_the_changelog_opens_with_the_unreleased_section_then_dated_versions() -> None:
    assert CHANGELOG.read_text(encoding="utf-8").startswith("# Changelog\n")
    headings = [heading for heading, _ in _sections()]
    assert headings[0] == "## [Unreleased]"
    released = []
    for heading in headings[1:]:
        match = RELEASED.fullmatch(heading)
        assert match, f"{heading!r}: a released version reads '## [X.Y.Z] - YYYY-MM-DD'"
        released.append(Version(match[1]))
    assert released == sorted(released, reverse=True), "newest version first"
    if released:
        assert Version(pytest_millrun.__version__) >= released[0], (
            f"__version__ {pytest_millrun.__version__} is older than the released {released[0]}"
        )


def test_every_entry_is_under_a_type_of_change() -> None:
    for heading, lines in _sections():
        seen: list[str] = []
        current = None
        for line in lines:
            if line.startswith("### "):
                current = line[4:]
                assert current in TYPES, f"{heading}: '### {current}' is not one of {TYPES}"
                assert current not in seen, f"{heading}: '### {current}' twice"
                seen.append(current)
            elif line.startswith("- "):
                assert current is not None, (
                    f"{heading}: {line[:60]!r}... stands under no type of change: move it under "
                    f"one of {', '.join(f'### {t}' for t in TYPES)}"
                )
        assert seen == sorted(seen, key=TYPES.index), f"{heading}: types in the order {TYPES}"


def test_every_version_heading_has_its_link() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    for heading, _ in _sections():
        name = heading[4 : heading.index("]")]
        assert re.search(rf"(?m)^\[{re.escape(name)}\]: https://\S+$", text), (
            f"no link line '[{name}]: https://...' at the end of CHANGELOG.md"
        )
