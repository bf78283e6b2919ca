"""Finding notebooks, and telling inputs apart from outputs of earlier runs.

Every executed notebook carries a ``millrun`` entry in its metadata, so a
later run over the same folder (the API's default writes outputs beside the
inputs) never mistakes its own outputs for work to do.
"""

from __future__ import annotations

import json
import keyword
import os
from collections.abc import Iterable, Sequence
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


def read_notebook(path: Path) -> dict[str, Any]:
    """Any notebook as a dict: an ``.ipynb`` read as JSON, a text notebook through jupytext.

    Raises :class:`NotebookError` with the reason (for a text notebook without
    jupytext installed, the extra to install).
    """
    if path.suffix == ".ipynb":
        return read_notebook_json(path)
    from pytest_millrun.core.text_notebooks import read_text_notebook

    try:
        nb: dict[str, Any] = read_text_notebook(path)
    except (ImportError, ValueError) as exc:
        raise NotebookError(str(exc)) from None
    return nb


def notebook_folder(target: Path) -> Path:
    """The folder a run's relative paths start from: the folder given, or the notebook's."""
    return target if target.is_dir() else target.parent


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
    text_notebooks: Sequence[str] = (),
) -> list[Path]:
    """The input notebooks of a run, sorted so every process sees the same order.

    A file is taken as given; for a directory, ``include_glob_pattern`` (default:
    every ``*.ipynb`` and every text notebook) selects and ``exclude_glob_pattern``
    removes, both matched the way ``Path.glob`` (or ``Path.rglob`` when
    recursive) matches.  A text notebook is a file with a jupytext header or one
    that ``text_notebooks`` globs (relative to ``target``) match, and it is left
    out when the ``.ipynb`` it is paired with is found too (see
    :func:`~pytest_millrun.core.text_notebooks.ipynb_twin`).  Outputs of earlier
    runs are skipped, unreadable notebooks are not: they are returned so that
    they fail loudly when run.
    """
    from pytest_millrun.core.text_notebooks import ipynb_twin, is_text_notebook

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
    texts: list[Path] = []
    for path in glob(include_glob_pattern or "*"):
        if path in excluded or not path.is_file() or is_excluded_path(path, output_dirs):
            continue
        if path.suffix != ".ipynb":
            if is_text_notebook(path, text_notebooks, target):
                texts.append(path)
            continue
        try:
            if is_output_notebook(read_notebook_json(path)):
                continue
        except NotebookError:
            pass
        found.append(path)
    ipynbs = set(found)
    found += [path for path in texts if ipynb_twin(path) not in ipynbs]
    return sorted(found)


def declared_parameters(path: Path, data: dict[str, Any]) -> tuple[bool, list[str] | None]:
    """Whether the notebook has a parameters cell, and the names that cell declares.

    papermill's translator for the notebook's language reads the cell (it knows
    that language's syntax); the names are None when it cannot (papermill's
    translators read Python only, not R, bash, Julia or the others).
    """
    from papermill.exceptions import PapermillException
    from papermill.translators import papermill_translators

    cells = [cell for cell in data.get("cells", ()) if isinstance(cell, dict)]
    tagged = [
        cell for cell in cells if "parameters" in (cell.get("metadata") or {}).get("tags", ())
    ]
    if not tagged:
        return False, None
    kernel, language = notebook_kernel_and_language(data)
    try:
        translator = papermill_translators.find_translator(kernel, language or "python")
        names = translator.inspect(_cell_node(tagged[0]))
    except (NotImplementedError, PapermillException):  # no introspection for the language
        return True, None
    except Exception:  # a parameters cell its translator cannot parse: nothing is checked
        return True, None
    return True, sorted(param.name for param in names)


def _cell_node(cell: dict[str, Any]) -> Any:
    """The cell as nbformat's node (translators read ``cell.source``), joined if a list."""
    import nbformat

    source = cell.get("source", "")
    joined = "".join(source) if isinstance(source, list) else source
    return nbformat.from_dict({**cell, "source": joined})  # type: ignore[no-untyped-call]


def notebook_kernel_and_language(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """The kernel name and language papermill picks a translator by, from the metadata."""
    metadata = data.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    kernelspec = metadata.get("kernelspec") or {}
    language_info = metadata.get("language_info") or {}
    kernel = kernelspec.get("name") if isinstance(kernelspec, dict) else None
    language = (language_info.get("name") if isinstance(language_info, dict) else None) or (
        kernelspec.get("language") if isinstance(kernelspec, dict) else None
    )
    return kernel or None, language or None


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

    kernel, language = notebook_kernel_and_language(data)
    if not kernel and not language:
        return True
    try:
        translator = papermill_translators.find_translator(kernel, language)
    except PapermillException:
        return False
    return isinstance(translator, type) and issubclass(translator, PythonTranslator)


def record_needs_python(path: Path, data: dict[str, Any], flag: str) -> str:
    """Why a notebook of another language cannot record variables, and what it can do.

    Variables are read by code sent into the kernel, which is Python; scraps,
    which any kernel can display, are recorded all the same.
    """
    kernel, language = notebook_kernel_and_language(data)
    return (
        f"{flag} reads variables from Python kernels, but {path} is written in "
        f"{language or kernel}, so its variables cannot be read. Leave {flag} out for this "
        f"notebook, or record its values as scraps: any kernel's output of the mimetype "
        f"application/scrapbook.scrap.json+json (e.g. IRdisplay's publish_mimebundle in R) "
        f"is recorded."
    )


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
    if declared is None:
        kernel, language = notebook_kernel_and_language(data)
        message = (
            f"Notebook {path} is written in {language or kernel}: papermill cannot read the names "
            f"its parameters cell declares, so the params' keys ({', '.join(keys)}) are not "
            f"checked against it; papermill injects them after that cell all the same."
        )
        return message + (f" {strict_flag} cannot check them either." if strict else "")
    unknown = [key for key in keys if key not in declared]
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
