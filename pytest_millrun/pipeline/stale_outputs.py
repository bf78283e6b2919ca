"""Outputs of earlier runs that this run does not write again: counted, and removed on request.

A params file that shrinks, or components that change, leave an earlier run's
extra outputs (``2-calc.ipynb``) beside the new ones, where they read as
results of this run.  Each front end hands over what it plans, (notebook,
output) pairs, and reports what is found here; files are removed only when the
user asked (``--millrun-clean-output``, ``--clean``, ``clean_output=True``),
and only files this tool wrote for the same notebooks, in the folders the run
writes to.  Outputs on object storage (:func:`handle_stale_urls`) are told the same
way, by the marker inside each candidate, and go with their cache sidecars.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_millrun.cache.sidecars import sidecar_url
from pytest_millrun.core.discovery import OUTPUT_MARKER, NotebookError, read_notebook_json
from pytest_millrun.core.storage import (
    StorageOptions,
    folder_versions,
    output_url,
    read_bytes,
    remove,
)


@dataclass(frozen=True)
class StaleOutputs:
    """What was found, and what was removed when asked to."""

    #: Paths, or URLs for outputs on object storage.
    found: list[Path | str] = field(default_factory=list)
    removed: list[Path | str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def describe(self, clean_option: str) -> str | None:
        """One sentence for a summary, naming the front end's own option; None if all is well."""
        if self.removed or self.errors:
            parts = []
            if self.removed:
                parts.append(
                    f"Removed {_stale(len(self.removed))} of these notebooks, written by earlier "
                    f"runs and not by this one (e.g. {_shown(self.removed[0])})."
                )
            parts.extend(self.errors)
            return " ".join(parts)
        if not self.found:
            return None
        return (
            f"{_stale(len(self.found))} of these notebooks, written by earlier runs and not by "
            f"this one, {'is' if len(self.found) == 1 else 'are'} beside this run's outputs "
            f"(e.g. {_shown(self.found[0])}); {clean_option} removes them."
        )


def _shown(where: Path | str) -> str:
    from pytest_millrun.core.storage import redacted

    return redacted(where) if isinstance(where, str) else str(where)


def _stale(count: int) -> str:
    return f"{count} stale output{'s' if count != 1 else ''}"


def find_stale_outputs(planned: Iterable[tuple[Path, Path]]) -> list[Path]:
    """Outputs of the planned notebooks, in the planned outputs' folders, not among them.

    A file counts only when it carries the output marker and the marker names
    one of the planned notebooks: input notebooks, the user's own files and the
    outputs of other notebooks never do.  Hidden files (another run's output in
    progress) and symlinks are left alone.  Sorted, so every report is the same.
    """
    notebooks: set[Path] = set()
    folders: dict[Path, set[Path]] = {}
    for notebook, output in planned:
        notebooks |= _both_forms(notebook)
        folders.setdefault(output.parent, set()).update(_both_forms(output))
    stale: list[Path] = []
    for folder, outputs in sorted(folders.items()):
        with contextlib.suppress(OSError):
            for path in sorted(folder.glob("*.ipynb")):
                if path.name.startswith(".") or path.is_symlink() or not path.is_file():
                    continue
                if path in outputs or _both_forms(path) & notebooks:
                    continue
                if _marked_input(path) & notebooks:
                    stale.append(path)
    return stale


def remove_stale_outputs(paths: Iterable[Path]) -> tuple[list[Path | str], list[str]]:
    """Remove each path that still carries the output marker; what was removed, and why not."""
    removed: list[Path | str] = []
    errors: list[str] = []
    for path in paths:
        if not _marked_input(path):
            continue  # changed since it was found: not ours to remove any more
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            errors.append(f"Could not remove the stale output {path}: {exc.strerror or exc}.")
            continue
        removed.append(path)
    return removed, errors


def handle_stale_outputs(planned: Iterable[tuple[Path, Path]], *, clean: bool) -> StaleOutputs:
    """Find the stale outputs of a run and, when ``clean``, remove them before it starts."""
    found: list[Path | str] = list(find_stale_outputs(planned))
    if not clean:
        return StaleOutputs(found)
    removed, errors = remove_stale_outputs(p for p in found if isinstance(p, Path))
    return StaleOutputs(found, removed, errors)


def handle_stale_urls(
    planned: Iterable[tuple[Path, str]], *, clean: bool, storage_options: StorageOptions
) -> StaleOutputs:
    """:func:`handle_stale_outputs` for outputs on object storage: (notebook, output URL) pairs.

    Each folder is listed once; only a candidate (a notebook there that this run does
    not write) is read, whole, for its marker.  A removed output's cache sidecar goes too.
    """
    notebooks: set[Path] = set()
    folders: dict[str, set[str]] = {}
    for notebook, url in planned:
        notebooks |= _both_forms(notebook)
        folders.setdefault(url.rpartition("/")[0], set()).add(url)
    stale: list[str] = []
    try:
        for folder, outputs in sorted(folders.items()):
            for name in sorted(folder_versions(folder, storage_options)):
                url = output_url(folder, name)
                if not name.endswith(".ipynb") or name.startswith(".") or url in outputs:
                    continue
                if _marked_url(url, storage_options) & notebooks:
                    stale.append(url)
    except OSError as exc:
        return StaleOutputs([*stale], [], [f"Could not look for stale outputs: {exc}."])
    if not clean:
        return StaleOutputs([*stale])
    removed: list[Path | str] = []
    errors: list[str] = []
    for url in stale:
        try:
            if not _marked_url(url, storage_options):
                continue  # changed since it was found: not ours to remove any more
            if remove(url, storage_options):
                removed.append(url)
            remove(sidecar_url(url), storage_options)
        except OSError as exc:
            errors.append(f"Could not remove the stale output: {exc}.")
    return StaleOutputs([*stale], removed, errors)


def _marked_url(url: str, storage_options: StorageOptions) -> set[Path]:
    """:func:`_marked_input` of an output on object storage (read whole)."""
    data = read_bytes(url, storage_options)
    try:
        nb = json.loads(data) if data is not None else None
    except ValueError:
        return set()
    return _marker_input(nb.get("metadata") if isinstance(nb, dict) else None)


def _marked_input(path: Path) -> set[Path]:
    """The notebook an output's marker names (as written and resolved); empty for other files."""
    try:
        metadata = read_notebook_json(path).get("metadata")
    except NotebookError:
        return set()
    return _marker_input(metadata)


def _marker_input(metadata: Any) -> set[Path]:
    marker = metadata.get(OUTPUT_MARKER) if isinstance(metadata, dict) else None
    source = marker.get("input") if isinstance(marker, dict) else None
    return _both_forms(Path(source)) if isinstance(source, str) and source else set()


def _both_forms(path: Path) -> set[Path]:
    """A path as given (absolute) and with symlinks resolved: a link and its target both match."""
    forms = {path.absolute()}
    with contextlib.suppress(OSError, RuntimeError):
        forms.add(path.resolve())
    return forms
