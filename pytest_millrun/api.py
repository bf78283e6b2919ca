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
from pytest_millrun.core.data import ExecutionResult, KernelStart, Order
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
    storage_options: Mapping[str, Any] | None = None,
    ship_limit: int = 200,
    ship_exclude: Sequence[str] = (),
    order: Order = "longest-first",
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
    cache_ignore: Sequence[str] = (),
    cache_hash_limit: int = 1024,
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
    results; a recorded value that differs from its snapshot raises
    :class:`~pytest_millrun.snapshots.checks.SnapshotMismatchError`.  ``kwargs``
    go to ``papermill.execute_notebook`` (``log_output``, nbclient options ...).
    Every keyword is an option of the pytest plugin and the ``millrun`` command
    too, declared once: the reference's "Keywords of execute_run" table says what
    each does (``use_multiprocessing``/``workers``/``executor``/``dask`` choose
    where the jobs run; ``record``, ``snapshots``, ``cache`` and the others as
    their pages in the docs describe).
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
