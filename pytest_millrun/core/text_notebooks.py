"""Text notebooks (jupytext): which files are notebooks, and reading one as a notebook.

Why a module of its own: a ``.py`` or ``.md`` file is a notebook only by what
it says of itself (a jupytext header) or by the user's word (a
``--millrun-text-notebooks`` glob), and every front end must agree on it so a
folder gives the same run through the plugin, the CLI and the API.  jupytext
does the reading and the header parsing; it is an optional extra, imported only
for a file that mentions it, so collecting a tree of plain ``.py`` test files
costs a read of their first bytes and nothing more.  Without jupytext a file
that clearly is a jupytext notebook still becomes a notebook, whose reading
fails with one message naming the extra: never a silent skip, never an import
of it as a test module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pytest_millrun.core.globs import glob_match

#: The extensions jupytext reads as notebooks, ``.ipynb`` aside (jupytext's
#: ``formats.NOTEBOOK_EXTENSIONS``; a unit test keeps the two equal).  Known
#: without importing jupytext, so a file of any other kind is never opened.
TEXT_SUFFIXES = frozenset(
    [
        ".R",
        ".Rmd",
        ".clj",
        ".coco",
        ".cpp",
        ".cs",
        ".do",
        ".fs",
        ".fsx",
        ".go",
        ".gp",
        ".groovy",
        ".hs",
        ".java",
        ".jenner",
        ".jl",
        ".js",
        ".lgt",
        ".logtalk",
        ".lua",
        ".m",
        ".mac",
        ".markdown",
        ".md",
        ".ml",
        ".mnb",
        ".myst",
        ".mystnb",
        ".pro",
        ".ps1",
        ".py",
        ".q",
        ".qmd",
        ".r",
        ".resource",
        ".robot",
        ".rs",
        ".sage",
        ".sas",
        ".scala",
        ".scm",
        ".sh",
        ".sos",
        ".ss",
        ".tcl",
        ".ts",
        ".wolfram",
        ".xsh",
    ]
)
#: Files pytest itself imports: never notebooks, whatever they say.
NEVER_NOTEBOOKS = frozenset({"conftest.py", "__init__.py", "setup.py", "noxfile.py"})
#: How much of a file is read to decide whether it carries a header (headers come first).
_HEAD_BYTES = 4096
EXTRA = "pytest-millrun[jupytext]"


def parse_globs(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"a/*.py, *.md"`` or a sequence of globs: the globs, stripped, empty ones dropped."""
    if not value:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(part.strip() for part in parts if part.strip())


def is_text_notebook(path: Path, globs: Iterable[str] = (), base: Path | None = None) -> bool:
    """Whether ``path`` is a jupytext text notebook: a header of its own, or a glob's match.

    ``globs`` are matched against the path relative to ``base`` (the rootdir,
    or the folder given to the CLI/API), ``/``-separated, as suites' globs are.
    """
    if path.suffix not in TEXT_SUFFIXES or path.name in NEVER_NOTEBOOKS:
        return False
    globs = tuple(globs)
    if globs and base is not None:
        try:
            relative = path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            relative = None
        if relative is not None and any(glob_match(glob, relative) for glob in globs):
            return True
    return has_jupytext_header(path)


def has_jupytext_header(path: Path) -> bool:
    """A header jupytext wrote: jupytext itself decides when installed, else a plain look.

    The file's first bytes are read first; only one that mentions ``jupytext``
    is read whole and parsed.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False
    if "jupytext" not in head:
        return False
    try:
        from jupytext.formats import read_metadata
    except ImportError:
        return looks_like_jupytext_header(head)
    try:
        text = path.read_text(encoding="utf-8")
        metadata = read_metadata(text, path.suffix)
    except Exception:  # unreadable, or a header jupytext cannot parse: reading it says why
        return looks_like_jupytext_header(head)
    return isinstance(metadata, dict) and "jupytext" in metadata


def looks_like_jupytext_header(text: str) -> bool:
    """Without jupytext: the file opens with a ``---`` block that has a ``jupytext:`` key.

    Only used to tell a user that a file they keep as a notebook needs the
    extra: commented (``# ---`` in a script) or plain (``---`` in Markdown),
    after an optional shebang and coding line, as jupytext writes it.
    """
    lines = text.splitlines()
    start = 0
    while (
        start < len(lines)
        and start < 2
        and (lines[start].startswith("#!") or "coding" in lines[start])
    ):
        start += 1
    if start >= len(lines) or not lines[start].rstrip().endswith("---"):
        return False
    prefix = lines[start].rstrip()[:-3].rstrip()
    for line in lines[start + 1 : start + 200]:
        if not line.startswith(prefix):
            return False
        body = line[len(prefix) :].strip()
        if body == "---":
            return False
        if body.startswith("jupytext:"):
            return True
    return False


class JupytextMissing(ImportError):
    """A text notebook met without jupytext installed."""


def missing_jupytext_message(path: Path) -> str:
    return (
        f"{path} is a jupytext text notebook, but jupytext is not installed, so it cannot be "
        f"read as a notebook. Install the extra (pip install '{EXTRA}'), or leave the file "
        f"out of the run."
    )


def read_text_notebook(path: Path) -> Any:
    """The notebook node jupytext reads from ``path`` (nbformat 4).

    Raises :class:`JupytextMissing` without jupytext, and ``ValueError`` with
    jupytext's reason for a file it cannot read.
    """
    try:
        import jupytext
    except ImportError:
        raise JupytextMissing(missing_jupytext_message(path)) from None
    try:
        nb = jupytext.read(str(path), as_version=4)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"Text notebook {path} cannot be read: {exc}.") from None
    except Exception as exc:
        raise ValueError(
            f"Text notebook {path} cannot be read by jupytext ({type(exc).__name__}: {exc}). "
            f"Fix its header or cell markers (jupytext --to ipynb {path.name} shows the same "
            f"error), or leave it out of the run."
        ) from None
    _kernel_from_language(nb)
    return nb


def _kernel_from_language(nb: Any) -> None:
    """A file without a header (``.sh``, ``.R``): the installed kernel of its language.

    jupytext's own choice (``jupytext --set-kernel -``); a Python file keeps no
    kernelspec, so it runs on the default kernel, said as for an ``.ipynb``
    naming none.  With no kernel for the language, the language stays in the
    metadata and the run fails saying which kernel to install.
    """
    from jupytext.kernels import set_kernelspec_from_language

    language = nb.metadata.get("jupytext", {}).get("main_language")
    if "kernelspec" in nb.metadata or not language or language == "python":
        return
    set_kernelspec_from_language(nb)
    if "kernelspec" not in nb.metadata:
        nb.metadata["language_info"] = {"name": language}


def ipynb_twin(path: Path) -> Path | None:
    """The ``.ipynb`` beside a text notebook with its stem (jupytext's pairing), if any.

    Why the ``.ipynb`` runs and its text twin does not: it runs without the
    extra, keeps the item ids and outputs a pair had before its text file was
    added, and jupytext's pairing keeps the two the same notebook.
    """
    twin = path.with_suffix(".ipynb")
    return twin if path.suffix != ".ipynb" and twin.is_file() else None
