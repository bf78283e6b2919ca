"""Test ids and output file names for (notebook, variation) pairs.

One rule serves the pytest ids, the output file names of all three front ends
and the collision checks, so an id always tells which file holds its output.
Parameter values and notebook names are user data: whatever they contain, the
names built from them are plain file names within the file system's length
limit that stay inside the output directory, and sanitising never makes two
different inputs share a name (what it drops is replaced by a hash).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_millrun.core.params import Variation

#: Characters kept in ids and output names: Unicode letters and digits, ``_ . + -``.
#: All are safe in file names on every common file system and are word characters
#: of pytest's ``-k`` expressions; anything else becomes ``_``.
_UNSAFE = re.compile(r"[^\w.+-]")
#: An id or name matching this gets a leading ``_`` so it never starts with ``-``
#: (``-k -1-2`` and ``rm -1-calc.ipynb`` read it as an option).  Names already
#: starting with ``_``s then ``-`` get one more, which keeps the rule one-to-one.
_NEEDS_LEAD = re.compile(r"_*-")
#: The file-name limit of ext4, XFS, btrfs and APFS in bytes of UTF-8 (NTFS counts
#: 255 UTF-16 units, which such a name never exceeds).
NAME_MAX_BYTES = 255
#: Outputs are written as ``.<stem>.partial.ipynb`` first; that name must fit too.
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".", ".partial"
MAX_FILENAME_BYTES = NAME_MAX_BYTES - len(PARTIAL_PREFIX) - len(PARTIAL_SUFFIX)
#: Budgets of the parts of a name, in bytes: 1 + 64 + 1 + 96 + 1 + 64 + len(".ipynb")
#: leaves 13 bytes under MAX_FILENAME_BYTES for a ``-<n>`` suffix of repeated names.
MAX_COMPONENTS_BYTES = 64
MAX_STEM_BYTES = 96
#: Hex digits of the hash that marks a shortened or lossy part.
_DIGEST_LENGTH = 8


class OutputPathError(ValueError):
    """Raised when an output path would leave the output directory, clobber an input,
    or lie in a folder that cannot be written."""


@dataclass(frozen=True)
class VariationName:
    """The id and output file name of one variation of one notebook."""

    index: int
    id: str
    filename: str


def _digest(text: str) -> str:
    # surrogatepass: a stem decoded from a non-UTF-8 file name carries lone surrogates
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_LENGTH]


def _truncate(text: str, limit: int) -> str:
    """The longest prefix of text within ``limit`` bytes of UTF-8, whole characters only."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def safe_part(text: str, limit: int = MAX_COMPONENTS_BYTES) -> str:
    """Text made safe as part of an id and a file name, within ``limit`` bytes.

    Text of safe characters only is kept as is.  Otherwise unsafe characters
    (and leading dots, so no name is hidden or reads as ``..``) become ``_``,
    the text is cut to fit, and a hash of the original text is appended: two
    different texts never give the same part, whatever sanitising dropped.
    """
    cleaned = _UNSAFE.sub("_", text)
    stripped = cleaned.lstrip(".")
    cleaned = "_" * (len(cleaned) - len(stripped)) + stripped
    if cleaned == text and len(text.encode("utf-8")) <= limit:
        return text
    keep = _truncate(cleaned, limit - _DIGEST_LENGTH - 1)
    return f"{keep}_{_digest(text)}"


def _no_leading_dash(name: str) -> str:
    return "_" + name if _NEEDS_LEAD.match(name) else name


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


def _joined(parts: Sequence[str]) -> str:
    """Safe parts joined with ``-``, the whole shortened (with a hash) if too long."""
    text = "-".join(safe_part(p) for p in parts)
    if len(text.encode("utf-8")) <= MAX_COMPONENTS_BYTES:
        return text
    return safe_part(text, MAX_COMPONENTS_BYTES)


def _fold(name: str) -> str:
    """Names equal after this are one file on case-insensitive file systems (macOS, Windows)."""
    return name.casefold()


