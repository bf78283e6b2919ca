"""Test ids and output file names for (notebook, variation) pairs.

One rule serves the pytest ids, the output file names of all three front ends
and the collision checks, so an id always tells which file holds its output.
Parameter values are user data: whatever they contain, the names built from
them are plain file names that stay inside the output directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .params import Variation

#: Characters allowed in ids and output names; anything else becomes ``_``.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")
#: Long enough for every realistic id, short enough that the file name stays
#: far below the 255-byte limit of common file systems once the stem is added.
MAX_ID_LENGTH = 80
MAX_STEM_LENGTH = 120


class OutputPathError(ValueError):
    """Raised when an output path would leave the output directory or clobber an input."""


@dataclass(frozen=True)
class VariationName:
    """The id and output file name of one variation of one notebook."""

    index: int
    id: str
    filename: str


def sanitize(text: str) -> str:
    """Make text safe as an id part and as a file name part.

    Leading dots are replaced too, so no name is hidden or reads as ``..``.
    """
    cleaned = _UNSAFE.sub("_", text)
    stripped = cleaned.lstrip(".")
    return "_" * (len(cleaned) - len(stripped)) + stripped


def value_text(value: Any) -> str:
    """The text a parameter value contributes to a name (``45`` for 45, JSON for containers)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        except (RecursionError, ValueError, TypeError):  # too deep, circular or unsortable
            return type(value).__name__
    return str(value)


def component_values(variation: Variation, components: Sequence[str]) -> list[str]:
    """Resolve components: a key of the variation gives its value, anything else is literal."""
    return [value_text(variation[c]) if c in variation else c for c in components]


def _cap(text: str, limit: int) -> str:
    """Shorten text to ``limit`` characters, keeping it unique with a hash of the whole."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
    return f"{text[: limit - len(digest) - 1]}_{digest}"


def name_variations(
    stem: str,
    variations: Sequence[Variation],
    prepend: Sequence[str] = (),
    append: Sequence[str] = (),
) -> list[VariationName]:
    """Ids and file names for every variation of one notebook, unique and in order.

    With no components the index is the id and is prepended to the file name
    (``0-stem.ipynb``), as the original millrun did.  Repeated ids get ``-2``,
    ``-3`` suffixes, and the file names follow, so two variations never share a
    file.
    """
    safe_stem = _cap(sanitize(stem), MAX_STEM_LENGTH)
    names: list[VariationName] = []
    seen: set[str] = set()
    for index, variation in enumerate(variations):
        if not prepend and not append:
            names.append(VariationName(index, str(index), f"{index}-{safe_stem}.ipynb"))
            seen.add(str(index))
            continue
        before = [sanitize(v) for v in component_values(variation, prepend)]
        after = [sanitize(v) for v in component_values(variation, append)]
        base_id = _cap("-".join(before + after) or "_", MAX_ID_LENGTH)
        variation_id, suffix, n = base_id, "", 1
        while variation_id in seen:
            n += 1
            suffix = f"-{n}"
            variation_id = base_id + suffix
        seen.add(variation_id)
        stem_parts = [_cap("-".join(before), MAX_ID_LENGTH)] if before else []
        stem_parts.append(safe_stem)
        if after:
            stem_parts.append(_cap("-".join(after), MAX_ID_LENGTH))
        filename = "-".join(stem_parts) + suffix + ".ipynb"
        names.append(VariationName(index, variation_id, filename))
    return names


def mirrored_folder(notebook: Path, root: Path) -> Path:
    """The notebook's folder relative to ``root``, mirrored under an output directory.

    Two ``calc.ipynb`` in different folders thus never share an output file.
    A notebook outside ``root`` keeps its absolute folder, rooted at ``_external``.
    """
    folder = notebook.resolve().parent
    try:
        return folder.relative_to(root.resolve())
    except ValueError:
        return Path("_external", *folder.parts[1:])


def safe_output_path(output_dir: Path, relative_folder: Path, filename: str) -> Path:
    """Join the parts and prove the result lies inside ``output_dir``.

    The check resolves symlinks, so a link planted in the output directory that
    points elsewhere is refused rather than written through.
    """
    if os.sep in filename or (os.altsep and os.altsep in filename) or filename in {"", ".", ".."}:
        raise OutputPathError(f"Output file name {filename!r} is not a plain file name.")
    root = output_dir.resolve()
    candidate = (root / relative_folder / filename).resolve()
    if candidate.parent != root and root not in candidate.parents:
        raise OutputPathError(
            f"Output path {root / relative_folder / filename} resolves to {candidate}, which is "
            f"outside the output directory {root}. Remove the symlink or choose another "
            f"output directory."
        )
    return candidate
