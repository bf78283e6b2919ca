"""Figure snapshots: a notebook's images, named stably and compared as pytest-mpl does.

Each ``image/png`` (or else ``image/svg+xml``) output of an executed notebook
is one figure, named (in
this order) by its scrapbook glue name, by its cell's tag ``figure=NAME``
(``NAME-2``, ``NAME-3`` for more images of that cell), or by position:
``cell<N>-<K>``, the K-th image of the N-th cell of the input notebook (the
cell papermill injects is not counted, so the names do not move with it).

Comparison of PNGs follows pytest-mpl's and matplotlib's ``compare_images``:
identical bytes pass at once (nothing is decoded); otherwise both images
must have the same size, and then the RMS of the pixel differences (on
0-255, through :func:`matplotlib.testing.compare.calculate_rms`) must be at
most the tolerance (default 2, as pytest-mpl's).  A failing figure gets its
expected, got and diff images (matplotlib's ``save_diff_image``) written
beside the output notebook.  SVGs are compared as text once the ids and
the metadata (the date of drawing among them) are removed: equal or not, no
tolerance.

Baselines live beside the values: ``DIR/<notebook>.figures/<variation id>/<name>.png``
(or ``.svg``).
matplotlib (and Pillow) are needed only when two images differ in bytes.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_millrun.core.naming import safe_part

PNG = "image/png"
SVG = "image/svg+xml"
#: A cell tag naming its figure: ``figure=loss-curve``.
TAG_PREFIX = "figure="
DEFAULT_FIGURE_TOLERANCE = 2.0
#: Suffixes of the images a failing figure leaves beside the output notebook.
FAILURE_SUFFIXES = (".expected.png", ".got.png", ".diff.png", ".expected.svg", ".got.svg")
#: Bytes of a name part: well within a file name's limit with the suffixes above.
NAME_BYTES = 120

FigureState = Literal["matches", "differs", "missing", "gone"]


class FiguresUnavailableError(RuntimeError):
    """Figures differ in bytes and matplotlib is not installed to compare them."""


@dataclass(frozen=True)
class Figure:
    name: str
    data: bytes
    #: ``png`` or ``svg``, its baseline's suffix
    kind: str = "png"

    @property
    def file(self) -> str:
        return f"{self.name}.{self.kind}"


@dataclass(frozen=True)
class FigureResult:
    """One figure against its baseline.

    ``missing``: produced, no baseline; ``gone``: a baseline, not produced.
    """

    name: str
    state: FigureState
    rms: float | None = None
    tolerance: float | None = None
    note: str = ""
    #: the expected, got and diff images written for it (those that could be)
    images: tuple[Path, ...] = ()
    #: the figure as produced (for an update), None when ``gone``
    got: bytes | None = None
    kind: str = "png"

    @property
    def failed(self) -> bool:
        return self.state != "matches"

    def describe(self) -> str:
        if self.state == "missing":
            text = f"{self.name}: not in the snapshot"
        elif self.state == "gone":
            text = f"{self.name}: not produced (the snapshot has it)"
        elif self.rms is None:
            text = f"{self.name}: {self.note}"
        else:
            text = f"{self.name}: RMS {self.rms:.3g} > tolerance {self.tolerance:g}"
        if self.images:
            kinds = [p.name[len(self.name) + 1 :].rsplit(".", 1)[0] for p in self.images]
            which = kinds[0] if len(kinds) == 1 else "{" + ",".join(kinds) + "}"
            text += f"; see {self.images[0].parent / f'{self.name}.{which}.{self.kind}'}"
        return text


# ------------------------------------------------------------------- naming


def _tag_name(cell: Mapping[str, Any]) -> str | None:
    for tag in cell.get("metadata", {}).get("tags", ()):
        if isinstance(tag, str) and tag.startswith(TAG_PREFIX) and tag[len(TAG_PREFIX) :]:
            return tag[len(TAG_PREFIX) :]
    return None


def _glue_name(output: Mapping[str, Any]) -> str | None:
    name = output.get("metadata", {}).get("scrapbook", {}).get("name")
    return name if isinstance(name, str) and name else None


def _text(output: Mapping[str, Any], mimetype: str) -> str | None:
    data = output.get("data", {}).get(mimetype)
    if isinstance(data, list):
        data = "".join(data)
    return data if isinstance(data, str) else None


def _image(output: Mapping[str, Any]) -> tuple[str, bytes] | None:
    """An output's image: its PNG, else its SVG (a notebook may carry both for one figure)."""
    png = _text(output, PNG)
    if png is not None:
        try:
            return "png", base64.b64decode(png)
        except ValueError:
            return None
    svg = _text(output, SVG)
    return None if svg is None else ("svg", svg.encode("utf-8"))