def name_variations(
    stem: str,
    variations: Sequence[Variation],
    prepend: Sequence[str] = (),
    append: Sequence[str] = (),
) -> list[VariationName]:
    """Ids and file names for every variation of one notebook, unique and in order.

    With no components the index is the id and is prepended to the file name
    (``0-stem.ipynb``), as the original millrun did.  Ids or file names that
    repeat, ignoring case, get ``-2``, ``-3`` suffixes, so two variations never
    share a file, not even on a case-insensitive file system.  Every name fits
    the file-system limit with room for its hidden partial name.
    """
    safe_stem = safe_part(stem, MAX_STEM_BYTES)
    names: list[VariationName] = []
    seen_ids: set[str] = set()
    seen_files: set[str] = set()
    for index, variation in enumerate(variations):
        if not prepend and not append:
            names.append(VariationName(index, str(index), f"{index}-{safe_stem}.ipynb"))
            continue
        before = _joined(component_values(variation, prepend)) if prepend else None
        after = _joined(component_values(variation, append)) if append else None
        base_id = "-".join(p for p in (before, after) if p is not None) or "_"
        base_file = "-".join(p for p in (before, safe_stem, after) if p is not None)
        suffix, n = "", 1
        while True:
            variation_id = _no_leading_dash(base_id + suffix)
            filename = _no_leading_dash(base_file + suffix) + ".ipynb"
            if _fold(variation_id) not in seen_ids and _fold(filename) not in seen_files:
                break
            n += 1
            suffix = f"-{n}"
        seen_ids.add(_fold(variation_id))
        seen_files.add(_fold(filename))
        names.append(VariationName(index, variation_id, filename))
    return names


def partial_path(output: Path) -> Path:
    """The hidden name an output is written under until its run ends."""
    return output.with_name(f"{PARTIAL_PREFIX}{output.stem}{PARTIAL_SUFFIX}{output.suffix}")


def mirrored_folder(notebook: Path, root: Path) -> Path:
    """The notebook's folder relative to ``root``, mirrored under an output directory.

    Two ``calc.ipynb`` in different folders thus never share an output file.
    The folder is where the notebook's path puts it, symlinks kept: a link is
    placed where it sits, not where it points, so two links to one notebook
    are two notebooks.  A notebook outside ``root`` keeps its absolute folder,
    rooted at ``_external``.
    """
    folder = Path(os.path.abspath(notebook)).parent
    # as given first; resolved second, for a root reached through a symlink (macOS /tmp)
    for path, base in ((folder, Path(os.path.abspath(root))), (folder.resolve(), root.resolve())):
        with contextlib.suppress(ValueError):
            return path.relative_to(base)
    return Path("_external", *folder.parts[1:])


def safe_output_path(output_dir: Path, relative_folder: Path, filename: str) -> Path:
    """Join the parts and prove the result lies inside ``output_dir``.

    The check resolves symlinks, so a link planted in the output directory that
    points elsewhere is refused rather than written through.
    """
    if os.sep in filename or (os.altsep and os.altsep in filename) or filename in {"", ".", ".."}:
        raise OutputPathError(f"Output file name {filename!r} is not a plain file name.")
    if len(filename.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        raise OutputPathError(
            f"Output file name {filename!r} is longer than {MAX_FILENAME_BYTES} bytes, so it "
            f"or its partial name would exceed the file system's limit."
        )
    root = output_dir.resolve()
    candidate = (root / relative_folder / filename).resolve()
    if candidate.parent != root and root not in candidate.parents:
        raise OutputPathError(
            f"Output path {root / relative_folder / filename} resolves to {candidate}, which is "
            f"outside the output directory {root}. Remove the symlink or choose another "
            f"output directory."
        )
    return candidate


def check_output_folder(folder: Path, option: str | None = None) -> None:
    """Refuse, before anything runs, a folder that outputs cannot be written to.

    A missing folder is fine when it can be made: its nearest existing ancestor
    must be a writable folder.  ``option`` names the caller's option for
    another output directory.  Raises :class:`OutputPathError`.
    """
    choose = f"choose another output directory ({option})" if option else "choose another one"
    probe = os.path.abspath(folder)
    while not os.path.isdir(probe):
        # isdir again: another run may have made the folder since (concurrent pool workers)
        if os.path.lexists(probe) and not os.path.isdir(probe):
            raise OutputPathError(
                f"Output folder {folder} cannot be created: {probe} exists and is not a folder. "
                f"Move the file or {choose}."
            )
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is" if probe == os.path.abspath(folder) else f"would be made in {probe}, which is"
        raise OutputPathError(
            f"Output folder {folder} {what} not writable (read-only file system or no "
            f"permission), so no output could be saved. Make it writable or {choose}."
        )
