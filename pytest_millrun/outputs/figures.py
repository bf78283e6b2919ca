"""Figure snapshots: a notebook's images, named stably and compared as pytest-mpl does.

Each ``image/png`` output of an executed notebook is one figure, named (in
this order) by its scrapbook glue name, by its cell's tag ``figure=NAME``
(``NAME-2``, ``NAME-3`` for more images of that cell), or by position:
``cell<N>-<K>``, the K-th image of the N-th cell of the input notebook (the
cell papermill injects is not counted, so the names do not move with it).

Comparison follows pytest-mpl's and matplotlib's ``compare_images``:
identical bytes pass at once (nothing is decoded); otherwise both images
must have the same size, and then the RMS of the pixel differences (on
0-255, through :func:`matplotlib.testing.compare.calculate_rms`) must be at
most the tolerance (default 2, as pytest-mpl's).  A failing figure gets its
expected, got and diff images (matplotlib's ``save_diff_image``) written
beside the output notebook.

Baselines live beside the values: ``DIR/<notebook>.figures/<variation id>/<name>.png``.
matplotlib (and Pillow) are needed only when two images differ in bytes.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_millrun.core.naming import safe_part

PNG = "image/png"
#: A cell tag naming its figure: ``figure=loss-curve``.
TAG_PREFIX = "figure="
DEFAULT_FIGURE_TOLERANCE = 2.0
#: Suffixes of the images a failing figure leaves beside the output notebook.
FAILURE_SUFFIXES = (".expected.png", ".got.png", ".diff.png")
#: Bytes of a name part: well within a file name's limit with the suffixes above.
NAME_BYTES = 120

FigureState = Literal["matches", "differs", "missing", "gone"]


class FiguresUnavailableError(RuntimeError):
    """Figures differ in bytes and matplotlib is not installed to compare them."""


@dataclass(frozen=True)
class Figure:
    name: str
    png: bytes


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
            kinds = [p.name[len(self.name) + 1 : -len(".png")] for p in self.images]
            which = kinds[0] if len(kinds) == 1 else "{" + ",".join(kinds) + "}"
            text += f"; see {self.images[0].parent / f'{self.name}.{which}.png'}"
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


def _png(output: Mapping[str, Any]) -> bytes | None:
    data = output.get("data", {}).get(PNG)
    if isinstance(data, list):
        data = "".join(data)
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode(data)
    except ValueError:
        return None


def figures_of(notebook: Mapping[str, Any]) -> list[Figure]:
    """The notebook's PNG outputs as figures with stable, unique, file-safe names."""
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
            png = _png(output)
            if png is None:
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
            figures.append(Figure(unique, png))
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
    folder: Path, name: str, expected: bytes | None, got: bytes | None
) -> tuple[Path, ...]:
    """The expected, got and (same size only) diff images of a failing figure."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    paths = [folder / f"{name}{suffix}" for suffix in FAILURE_SUFFIXES]
    for path, data in zip(paths, (expected, got), strict=False):
        if data is not None:
            path.write_bytes(data)
            written.append(path)
    if expected is not None and got is not None:
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
        path = baselines / f"{figure.name}.png"
        stored = _read(path) if figure.name in expected else None
        if stored is None:
            results.append(FigureResult(figure.name, "missing", got=figure.png))
        else:
            passes, rms, note = compare_png(stored, figure.png, tolerance)
            state: FigureState = "matches" if passes else "differs"
            results.append(FigureResult(figure.name, state, rms, tolerance, note, got=figure.png))
    results += [FigureResult(name, "gone") for name in expected if name not in produced]
    if failures is None:
        return results
    return [_with_images(r, baselines, failures) if r.failed else r for r in results]


def _with_images(result: FigureResult, baselines: Path, failures: Path) -> FigureResult:
    expected = _read(baselines / f"{result.name}.png")
    images = write_failure_images(failures, result.name, expected, result.got)
    return FigureResult(
        result.name, result.state, result.rms, result.tolerance, result.note, images, result.got
    )


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
    folder: Path, figures: Mapping[str, str | None], old: Sequence[str] | None
) -> tuple[int, int]:
    """Write the figures that carry a PNG (base64), remove the baselines of figures gone.

    Returns (written, removed); each file is replaced atomically.
    """
    from pytest_millrun.outputs.files import atomic_write

    written = 0
    for name, data in figures.items():
        if data is not None:
            atomic_write(folder / f"{name}.png", base64.b64decode(data))
            written += 1
    removed = remove_baselines(folder, [name for name in old or () if name not in figures])
    return written, removed


def remove_baselines(folder: Path, names: Sequence[str]) -> int:
    """Remove these baselines (only these), then the folders they leave empty."""
    removed = 0
    for name in names:
        path = folder / f"{name}.png"
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
