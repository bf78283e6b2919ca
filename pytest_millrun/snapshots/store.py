"""Snapshot data and storage: what a snapshot file holds, and reading and writing it.

Kept apart from the comparison (:mod:`pytest_millrun.snapshots.checks`) as
syrupy keeps its data types in ``data.py``: the plugin's session bookkeeping, the
API and the comparison all share these types without importing one another.

Storage: one JSON file per notebook, at the notebook's path relative to the
run's root under the snapshot folder with ``.json`` for ``.ipynb``, mapping
each variation id to ``{"values": {...}, "tolerances": {...}}``; tolerances
are optional and hand-edited (``{"rmse": {"rtol": 0.01, "atol": 1e-6}}``) and
an update keeps them.  With figure snapshots an entry also lists its
``"figures"`` (their baselines are PNG files beside it, see
:mod:`pytest_millrun.snapshots.figures`) and optional hand-edited
``"figure_tolerances"`` (``{"loss": 5}``).  Keys are sorted, floats written as Python's shortest
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
from typing import TYPE_CHECKING, Any, Literal

from pytest_millrun.core.files import atomic_write
from pytest_millrun.core.values import decode, encode

if TYPE_CHECKING:
    from pytest_millrun.snapshots.figures import FigureResult

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
    #: names of its figure baselines (None: written without figure snapshots)
    figures: tuple[str, ...] | None = None
    #: per-figure RMS tolerances, hand-edited, kept by an update
    figure_tolerances: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """A variation's values (and figures, when they are checked) against its snapshot."""

    state: State
    differences: Sequence[Difference] = ()
    file: Path | None = None
    #: every figure's result; None when figures were not checked
    figures: Sequence[FigureResult] | None = None
    #: the values as stored, which an update keeps when only figures changed
    stored: Mapping[str, Any] | None = None


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
        figures, figure_tolerances = _figures(path, variation, raw)
        entries[variation] = Entry(
            decode(raw.get("values", {})), tolerances, raw_tolerances, figures, figure_tolerances
        )
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
        if entry.figures:  # none at all: nothing to say (as a file written without figures)
            item["figures"] = list(entry.figures)
        if entry.figure_tolerances:
            item["figure_tolerances"] = dict(entry.figure_tolerances)
        data[variation] = item
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


