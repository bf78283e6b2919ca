"""Finding notebooks, and telling inputs apart from outputs of earlier runs.

Every executed notebook carries a ``millrun`` entry in its metadata, so a
later run over the same folder (the API's default writes outputs beside the
inputs) never mistakes its own outputs for work to do.
"""

from __future__ import annotations

import json
import keyword
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Key of the notebook-level metadata entry that marks an executed output.
OUTPUT_MARKER = "millrun"
CHECKPOINTS = ".ipynb_checkpoints"


class NotebookError(ValueError):
    """Raised for a notebook that cannot be read as a notebook."""


def read_notebook_json(path: Path) -> dict[str, Any]:
    """Read a notebook as plain JSON, cheaply, with a clear error for a broken file."""
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"Notebook {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}). Open it in Jupyter and save it again, or remove it from the run."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotebookError(f"Notebook {path} cannot be read: {exc}.") from None
    if not isinstance(data, dict) or "cells" not in data:
        raise NotebookError(
            f"Notebook {path} is JSON but not a notebook (no 'cells' list). Save it from "
            f"Jupyter, or remove it from the run."
        )
    return data


def absolute(path: str | Path) -> Path:
    """A notebook's path as the user gave it, made absolute, symlinks kept.

    A symlinked notebook is run and placed where the link sits (its folder is
    the working directory, its name names the output), as Jupyter and pytest
    see it; only overwrite checks look through the link.
    """
    return Path(os.path.abspath(path))


def is_output_notebook(data: dict[str, Any]) -> bool:
    metadata = data.get("metadata")
    return isinstance(metadata, dict) and OUTPUT_MARKER in metadata


def is_excluded_path(path: Path, output_dirs: Iterable[Path] = ()) -> bool:
    """Checkpoints, hidden partial files and anything inside an output directory."""
    if CHECKPOINTS in path.parts or path.name.startswith("."):
        return True
    resolved = path.resolve()
    return any(d == resolved or d in resolved.parents for d in (o.resolve() for o in output_dirs))


def discover_notebooks(
    target: str | Path,
    *,
    recursive: bool = False,
    include_glob_pattern: str | None = None,
    exclude_glob_pattern: str | None = None,
    output_dirs: Iterable[Path] = (),
) -> list[Path]:
    """The input notebooks of a run, sorted so every process sees the same order.

    A file is taken as given; for a directory, ``include_glob_pattern`` (default
    ``*.ipynb``) selects and ``exclude_glob_pattern`` removes, both matched the
    way ``Path.glob`` (or ``Path.rglob`` when recursive) matches.  Outputs of
    earlier runs are skipped, unreadable notebooks are not: they are returned
    so that they fail loudly when run.
    """
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(
            f"Notebook path {target} does not exist. Give an existing notebook file or a "
            f"folder of notebooks."
        )
    output_dirs = list(output_dirs)
    if target.is_file():
        return [target]
    glob = target.rglob if recursive else target.glob
    excluded = set(glob(exclude_glob_pattern)) if exclude_glob_pattern else set()
    found: list[Path] = []
    for path in glob(include_glob_pattern or "*.ipynb"):
        if path in excluded or path.suffix != ".ipynb" or not path.is_file():
            continue
        if is_excluded_path(path, output_dirs):
            continue
        try:
            if is_output_notebook(read_notebook_json(path)):
                continue
        except NotebookError:
            pass
        found.append(path)
    return sorted(found)


def declared_parameters(path: Path, data: dict[str, Any]) -> tuple[bool, list[str] | None]:
    """Whether the notebook has a parameters cell, and the names that cell declares.

    papermill reads the cell for us (it knows each kernel language's syntax);
    the names are None when papermill cannot parse that language.
    """
    import papermill

    tagged = any(
        "parameters" in (cell.get("metadata") or {}).get("tags", ())
        for cell in data.get("cells", ())
        if isinstance(cell, dict)
    )
    if not tagged:
        return False, None
    try:
        return True, sorted(papermill.inspect_notebook(str(path)))
    except Exception:
        return True, None


