"""Jupyter's ``raises-exception`` cell tag, which papermill's final error scan ignores.

nbclient honours the tag while executing: a tagged cell's error stays in its
outputs and the run goes on (nbval, nbmake and jupyter-book read it the same
way).  papermill then scans the finished notebook for any error output and
raises for the first one, tagged or not.  When that scan picked a tagged cell,
:func:`settle` redoes it over the untagged cells only, with papermill's own
scan and markers, and rewrites the output accordingly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from papermill.exceptions import PapermillExecutionError

#: The Jupyter tag saying a cell is expected to raise.
TAG = "raises-exception"


def is_expected(cell: Any) -> bool:
    return TAG in cell.get("metadata", {}).get("tags", [])


def settle(output_path: Path, error: PapermillExecutionError) -> PapermillExecutionError | None:
    """After papermill raised ``error`` and saved ``output_path``: the error that stands.

    ``None`` when every error output is in a cell tagged ``raises-exception``
    (the run passed; papermill's error markers are taken out of the saved
    notebook again), ``error`` itself when papermill picked an untagged cell,
    else papermill's error for the first untagged one, with the markers moved
    there.
    """
    import nbformat
    from papermill.exceptions import PapermillExecutionError
    from papermill.execute import raise_for_execution_errors, remove_error_markers
    from papermill.iorw import write_ipynb

    nb = nbformat.read(str(output_path), as_version=4)  # type: ignore[no-untyped-call]
    nb = remove_error_markers(nb)
    if not is_expected(nb.cells[error.cell_index]):
        return error
    hidden = []  # papermill's scan must not see the tagged cells' errors
    for cell in nb.cells:
        if is_expected(cell) and "outputs" in cell:
            hidden.append((cell, cell.outputs))
            cell.outputs = [o for o in cell.outputs if o.get("output_type") != "error"]
    standing: PapermillExecutionError | None = None
    try:
        raise_for_execution_errors(nb, str(output_path))
    except PapermillExecutionError as exc:
        standing = exc
    for cell, outputs in hidden:
        cell.outputs = outputs
    write_ipynb(nb, str(output_path))
    return standing
