"""Snapshot checks: a variation's recorded values against the ones stored for it.

Shared by the three front ends (the plugin's glue is
:mod:`pytest_millrun.plugin.snapshots`).  Conventions follow pytest-regressions
(``num_regression``: relative and absolute tolerances, per-value tolerances)
and syrupy (``--snapshot-update`` writes; unused snapshots are reported, and
removed only by an update on a full, unfiltered run).

Storage is :mod:`pytest_millrun.outputs.snapshot_files`'s.

Comparison: numbers (ints and floats alike, bools excluded) match when
``|got - expected| <= max(atol, rtol * |expected|)`` (as ``pytest.approx``);
nan matches nan, an infinity only itself; strings, bools and None must be
equal; lists and dicts match element by element, with equal lengths and keys.
A value missing on either side is a difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_millrun.core.values import dumps
from pytest_millrun.outputs.snapshot_files import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    MISSING,
    Change,
    Check,
    Difference,
    Entry,
    SnapshotFileError,
    Summary,
    Tolerance,
    apply_changes,
    check_tolerance,
    read_file,
    snapshot_file,
    unused_entries,
)

if TYPE_CHECKING:
    from pytest_millrun.core.data import ExecutionResult

#: Rows of a difference table before the rest is only counted.
TABLE_ROWS = 20
#: Width a value is shortened to in the table.
VALUE_WIDTH = 32


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
            name, expected.get(name, MISSING), got.get(name, MISSING), tolerance
        )
    return differences


def _compare(name: str, expected: Any, got: Any, tolerance: Tolerance) -> list[Difference]:
    if expected is MISSING or got is MISSING:
        note = "not in the snapshot" if expected is MISSING else "not recorded"
        return [Difference(name, expected, got, note=note)]
    if _is_number(expected) and _is_number(got):
        return _compare_numbers(name, expected, got, tolerance)
    if isinstance(expected, dict) and isinstance(got, dict):
        rows: list[Difference] = []
        for key in sorted(set(expected) | set(got)):
            rows += _compare(
                f"{name}.{key}", expected.get(key, MISSING), got.get(key, MISSING), tolerance
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
    if value is MISSING:
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


def change_for(
    notebook: str, variation_id: str, check: Check, recorded: Mapping[str, Any]
) -> Change:
    """The update a check calls for; values within tolerance are kept as stored (no churn)."""
    values: Mapping[str, Any] | None = dict(recorded)
    if check.state == "differs" and not recorded:
        values = None
    return Change(notebook, variation_id, check.state, values)


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
    from pytest_millrun.outputs.files import relative

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
