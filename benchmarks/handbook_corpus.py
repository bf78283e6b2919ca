"""Build corpus_bench.py's real corpus from a checkout of the Python Data Science Handbook.

The corpus is the book's notebooks (jakevdp/PythonDataScienceHandbook, ``notebooks/``) that
pass offline with numpy, pandas, matplotlib, scipy, scikit-learn and seaborn of today, with
the book's ``data/`` and ``figures/`` folders and its helper module beside them.  The one edit
keeps matplotlib 3.6+ drawing the book's styles: ``seaborn-whitegrid`` and friends were
renamed ``seaborn-v0_8-...``.  What is left out, and why, is in ``LEFT_OUT`` below, so a
reader can judge the selection; nothing was left out for being slow.

    git clone https://github.com/jakevdp/PythonDataScienceHandbook
    python benchmarks/handbook_corpus.py PythonDataScienceHandbook/notebooks /tmp/handbook
    .venv/bin/python benchmarks/corpus_bench.py /tmp/handbook

``--without-timeit`` leaves out the five notebooks that time code with ``%timeit`` (about
half of the corpus's cell time).
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

AN_ERROR_ON_PURPOSE = "stops at an error the book shows on purpose"
NETWORK = "downloads its data"
MISSING_PACKAGE = "needs a package outside the six"
OLD_API = "uses an API its library has since removed"
MISSING_FILE = "reads a file the repository does not hold"
NOT_PARSED = "has a cell that today's IPython does not parse"

LEFT_OUT = {
    "01.06-Errors-and-Debugging.ipynb": AN_ERROR_ON_PURPOSE,
    "01.07-Timing-and-Profiling.ipynb": MISSING_PACKAGE,  # line_profiler
    "02.05-Computation-on-arrays-broadcasting.ipynb": AN_ERROR_ON_PURPOSE,
    "02.06-Boolean-Arrays-and-Masks.ipynb": MISSING_PACKAGE,  # vega_datasets
    "03.01-Introducing-Pandas-Objects.ipynb": AN_ERROR_ON_PURPOSE,
    "03.04-Missing-Values.ipynb": AN_ERROR_ON_PURPOSE,
    "03.05-Hierarchical-Indexing.ipynb": NOT_PARSED,
    "03.06-Concat-And-Append.ipynb": OLD_API,  # DataFrame.append
    "03.08-Aggregation-and-Grouping.ipynb": NETWORK,
    "03.09-Pivot-Tables.ipynb": NETWORK,
    "03.10-Working-With-Strings.ipynb": MISSING_FILE,  # data/recipeitems.json
    "03.11-Working-with-Time-Series.ipynb": OLD_API,  # the "H" frequency
    "03.12-Performance-Eval-and-Query.ipynb": NOT_PARSED,
    "04.06-Customizing-Legends.ipynb": MISSING_FILE,  # data/california_cities.csv
    "04.07-Customizing-Colorbars.ipynb": OLD_API,  # matplotlib.cm.get_cmap
    "04.10-Customizing-Ticks.ipynb": NETWORK,
    "04.14-Visualization-With-Seaborn.ipynb": NETWORK,
    "05.02-Introducing-Scikit-Learn.ipynb": NETWORK,
    "05.05-Naive-Bayes.ipynb": NETWORK,
    "05.06-Linear-Regression.ipynb": MISSING_FILE,  # FremontBridge.csv
    "05.07-Support-Vector-Machines.ipynb": MISSING_PACKAGE,  # ipywidgets
    "05.08-Random-Forests.ipynb": MISSING_PACKAGE,  # ipywidgets
    "05.09-Principal-Component-Analysis.ipynb": OLD_API,  # matplotlib.cm.get_cmap
    "05.10-Manifold-Learning.ipynb": OLD_API,  # matplotlib.cm.get_cmap
    "05.12-Gaussian-Mixtures.ipynb": OLD_API,  # Ellipse's arguments
    "05.14-Image-Features.ipynb": MISSING_PACKAGE,  # scikit-image
    "06.00-Figure-Code.ipynb": MISSING_FILE,  # images/
}

STYLE = re.compile(r"seaborn-(whitegrid|white|dark)\b")


def build(book: Path, corpus: Path, *, timeit: bool = True) -> int:
    """Copy the corpus into ``corpus`` (made anew); returns how many notebooks it holds.

    Without ``timeit``, the notebooks that time code with ``%timeit`` are left out too: their
    loops are most of the corpus's cell time, which hides what a run costs besides.
    """
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    count = 0
    for notebook in sorted(book.glob("[0-9]*.ipynb")):
        if notebook.name in LEFT_OUT:
            continue
        text = STYLE.sub(r"seaborn-v0_8-\1", notebook.read_text(encoding="utf-8"))
        if not timeit and "%timeit" in text:
            continue
        (corpus / notebook.name).write_text(text, encoding="utf-8")
        count += 1
    for folder in ("data", "figures"):
        shutil.copytree(book / folder, corpus / folder)
    shutil.copy2(book / "helpers_05_08.py", corpus)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("book", type=Path, help="The book's notebooks folder")
    parser.add_argument("corpus", type=Path, help="Where to build the corpus (replaced)")
    parser.add_argument(
        "--without-timeit", action="store_true", help="Leave out the notebooks that use %%timeit"
    )
    args = parser.parse_args()
    count = build(args.book, args.corpus, timeit=not args.without_timeit)
    print(f"{count} notebooks in {args.corpus}")


if __name__ == "__main__":
    main()
