"""The plugin's state in one pytest process, and what its hooks and items ask of it.

As syrupy's ``SnapshotSession``: one :class:`MillrunSession` per pytest process (the
only one, or the xdist controller and each worker), made at configure when a millrun
option is set and kept under one stash key (:data:`~pytest_millrun.plugin.state.
session_key`).  The hooks (:mod:`.hooks`) call into it, the items get their jobs
from it, and the run's state lives here instead of in stash keys spread over the
modules.  Planning and the cache verdict are the CLI's and the API's own
(:mod:`pytest_millrun.pipeline.planning`, :mod:`pytest_millrun.cache.verdicts`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from pytest_millrun.cache.keys import CacheKey
    from pytest_millrun.cache.verdicts import RunInputs, Verdict
    from pytest_millrun.config.run_config import RunConfig
    from pytest_millrun.core.data import ExecutionResult
    from pytest_millrun.coverage.kernel_settings import KernelCoverage
    from pytest_millrun.dispatch.dask_client import Submitted
    from pytest_millrun.dispatch.jobs import Job
    from pytest_millrun.execution.kernel_session import KernelSessionPart
    from pytest_millrun.execution.progress_sink import ProgressSink
    from pytest_millrun.pipeline.stale_outputs import StaleOutputs
    from pytest_millrun.plugin.live_progress import LiveProgress


class JobItem(Protocol):
    """What the session asks of a notebook item (:class:`~pytest_millrun.plugin.items.
    NotebookItem`, which imports this module)."""

    @property
    def nodeid(self) -> str: ...

    job: Job

    def job_to_run(self) -> Job | None: ...

    def coverage_part(self, *, lines_back: bool) -> Callable[[], KernelSessionPart] | None: ...


class MillrunSession:
    """One pytest process's run: its config and everything its hooks share."""

    def __init__(self, config: pytest.Config, settings: RunConfig) -> None:
        self.config = config
        self.settings = settings
        #: Strict-params violations found while collecting, refused together before any run.
        self.strict_problems: list[str] = []
        #: Indices of the suite's mark rules that matched an item of this process's collection.
        self.matched_rules: set[int] = set()
        #: The suite's notebooks globs that gave some collected notebook its variations.
        self.matched_globs: set[str | None] = set()
        #: The collected notebooks, relative to the suite's folder, as its globs see them.
        self.collected: set[str] = set()
        #: Outputs of earlier runs found (and removed, if asked) before this run.
        self.stale: StaleOutputs | None = None
        #: Set once this process keeps the next kernel ahead (fork mode).
        self.kernels_ahead = False
        #: The run's declared cache inputs, hashed once in this process (cache on only).
        self.cache_inputs: RunInputs | None = None
        #: With ``--millrun-dask``: the selected items' jobs on the cluster, by node id.
        self.on_cluster: Submitted | None = None
        self.cluster_index: dict[str, int] = {}
        #: Closes the cluster connection (and a local cluster) when the run loop ends.
        self._cluster_life = contextlib.ExitStack()
        #: The live progress drawer of this process (``-n 0`` or the xdist controller).
        self.live: LiveProgress | None = None

    @property
    def enabled(self) -> bool:
        """Whether notebooks are collected at all (``--millrun``, a params file, their ini)."""
        return self.settings.enabled

    @property
    def worker(self) -> bool:
        """Whether this is an xdist worker (which leaves run-wide decisions to the controller)."""
        return hasattr(self.config, "workerinput")

    # -------------------------------------------------------------- planning

    def plan_for(
        self, notebook: Path, data: dict[str, Any] | None
    ) -> tuple[list[Job], str | None]:
        """Every job of one notebook, selected or not, as the CLI and the API plan theirs.

        Components: the command line's, else the suite section's, else the ini file's.
        ``GLOB:name`` record globs are relative to the params file's folder, as the suite's
        are (the rootdir without a params file).  Raises what
        :func:`~pytest_millrun.pipeline.planning.plan_notebook` raises.
        """
        from pytest_millrun.core.naming import mirrored_folder
        from pytest_millrun.pipeline.planning import PlanWords, notebook_setup, plan_notebook

        settings, root = self.settings, self.config.rootpath
        explicit = [
            value if name in settings.command_line else ()
            for name, value in (("prepend", settings.prepend), ("append", settings.append))
        ]
        setup = notebook_setup(
            notebook,
            settings.suite if settings.suite is not None else settings.variations,
            record=settings.record,
            base=root,
            prepend=explicit[0],
            append=explicit[1],
            fallback=(settings.prepend, settings.append),
        )
        if settings.suite is not None:
            self.matched_globs.add(setup.glob)
            self.collected.add(settings.suite.relative(notebook))
        assert settings.output_dir is not None  # the plugin's default: .millrun under the rootdir
        words = PlanWords("--millrun-strict-params", "--millrun-record", "--millrun-output-dir")
        jobs, warning = plan_notebook(
            notebook, setup, data, output_root=settings.output_dir,
            folder=mirrored_folder(notebook, root), kernel_name=settings.kernel_name,
            strict_params=settings.strict_params, words=words,
        )  # fmt: skip
        if settings.output_url is not None:  # staged under output_dir, then uploaded
            from pytest_millrun.core.storage import output_url

            staging, url = settings.output_dir, settings.output_url
            jobs = [
                dataclasses.replace(job, output_url=output_url(
                    url, job.output.relative_to(staging).as_posix()
                ))
                for job in jobs
            ]  # fmt: skip
        return jobs, warning

    def refuse_before_run(self, planned: Sequence[tuple[str, Path, Path]]) -> None:
        """Refuse, before anything runs, undeclared parameters (strict) and colliding outputs.

        ``planned`` holds each notebook item's (node id, notebook, output).
        """
        from pytest_millrun.pipeline.planning import first_collision

        if self.strict_problems:
            raise pytest.UsageError("\n".join(self.strict_problems))
        collision = first_collision(
            [(nodeid, output) for nodeid, _, output in planned], [nb for _, nb, _ in planned]
        )
        if collision is not None and collision.other is None:
            raise pytest.UsageError(
                f"{collision.label} would write its output to {collision.output}, which is an "
                f"input notebook. Choose another --millrun-output-dir or other components."
            )
        if collision is not None:
            raise pytest.UsageError(
                f"{collision.other} and {collision.label} would both write {collision.output}. "
                f"Add a component that tells them apart (--millrun-prepend / --millrun-append)."
            )

    def find_stale_outputs(self, notebooks: Iterable[Path]) -> None:
        """Once per run, before any item runs: earlier outputs this run does not write."""
        from pytest_millrun.core.naming import OutputPathError
        from pytest_millrun.core.params import ParamsError
        from pytest_millrun.pipeline.stale_outputs import handle_stale_outputs, handle_stale_urls

        planned: list[Job] = []
        for notebook in dict.fromkeys(notebooks):
            with contextlib.suppress(ParamsError, OutputPathError, OSError):
                planned += self.plan_for(notebook, None)[0]
        clean = self.settings.clean_output and not self.config.option.collectonly
        if self.settings.output_url is None:
            outputs = [(job.notebook, job.output) for job in planned]
            self.stale = handle_stale_outputs(outputs, clean=clean)
            return
        urls = [(job.notebook, job.output_url) for job in planned if job.output_url is not None]
        options = self.settings.storage_options
        self.stale = handle_stale_urls(urls, clean=clean, storage_options=options)

    # ------------------------------------------------------------- the cache

    def start_cache(self) -> None:
        """Start a new run's memory of files; name, once, an input glob that matches nothing."""
        from pytest_millrun.cache import keys, verdicts

        keys.forget()
        inputs = verdicts.RunInputs(self.settings.cache_settings)
        self.cache_inputs = inputs
        if inputs.unmatched and not self.worker:
            message = keys.unmatched_message(
                inputs.unmatched, inputs.base, "--millrun-cache-inputs / millrun_cache_inputs"
            )
            self.config.issue_config_time_warning(keys.CacheInputWarning(message), stacklevel=2)

    def prefetch_cache_entries(self, jobs: Sequence[Job]) -> None:
        """With the cache and outputs on object storage: the jobs' cache entries (sidecars),
        fetched at once before the first item checks its own."""
        settings = self.settings.cache_settings
        urls = [job.output_url for job in jobs if job.output_url is not None]
        if not settings.enabled or settings.force or not urls:
            return
        from pytest_millrun.cache.sidecars import prefetch

        with contextlib.suppress(OSError):  # each item's check then says what it cannot read
            prefetch(urls, settings.storage_options)

    def verdict_for(
        self, job: Job, coverage: KernelCoverage | None = None
    ) -> tuple[Verdict, CacheKey | None]:
        """A job's verdict (a hit, or why it runs) and the key a pass will record.

        With its kernel measured (``coverage``), a hit needs the lines its run executed,
        stored with the same coverage settings.
        """
        import dataclasses

        from pytest_millrun.cache import verdicts

        inputs = self.cache_inputs
        assert inputs is not None  # start_cache() ran at configure
        unmatched = len(inputs.unmatched_more)
        found = verdicts.verdict_for(
            job.notebook, job.variation, job.output, inputs,
            dataclasses.replace(self.settings.cache_settings, coverage=coverage),
            kernel_name=self.settings.kernel_name, record=job.record, papermill_kwargs={},
            more_inputs=job.cache_inputs, more_ignore=job.cache_ignore, url=job.output_url,
        )  # fmt: skip
        if len(inputs.unmatched_more) > unmatched:
            from pytest_millrun.cache.keys import CacheInputWarning, unmatched_message

            new = inputs.unmatched_more[unmatched:]
            where = f"The suite's inputs of {job.notebook.name}"
            message = unmatched_message(new, inputs.base, where)
            warnings.warn(CacheInputWarning(message), stacklevel=2)
        return found

    # ------------------------------------------------------------- the kernels

    def keep_kernels_ahead(self) -> None:
        """From the first item on, this process starts each next kernel while one runs (fork)."""
        if self.kernels_ahead:
            return
        from pytest_millrun.execution.execute import kernels_ahead

        self.kernels_ahead = True
        ahead = contextlib.ExitStack()
        ahead.enter_context(kernels_ahead(self.settings.kernel_start))
        self.config.add_cleanup(ahead.close)

    # ------------------------------------------------------------- progress

    def progress_sink(self, label: str) -> ProgressSink | None:
        """Who hears the progress of the item ``label`` run here: this process's drawer, or
        (an xdist worker) the channel its controller reads; None when nothing is shown."""
        if self.live is not None:
            return self.live.sink_for(label)
        channel = getattr(self.config, "workerinput", {}).get("millrun_progress")
        if channel is None:
            return None
        from pytest_millrun.execution.progress_sink import ChannelSink

        log_output = bool(self.config.workerinput.get("millrun_log_output"))  # type: ignore[attr-defined]
        return ChannelSink(channel, label, log_output)

    # ------------------------------------------------------------- the cluster

    def submit_to_cluster(self, items: Sequence[JobItem]) -> None:
        """With ``--millrun-dask``: every item left after selection, at once, but those the
        cache answers (they pass from their outputs here, as without Dask).

        Called when the run loop starts, on pytest's final items (``-k``, ``-m``, node ids,
        ``--lf`` applied); a cluster that cannot be reached is a usage error, before any
        item runs.
        """
        from pytest_millrun.dispatch.dask_client import (
            ClusterError,
            Submitted,
            cluster_environments,
            open_cluster,
        )

        jobs: list[Job] = []
        settings = self.settings
        cluster = settings.dask if settings.cache_settings.enabled else None
        try:  # the cache compares the workers' environments, which their outputs hold
            with cluster_environments(cluster, [i.job for i in items], settings.run_options()):
                for item in items:
                    job = item.job_to_run()
                    if job is not None:
                        self.cluster_index[item.nodeid] = len(jobs)
                        part = item.coverage_part(lines_back=True)  # a worker may not reach
                        if part is not None:  # the data file
                            job = dataclasses.replace(job, session_parts=(part,))
                        jobs.append(job)
        except ClusterError as exc:
            raise pytest.UsageError(str(exc)) from None
        if not jobs:
            return
        try:
            client = self._cluster_life.enter_context(
                open_cluster(self.settings.dask, self.settings.workers)
            )
            self.on_cluster = Submitted(
                client, jobs, self.settings.run_options(), self.settings.ship_settings
            )
        except ClusterError as exc:
            self._cluster_life.close()
            raise pytest.UsageError(str(exc)) from None

    def cluster_result(self, item: JobItem) -> ExecutionResult | None:
        """The item's result from the cluster, once its task ends; None when it was not sent.

        Ctrl-C here stops the whole run on the cluster (queued tasks cancelled, running
        notebooks stopped, their partial outputs saved), as the CLI's does.
        """
        index = self.cluster_index.get(item.nodeid)
        if self.on_cluster is None or index is None:
            return None
        return self.on_cluster.result(index)

    def close_cluster(self) -> None:
        """When the run loop ends: what still runs or waits was not wanted (``-x``, Ctrl-C, an
        error), so it is stopped; then the connection, and a local cluster, close."""
        try:
            if self.on_cluster is not None and not self.on_cluster.all_done():
                self.on_cluster.stop()
        finally:
            self.on_cluster = None
            self._cluster_life.close()
