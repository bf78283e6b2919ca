"""Snapshot data and storage: what a snapshot file holds, and reading and writing it.

Kept apart from the comparison (:mod:`pytest_millrun.outputs.snapshots`) as
syrupy keeps its data types in ``data.py``: the plugin's session bookkeeping, the
API and the comparison all share these types without importing one another.

Storage: one JSON file per notebook, at the notebook's path relative to the
run's root under the snapshot folder with ``.json`` for ``.ipynb``, mapping
each variation id to ``{"values": {...}, "tolerances": {...}}``; tolerances
are optional and hand-edited (``{"rmse": {"rtol": 0.01, "atol": 1e-6}}``) and
an update keeps them.  Keys are sorted, floats written as Python's shortest
round-trip ``repr`` and non-finite floats tagged as in
:mod:`pytest_millrun.core.values`, so a review shows a small, readable diff.
Files are replaced atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_millrun.core.values import decode, encode
from pytest_millrun.outputs.files import atomic_write

DEFAULT_RTOL = 1e-9


DEFAULT_ATOL = 0.0


State = Literal["empty", "missing", "matches", "differs"]


MISSING = object()


class SnapshotFileError(ValueError):
    """A snapshot file that cannot be read as one; names the file and the fix."""


class ToleranceError(ValueError):
    """A tolerance that is not a number >= 0; a usage error."""


@dataclass(frozen=True)
class Tolerance:
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    def allows(self, expected: float) -> float:
        return max(self.atol, self.rtol * abs(expected))

    def describe(self) -> str:
        return f"rtol={self.rtol:g} atol={self.atol:g}"


def check_tolerance(value: Any, option: str) -> float:
    """A tolerance from an option or a snapshot file: a finite number >= 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ToleranceError(f"{option} must be a number >= 0 (e.g. 1e-9), not {value!r}.")
    return number


@dataclass(frozen=True)
class Difference:
    """One row of the failure table; ``name`` is a path such as ``coef[2]`` or ``stats.mean``."""

    name: str
    expected: Any = MISSING
    got: Any = MISSING
    tolerance: str = ""
    absolute: float | None = None
    relative: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Entry:
    """What a snapshot file holds for one variation."""

    values: Mapping[str, Any]
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    #: the tolerances as written in the file, kept as they are by an update
    raw_tolerances: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """A variation's values against its snapshot."""

    state: State
    differences: Sequence[Difference] = ()
    file: Path | None = None


def snapshot_file(directory: Path, notebook: str) -> Path:
    """The snapshot file of a notebook given relative to the run's root (posix text)."""
    return directory / Path(notebook).with_suffix(".json")


