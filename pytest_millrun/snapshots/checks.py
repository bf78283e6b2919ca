"""Snapshot checks: a variation's recorded values against the ones stored for it.

Shared by the three front ends (the plugin's glue is
:mod:`pytest_millrun.plugin.snapshot_glue`).  Conventions follow pytest-regressions
(``num_regression``: relative and absolute tolerances, per-value tolerances)
and syrupy (``--snapshot-update`` writes; unused snapshots are reported where
the run saw every variation of their notebook, and removed only by an update;
see :mod:`pytest_millrun.snapshots.scope`).

Storage is :mod:`pytest_millrun.snapshots.store`'s.

Comparison: numbers (ints and floats alike, bools excluded) match when
``|got - expected| <= max(atol, rtol * |expected|)`` (as ``pytest.approx``);
nan matches nan, an infinity only itself; strings, bools and None must be
equal; lists and dicts match element by element, with equal lengths and keys.
A value missing on either side is a difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_millrun.core.discovery import notebook_folder
from pytest_millrun.core.values import dumps
from pytest_millrun.snapshots.store import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    MISSING,
    Change,
    Check,
    Difference,
    Entry,
    SnapshotFileError,
    State,
    Summary,
    Tolerance,
    apply_changes,
    check_tolerance,
    read_file,
    snapshot_file,
)

if TYPE_CHECKING:
    from pytest_millrun.core.data import ExecutionResult
    from pytest_millrun.snapshots.figures import FigureResult
    from pytest_millrun.snapshots.scope import Folder

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
    lines: list[str] = []
    count = len(check.differences)
    if count:
        lines += [
            f"Recorded values of [{variation_id}] differ from the snapshot in {where} "
            f"({count} difference{'s' if count != 1 else ''}):",
            "",
            *format_table(check.differences),
            "",
        ]
    failed = [r for r in check.figures or () if r.failed]
    if failed:
        from pytest_millrun.snapshots.figures import format_figures

        lines += [
            f"Figures of [{variation_id}] differ from the snapshot in {where} "
            f"({len(failed)} figure{'s' if len(failed) != 1 else ''}):",
            "",
            *format_figures(failed),
            "",
        ]
    return "\n".join([*lines, accept])


# ------------------------------------------------------------------ storage


def check_values(
    entries: Mapping[str, Entry],
    variation_id: str,
    recorded: Mapping[str, Any],
    default: Tolerance,
    file: Path | None = None,
    figures: Callable[[Entry | None], Sequence[FigureResult]] | None = None,
) -> Check:
    """A variation's recorded values against its entry; ``figures`` checks its figures."""
    entry = entries.get(variation_id)
    results = None if figures is None else figures(entry)
    if entry is None:
        empty = not recorded and not results
        return Check("empty" if empty else "missing", file=file, figures=results)
    differences = compare(entry.values, recorded, default, entry.tolerances)
    failed = differences or any(r.failed for r in results or ())
    state: State = "differs" if failed else "matches"
    return Check(state, differences, file, results, entry.values)


class SnapshotReader:
    """Reads each snapshot file once per process (nothing writes them until the run ends).

    With ``figure_tolerance`` (figure snapshots on) a check given the output
    notebook compares its figures too, and leaves a failing figure's images
    beside it (unless ``write_images`` is off, as in an update).
    """

    def __init__(
        self,
        directory: Path,
        default: Tolerance,
        figure_tolerance: float | None = None,
        write_images: bool = True,
    ) -> None:
        self.directory = directory
        self.default = default
        self.figure_tolerance = figure_tolerance
        self.write_images = write_images
        self._files: dict[Path, dict[str, Entry]] = {}

    def check(
        self,
        notebook: str,
        variation_id: str,
        recorded: Mapping[str, Any],
        output: Path | None = None,
    ) -> Check:
        """Raises :class:`SnapshotFileError` for a broken file."""
        path = snapshot_file(self.directory, notebook)
        if path not in self._files:
            self._files[path] = read_file(path)
        figures = None
        tolerance = self.figure_tolerance
        if tolerance is not None and output is not None:
            from pytest_millrun.snapshots.figures import (
                baseline_folder,
                check_figures,
                failure_folder,
                read_figures,
            )

            got = read_figures(output)
            baselines = baseline_folder(self.directory, notebook, variation_id)

            def figures(entry: Entry | None) -> Sequence[FigureResult]:
                names = None if entry is None else entry.figures
                tolerances = {} if entry is None else entry.figure_tolerances
                return check_figures(
                    names, baselines, got, tolerance, tolerances, failure_folder(output),
                    self.write_images,
                )  # fmt: skip

        return check_values(self._files[path], variation_id, recorded, self.default, path, figures)


# ------------------------------------------------------------------ updates