def figures_of(notebook: Mapping[str, Any]) -> list[Figure]:
    """The notebook's image outputs as figures with stable, unique, file-safe names."""
    figures: list[Figure] = []
    taken: set[str] = set()
    number = 0
    for cell in notebook.get("cells", ()):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", ()):
            continue
        number += 1
        tag = _tag_name(cell)
        tag = None if tag is None else safe_part(tag, NAME_BYTES)
        position = 0
        for output in cell.get("outputs", ()) if cell.get("cell_type") == "code" else ():
            image = _image(output)
            if image is None:
                continue
            position += 1
            name = _glue_name(output)
            if name is None and tag is not None:
                name = tag if position == 1 else f"{tag}-{position}"
            if name is None:
                name = f"cell{number}-{position}"
            name = safe_part(name, NAME_BYTES)
            unique, repeat = name, 1
            while unique.casefold() in taken:
                repeat += 1
                unique = f"{name}-{repeat}"
            taken.add(unique.casefold())
            figures.append(Figure(unique, image[1], image[0]))
    return figures


def read_figures(output: Path) -> list[Figure]:
    """The figures of an executed notebook file (none when it cannot be read)."""
    try:
        return figures_of(json.loads(output.read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        return []


def baseline_folder(directory: Path, notebook: str, variation_id: str) -> Path:
    """Where a variation's baselines live: beside its notebook's snapshot file."""
    return directory / f"{notebook.rsplit('.', 1)[0]}.figures" / safe_part(variation_id, 200)


def failure_folder(output: Path) -> Path:
    """Where a variation's failing figures leave their images: beside its output notebook."""
    return output.with_name(f"{output.stem}.figures")


# --------------------------------------------------------------- comparison


def _pixels(png: bytes) -> Any:
    """The image as matplotlib's ``compare_images`` reads it (opaque RGBA as RGB), in int16."""
    import numpy as np
    from PIL import Image

    image: Image.Image = Image.open(io.BytesIO(png))
    if image.mode != "RGB":
        if image.mode != "RGBA":
            image = image.convert("RGBA")
        extrema: Any = image.getextrema()
        alpha = extrema[3]
        if alpha[0] == 255:
            image = image.convert("RGB")
    return np.asarray(image).astype(np.int16)


def compare_png(expected: bytes, got: bytes, tolerance: float) -> tuple[bool, float | None, str]:
    """(passes, RMS or None, why not comparable): bytes, then size, then RMS."""
    if expected == got:
        return True, 0.0, ""
    try:
        from matplotlib.testing.compare import calculate_rms
    except ImportError:
        raise FiguresUnavailableError(
            "Figure snapshots need matplotlib to compare images that differ: "
            'pip install "pytest-millrun[figures]".'
        ) from None
    try:
        left, right = _pixels(expected), _pixels(got)
    except OSError as exc:  # not a PNG Pillow reads
        return False, None, f"cannot be read as an image ({exc})"
    if left.shape[:2] != right.shape[:2]:
        size = "{1}x{0}".format
        return False, None, f"size {size(*left.shape[:2])} -> {size(*right.shape[:2])}"
    if left.shape != right.shape:  # RGB against RGBA with transparency
        return False, None, f"colour channels {left.shape[2]} -> {right.shape[2]}"
    rms = float(calculate_rms(left, right))
    return (math.isfinite(rms) and rms <= tolerance), rms, ""


_SVG_NOISE = (
    (re.compile(r"<metadata>.*?</metadata>", re.S), ""),
    (re.compile(r"<dc:date>.*?</dc:date>", re.S), ""),
    (re.compile(r'\bid="[^"]*"'), 'id=""'),
    (re.compile(r'href="#[^"]*"'), 'href="#"'),
    (re.compile(r"url\(#[^)]*\)"), "url(#)"),
)


def normalise_svg(svg: bytes) -> str:
    """SVG text without what differs between two drawings of one figure: ids, metadata, dates."""
    text = svg.decode("utf-8", "replace")
    for pattern, replacement in _SVG_NOISE:
        text = pattern.sub(replacement, text)
    return text


def compare_figure(
    expected: bytes, got: bytes, kind: str, tolerance: float
) -> tuple[bool, float | None, str]:
    """(passes, RMS or None, why not): PNGs by :func:`compare_png`, SVGs as normalised text."""
    if kind != "svg":
        return compare_png(expected, got, tolerance)
    if expected == got or normalise_svg(expected) == normalise_svg(got):
        return True, None, ""
    return False, None, "SVG text differs (ids and metadata aside)"


def clear_failure_images(folder: Path) -> None:
    """Remove what an earlier run's failing figures left (only those images)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name.endswith(FAILURE_SUFFIXES) and path.is_file():
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else is in it
        folder.rmdir()


def write_failure_images(
    folder: Path, name: str, expected: bytes | None, got: bytes | None, kind: str = "png"
) -> tuple[Path, ...]:
    """The expected, got and (PNGs of one size only) diff images of a failing figure."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    paths = [folder / f"{name}.{which}.{kind}" for which in ("expected", "got", "diff")]
    for path, data in zip(paths, (expected, got), strict=False):
        if data is not None:
            path.write_bytes(data)
            written.append(path)
    if expected is not None and got is not None and kind == "png":
        try:
            from matplotlib.testing.compare import save_diff_image

            save_diff_image(str(paths[0]), str(paths[1]), str(paths[2]))
            written.append(paths[2])
        except Exception:  # sizes differ, or an unreadable image: no diff to show
            pass
    return tuple(written)


def check_figures(
    names: Sequence[str] | None,
    baselines: Path,
    got: Sequence[Figure],
    default: float,
    tolerances: Mapping[str, float],
    failures: Path | None,
    write_images: bool = True,
) -> list[FigureResult]:
    """A variation's figures against its baselines (``names``: the snapshot's figures).

    ``failures`` is cleared of an earlier run's images, and failing figures
    write theirs into it when ``write_images``.
    """
    if failures is not None:
        clear_failure_images(failures)
        if not write_images:
            failures = None
    expected = list(names or ())
    produced = {figure.name: figure for figure in got}
    results: list[FigureResult] = []
    for figure in got:
        tolerance = tolerances.get(figure.name, default)
        stored = _read(baselines / figure.file) if figure.name in expected else None
        if stored is None:
            results.append(FigureResult(figure.name, "missing", got=figure.data, kind=figure.kind))
        else:
            passes, rms, note = compare_figure(stored, figure.data, figure.kind, tolerance)
            state: FigureState = "matches" if passes else "differs"
            results.append(
                FigureResult(figure.name, state, rms, tolerance, note, got=figure.data,
                             kind=figure.kind)
            )  # fmt: skip
    for name in expected:
        if name not in produced:
            kind = "svg" if (baselines / f"{name}.svg").is_file() else "png"
            results.append(FigureResult(name, "gone", kind=kind))
    if failures is None:
        return results
    return [_with_images(r, baselines, failures) if r.failed else r for r in results]


def _with_images(result: FigureResult, baselines: Path, failures: Path) -> FigureResult:
    expected = _read(baselines / f"{result.name}.{result.kind}")
    images = write_failure_images(failures, result.name, expected, result.got, result.kind)
    return FigureResult(
        result.name, result.state, result.rms, result.tolerance, result.note, images, result.got,
        result.kind,
    )  # fmt: skip


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def format_figures(results: Sequence[FigureResult]) -> list[str]:
    """The failing figures, one a line."""
    return [f"  figure {result.describe()}" for result in results if result.failed]


# ------------------------------------------------------------------ updates


def update_baselines(
    folder: Path, figures: Mapping[str, Sequence[str] | None], old: Sequence[str] | None
) -> tuple[int, int]:
    """Write the figures that carry an image (kind, base64), remove the baselines of figures gone.

    Returns (written, removed); each file is replaced atomically.
    """
    from pytest_millrun.core.files import atomic_write

    written = 0
    for name, image in figures.items():
        if image is not None:
            kind, data = image
            atomic_write(folder / f"{name}.{kind}", base64.b64decode(data))
            other = folder / f"{name}.{'png' if kind == 'svg' else 'svg'}"
            other.unlink(missing_ok=True)  # the figure changed kind
            written += 1
    removed = remove_baselines(folder, [name for name in old or () if name not in figures])
    return written, removed


def remove_baselines(folder: Path, names: Sequence[str]) -> int:
    """Remove these baselines (only these), then the folders they leave empty."""
    removed = 0
    for name in names:
        for kind in ("png", "svg"):
            path = folder / f"{name}.{kind}"
            if path.is_file():
                path.unlink()
                removed += 1
    for empty in (folder, folder.parent):
        try:
            empty.rmdir()
        except OSError:
            break  # not empty, or not there
    return removed


#: What kernels draw with when figure snapshots are on: the inline backend, whose canvas
#: is Agg, whatever a user's environment or matplotlibrc says (a GUI backend, or plain
#: ``Agg``, which shows no figure in a notebook at all).
KERNEL_BACKEND = "module://matplotlib_inline.backend_inline"


@contextlib.contextmanager
def kernel_backend() -> Iterator[None]:
    """Kernels started meanwhile (they inherit this process's environment) draw with Agg."""
    before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = KERNEL_BACKEND
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = before
