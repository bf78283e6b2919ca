"""Check a built wheel and sdist against the files git tracks, before anyone installs them.

Why: the tests run from an editable install, which reads the source tree, so a
file the build leaves out (a template the report reads, a module matched by a
``.gitignore`` pattern, ``py.typed``) goes unnoticed until a user installs the
wheel.  Every file git tracks under the packages is something the package
imports or reads at run time (modules, ``inkernel`` source read as text, the
report's page template, the ``py.typed`` markers), so the wheel must hold each
of them, and nothing else under the packages; the sdist must hold them too, with
what the build reads from it (``pyproject.toml``, the readme, the license).

Usage (as ``.ci/run`` does, from the repository)::

    python tools/check_dist.py DIST_DIR     # DIST_DIR holds one .whl and one .tar.gz
"""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

#: The import packages the distribution ships.
PACKAGES = ("pytest_millrun", "millrun")
#: What the build backend reads from an sdist besides the packages.
SDIST_EXTRA = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md")


def tracked_files(repo: Path, paths: Iterable[str] = PACKAGES) -> set[str]:
    """The files git tracks under ``paths``, as posix paths relative to the repository."""
    done = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--", *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    return {name for name in done.stdout.split("\0") if name}


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if not name.endswith("/")}


def sdist_files(sdist: Path) -> set[str]:
    """The sdist's files relative to its top folder (``pytest_millrun-X/``)."""
    with tarfile.open(sdist) as archive:
        names = [member.name for member in archive.getmembers() if member.isfile()]
    return {name.split("/", 1)[1] for name in names if "/" in name}


def problems_in_wheel(wheel: Path, tracked: set[str]) -> list[str]:
    """What is wrong with the wheel's file list, one paragraph each (empty: nothing)."""
    inside = wheel_files(wheel)
    shipped = {name for name in inside if name.split("/", 1)[0] in PACKAGES}
    found: list[str] = []
    missing = sorted(tracked - shipped)
    if missing:
        found.append(
            f"The wheel {wheel.name} lacks {len(missing)} file(s) that git tracks under "
            f"{' and '.join(PACKAGES)}, which the installed package imports or reads at run "
            "time:\n" + "".join(f"  {name}\n" for name in missing) + "Hatchling leaves out "
            "what .gitignore matches and what [tool.hatch.build] in pyproject.toml excludes: "
            "make sure neither covers them."
        )
    extra = sorted(shipped - tracked)
    if extra:
        found.append(
            f"The wheel {wheel.name} holds {len(extra)} file(s) under the packages that git "
            "does not track (built from a work tree with untracked files? build from a clean "
            "clone):\n" + "".join(f"  {name}\n" for name in extra).rstrip("\n")
        )
    for package in PACKAGES:
        if f"{package}/py.typed" not in inside:
            found.append(
                f"The wheel {wheel.name} has no {package}/py.typed, so type checkers treat "
                f"`import {package}` as untyped (Any) although the project claims "
                "`Typing :: Typed`: add the empty marker file and track it."
            )
    return found


#: A Markdown link or picture target, and the ones an index can follow from its own page.
_LINK = re.compile(r"\]\(([^)\s]+)")
_ABSOLUTE = re.compile(r"[a-z][a-z0-9+.-]*:|#", re.IGNORECASE)


def problems_in_description(wheel: Path) -> list[str]:
    """Links of the page an index shows that would lead nowhere there (relative ones)."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    description = str(metadata.get_payload())
    relative = sorted({t for t in _LINK.findall(description) if not _ABSOLUTE.match(t)})
    if not relative:
        return []
    return [
        f"The description in {wheel.name} (the index's page) links to {len(relative)} "
        "relative target(s), which lead nowhere on the index:\n"
        + "".join(f"  {target}\n" for target in relative)
        + "Make them absolute with a substitution in "
        "[tool.hatch.metadata.hooks.fancy-pypi-readme] (pyproject.toml)."
    ]


def problems_in_sdist(sdist: Path, tracked: set[str]) -> list[str]:
    inside = sdist_files(sdist)
    missing = sorted((tracked | set(SDIST_EXTRA)) - inside)
    if not missing:
        return []
    return [
        f"The sdist {sdist.name} lacks {len(missing)} file(s) that a build from it, or a "
        "redistributor, needs:\n" + "".join(f"  {name}\n" for name in missing) + "Check "
        "[tool.hatch.build.targets.sdist] in pyproject.toml and .gitignore."
    ]


def check(dist: Path, repo: Path) -> list[str]:
    """Every problem of the one wheel and the one sdist in ``dist``."""
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [
            f"{dist} should hold one wheel and one sdist (python -m build --outdir {dist}); "
            f"it holds {[p.name for p in wheels + sdists] or 'neither'}."
        ]
    tracked = tracked_files(repo)
    return (
        problems_in_wheel(wheels[0], tracked)
        + problems_in_description(wheels[0])
        + problems_in_sdist(sdists[0], tracked)
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tools/check_dist.py DIST_DIR", file=sys.stderr)
        return 2
    dist = Path(argv[0])
    problems = check(dist, Path(__file__).resolve().parent.parent)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    (wheel,) = dist.glob("*.whl")
    print(f"{wheel.name}: every file git tracks under {', '.join(PACKAGES)}, nothing more")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
