"""What a figure snapshot check costs per figure, against the values-only check in the same run.

Builds V executed notebooks (default 40), each with F matplotlib figures (default 4, 640x480
PNGs drawn by Agg) and one recorded value, writes their snapshots and baselines, then times
the check of every variation (``SnapshotReader.check``, as the plugin and the API call it)
three ways: values only (the baseline), values and identical figures (the target: at most
0.02 s more per figure), and values and figures that differ slightly (decoded and
compared by RMS, for information; the images a failing figure leaves are not written).
Median of ``--repeat`` rounds; no kernels.

    .venv/bin/python benchmarks/figures_bench.py [--variations 40] [--figures 4] [--repeat 5]
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from pytest_millrun.snapshots.checks import SnapshotReader, change_for
from pytest_millrun.snapshots.figures import DEFAULT_FIGURE_TOLERANCE
from pytest_millrun.snapshots.store import Change, Tolerance, apply_changes

TARGET_PER_FIGURE_S = 0.02


def figure_png(seed: int, nudge: float = 0.0) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    xs = [i / 10 for i in range(100)]
    ax.plot(xs, [((x * (seed + 1)) % 7) + nudge * x for x in xs])
    ax.set_title(f"figure {seed}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_outputs(folder: Path, variations: int, figures: int, nudge: float) -> list[Path]:
    folder.mkdir(parents=True)
    pngs = [figure_png(seed, nudge) for seed in range(figures)]
    paths = []
    for v in range(variations):
        nb = new_notebook()
        for png in pngs:
            cell = new_code_cell("plot()")
            encoded = base64.b64encode(png).decode()
            cell.outputs = [new_output("display_data", data={"image/png": encoded})]
            nb.cells.append(cell)
        path = folder / f"{v}-plot.ipynb"
        nbformat.write(nb, str(path))
        paths.append(path)
    return paths


def time_checks(snaps: Path, outputs: list[Path], figures: bool) -> float:
    # images of failing figures are not written: the rows time the comparison itself
    tolerance = DEFAULT_FIGURE_TOLERANCE if figures else None
    reader = SnapshotReader(snaps, Tolerance(), tolerance, write_images=False)
    started = time.perf_counter()
    for v, output in enumerate(outputs):
        check = reader.check("plot.ipynb", str(v), {"total": float(v)}, output)
        assert check.state == "matches" or figures, check.state
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variations", type=int, default=40)
    parser.add_argument("--figures", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        snaps = root / "snaps"
        same = write_outputs(root / "same", args.variations, args.figures, 0.0)
        moved = write_outputs(root / "moved", args.variations, args.figures, 0.002)
        reader = SnapshotReader(snaps, Tolerance(), DEFAULT_FIGURE_TOLERANCE, write_images=False)
        changes: list[Change] = []
        for v, output in enumerate(same):
            recorded = {"total": float(v)}
            check = reader.check("plot.ipynb", str(v), recorded, output)
            changes.append(change_for("plot.ipynb", str(v), check, recorded))
        apply_changes(snaps, changes)
        rows: dict[str, list[float]] = {"values only": [], "identical figures": [], "moved": []}
        for _ in range(args.repeat):
            rows["values only"].append(time_checks(snaps, same, figures=False))
            rows["identical figures"].append(time_checks(snaps, same, figures=True))
            rows["moved"].append(time_checks(snaps, moved, figures=True))
    count = args.variations * args.figures
    base = statistics.median(rows["values only"])
    print(f"{args.variations} variations x {args.figures} figures, median of {args.repeat}\n")
    print("| check | wall s | s per variation | added s per figure | vs values only |")
    print("|---|---|---|---|---|")
    for name, label in (
        ("values only", "values only (baseline)"),
        ("identical figures", "values + identical figures"),
        ("moved", "values + figures moved slightly (decoded, RMS)"),
    ):
        wall = statistics.median(rows[name])
        added = (wall - base) / count
        print(
            f"| {label} | {wall:.3f} | {wall / args.variations:.4f} | "
            f"{added:.4f} | {wall / base:.1f}x |"
        )
    identical = (statistics.median(rows["identical figures"]) - base) / count
    verdict = "meets" if identical <= TARGET_PER_FIGURE_S else "MISSES"
    print(f"\nidentical figures add {identical:.4f} s per figure: {verdict} the target "
          f"of {TARGET_PER_FIGURE_S} s")  # fmt: skip


if __name__ == "__main__":
    main()
