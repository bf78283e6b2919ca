"""Notebook globs: ``/``-separated paths where ``*`` stays in one folder and ``**`` spans any.

Shared by suites (their notebooks globs and mark rules) and by records' ``GLOB:name``,
so a glob means the same wherever a user writes one.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path


def glob_match(pattern: str, relative_path: str) -> bool:
    """Match a ``/``-separated path: ``*`` and ``?`` stay in one folder, ``**`` spans any."""
    return _glob_regex(pattern).fullmatch(relative_path) is not None


def glob_regex(pattern: str) -> str:
    """The regular expression a glob stands for, as text: for code that cannot import this."""
    return _glob_regex(pattern).pattern


def path_regexes(globs: Sequence[str], base: Path) -> tuple[str, ...]:
    """Regular expressions of the absolute paths the globs match, relative ones under ``base``.

    Why text: the cache's ignore globs are matched in the host and, sent as these, in
    the kernel, which cannot import this module.
    """
    prefix = re.escape(os.path.abspath(base).replace(os.sep, "/").rstrip("/") + "/")
    return tuple(
        glob_regex(pattern) if os.path.isabs(pattern) else prefix + glob_regex(pattern)
        for pattern in globs
    )


def matches_any(path: str, regexes: Sequence[str]) -> bool:
    """Whether an absolute path matches one of :func:`path_regexes`' expressions."""
    text = path.replace(os.sep, "/")
    return any(_compiled(regex).fullmatch(text) for regex in regexes)


@functools.lru_cache(maxsize=256)
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def glob_matches_a_file(base: Path, pattern: str) -> bool:
    """Whether any file under ``base`` (hidden ones and folders left out) matches ``pattern``.

    Only the part of the tree the pattern can reach is walked: below its literal leading
    folders, and no deeper than its parts unless it holds ``**``.
    """
    parts = pattern.removeprefix("./").split("/")
    root, fixed = base, 0
    while fixed < len(parts) - 1 and not any(c in parts[fixed] for c in "*?["):
        root, fixed = root / parts[fixed], fixed + 1
    deep = any("**" in part for part in parts[fixed:])
    levels = len(parts) - fixed  # below root: folders, then the file
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        deeper = deep or depth + 1 < levels
        dirs[:] = [d for d in sorted(dirs) if deeper and not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            relative = os.path.relpath(os.path.join(folder, name), base).replace(os.sep, "/")
            if glob_match(pattern, relative):
                return True
    return False


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.removeprefix("./")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))
