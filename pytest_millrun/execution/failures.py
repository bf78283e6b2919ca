"""Phrasing a failed execution for a person: its headline, its report and the advice in it.

Kept apart from running notebooks (:mod:`pytest_millrun.execution.execute`) so that every
front end phrases a failure the same way, and names its own options in the
advice: the front end passes :class:`OptionNames`, never a hard-coded flag.
Nothing here starts a kernel or imports papermill at module level.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_millrun.core.data import Failure, OptionNames
from pytest_millrun.core.discovery import NotebookError, read_notebook_json
from pytest_millrun.core.params import Variation
from pytest_millrun.core.text import (
    cell_words,
    exception_words,
    first_line,
    indent,
    sentence,
    short_params,
)
from pytest_millrun.core.values import report_lines

if TYPE_CHECKING:
    from pytest_millrun.core.data import ExecutionResult


def format_failure(result: ExecutionResult) -> str:
    """The plain-text failure report shared by pytest's ``repr_failure`` and the CLI."""
    error = result.error
    assert error is not None
    lines = [error.headline if error.ename or error.kind == "cell" else error.message, ""]
    if error.source:
        lines += ["Cell source:", indent(error.source), ""]
    if error.traceback:
        lines += ["Traceback:", indent("\n".join(error.traceback)), ""]
    if error.output:
        lines += ["The cell printed (last lines):", indent(error.output), ""]
    if error.kind != "cell" and error.ename:
        lines += [error.message, ""]
    lines += report_lines(result.recorded, result.record_notes)
    lines.append(f"Notebook:  {result.notebook}")
    lines.append(f"Variation: [{result.variation_id}] {short_params(result.parameters)}")
    if isinstance(result.output, str) or (result.output is not None and result.output.exists()):
        lines.append(f"Output:    {result.output}")
    return "\n".join(lines)


def cell_failure(exc: Any, saved: Path | None = None) -> Failure:
    """A ``PapermillExecutionError``: the exception a cell raised, where, and its traceback.

    A cell can fail without an error output (IPython prints a ``UsageError`` for an
    unknown magic instead), and papermill then has no text for it: the last line
    the cell printed, read from the ``saved`` notebook, stands in for it.
    """
    from papermill.exceptions import strip_color

    evalue, printed = exc.evalue, ""
    if not str(evalue).strip() and not exc.traceback and saved is not None:
        printed = printed_lines(saved, exc.cell_index)
        evalue = sentence(printed.splitlines()[-1]) if printed else evalue
    return Failure(
        kind="cell",
        message=exception_words(exc.ename, evalue),
        ename=exc.ename,
        evalue=evalue,
        cell_index=exc.cell_index,
        exec_count=exc.exec_count,
        source=exc.source,
        traceback=tuple(str(strip_color(line)) for line in exc.traceback),
        output=printed,
    )


#: The tag of the cells papermill inserts to point at a failure (not the notebook's own).
PAPERMILL_MARKER_TAG = "papermill-error-cell-tag"


def notebook_cells(path: Path) -> list[dict[str, Any]]:
    """A saved output's own cells, without papermill's error markers ([] if unreadable)."""
    try:
        cells = read_notebook_json(path)["cells"]
    except (NotebookError, KeyError):
        return []
    return [
        cell
        for cell in cells
        if isinstance(cell, dict)
        and PAPERMILL_MARKER_TAG not in (cell.get("metadata") or {}).get("tags", ())
    ]


def printed_lines(path: Path, cell_index: int | None, lines: int = 8) -> str:
    """The last lines cell ``cell_index`` of the saved notebook wrote to stdout and stderr."""
    cells = notebook_cells(path)
    if cell_index is None or not 0 <= cell_index < len(cells):
        return ""
    text = "".join(
        "".join(output.get("text", "")) if output.get("output_type") == "stream" else ""
        for output in cells[cell_index].get("outputs", ())
    )
    return "\n".join(line.rstrip() for line in text.strip().splitlines()[-lines:])


def early_exit_note(notebook: Path, cells: Sequence[Any]) -> str | None:
    """What a run that passed because a cell raised ``SystemExit(0)`` left out, if anything.

    papermill counts ``sys.exit()`` and ``SystemExit(0)`` as success, as a script's exit
    status would, but the cells after it never run; say how many.
    """
    for index, cell in enumerate(cells):
        stopped = any(
            output.get("output_type") == "error" and output.get("ename") == "SystemExit"
            for output in cell.get("outputs", ())
        )
        if not stopped:
            continue
        skipped = sum(
            1
            for later in cells[index + 1 :]
            if later.get("cell_type") == "code"
            and (later.get("metadata") or {}).get("papermill", {}).get("status") == "pending"
        )
        if not skipped:
            return None
        where = cell_words(index, cell.get("execution_count"))
        return (
            f"{notebook.name}: stopped by SystemExit{where}; {skipped} later "
            f"cell{'s' if skipped != 1 else ''} not run."
        )
    return None