class MillrunParameterWarning(UserWarning):
    """A variation sets parameters its notebook does not declare, or it declares none."""


class UndeclaredParameterError(ValueError):
    """Strict mode: a variation key that the notebook's parameters cell does not declare."""


class ParameterNameError(ValueError):
    """A variation key that cannot be a variable name in the notebook's language."""


def takes_python_parameters(data: dict[str, Any]) -> bool:
    """Whether papermill writes this notebook's parameters as Python code.

    papermill picks its translator by the kernel name, then by the language in
    the notebook's metadata; a notebook naming neither runs on the default
    Python kernel.  Other languages have their own rules for names, which
    their kernels report.
    """
    from papermill.exceptions import PapermillException
    from papermill.translators import PythonTranslator, papermill_translators

    metadata = data.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    kernelspec = metadata.get("kernelspec") or {}
    language_info = metadata.get("language_info") or {}
    kernel = kernelspec.get("name") if isinstance(kernelspec, dict) else None
    language = (language_info.get("name") if isinstance(language_info, dict) else None) or (
        kernelspec.get("language") if isinstance(kernelspec, dict) else None
    )
    if not kernel and not language:
        return True
    try:
        translator = papermill_translators.find_translator(kernel, language)
    except PapermillException:
        return False
    return isinstance(translator, type) and issubclass(translator, PythonTranslator)


def check_parameter_names(path: Path, data: dict[str, Any], keys: Iterable[str]) -> None:
    """Refuse keys that papermill's injected cell could not assign in a Python notebook.

    ``class = 1`` or ``my-value = 1`` would be a SyntaxError in every variation;
    one message before anything runs says which key to rename.
    """
    bad = [key for key in sorted(set(keys)) if not key.isidentifier() or keyword.iskeyword(key)]
    if not bad or not takes_python_parameters(data):
        return
    reasons = [
        f"{key!r} is a Python keyword"
        if keyword.iskeyword(key)
        else f"{key!r} is not a Python identifier (letters, digits and underscores, not "
        f"starting with a digit)"
        for key in bad
    ]
    raise ParameterNameError(
        f"Notebook {path} is a Python notebook, but in the params {' and '.join(reasons)}, "
        f"so papermill's injected cell ({bad[0]} = ...) would be a SyntaxError in every "
        f"variation. Rename the key (e.g. {bad[0]!r} to {_suggest(bad[0])!r}) in the params "
        f"and in the notebook's parameters cell."
    )


def _suggest(key: str) -> str:
    """A valid name close to ``key``: ``class_`` for ``class``, ``my_value`` for ``my-value``."""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in key) + (
        "_" if keyword.iskeyword(key) else ""
    )
    return cleaned if cleaned.isidentifier() else "p_" + cleaned


def check_parameters(
    path: Path, data: dict[str, Any], keys: Iterable[str], *, strict: bool, strict_flag: str
) -> str | None:
    """Compare the variations' keys with the notebook's parameters cell.

    Returns a warning to show once for the notebook (or None when all is well);
    raises :class:`UndeclaredParameterError` for undeclared keys in strict mode,
    and :class:`ParameterNameError` for keys a Python notebook cannot take.
    ``strict_flag`` names the switch in the caller's own terms.
    """
    keys = sorted(set(keys))
    if not keys:
        return None
    check_parameter_names(path, data, keys)
    has_cell, declared = declared_parameters(path, data)
    if not has_cell:
        return (
            f"Notebook {path} has no cell tagged 'parameters', so papermill injects "
            f"{', '.join(keys)} at the top where later cells may overwrite them. Tag the "
            f"cell that sets the defaults with 'parameters'."
        )
    unknown = [key for key in keys if declared is not None and key not in declared]
    if not unknown:
        return None
    message = (
        f"Notebook {path} does not declare {', '.join(map(repr, unknown))} in its parameters "
        f"cell (it declares {', '.join(declared or []) or 'nothing'}). Fix the key in the "
        f"params, or add the parameter to the notebook's parameters cell"
    )
    if strict:
        raise UndeclaredParameterError(message + ".")
    return message + f"; {strict_flag} makes this an error."
