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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_millrun.config.run_config import RunConfig
from pytest_millrun.core.discovery import (
    MillrunParameterWarning,
    NotebookError,
    absolute,
    check_parameters,
    discover_notebooks,
    notebook_folder,
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


@dataclass(frozen=True)
class PlanWords:
    """How the calling front end names the options a planning error points at."""

    strict: str = "strict_params=True (--strict-params)"
    record: str = "record= (--record)"
    output_dir: str = "output_dir= or --output-dir"


@dataclass(frozen=True)
class NotebookSetup:
    """What one notebook runs with: its suite section's variations, components, names, inputs."""

    variations: tuple[Variation, ...]
    prepend: tuple[str, ...] = ()
    append: tuple[str, ...] = ()
    record: tuple[str, ...] = ()
    #: A suite section's own ``inputs`` (absolute globs), part of the cache key.
    inputs: tuple[str, ...] = ()
    #: The suite section's glob that took the notebook (None without a suite).
    glob: str | None = None
    #: A suite section's own ``ignore`` (absolute globs): never in the cache key.
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Collision:
    """Two planned runs writing one file, or one writing over an input notebook (``other`` None)."""

    output: Path
    label: str
    other: str | None = None


def notebook_setup(
    notebook: Path,
    variations: Sequence[Variation] | Suite,
    *,
    record: RecordSpec,
    base: Path,
    prepend: Sequence[str] = (),
    append: Sequence[str] = (),
    fallback: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> NotebookSetup:
    """A notebook's variations, components and recorded names: its suite section's, or the run's.

    Components: the front end's explicit ones, else the section's, else ``fallback`` (the
    plugin's ini setting).  Recorded names: the section's, then ``record``'s (``GLOB:name``
    globs relative to the suite's folder, else to ``base``).  Raises
    :class:`~pytest_millrun.core.params.ParamsError` for a notebook no section takes.
    """
    if not isinstance(variations, Suite):
        relative = os.path.relpath(notebook, base).replace(os.sep, "/")
        return NotebookSetup(
            tuple(variations),
            pick_components(prepend, None, fallback[0]),
            pick_components(append, None, fallback[1]),
            record.for_notebook(relative),
        )
    section = variations.section_for(notebook)
    return NotebookSetup(
        tuple(section.variations),
        pick_components(prepend, section.prepend, fallback[0]),
        pick_components(append, section.append, fallback[1]),
        record.for_notebook(variations.relative(notebook), section.record),
        section.inputs,
        section.glob,
        section.ignore,
    )


def plan_notebook(
    notebook: Path,
    setup: NotebookSetup,
    data: dict[str, Any] | None,
    *,
    output_root: Path,
    folder: Path,
    kernel_name: str | None,
    strict_params: bool,
    words: PlanWords = PlanWords(),
) -> tuple[list[Job], str | None]:
    """Every job of one notebook, selected or not, and the warning its parameters deserve.

    The one planning step of every front end: the API and the CLI call it for each
    discovered notebook, the plugin's collector for its file.  ``data`` is the
    notebook's JSON, None when it cannot be read (its own run then says so).
    Raises :class:`UndeclaredParameterError` (strict), ``ParameterNameError``, a
    ``ValueError`` when recording needs a Python kernel the notebook lacks, and
    ``OutputPathError`` for an output folder that cannot be one.
    """
    warning = None
    if data is not None:
        if setup.record and kernel_name is None and not takes_python_parameters(data):
            raise ValueError(record_needs_python(notebook, data, words.record))
        keys = (key for variation in setup.variations for key in variation)
        warning = check_parameters(
            notebook, data, keys, strict=strict_params, strict_flag=words.strict
        )
    check_output_folder(output_root / folder, words.output_dir)
    named = name_variations(notebook.stem, setup.variations, setup.prepend, setup.append)
    jobs = [
        Job(
            notebook,
            variation,
            name.id,
            safe_output_path(output_root, folder, name.filename),
            setup.record,
            cache_inputs=setup.inputs,
            cache_ignore=setup.ignore,
        )
        for name, variation in zip(named, setup.variations, strict=False)
    ]
    return jobs, warning


def first_collision(
    planned: Iterable[tuple[str, Path]], inputs: Iterable[Path]
) -> Collision | None:
    """The first planned output that is an input notebook or another run's output, if any.

    ``planned`` pairs each run's label (as the front end names it) with its output.
    """
    notebooks = {path.resolve() for path in inputs}
    owners: dict[Path, str] = {}
    for label, output in planned:
        if output in notebooks:
            return Collision(output, label)
        other = owners.setdefault(output, label)
        if other != label:
            return Collision(output, label, other)
    return None


def plan_run(config: RunConfig, variations: Sequence[Variation] | Suite) -> list[Job]:
    """Every job of a run, in a deterministic order, with collisions refused.

    With a :class:`Suite` each notebook gets its own section's variations,
    components and recorded names; the config's ``prepend``/``append`` win over
    the suite's where not empty, and its ``record``'s names add to its.  Its
    ``text_notebooks`` globs (relative to the folder) name text files that are
    notebooks without a jupytext header.  Recording is refused here for a notebook
    whose kernel cannot take the Python that reads variables.
    """
    assert config.notebook_dir_or_file is not None  # the command's and the API's first argument
    target = Path(config.notebook_dir_or_file)
    output_dir, recursive = config.output_dir, config.recursive
    include_glob_pattern = config.include
    out = Path(output_dir) if output_dir is not None else None
    notebooks = discover_notebooks(
        target,
        recursive=recursive,
        include_glob_pattern=include_glob_pattern,
        exclude_glob_pattern=config.exclude,
        output_dirs=[out] if out is not None and out.resolve() != target.resolve() else [],
        text_notebooks=config.text_notebooks,
    )
    if not notebooks:
        pattern = include_glob_pattern or "*.ipynb and text notebooks"
        raise FileNotFoundError(
            f"No notebooks found in {target} (pattern {pattern}"
            f"{', recursively' if recursive else ''}). Check the path and the glob patterns, "
            f"or pass --recursive for notebooks in subfolders."
        )
    base = notebook_folder(target)
    jobs: list[Job] = []
    used_globs: list[str | None] = []
    for notebook in map(absolute, notebooks):
        setup = notebook_setup(
            notebook, variations, record=config.record, base=base,
            prepend=config.prepend, append=config.append,
        )  # fmt: skip
        used_globs.append(setup.glob)
        try:
            data: dict[str, Any] | None = read_notebook(notebook)
        except NotebookError:
            data = None  # fails as its own job, with the same message, and the others still run
        root, folder = (out, mirrored_folder(notebook, base)) if out else (notebook.parent, Path())
        planned, warning = plan_notebook(
            notebook, setup, data, output_root=root, folder=folder,
            kernel_name=config.kernel_name, strict_params=config.strict_params,
        )  # fmt: skip
        if warning:
            warnings.warn(MillrunParameterWarning(warning), stacklevel=3)
        jobs += planned
    _refuse_collisions(jobs)
    if isinstance(variations, Suite) and variations.is_suite:
        for _, message in variations.unmatched_globs(used_globs):
            warnings.warn(MillrunSuiteWarning(message), stacklevel=3)
    return jobs


def planned_outputs(jobs: Iterable[Job]) -> list[tuple[Path, Path]]:
    """(notebook, output) of every job, as :mod:`.stale_outputs` takes them."""
    return [(job.notebook, job.output) for job in jobs]


def _refuse_collisions(jobs: Sequence[Job]) -> None:
    labels = [(f"{job.notebook.name} [{job.variation_id}]", job.output) for job in jobs]
    collision = first_collision(labels, [job.notebook for job in jobs])
    if collision is not None and collision.other is None:
        raise ValueError(
            f"{collision.label} would write its output over the input notebook "
            f"{collision.output}. Choose an output_dir or other components."
        )
    for job in jobs:
        try:
            check_output_target(job.notebook, job.output)
        except OverwriteError as exc:
            raise ValueError(str(exc)) from None
    if collision is not None:
        raise ValueError(
            f"{collision.other} and {collision.label} would both write {collision.output}. "
            f"Add a prepend/append component that tells them apart."
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
