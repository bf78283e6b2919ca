"""The plan of a run: which notebook, which variation, which output file, checked in full.

The plan is pure and is made and checked before anything runs: a typo in a
papermill keyword, two variations writing one file or an output that would replace
an input notebook fail here, not halfway through a long run.  The API and the CLI
share it.
"""

from __future__ import annotations

import difflib
import inspect
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_millrun.core.discovery import (
    MillrunParameterWarning,
    NotebookError,
    absolute,
    check_parameters,
    discover_notebooks,
    read_notebook,
    record_needs_python,
    takes_python_parameters,
)
from pytest_millrun.core.naming import (
    check_output_folder,
    mirrored_folder,
    name_variations,
    safe_output_path,
)
from pytest_millrun.core.params import Variation
from pytest_millrun.core.suite import MillrunSuiteWarning, Suite, pick_components
from pytest_millrun.core.values import RecordSpec
from pytest_millrun.dispatch.jobs import Job
from pytest_millrun.execution.execute import OverwriteError, check_output_target


def plan_run(
    notebook_dir_or_file: str | Path,
    variations: Sequence[Variation] | Suite,
    *,
    output_dir: str | Path | None = None,
    prepend: Sequence[str] = (),
    append: Sequence[str] = (),
    recursive: bool = False,
    exclude_glob_pattern: str | None = None,
    include_glob_pattern: str | None = None,
    strict_params: bool = False,
    text_notebooks: Sequence[str] = (),
    record: RecordSpec | None = None,
    kernel_name: str | None = None,
) -> list[Job]:
    """Every job of a run, in a deterministic order, with collisions refused.

    With a :class:`Suite` each notebook gets its own section's variations,
    components and recorded names; ``prepend``/``append`` win over the suite's
    where not empty, and ``record``'s names add to its.  ``text_notebooks``
    globs (relative to the folder) name text files that are notebooks without a
    jupytext header.  Recording is refused here for a notebook whose kernel
    cannot take the Python that reads variables.
    """
    target = Path(notebook_dir_or_file)
    out = Path(output_dir) if output_dir is not None else None
    record = record or RecordSpec()
    notebooks = discover_notebooks(
        target,
        recursive=recursive,
        include_glob_pattern=include_glob_pattern,
        exclude_glob_pattern=exclude_glob_pattern,
        output_dirs=[out] if out is not None and out.resolve() != target.resolve() else [],
        text_notebooks=text_notebooks,
    )
    if not notebooks:
        pattern = include_glob_pattern or "*.ipynb and text notebooks"
        raise FileNotFoundError(
            f"No notebooks found in {target} (pattern {pattern}"
            f"{', recursively' if recursive else ''}). Check the path and the glob patterns, "
            f"or pass --recursive for notebooks in subfolders."
        )
    base = target if target.is_dir() else target.parent
    jobs: list[Job] = []
    writable: set[Path] = set()
    used_globs: list[str | None] = []
    for notebook in map(absolute, notebooks):
        own: Sequence[Variation]
        own_prepend, own_append = prepend, append
        own_inputs: tuple[str, ...] = ()
        if isinstance(variations, Suite):
            section = variations.section_for(notebook)
            own_inputs = section.inputs
            used_globs.append(section.glob)
            own = section.variations
            own_prepend = pick_components(prepend, section.prepend)
            own_append = pick_components(append, section.append)
            names = record.for_notebook(variations.relative(notebook), section.record)
        else:
            own = variations
            names = record.for_notebook(os.path.relpath(notebook, base).replace(os.sep, "/"))
        keys = [key for variation in own for key in variation]
        try:
            data = read_notebook(notebook)
        except NotebookError:
            pass  # fails as its own job, with the same message, and the others still run
        else:
            if names and kernel_name is None and not takes_python_parameters(data):
                raise ValueError(record_needs_python(notebook, data, "record= (--record)"))
            warning = check_parameters(
                notebook,
                data,
                keys,
                strict=strict_params,
                strict_flag="strict_params=True (--strict-params)",
            )
            if warning:
                warnings.warn(MillrunParameterWarning(warning), stacklevel=3)
        if out is None:
            folder_root, folder = notebook.parent, Path()
        else:
            folder_root, folder = out, mirrored_folder(notebook, base)
        if folder_root / folder not in writable:
            check_output_folder(folder_root / folder, "output_dir= or --output-dir")
            writable.add(folder_root / folder)
        named = name_variations(notebook.stem, own, own_prepend, own_append)
        for name, variation in zip(named, own, strict=False):
            output = safe_output_path(folder_root, folder, name.filename)
            jobs.append(Job(notebook, variation, name.id, output, names, cache_inputs=own_inputs))
    _refuse_collisions(jobs)
    if isinstance(variations, Suite) and variations.is_suite:
        for _, message in variations.unmatched_globs(used_globs):
            warnings.warn(MillrunSuiteWarning(message), stacklevel=3)
    return jobs


def planned_outputs(jobs: Iterable[Job]) -> list[tuple[Path, Path]]:
    """(notebook, output) of every job, as :mod:`.stale_outputs` takes them."""
    return [(job.notebook, job.output) for job in jobs]


def _refuse_collisions(jobs: Iterable[Job]) -> None:
    inputs = {job.notebook.resolve() for job in jobs}
    owners: dict[Path, Job] = {}
    for job in jobs:
        if job.output in inputs:
            raise ValueError(
                f"{job.notebook.name} [{job.variation_id}] would write its output over the "
                f"input notebook {job.output}. Choose an output_dir or other components."
            )
        try:
            check_output_target(job.notebook, job.output)
        except OverwriteError as exc:
            raise ValueError(str(exc)) from None
        other = owners.setdefault(job.output, job)
        if other is not job:
            raise ValueError(
                f"{other.notebook.name} [{other.variation_id}] and {job.notebook.name} "
                f"[{job.variation_id}] would both write {job.output}. Add a prepend/append "
                f"component that tells them apart."
            )


def check_papermill_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Refuse, before anything runs, a keyword papermill or nbclient would not use."""
    import papermill
    from nbclient import NotebookClient

    accepted = set(inspect.signature(papermill.execute_notebook).parameters)
    accepted |= set(NotebookClient.class_trait_names()) | {"execution_timeout"}
    accepted -= {"input_path", "output_path", "parameters", "engine_kwargs", "nb", "km"}
    managed = {"kernel_manager_class", "resources"}
    for name in kwargs:
        if name in managed:
            raise TypeError(
                f"execute_run sets papermill's {name!r} itself (private kernel sockets, the "
                f"notebook's folder as working directory); it cannot be passed."
            )
        if name not in accepted:
            close = difflib.get_close_matches(name, sorted(accepted), n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise TypeError(
                f"{name!r} is not an argument of papermill.execute_notebook or of nbclient's "
                f"NotebookClient, so it would be ignored.{hint}"
            )