def read_file(path: Path) -> dict[str, Entry]:
    """A snapshot file's entries (none when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SnapshotFileError(f"Cannot read the snapshot file {path}: {exc}.") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SnapshotFileError(
            f"The snapshot file {path} is not valid JSON ({exc}). Fix it by hand, or delete "
            f"it and run with --millrun-snapshot-update to write it again."
        ) from None
    if not isinstance(data, dict):
        raise _shape(path, "it should hold an object mapping variation ids to entries")
    entries: dict[str, Entry] = {}
    for variation, raw in data.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("values", {}), dict):
            raise _shape(path, f'the entry {variation!r} should be {{"values": {{...}}}}')
        raw_tolerances = raw.get("tolerances", {})
        if not isinstance(raw_tolerances, dict):
            raise _shape(path, f"the tolerances of {variation!r} should be an object")
        tolerances: dict[str, Tolerance] = {}
        for name, spec in raw_tolerances.items():
            if not isinstance(spec, dict) or not set(spec) <= {"rtol", "atol"}:
                raise _shape(
                    path,
                    f"the tolerance of {name!r} in {variation!r} should be like "
                    f'{{"rtol": 1e-6, "atol": 0}}',
                )
            try:
                tolerances[name] = Tolerance(
                    rtol=check_tolerance(spec.get("rtol", 0.0), f"{path}: {variation} {name} rtol"),
                    atol=check_tolerance(spec.get("atol", 0.0), f"{path}: {variation} {name} atol"),
                )
            except ToleranceError as exc:
                raise SnapshotFileError(str(exc)) from None
        entries[variation] = Entry(decode(raw.get("values", {})), tolerances, raw_tolerances)
    return entries


def _shape(path: Path, problem: str) -> SnapshotFileError:
    return SnapshotFileError(
        f"The snapshot file {path} is not a millrun snapshot file: {problem}. Fix it by hand, "
        f"or delete it and run with --millrun-snapshot-update to write it again."
    )


def render_file(entries: Mapping[str, Entry]) -> str:
    data: dict[str, Any] = {}
    for variation, entry in entries.items():
        item: dict[str, Any] = {"values": encode(dict(entry.values))}
        if entry.raw_tolerances:
            item["tolerances"] = dict(entry.raw_tolerances)
        data[variation] = item
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


@dataclass(frozen=True)
class Change:
    """What an update does to one variation's entry (``values`` None: drop the entry)."""

    notebook: str
    variation: str
    state: State
    values: Mapping[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        values = None if self.values is None else encode(dict(self.values))
        return {
            "notebook": self.notebook,
            "variation": self.variation,
            "state": self.state,
            "values": values,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        values = data.get("values")
        return cls(data["notebook"], data["variation"], data["state"], decode(values))


@dataclass
class Summary:
    written: int = 0
    updated: int = 0
    unchanged: int = 0
    #: None when the run was not full, so nobody can tell
    unused: list[str] | None = None
    removed: int = 0
    files: list[Path] = field(default_factory=list)

    def describe(self, update: bool, hint: str = "--millrun-snapshot-update") -> str:
        unused = len(self.unused or ())
        if not update:
            return f"snapshots: {unused} unused (an update on a full run ({hint}) removes them)"
        text = (
            f"snapshots: {self.written} written, {self.updated} updated, "
            f"{self.unchanged} unchanged, "
        )
        if self.unused is None:
            return text + "unused not checked (not a full run)"
        text += f"{unused} unused"
        if self.removed:
            text += f" ({self.removed} removed)"
        return text


def unused_entries(directory: Path, used: Mapping[str, Iterable[str]]) -> list[str]:
    """Entries (``file [variation]``) and whole files under ``directory`` no variation used.

    ``used`` maps every notebook of a full run (relative to the root) to its
    variation ids.  Only ``.json`` files that read as snapshot files count.
    """
    wanted = {snapshot_file(directory, nb): set(ids) for nb, ids in used.items()}
    unused: list[str] = []
    if not directory.is_dir():
        return unused
    for path in sorted(directory.rglob("*.json")):
        try:
            entries = read_file(path)
        except SnapshotFileError:
            continue
        ids = wanted.get(path)
        for variation in sorted(entries):
            if ids is None or variation not in ids:
                unused.append(f"{path.relative_to(directory).as_posix()} [{variation}]")
    return unused


def apply_changes(
    directory: Path,
    changes: Iterable[Change],
    used: Mapping[str, Iterable[str]] | None = None,
) -> Summary:
    """Write the changes, each file once, atomically; return the counts.

    With ``used`` (the run was full and unfiltered) entries no variation used
    are removed too, and files left empty deleted; without it, only the
    changed entries are touched and every other entry and file left alone.
    """
    summary = Summary()
    by_file: dict[Path, list[Change]] = {}
    for change in changes:
        by_file.setdefault(snapshot_file(directory, change.notebook), []).append(change)
        if change.state == "missing":
            summary.written += 1
        elif change.state == "differs":
            summary.updated += 1
        elif change.state == "matches":
            summary.unchanged += 1
    if used is not None:
        summary.unused = unused_entries(directory, used)
        wanted = {snapshot_file(directory, nb): set(ids) for nb, ids in used.items()}
        if directory.is_dir():
            for path in sorted(directory.rglob("*.json")):
                by_file.setdefault(path, [])
    for path in sorted(by_file):
        try:
            entries = read_file(path)
        except SnapshotFileError:
            if used is not None and not by_file[path]:
                continue  # not ours
            raise
        new = dict(entries)
        for change in by_file[path]:
            if change.state not in ("missing", "differs"):
                continue
            if change.values is None:
                new.pop(change.variation, None)
                continue
            old = entries.get(change.variation)
            raw = old.raw_tolerances if old is not None else {}
            new[change.variation] = Entry(change.values, {}, raw)
        if used is not None:
            ids = wanted.get(path, set())
            for variation in sorted(new):
                if variation not in ids:
                    del new[variation]
                    summary.removed += 1
        if not new:
            if path.exists() and entries:
                path.unlink()
                summary.files.append(path)
            continue
        text = render_file(new)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write(path, text)
            summary.files.append(path)
    return summary