def change_for(
    notebook: str, variation_id: str, check: Check, recorded: Mapping[str, Any]
) -> Change:
    """The update a check calls for; values and figures within tolerance stay as stored."""
    import base64

    values: Mapping[str, Any] | None = dict(recorded)
    if check.state == "differs" and not check.differences and check.stored is not None:
        values = check.stored  # only figures changed
    figures: dict[str, tuple[str, str] | None] | None = None
    if check.figures is not None:
        figures = {
            r.name: (r.kind, base64.b64encode(r.got).decode())
            if r.failed and r.got is not None
            else None
            for r in check.figures
            if r.state != "gone"
        }
    if check.state == "differs" and not recorded and not figures:
        values = None
    return Change(notebook, variation_id, check.state, values, figures)


# ------------------------------------------------------------- API and CLI


class SnapshotMismatchError(AssertionError):
    """Some variations' recorded values differ from their snapshots (or have none).

    ``results`` holds every result, ``failures`` one report per such variation,
    ``unused`` the unused entries (``file [id]``) when they fail the run
    (``snapshot_strict=True``).
    """

    def __init__(
        self,
        results: Sequence[ExecutionResult],
        failures: Sequence[str],
        unused: Sequence[str] = (),
    ) -> None:
        self.results = list(results)
        self.failures = list(failures)
        self.unused = list(unused)
        count = len(self.failures)
        parts = []
        if count:
            parts += [f"{count} of {len(self.results)} runs differ from their snapshots:"]
            parts += self.failures
        if self.unused:
            parts.append(unused_message(self.unused, "snapshot_update=True"))
        super().__init__("\n\n".join(parts))


def check_results(
    results: Sequence[ExecutionResult],
    directory: str | Path,
    root: Path,
    *,
    update: bool = False,
    tolerance: Tolerance = Tolerance(),
    update_hint: str = "--snapshot-update",
    folders: Collection[Folder] = (),
    figure_tolerance: float | None = None,
) -> tuple[list[str], Summary]:
    """The API's and the command's check of a planned run (every notebook ran whole).

    ``folders`` are the folders the run collected (the notebook folder given,
    and those below it when recursive): a snapshot file there whose notebook
    is gone is unused.  Returns one failure report per variation that differs
    or has no snapshot (none when updating), and the counts; with ``update``
    the files are written, unused entries removed.  With ``figure_tolerance``
    (figure snapshots on) each run's figures are compared too.
    """
    from pytest_millrun.core.files import relative
    from pytest_millrun.snapshots.figures import FiguresUnavailableError
    from pytest_millrun.snapshots.scope import Scope, unused_in_scope

    folder = Path(directory).absolute()
    reader = SnapshotReader(folder, tolerance, figure_tolerance, not update)
    used: dict[str, set[str]] = {}
    failures: list[str] = []
    changes: list[Change] = []
    for result in results:
        notebook = relative(result.notebook, root)
        used.setdefault(notebook, set()).add(result.variation_id)
        if not result.passed:
            continue
        try:
            output = result.output if isinstance(result.output, Path) else None  # URL: no figures
            check = reader.check(notebook, result.variation_id, result.recorded, output)
        except (SnapshotFileError, FiguresUnavailableError) as exc:
            failures.append(f"{notebook} [{result.variation_id}]: {exc}")
            continue
        if check.state == "empty":
            continue
        if update:
            changes.append(change_for(notebook, result.variation_id, check, result.recorded))
        elif check.state != "matches":
            report = format_check(check, result.variation_id, update_hint=update_hint)
            failures.append(f"{notebook}: {report}")
    unused = unused_in_scope(folder, Scope(root, used, folders=folders))
    if update and not failures:
        return [], apply_changes(folder, changes, unused)
    return failures, Summary(unused=unused.names(folder))


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
    *,
    recursive: bool = False,
    strict: bool = False,
    figure_tolerance: float | None = None,
) -> None:
    """``execute_run``'s check: raise on differences, warn of unused entries (raise if strict)."""
    import warnings

    from pytest_millrun.snapshots.scope import Folder

    root = notebook_folder(target)
    folders = [Folder(".", recursive)] if target.is_dir() else []
    failures, summary = check_results(
        results, directory, root, update=update, tolerance=tolerance,
        update_hint="snapshot_update=True", folders=folders, figure_tolerance=figure_tolerance,
    )  # fmt: skip
    unused = summary.unused if not update else []
    if unused and not strict:
        warnings.warn(
            MillrunSnapshotWarning(
                f"{len(unused)} unused snapshot entries in {directory}: "
                f"{', '.join(unused[:5])}; snapshot_update=True removes them."
            ),
            stacklevel=3,
        )
    if any(not r.passed for r in results):
        return  # RunFailedError says it, with every result
    if failures or (unused and strict):
        raise SnapshotMismatchError(results, failures, unused if strict else ())


def unused_message(unused: Sequence[str], update_hint: str, limit: int = 20) -> str:
    """The unused entries, one a line, and how to remove them."""
    count = len(unused)
    lines = [f"{count} unused snapshot entr{'ies' if count != 1 else 'y'}:"]
    lines += [f"  {name}" for name in unused[:limit]]
    if count > limit:
        lines.append(f"  ... and {count - limit} more")
    lines.append(f"{update_hint} on a run of their notebooks removes them.")
    return "\n".join(lines)