@dataclass(frozen=True)
class Change:
    """What an update does to one variation's entry (``values`` None: drop the entry).

    ``figures`` (None: not checked, left as stored) maps each figure the
    variation produced to its kind (``png``, ``svg``) and image, base64, to
    write, or to None to keep the baseline as it is; baselines of figures not
    in it are removed.
    """

    notebook: str
    variation: str
    state: State
    values: Mapping[str, Any] | None
    figures: Mapping[str, Sequence[str] | None] | None = None

    def to_json(self) -> dict[str, Any]:
        values = None if self.values is None else encode(dict(self.values))
        return {
            "notebook": self.notebook,
            "variation": self.variation,
            "state": self.state,
            "values": values,
            "figures": None if self.figures is None else dict(self.figures),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        values = data.get("values")
        return cls(
            data["notebook"], data["variation"], data["state"], decode(values), data.get("figures")
        )


@dataclass
class Summary:
    written: int = 0
    updated: int = 0
    unchanged: int = 0
    #: ``file [id]`` of each unused entry in the files the run could check
    unused: list[str] = field(default_factory=list)
    #: snapshot files not checked for unused entries: their notebooks ran in part
    unchecked: int = 0
    removed: int = 0
    files: list[Path] = field(default_factory=list)
    figures_written: int = 0
    figures_removed: int = 0

    def describe(
        self, update: bool, hint: str = "--millrun-snapshot-update", strict: str = ""
    ) -> str:
        """The summary line; ``strict`` names the strict option when unused entries fail."""
        unused = len(self.unused)
        if not update:
            text = f"snapshots: {unused} unused ({hint} on a run of their notebooks removes them)"
            return text + (f"; they fail the run ({strict})" if strict and unused else "")
        text = (
            f"snapshots: {self.written} written, {self.updated} updated, "
            f"{self.unchanged} unchanged, {unused} unused"
        )
        if self.removed:
            text += f" ({self.removed} removed)"
        if self.figures_written or self.figures_removed:
            text += f"; figures: {self.figures_written} written, {self.figures_removed} removed"
        if self.unchecked:
            files = f"{self.unchecked} file{'s' if self.unchecked != 1 else ''}"
            text += f"; unused not checked in {files} (not every variation of its notebook ran)"
        return text


def apply_changes(
    directory: Path, changes: Iterable[Change], unused: Unused | None = None
) -> Summary:
    """Write the changes, each file once, atomically; return the counts.

    ``unused`` (see :mod:`pytest_millrun.snapshots.scope`) names the
    entries the run may remove; files left empty are deleted.  Every other
    entry and file is left alone.
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
    remove: Mapping[Path, list[str]] = {}
    if unused is not None:
        summary.unused = unused.names(directory)
        summary.unchecked = len(unused.unchecked)
        remove = unused.entries
        for path in remove:
            by_file.setdefault(path, [])
    for path in sorted(by_file):
        entries = read_file(path)
        new = dict(entries)
        notebook = path.relative_to(directory).as_posix()
        for change in by_file[path]:
            if change.state not in ("missing", "differs"):
                continue
            old = entries.get(change.variation)
            if change.values is None:
                new.pop(change.variation, None)
                _drop_figures(directory, notebook, change.variation, old, summary)
                continue
            new[change.variation] = _updated(directory, change, old, summary)
        for variation in remove.get(path, ()):
            if new.pop(variation, None) is not None:
                summary.removed += 1
                _drop_figures(directory, notebook, variation, entries.get(variation), summary)
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


def _figures(
    path: Path, variation: str, raw: Mapping[str, Any]
) -> tuple[tuple[str, ...] | None, dict[str, float]]:
    figures = raw.get("figures")
    if figures is not None and (
        not isinstance(figures, list) or not all(isinstance(f, str) for f in figures)
    ):
        raise _shape(path, f"the figures of {variation!r} should be a list of names")
    spec = raw.get("figure_tolerances", {})
    if not isinstance(spec, dict):
        raise _shape(path, f'the figure tolerances of {variation!r} should be like {{"loss": 5}}')
    try:
        tolerances = {
            name: check_tolerance(value, f"{path}: {variation} figure {name} tolerance")
            for name, value in spec.items()
        }
    except ToleranceError as exc:
        raise SnapshotFileError(str(exc)) from None
    return (None if figures is None else tuple(figures)), tolerances


def _updated(directory: Path, change: Change, old: Entry | None, summary: Summary) -> Entry:
    """The entry a change makes, its figure baselines written (tolerances kept)."""
    raw = old.raw_tolerances if old is not None else {}
    figures = old.figures if old is not None else None
    figure_tolerances = old.figure_tolerances if old is not None else {}
    if change.figures is not None:
        from pytest_millrun.snapshots.figures import baseline_folder, update_baselines

        folder = baseline_folder(directory, change.notebook, change.variation)
        written, removed = update_baselines(folder, change.figures, figures)
        summary.figures_written += written
        summary.figures_removed += removed
        figures = tuple(change.figures)
        figure_tolerances = {k: v for k, v in figure_tolerances.items() if k in figures}
    return Entry(change.values or {}, {}, raw, figures, figure_tolerances)


def _drop_figures(
    directory: Path, notebook: str, variation: str, old: Entry | None, summary: Summary
) -> None:
    if old is None or not old.figures:
        return
    from pytest_millrun.snapshots.figures import baseline_folder, remove_baselines

    folder = baseline_folder(directory, notebook, variation)
    summary.figures_removed += remove_baselines(folder, old.figures)


@dataclass(frozen=True)
class Unused:
    """Unused entries by snapshot file, and the files a run could not check."""

    #: snapshot file -> its unused variation ids, sorted
    entries: Mapping[Path, list[str]] = field(default_factory=dict)
    #: snapshot files of notebooks that ran in part
    unchecked: list[Path] = field(default_factory=list)

    def names(self, directory: Path) -> list[str]:
        """``file [id]`` per unused entry, the file relative to the snapshot folder."""
        return [
            f"{path.relative_to(directory).as_posix()} [{variation}]"
            for path, ids in sorted(self.entries.items())
            for variation in ids
        ]
