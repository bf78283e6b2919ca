"""Snapshot checks: a variation's recorded values against the ones stored for it.

Shared by the three front ends (the plugin's glue is
:mod:`pytest_millrun.snapshots_plugin`).  Conventions follow pytest-regressions
(``num_regression``: relative and absolute tolerances, per-value tolerances)
and syrupy (``--snapshot-update`` writes; unused snapshots are reported, and
removed only by an update on a full, unfiltered run).

Storage: one JSON file per notebook, at the notebook's path relative to the
run's root under the snapshot folder with ``.json`` for ``.ipynb``, mapping
each variation id to ``{"values": {...}, "tolerances": {...}}``; tolerances
are optional and hand-edited (``{"rmse": {"rtol": 0.01, "atol": 1e-6}}``) and
an update keeps them.  Keys are sorted, floats written as Python's shortest
round-trip ``repr`` and non-finite floats tagged as in
:mod:`pytest_millrun.recording`, so a review shows a small, readable diff.
Files are replaced atomically.

Comparison: numbers (ints and floats alike, bools excluded) match when
``|got - expected| <= max(atol, rtol * |expected|)`` (as ``pytest.approx``);
nan matches nan, an infinity only itself; strings, bools and None must be
equal; lists and dicts match element by element, with equal lengths and keys.
A value missing on either side is a difference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .recording import decode, dumps, encode
from .results import atomic_write

if TYPE_CHECKING:
    from .execute import ExecutionResult

DEFAULT_RTOL = 1e-9
DEFAULT_ATOL = 0.0
#: Rows of a difference table before the rest is only counted.
TABLE_ROWS = 20
#: Width a value is shortened to in the table.
VALUE_WIDTH = 32

State = Literal["empty", "missing", "matches", "differs"]
_MISSING = object()


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
    expected: Any = _MISSING
    got: Any = _MISSING
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


# ---------------------------------------------------------------- comparison


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare(
    expected: Mapping[str, Any],
    got: Mapping[str, Any],
    default: Tolerance = Tolerance(),
    tolerances: Mapping[str, Tolerance] | None = None,
) -> list[Difference]:
    """Every difference between two sets of recorded values, in name order.

    A per-value tolerance (keyed by the recorded name) applies to everything
    inside that value; other values get ``default``.
    """
    tolerances = tolerances or {}
    differences: list[Difference] = []
    for name in sorted(set(expected) | set(got)):
        tolerance = tolerances.get(name, default)
        differences += _compare(
            name, expected.get(name, _MISSING), got.get(name, _MISSING), tolerance
        )
    return differences


def _compare(name: str, expected: Any, got: Any, tolerance: Tolerance) -> list[Difference]:
    if expected is _MISSING or got is _MISSING:
        note = "not in the snapshot" if expected is _MISSING else "not recorded"
        return [Difference(name, expected, got, note=note)]
    if _is_number(expected) and _is_number(got):
        return _compare_numbers(name, expected, got, tolerance)
    if isinstance(expected, dict) and isinstance(got, dict):
        rows: list[Difference] = []
        for key in sorted(set(expected) | set(got)):
            rows += _compare(
                f"{name}.{key}", expected.get(key, _MISSING), got.get(key, _MISSING), tolerance
            )
        return rows
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [Difference(name, expected, got, note=f"length {len(expected)} -> {len(got)}")]
        rows = []
        for index, (left, right) in enumerate(zip(expected, got, strict=True)):
            rows += _compare(f"{name}[{index}]", left, right, tolerance)
        return rows
    if type(expected) is type(got) and expected == got:
        return []
    note = "" if type(expected) is type(got) else "type differs"
    return [Difference(name, expected, got, note=note)]


def _compare_numbers(
    name: str, expected: int | float, got: int | float, tolerance: Tolerance
) -> list[Difference]:
    if isinstance(expected, int) and isinstance(got, int):
        difference: float = abs(got - expected)  # exact, however large
    else:
        left, right = float(expected), float(got)
        if math.isnan(left) or math.isnan(right):
            if math.isnan(left) and math.isnan(right):
                return []
            return [Difference(name, expected, got, tolerance.describe())]
        if math.isinf(left) or math.isinf(right):
            if left == right:
                return []
            return [Difference(name, expected, got, tolerance.describe())]
        difference = abs(right - left)
    if difference <= tolerance.allows(expected):
        return []
    relative = float(difference) / abs(expected) if expected else math.inf
    return [
        Difference(
            name, expected, got, tolerance.describe(), absolute=float(difference), relative=relative
        )
    ]


# ------------------------------------------------------------------- report


def shorten(value: Any, width: int = VALUE_WIDTH) -> str:
    if value is _MISSING:
        return "(missing)"
    text = dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def format_table(differences: Sequence[Difference], limit: int = TABLE_ROWS) -> list[str]:
    """The differences as a text table, at most ``limit`` rows and a count of the rest."""
    header = ("name", "expected", "got", "abs diff", "rel diff", "tolerance")
    rows = [
        (
            shorten(d.name, 40).strip('"'),
            shorten(d.expected),
            shorten(d.got),
            _number(d.absolute),
            _number(d.relative),
            d.tolerance or d.note,
        )
        for d in differences[:limit]
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(differences) > limit:
        rest = len(differences) - limit
        lines.append(f"... and {rest} more difference{'s' if rest != 1 else ''}")
    return lines


def format_check(
    check: Check, variation_id: str, *, update_hint: str, select_hint: str = ""
) -> str:
    """The failure message for a missing or different snapshot, with how to accept it."""
    where = check.file if check.file is not None else "the snapshot folder"
    accept = f"Run with {update_hint} to accept"
    accept += f" ({select_hint} to accept only some)." if select_hint else "."
    if check.state == "missing":
        write = accept.replace("accept", "write it", 1)
        return f"No snapshot for [{variation_id}] in {where}. {write}"
    count = len(check.differences)
    lines = [
        f"Recorded values of [{variation_id}] differ from the snapshot in {where} "
        f"({count} difference{'s' if count != 1 else ''}):",
        "",
        *format_table(check.differences),
        "",
        f"{accept}",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ storage


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


def check_values(
    entries: Mapping[str, Entry],
    variation_id: str,
    recorded: Mapping[str, Any],
    default: Tolerance,
    file: Path | None = None,
) -> Check:
    """A variation's recorded values against its entry."""
    entry = entries.get(variation_id)
    if entry is None:
        return Check("empty" if not recorded else "missing", file=file)
    differences = compare(entry.values, recorded, default, entry.tolerances)
    return Check("differs" if differences else "matches", differences, file)