def output_folder_failure(exc: OSError, names: OptionNames) -> Failure:
    """The output's folder cannot be made: nothing ran."""
    return Failure(
        "error",
        f"The output folder {exc.filename} cannot be created: {type(exc).__name__}: "
        f"{exc.strerror or exc}. Nothing ran. Choose a writable output folder with "
        f"{names.output_dir}.",
        ename=type(exc).__name__,
        evalue=f"cannot create the output folder {exc.filename}: {exc.strerror or exc}",
    )


class KernelFacts(Protocol):
    """What the phrasing needs to know about the kernel of the failed execution."""

    started: bool
    timed_out: bool

    def alive(self) -> bool: ...
    def exit_description(self) -> str: ...
    def log_tail(self, lines: int = 8) -> str: ...


def explain(
    exc: Exception,
    *,
    notebook: Path,
    partial: Path,
    kernel: KernelFacts,
    kernel_name: str | None,
    parameters: Variation,
    notebook_timeout: float | None,
    names: OptionNames,
) -> Failure:
    """Phrase an exception raised outside a cell's own code as one paragraph with a fix."""
    from jupyter_client.kernelspec import NoSuchKernel

    cell = running_cell(partial)
    where = cell_words(cell.get("cell_index"), cell.get("exec_count"))
    stopped = _stopped(exc, kernel, cell, where, notebook_timeout, names)
    if stopped is not None:
        return stopped
    if isinstance(exc, NoSuchKernel):
        return no_such_kernel(str(exc.name), notebook, None, names)
    if isinstance(exc, OSError) and exc.filename and Path(exc.filename).parent == partial.parent:
        return Failure(
            "error",
            f"Writing the output notebook failed{where or ' before the first cell'}: "
            f"{type(exc).__name__}: {exc.strerror or exc} ({exc.filename}). Check that the "
            f"output folder is writable and has room, or choose another with "
            f"{names.output_dir}.",
            ename=type(exc).__name__,
            evalue=f"cannot write {exc.filename}: {exc.strerror or exc}",
            **cell,
        )
    if isinstance(exc, UnicodeError):
        keys = unencodable_keys(parameters)
        culprit = f"parameter {', '.join(map(repr, keys))}" if keys else "a parameter value"
        return Failure(
            "error",
            f"The {culprit} of this variation cannot be written as UTF-8 "
            f"({sentence(first_line(str(exc)))}), so neither the notebook nor the kernel can "
            f"take it. Fix the value (a lone surrogate such as '\\ud800' comes from text "
            f"decoded with errors='surrogateescape').",
            ename=type(exc).__name__,
            evalue=f"{culprit} cannot be encoded as UTF-8",
        )
    if not cell and kernel.started and not kernel.alive():  # the kernel ended before a cell
        return Failure(
            "kernel-start",
            f"The kernel{f' {kernel_name!r}' if kernel_name else ''} could not start: "
            f"{type(exc).__name__}: {sentence(first_line(str(exc)))} "
            f"({kernel.exit_description()}). Check that the kernel's environment can import "
            f"ipykernel (python -m ipykernel_launcher --help).{kernel.log_tail()}",
            ename=type(exc).__name__,
            evalue=str(exc),
        )
    if not cell and not kernel.started:
        stage = "before its kernel started"
    else:
        stage = "outside its cells" if cell else "before its first cell"
    return Failure(
        "error",
        f"Running the notebook failed {stage}{where}: {type(exc).__name__}: "
        f"{sentence(first_line(str(exc)))}.{kernel.log_tail() if kernel.started else ''}",
        ename=type(exc).__name__,
        evalue=str(exc),
        **cell,
    )


