"""``execute_run``: every notebook of a folder times every parameter variation.

The plan (which notebook, which variation, which output file) is pure and is
made and checked in full before anything runs: a typo in a papermill keyword,
two variations writing one file or an output that would replace an input
notebook fail here, not halfway through a long run.  The jobs then go through
any :class:`concurrent.futures.Executor`: none (in this process), a process
pool over all pairs at once, or one the caller brings.  Resolve, run, present:
the keywords become a :class:`~pytest_millrun.config.run_config.RunConfig`, the
run is :mod:`pytest_millrun.pipeline.runner`'s, and failures become one exception.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from pytest_millrun.config.run_config import from_api
from pytest_millrun.core.data import ExecutionResult, KernelStart
from pytest_millrun.core.params import BulkParams
from pytest_millrun.pipeline import runner
from pytest_millrun.pipeline.planning import check_papermill_kwargs


class RunFailedError(Exception):
    """Raised after the whole run when any variation failed; carries every result."""

    def __init__(self, results: list[ExecutionResult]) -> None:
        self.results = results
        self.failures = [r for r in results if not r.passed]
        lines = [f"{len(self.failures)} of {len(results)} notebook runs failed:"]
        for r in self.failures:
            headline = r.error.headline if r.error else r.status
            where = f" -> {r.output}" if r.output is not None else " (no output written)"
            lines.append(f"  {r.notebook.name} [{r.variation_id}]: {headline}{where}")
        super().__init__("\n".join(lines))


def execute_run(
    notebook_dir_or_file: str | Path,
    bulk_params: BulkParams | Mapping[str, Any] | str | Path,
    output_dir: str | Path | None = None,
    output_prepend_components: Sequence[str] | None = None,
    output_append_components: Sequence[str] | None = None,
    recursive: bool = False,
    exclude_glob_pattern: str | None = None,
    include_glob_pattern: str | None = None,
    use_multiprocessing: bool = False,
    *,
    workers: int | None = None,
    executor: Executor | None = None,
    dask: Any = None,
    notebook_timeout: float | None = None,
    strict_params: bool = False,
    kernel_start: KernelStart = "auto",
    preload: Sequence[str] = (),
    record: Sequence[str] = (),
    snapshots: str | Path | None = None,
    snapshot_update: bool = False,
    snapshot_strict: bool = False,
    snapshot_figures: bool = False,
    figure_tolerance: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    on_result: Callable[[ExecutionResult], None] | None = None,
    clean_output: bool = False,
    text_notebooks: str | Sequence[str] = (),
    cache: bool = False,
    force: bool = False,
    cache_inputs: Sequence[str] = (),
    kernel_name: str | None = None,
    execution_timeout: float | None = None,
    **kwargs: Any,
) -> list[ExecutionResult]:
    """Run every notebook with every variation; return one result per pair.

    ``bulk_params`` is a list of dicts, a dict of equal-length lists, a suite
    dict (its globs relative to the notebook folder) or the path of a JSON or
    YAML file in any of these forms (its globs relative to the file's folder).
    Every pair is attempted.  When any failed, :class:`RunFailedError` is
    raised after all work is done, listing every failure and carrying all
    results.  ``kernel_name`` runs every notebook with that kernel (default: each
    notebook's own), ``execution_timeout`` limits each cell (seconds); ``kwargs`` go to
    ``papermill.execute_notebook`` (``log_output``, nbclient options ...).  With
    ``use_multiprocessing`` all pairs share one process pool of ``workers``
    processes (default: the CPU count); ``executor`` replaces that pool with
    any ``concurrent.futures.Executor``.  ``dask`` runs them on a Dask cluster:
    ``"local"`` (``workers`` processes), a scheduler address or a ``Client``,
    as does ``executor=client.get_executor()``.  ``kernel_start`` (``auto``, ``fork``,
    ``spawn``) and ``preload`` choose how kernels start; ``notebook_timeout``
    limits a whole notebook and ``strict_params`` refuses undeclared parameters.
    ``clean_output`` removes, before the run, outputs of these notebooks that
    earlier runs wrote beside this run's and this run does not write (only
    files carrying millrun's output marker).
    A text notebook (jupytext, with the ``jupytext`` extra) is a notebook when it
    carries a jupytext header or matches one of the ``text_notebooks`` globs
    (``"*.py,docs/*.md"``, relative to the notebook folder).
    ``record`` names variables read after each notebook's last cell into
    ``ExecutionResult.recorded``, with its scrapbook scraps (``"GLOB:name"`` only
    in the notebooks GLOB matches; a suite's ``record`` keys add names per
    notebook); write the table with
    :func:`write_results`.  ``snapshots`` names a folder of snapshots the
    recorded values are compared with (``rtol``/``atol``, see
    :mod:`pytest_millrun.snapshots.checks`); a difference raises
    :class:`~pytest_millrun.snapshots.checks.SnapshotMismatchError` with the table,
    and ``snapshot_update`` writes them instead.  Unused entries (of a variation
    or a notebook gone) warn with ``MillrunSnapshotWarning``, or fail with
    ``snapshot_strict``; an update removes them.  ``snapshot_figures`` compares
    each run's figures (image outputs) with baselines beside the values, within
    ``figure_tolerance`` RMS (default 2), kernels drawing with Agg.
    With ``cache`` a variation whose output holds a passing run with the same key
    (code cells, parameters, kernel, options, environment and the files
    ``cache_inputs`` globs name, relative to the notebook folder) is not run:
    its result is read back from that output, ``cached`` set; ``force`` runs
    everything and records fresh keys.  See ``docs/incremental.md``.
    """
    keywords = {name: value for name, value in locals().items() if name != "kwargs"}
    config = from_api(keywords, kwargs)
    check_papermill_kwargs(kwargs)
    planned = runner.plan(config, warn_unmatched=True)
    for error in planned.stale.errors if planned.stale is not None else ():
        warnings.warn(error, stacklevel=2)
    parallel = config.use_multiprocessing
    results = runner.run(planned, runner.dispatcher_for(config, parallel=parallel), on_result)
    if config.snapshots is not None:
        from pytest_millrun.snapshots.checks import snapshot_check

        snapshot_check(
            results, config.snapshots, Path(notebook_dir_or_file), config.snapshot_update,
            config.tolerance, recursive=recursive, strict=config.snapshot_strict,
            figure_tolerance=config.figures,
        )  # fmt: skip
    if any(not r.passed for r in results):
        raise RunFailedError(results)
    return results