class SnapshotReader:
    """Reads each snapshot file once per process (nothing writes them until the run ends)."""

    def __init__(self, directory: Path, default: Tolerance) -> None:
        self.directory = directory
        self.default = default
        self._files: dict[Path, dict[str, Entry]] = {}

    def check(self, notebook: str, variation_id: str, recorded: Mapping[str, Any]) -> Check:
        """Raises :class:`SnapshotFileError` for a broken file."""
        path = snapshot_file(self.directory, notebook)
        if path not in self._files:
            self._files[path] = read_file(path)
        return check_values(self._files[path], variation_id, recorded, self.default, path)


# ------------------------------------------------------------------ updates


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


def change_for(
    notebook: str, variation_id: str, check: Check, recorded: Mapping[str, Any]
) -> Change:
    """The update a check calls for; values within tolerance are kept as stored (no churn)."""
    values: Mapping[str, Any] | None = dict(recorded)
    if check.state == "differs" and not recorded:
        values = None
    return Change(notebook, variation_id, check.state, values)


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


# ------------------------------------------------------------- API and CLI


class SnapshotMismatchError(AssertionError):
    """Some variations' recorded values differ from their snapshots (or have none).

    ``results`` holds every result, ``failures`` one report per such variation.
    """

    def __init__(self, results: Sequence[ExecutionResult], failures: Sequence[str]) -> None:
        self.results = list(results)
        self.failures = list(failures)
        count = len(self.failures)
        head = f"{count} of {len(self.results)} runs differ from their snapshots:"
        super().__init__("\n\n".join([head, *self.failures]))


def check_results(
    results: Sequence[ExecutionResult],
    directory: str | Path,
    root: Path,
    *,
    update: bool = False,
    tolerance: Tolerance = Tolerance(),
    update_hint: str = "--snapshot-update",
) -> tuple[list[str], Summary]:
    """The API's and the command's check of a whole run (a planned run is always full).

    Returns one failure report per variation that differs or has no snapshot
    (none when updating), and the counts; with ``update`` the files are
    written, unused entries removed.
    """
    from .results import relative

    folder = Path(directory).absolute()
    reader = SnapshotReader(folder, tolerance)
    used: dict[str, list[str]] = {}
    failures: list[str] = []
    changes: list[Change] = []
    for result in results:
        notebook = relative(result.notebook, root)
        used.setdefault(notebook, []).append(result.variation_id)
        if not result.passed:
            continue
        try:
            check = reader.check(notebook, result.variation_id, result.recorded)
        except SnapshotFileError as exc:
            failures.append(f"{notebook} [{result.variation_id}]: {exc}")
            continue
        if check.state == "empty":
            continue
        if update:
            changes.append(change_for(notebook, result.variation_id, check, result.recorded))
        elif check.state != "matches":
            report = format_check(check, result.variation_id, update_hint=update_hint)
            failures.append(f"{notebook}: {report}")
    if update and not failures:
        return [], apply_changes(folder, changes, used)
    return failures, Summary(unused=unused_entries(folder, used))


def tolerance_of(rtol: float | None, atol: float | None) -> Tolerance:
    """The API's tolerances, defaults for None; :class:`ToleranceError` for a bad one."""
    return Tolerance(
        rtol=DEFAULT_RTOL if rtol is None else check_tolerance(rtol, "rtol"),
        atol=DEFAULT_ATOL if atol is None else check_tolerance(atol, "atol"),
    )


class MillrunSnapshotWarning(UserWarning):
    """Snapshot entries no variation of the run used."""


def snapshot_check(
    results: Sequence[ExecutionResult],
    directory: str | Path,
    target: Path,
    update: bool,
    tolerance: Tolerance,
) -> None:
    """``execute_run``'s check: raise on differences, warn of unused entries."""
    import warnings

    root = target if target.is_dir() else target.parent
    failures, summary = check_results(
        results, directory, root, update=update, tolerance=tolerance,
        update_hint="snapshot_update=True",
    )  # fmt: skip
    if summary.unused and not update:
        warnings.warn(
            MillrunSnapshotWarning(
                f"{len(summary.unused)} unused snapshot entries in {directory}: "
                f"{', '.join(summary.unused[:5])}; snapshot_update=True removes them."
            ),
            stacklevel=3,
        )
    if failures and not any(not r.passed for r in results):
        raise SnapshotMismatchError(results, failures)
