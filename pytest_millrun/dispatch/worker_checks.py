"""Runs on the client: before a run on Dask, what each worker lacks, said in one message.

Why before submitting: a worker without pytest-millrun, with another version of it
or of Python, or without a notebook's kernel would fail every task it takes, each
with a message of its own; asked first (:func:`~pytest_millrun.dispatch.dask_worker.
worker_facts`, with ``Client.run``), the workers' answers make one error naming
which worker lacks what, before anything runs.  The same answers carry each
worker's environment of the kernels, which the cache keys of what the workers run
hold instead of the client's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_millrun.dispatch.cluster_errors import ClusterError
from pytest_millrun.dispatch.jobs import Job, RunOptions

if TYPE_CHECKING:
    from distributed import Client


def kernel_names(jobs: Sequence[Job], options: RunOptions) -> list[str]:
    """The kernels the jobs run in (the override, else each notebook's), each once."""
    from pytest_millrun.cache.keys import notebook_kernel, read_notebook

    language = options.papermill_kwargs.get("language")
    found: dict[str, None] = {}
    for notebook in dict.fromkeys(job.notebook for job in jobs):
        try:
            nb, _ = read_notebook(notebook)
        except (OSError, ValueError):
            continue  # its run says what is wrong with it
        found[notebook_kernel(nb, options.kernel_name, language)["name"]] = None
    return list(found)


def check_workers(
    client: Client, kernels: Sequence[str], environments: bool = False
) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Refuse, in one message, a run some worker cannot run as the client would: it lacks
    pytest-millrun (or has another version), this Python version, or a kernel.  With
    ``environments``: the kernels' environments the workers share (a kernel whose workers
    differ is left out), else none."""
    from pytest_millrun.dispatch.dask_worker import worker_facts

    answers = client.run(worker_facts, list(kernels), environments, on_error="return")
    lacking = [
        f"{worker} {what}"
        for worker, facts in sorted(answers.items())
        if (what := _lacks(facts, kernels))
    ]
    if lacking:
        raise ClusterError(
            f"Some Dask workers cannot run these notebooks: {'; '.join(lacking)}. Install "
            f"there what they lack (pytest-millrun and Python in the client's versions, the "
            f"kernels with `python -m ipykernel install` or the kernel's own installer), or "
            f"run on workers that have it; nothing was submitted."
        )
    shared: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
    for name in kernels if environments else ():
        seen = {repr(facts["environments"].get(name)): facts for facts in answers.values()}
        if len(seen) == 1:
            environment, distributions = next(iter(seen.values()))["environments"][name]
            shared[name] = (dict(environment), dict(distributions))
    return shared


def _lacks(facts: Any, kernels: Sequence[str]) -> str:
    """What a worker's answer says it lacks, in words ('' when nothing)."""
    import platform

    from pytest_millrun.cache.keys import millrun_version

    if isinstance(facts, BaseException):
        return (
            f"cannot answer ({type(facts).__name__}: {facts}): it needs pytest-millrun "
            f"{millrun_version()} installed"
        )
    wants = []
    if facts["millrun"] != millrun_version():
        wants.append(f"pytest-millrun {millrun_version()} (it has {facts['millrun']})")
    here = platform.python_version()
    if facts["python"].split(".")[:2] != here.split(".")[:2]:
        wants.append(f"Python {here} (it has {facts['python']})")
    missing = [name for name in kernels if name not in facts["installed"]]
    if missing:
        has = ", ".join(facts["installed"]) or "none"
        wants.append(f"the kernel {', '.join(missing)} (it has {has})")
    return f"lacks {' and '.join(wants)}" if wants else ""