def _stopped(
    exc: Exception,
    kernel: KernelFacts,
    cell: dict[str, Any],
    where: str,
    notebook_timeout: float | None,
    names: OptionNames,
) -> Failure | None:
    """A run a time limit or the kernel's death stopped, or None for another failure."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    if kernel.timed_out:
        return Failure(
            "timeout",
            f"Timed out after {notebook_timeout:g} s{where}: the whole-notebook time limit "
            f"stopped the kernel. The cells that ran are saved in the output. Raise the limit "
            f"({names.notebook_timeout}) or make the notebook faster.",
            ename="TimeoutError",
            evalue=f"timed out after {notebook_timeout:g} s{where}",
            **cell,
        )
    if isinstance(exc, CellTimeoutError):
        return Failure(
            "timeout",
            f"Timed out{where}: the cell ran longer than the per-cell limit "
            f"({sentence(first_line(str(exc)))}). Raise the limit ({names.timeout}) "
            f"or make the cell faster.",
            ename="TimeoutError",
            evalue=f"the per-cell time limit ran out{where}",
            **cell,
        )
    if isinstance(exc, DeadKernelError) and kernel.started:
        return Failure(
            "kernel-died",
            f"The kernel died{where} ({kernel.exit_description()}). Everything up to that "
            f"cell is saved in the output. A kernel dies when the code calls os._exit, "
            f"crashes in native code or runs out of memory.{kernel.log_tail()}",
            ename="DeadKernelError",
            evalue=f"the kernel died{where} ({kernel.exit_description()})",
            **cell,
        )
    return None


def missing_kernel(
    kernel_name: str | None, notebook: Path, language: str | None, names: OptionNames
) -> Failure | None:
    """The failure of a notebook whose kernel is not installed, or None when it is."""
    from jupyter_client.kernelspec import KernelSpecManager

    if not kernel_name:
        return None
    if kernel_name.lower() in KernelSpecManager().find_kernel_specs():
        return None  # a broken one fails as it starts, saying why
    return no_such_kernel(kernel_name, notebook, language, names)


def no_such_kernel(
    kernel_name: str | None, notebook: Path, language: str | None, names: OptionNames
) -> Failure:
    """No kernel of that name (None: none for the language): the advice fits the language.

    ``ipykernel install --name r`` would install a Python kernel named ``r``,
    so for another language the advice is a kernel of that language, and the
    installed kernels of that language are named.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    with warnings.catch_warnings():  # bash_kernel's spec has a key traitlets deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        specs = KernelSpecManager().get_all_specs()
    installed = ", ".join(sorted(specs)) or "none"
    language = language or "python"
    if is_python(language):
        advice = (
            f"Install one (python -m ipykernel install --user --name {kernel_name}) or choose "
            f"an installed kernel with {names.kernel}."
        )
    else:
        same = sorted(
            name
            for name, spec in specs.items()
            if str(spec.get("spec", {}).get("language", "")).lower() == language.lower()
        )
        example = KERNELS_BY_LANGUAGE.get(language.lower(), "")
        advice = (
            f"It is written in {language}: install a Jupyter kernel for {language}"
            f"{f', e.g. {example}' if example else ''}, or choose an installed {language} kernel "
            f"with {names.kernel} ({', '.join(same) if same else 'none is installed'})."
        )
    missing = f"named {kernel_name!r}" if kernel_name else f"for {language}"
    return Failure(
        "kernel-start",
        f"No kernel {missing} is installed, so {notebook.name} cannot start "
        f"(installed: {installed}). {advice}",
        ename="NoSuchKernel",
        evalue=kernel_name or language,
    )


def is_python(language: str | None) -> bool:
    """Whether a notebook's language is Python, as papermill and the kernelspecs spell it."""
    return (language or "python").lower() in ("python", "python3", "ipython", "ipython3")


#: A well-known Jupyter kernel for a language, named in the advice for a missing one.
KERNELS_BY_LANGUAGE = {
    "r": "IRkernel",
    "julia": "IJulia",
    "bash": "bash_kernel",
    "sh": "bash_kernel",
    "scala": "almond",
    "c++": "xeus-cling",
    "javascript": "IJavascript",
    "typescript": "tslab",
    "go": "gophernotes",
    "rust": "evcxr_jupyter",
    "matlab": "jupyter-matlab-proxy",
    "sas": "saspy",
    "powershell": "PowerShell_kernel",
}


def running_cell(partial: Path) -> dict[str, Any]:
    """The cell that was running when execution stopped: the last one papermill started.

    Its execution count is the one the kernel gave it, or, when the kernel was
    gone before saying, the one it was about to give: one more than the last
    count before it (every started code cell takes the next count in a fresh
    kernel).  So a crash in one cell is named the same way every time.
    """
    try:
        cells = read_notebook_json(partial)["cells"]
    except (NotebookError, KeyError):
        return {}
    for index in range(len(cells) - 1, -1, -1):
        meta = cells[index].get("metadata", {}).get("papermill", {})
        if meta.get("start_time"):
            source = cells[index].get("source", "")
            count = cells[index].get("execution_count")
            if count is None:
                earlier = [c.get("execution_count") or 0 for c in cells[:index]]
                count = max(earlier, default=0) + 1
            return {
                "cell_index": index,
                "exec_count": count,
                "source": "".join(source) if isinstance(source, list) else source,
            }
    return {}


def unencodable_keys(parameters: Mapping[str, Any]) -> list[str]:
    """The parameters whose value holds text that UTF-8 cannot encode (lone surrogates)."""

    def encodable(value: Any) -> bool:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
            return True
        if isinstance(value, Mapping):
            return all(encodable(k) and encodable(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(encodable(v) for v in value)
        return True

    return [key for key, value in parameters.items() if not encodable(key) or not encodable(value)]
