"""Benchmark pytest-millrun against a plain papermill loop, in one command.

    python benchmarks/bench.py [--quick] [--corpus a|b|all] [--modes spawn fork]

Why this exists: the plugin and the CLI add machinery around papermill (pytest
collection, xdist or a process pool, a private kernel sandbox per run).  The
question a user asks is "what does that machinery cost per notebook run, and
what does parallelism buy back?".  So every row runs the *same* generated
corpus, and the table compares each runner's wall time with the baseline of
calling ``papermill.execute_notebook`` in a loop.

The time spent inside cells is read back from the executed notebooks
(papermill's ``metadata.papermill.duration``), so the overhead columns are
what the harness costs on top of the user's own code, whatever that code is.

The runner table is keyed by a *kernel start mode* as well, so that a future
``--millrun-kernel-start fork|spawn`` (CLI ``--kernel-start``) option is one
more column value rather than a new script; modes the installed millrun does
not offer are reported and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import psutil  # type: ignore[import-untyped, unused-ignore]

HERE = Path(__file__).resolve().parent
DEFAULT_WORKDIR = HERE / ".corpus"
DEFAULT_RESULTS = HERE / "results" / "latest.md"
MiB = 1024 * 1024
KERNEL_MARKER = "ipykernel_launcher"
TEMPLATE_MARKER = "millrun-fork-template"
KERNEL_MODES = ("spawn", "fork")
#: The mode every millrun without ``--kernel-start`` uses, so it needs no flag.
IMPLICIT_MODE = "spawn"
SAMPLE_SECONDS = 0.05


# --------------------------------------------------------------------------- corpora


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate: how many notebooks, how many variations, and their code."""

    key: str
    notebooks: int
    variations: int
    code: str
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Corpus:
    """A generated corpus on disk: a folder of notebooks plus a params file."""

    key: str
    folder: Path
    params: Path
    notebooks: tuple[Path, ...]
    variations: int
    needs: tuple[str, ...] = ()

    @property
    def executions(self) -> int:
        return len(self.notebooks) * self.variations


TRIVIAL_CODE = "y = x * 2 + 1\nassert y == 2 * x + 1\ny"
PANDAS_CODE = """\
import numpy as np
import pandas as pd

frame = pd.DataFrame({"a": np.arange(100) * x, "b": np.ones(100)})
total = float((frame["a"] * frame["b"]).sum())
assert total == 4950.0 * x
total"""


def corpus_specs(quick: bool) -> dict[str, CorpusSpec]:
    """Full sizes give stable per-execution numbers; --quick only proves the script works."""
    return {
        "a": CorpusSpec("a", 2 if quick else 4, 4 if quick else 25, TRIVIAL_CODE),
        "b": CorpusSpec(
            "b", 1 if quick else 2, 2 if quick else 10, PANDAS_CODE, ("numpy", "pandas")
        ),
    }


def write_corpus(spec: CorpusSpec, folder: Path) -> Corpus:
    """Write the notebooks, ``params.json`` and an empty ``pytest.ini``.

    The ``pytest.ini`` pins pytest's rootdir and inifile to the corpus, so the
    repository's own pytest configuration (or any other one above the corpus
    folder) never changes what the plugin rows do.
    """
    import nbformat

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    notebooks = []
    for index in range(spec.notebooks):
        nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.metadata["language_info"] = {"name": "python"}
        nb.cells = [
            nbformat.v4.new_code_cell("x = 0", metadata={"tags": ["parameters"]}),  # type: ignore[no-untyped-call]
            nbformat.v4.new_code_cell(spec.code),  # type: ignore[no-untyped-call]
        ]
        path = folder / f"nb{spec.key}{index:02d}.ipynb"
        nbformat.write(nb, str(path))  # type: ignore[no-untyped-call]
        notebooks.append(path)
    params = folder / "params.json"
    params.write_text(json.dumps({"x": list(range(spec.variations))}), encoding="utf-8")
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return Corpus(spec.key, folder, params, tuple(notebooks), spec.variations, spec.needs)


def missing_modules(names: Sequence[str]) -> list[str]:
    """Modules the kernel cannot import (kernels run this interpreter: ``python`` in the spec)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


# --------------------------------------------------------------------------- memory


@dataclass
class TreeSampler:
    """Polls the summed PSS of a process tree from a thread, keeping the peaks.

    Polling (every ~50 ms) is the only way to see the kernels and pool workers,
    which come and go far too quickly for a one-off measurement.  PSS
    (proportional set size) charges each shared page to its sharers in equal
    parts, so the sums count libraries, and a forked kernel's pages shared with
    its template, once; RSS sums would count them once per process.  A process
    counts as a kernel when its command line names ``ipykernel_launcher`` or its
    parent is a fork template (a kernel a moment after its fork still shows the
    template's command line); everything else (pytest, xdist workers, fork
    templates, the CLI's pool, or this script for the in-process baseline) is
    "harness".
    """

    root_pid: int
    interval: float = SAMPLE_SECONDS
    peak_total: int = 0
    peak_harness: int = 0
    kernels: dict[int, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
            processes = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        total = harness = 0
        commands: dict[int, str] = {}
        for process in processes:
            # Not cached: a child between fork and exec still shows its parent's cmdline.
            with contextlib.suppress(psutil.Error):
                commands[process.pid] = " ".join(process.cmdline())
        for process in processes:
            try:
                pss = process.memory_full_info().pss
                parent = commands.get(process.ppid(), "")
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total += pss
            if KERNEL_MARKER in commands.get(process.pid, "") or TEMPLATE_MARKER in parent:
                self.kernels.setdefault(process.pid, process)
            else:
                harness += pss
        self.peak_total = max(self.peak_total, total)
        self.peak_harness = max(self.peak_harness, harness)

    def reap_leftover_kernels(self, grace: float = 3.0) -> int:
        """Kill kernels seen in this tree that outlived their run; return how many there were.

        Only processes this row started are touched (psutil checks each one's
        creation time, so a recycled pid is never hit).
        """
        alive = [p for p in self.kernels.values() if _running(p)]
        if not alive:
            return 0
        _, alive = psutil.wait_procs(alive, timeout=grace)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=grace)
        return len(alive)


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


# --------------------------------------------------------------------------- runners

RunnerKind = Literal["baseline", "pytest", "cli"]


@dataclass(frozen=True)
class Runner:
    """One way of running a corpus.  Each (corpus, runner, mode) is a row of the table."""

    key: str
    label: str
    kind: RunnerKind
    workers: int
    #: more options; ``{run}`` is the row's own folder
    extra: tuple[str, ...] = ()
    #: the corpora it runs on (all when empty)
    corpora: tuple[str, ...] = ()
    #: modules it needs (the row is skipped without them)
    needs: tuple[str, ...] = ()

    @property
    def has_modes(self) -> bool:
        """The baseline is plain papermill: millrun's kernel start modes do not apply."""
        return self.kind != "baseline"


RUNNERS = (
    Runner("baseline", "papermill loop", "baseline", 1),
    Runner("plugin-n0", "pytest -n 0", "pytest", 0),
    Runner("plugin-n2", "pytest -n 2", "pytest", 2),
    Runner("cli-w2", "millrun --workers 2", "cli", 2),
    # the cost of recorded values and the results table: compare with pytest -n 0
    Runner("plugin-n0-record", "pytest -n 0 --millrun-record y", "pytest", 0,
           ("--millrun-record", "y"), ("a",)),
    Runner("plugin-n0-results", "pytest -n 0 --millrun-results", "pytest", 0,
           ("--millrun-results", "{run}/results.csv"), ("a",)),
    Runner("cli-dask-w2", "millrun --dask local --workers 2", "cli", 2,
           ("--dask", "local"), needs=("distributed",)),
    # the plugin on Dask (no xdist): compare with pytest -n 2 (issue 35 keeps >= 0.8x)
    Runner("plugin-dask-w2", "pytest --millrun-dask local (2 workers)", "pytest", 0,
           ("--millrun-dask", "local", "--millrun-dask-workers", "2"), ("a",),
           needs=("distributed",)),
)  # fmt: skip

#: How each front end spells the kernel start mode option.
KERNEL_START_FLAG: dict[RunnerKind, str] = {
    "pytest": "--millrun-kernel-start",
    "cli": "--kernel-start",
}


#: How each front end spells the fork template's preload option.
PRELOAD_FLAG: dict[RunnerKind, str] = {
    "pytest": "--millrun-preload",
    "cli": "--preload",
}


def millrun_command() -> list[str]:
    """The ``millrun`` script of this interpreter's environment, else the module."""
    script = Path(sys.executable).with_name("millrun")
    if script.exists():
        return [str(script)]
    found = shutil.which("millrun")
    return [found] if found else [sys.executable, "-m", "pytest_millrun"]


def kernel_start_supported() -> bool:
    """Whether this millrun knows ``--kernel-start`` (read from ``millrun --help``)."""
    try:
        help_text = subprocess.run(
            [*millrun_command(), "--help"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--kernel-start" in help_text


def build_command(
    runner: Runner, corpus: Corpus, out: Path, mode: str, flag_modes: bool
) -> list[str]:
    """The subprocess command line of a plugin or CLI row."""
    mode_args = [KERNEL_START_FLAG[runner.kind], mode] if flag_modes else []
    if flag_modes and mode == "fork" and corpus.needs:
        # the template imports the corpus's heavy modules once, not every kernel
        mode_args += [PRELOAD_FLAG[runner.kind], ",".join(corpus.needs)]
    if runner.kind == "pytest":
        return [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *(arg for name in foreign_pytest_plugins() for arg in ("-p", f"no:{name}")),
            "-q",
            "-o",
            "addopts=",
            "--rootdir",
            str(corpus.folder),
            "--millrun-params",
            str(corpus.params),
            "--millrun-output-dir",
            str(out),
            *mode_args,
            *(arg.replace("{run}", str(out.parent)) for arg in runner.extra),
            str(corpus.folder),
            "-n",
            str(runner.workers),
        ]
    if runner.kind == "cli":
        return [
            *millrun_command(),
            str(corpus.folder),
            str(corpus.params),
            "--workers",
            str(runner.workers),
            *runner.extra,
            "--no-progress",
            "--output-dir",
            str(out),
            *mode_args,
        ]
    raise ValueError(f"{runner.key} runs in-process and has no command")


def foreign_pytest_plugins() -> list[str]:
    """Entry-point pytest plugins in this environment that a fresh pytest-millrun install lacks.

    The project's own venv carries its test extra (hypothesis registers a pytest
    plugin); their start-up in every pytest process is not pytest-millrun's cost,
    so the plugin rows turn them off with ``-p no:<name>``, in both modes alike.
    """
    import importlib.metadata as metadata

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    needed: set[str] = set()
    todo = ["pytest-millrun"]
    while todo:
        name = canonical(todo.pop())
        if name in needed:
            continue
        needed.add(name)
        with contextlib.suppress(metadata.PackageNotFoundError):
            for requirement in metadata.requires(name) or ():
                if "extra ==" not in requirement:
                    todo.append(re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0])
    return sorted(
        entry.name
        for dist in metadata.distributions()
        if canonical(dist.metadata["Name"] or "") not in needed
        for entry in dist.entry_points
        if entry.group == "pytest11"
    )


def clean_env() -> dict[str, str]:
    """The environment minus the variables that would smuggle options into pytest."""
    env = dict(os.environ)
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_XDIST_AUTO_NUM_WORKERS"):
        env.pop(name, None)
    return env


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class OutputTimes:
    """What the executed notebooks say about where the time went."""

    notebooks: int
    cell_seconds: float
    notebook_overheads: tuple[float, ...]


def read_output_times(out: Path) -> OutputTimes:
    """Sum the cells' papermill durations over every output notebook under ``out``.

    A notebook's own ``metadata.papermill.duration`` runs from before its
    kernel starts to after it shuts down, so minus its cells it is that one
    execution's overhead inside papermill (kernel start, parameter injection,
    shutdown).  Pool, pytest and process start-up costs are outside it; they
    show in the wall-clock overhead column instead.
    """
    count = 0
    cell_seconds = 0.0
    overheads: list[float] = []
    for path in sorted(out.rglob("*.ipynb")):
        if path.name.startswith("."):  # a partial output left by an interrupted run
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        cells = sum(
            float(cell.get("metadata", {}).get("papermill", {}).get("duration") or 0.0)
            for cell in data.get("cells", [])
        )
        count += 1
        cell_seconds += cells
        duration = data.get("metadata", {}).get("papermill", {}).get("duration")
        if duration is not None:
            overheads.append(float(duration) - cells)
    return OutputTimes(count, cell_seconds, tuple(overheads))


@dataclass(frozen=True)
class Row:
    """One measured (corpus, runner, mode)."""

    corpus: str
    runner: Runner
    mode: str
    expected: int
    wall: float
    times: OutputTimes
    peak_total: int
    peak_harness: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.times.notebooks == self.expected


def run_baseline(corpus: Corpus, out: Path, log: Path) -> str:
    """The reference: one ``papermill.execute_notebook`` after another, in this process."""
    import papermill

    for notebook in corpus.notebooks:
        for x in range(corpus.variations):
            try:
                papermill.execute_notebook(
                    str(notebook),
                    str(out / f"{notebook.stem}-{x}.ipynb"),
                    parameters={"x": x},
                    progress_bar=False,
                )
            except Exception as exc:
                with log.open("a", encoding="utf-8") as sink:
                    sink.write(f"{notebook} x={x}: {type(exc).__name__}: {exc}\n")
                return f"{notebook.name} x={x} raised {type(exc).__name__}"
    return ""


def measure(
    corpus: Corpus,
    runner: Runner,
    mode: str,
    run_dir: Path,
    flag_modes: bool,
    timeout: float,
) -> Row:
    """Run one row and collect wall time, the output notebooks' times and peak memory."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    out = run_dir / "out"
    out.mkdir(parents=True)
    log = run_dir / "log.txt"
    error = ""
    if runner.kind == "baseline":
        sampler = TreeSampler(os.getpid())
        with sampler, stderr_to(log):
            started = time.perf_counter()
            error = run_baseline(corpus, out, log)
            wall = time.perf_counter() - started
    else:
        command = build_command(runner, corpus, out, mode, flag_modes)
        (run_dir / "command.txt").write_text(shlex.join(command) + "\n", encoding="utf-8")
        with log.open("wb") as sink:
            started = time.perf_counter()
            process = subprocess.Popen(
                command,
                cwd=corpus.folder,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a timeout can stop its whole group
            )
            sampler = TreeSampler(process.pid)
            with sampler:
                try:
                    code = process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    code = process.wait()
                    error = f"timed out after {timeout:g} s"
            wall = time.perf_counter() - started
        if code != 0 and not error:
            error = f"exit status {code}"
    leftovers = sampler.reap_leftover_kernels()
    if leftovers:
        error = "; ".join(filter(None, [error, f"{leftovers} kernel(s) outlived the run"]))
    return Row(
        corpus=corpus.key,
        runner=runner,
        mode=mode if runner.has_modes else "-",
        expected=corpus.executions,
        wall=wall,
        times=read_output_times(out),
        peak_total=sampler.peak_total,
        peak_harness=sampler.peak_harness,
        error=f"{error} (see {log})" if error else "",
    )


def median_row(found: Sequence[Row]) -> Row:
    """The run with the median wall time, or a failed one: a problem is never averaged away."""
    failed = [row for row in found if not row.ok]
    if failed:
        return failed[0]
    return sorted(found, key=lambda row: row.wall)[(len(found) - 1) // 2]


def warm_up(corpus: Corpus, run_dir: Path) -> None:
    """One untimed execution, so the first row does not pay for cold imports and disk cache."""
    import papermill

    run_dir.mkdir(parents=True, exist_ok=True)
    with stderr_to(run_dir / f"warmup-{corpus.key}.log"):
        papermill.execute_notebook(
            str(corpus.notebooks[0]),
            str(run_dir / f"warmup-{corpus.key}.ipynb"),
            parameters={"x": 0},
            progress_bar=False,
        )


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` for the in-process runs.

    Their kernels inherit this process's stderr and chat on it; the plugin and
    CLI rows already send theirs to the row's log, so the baseline does too.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


# --------------------------------------------------------------------------- reporting

COLUMNS = (
    "corpus",
    "runner",
    "mode",
    "executions",
    "wall s",
    "exec/s",
    "overhead s/exec",
    "median nb overhead s",
    "peak MiB",
    "harness MiB",
    "harness MiB/worker",
    "x baseline",
)


def table_cells(row: Row, baseline_wall: float | None) -> list[str]:
    """One row's formatted cells; a shortfall in outputs shows as found/expected."""
    executions = str(row.expected)
    if row.times.notebooks != row.expected:
        executions = f"{row.times.notebooks}/{row.expected}!"
    overhead = (row.wall - row.times.cell_seconds) / row.expected
    median = (
        f"{statistics.median(row.times.notebook_overheads):.3f}"
        if row.times.notebook_overheads
        else "n/a"
    )
    ratio = f"{baseline_wall / row.wall:.2f}" if baseline_wall else "n/a"
    return [
        row.corpus,
        row.runner.label,
        row.mode,
        executions,
        f"{row.wall:.1f}",
        f"{row.expected / row.wall:.2f}",
        f"{overhead:.3f}",
        median,
        f"{row.peak_total / MiB:.0f}",
        f"{row.peak_harness / MiB:.0f}",
        f"{row.peak_harness / MiB / max(1, row.runner.workers):.0f}",
        ratio,
    ]


def markdown_table(rows: Sequence[Row]) -> str:
    """A GitHub-flavoured table, numbers right-aligned and padded so it reads as plain text."""
    baselines = {r.corpus: r.wall for r in rows if r.runner.kind == "baseline" and r.ok}
    body = [table_cells(r, baselines.get(r.corpus)) for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in body)) for i, c in enumerate(COLUMNS)]
    numeric = [i >= 3 for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if num else ("-" * (w + 2))
            for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(COLUMNS), rule, *(line(cells) for cells in body)])


def environment_line(load_before: float) -> str:
    """Enough context to compare two results files: machine, versions, commit, load.

    The load average is there because on a small machine anything else running
    (a test suite, say) moves every number; a high one means "run it again".
    """
    import papermill

    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or commit
        )
    return (
        f"{os.cpu_count()} CPUs (1-min load {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after), Python {platform.python_version()}, "
        f"papermill {papermill.__version__}, commit {commit}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def write_report(
    path: Path,
    rows: Sequence[Row],
    notes: Sequence[str],
    argv: Sequence[str],
    load: float,
    extra: Sequence[str] = (),
) -> str:
    """The table and its context, printed and saved as Markdown."""
    command = shlex.join(["python", "benchmarks/bench.py", *argv])
    parts = [
        "# millrun benchmark",
        "",
        f"`{command}`  ",
        environment_line(load),
        "",
        markdown_table(rows) if rows else "",
    ]
    failures = [f"- {r.corpus} / {r.runner.label} / {r.mode}: {r.error}" for r in rows if r.error]
    if notes or failures:
        parts += ["", *(f"- {note}" for note in notes), *failures]
    parts += extra
    text = "\n".join(parts) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


# --------------------------------------------------------------------------- incremental runs


@dataclass(frozen=True)
class StepRow:
    """One step of the incremental sequence: its wall time and what ran or was cached."""

    step: str
    wall: float
    ran: int
    cached: int
    error: str = ""


def _pytest_step(
    corpus: Corpus, out: Path, extra: Sequence[str], log: Path, timeout: float
) -> tuple[float, dict[str, int], str]:
    """One pytest run of the corpus, its wall time and summary counts.

    ``out`` holding a ``test_trivial.py`` runs that folder instead: as many passing
    Python tests as the corpus has items, pytest's own cost per item.
    """
    target = out if (out / "test_trivial.py").exists() else corpus.folder
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
        *(arg for name in foreign_pytest_plugins() for arg in ("-p", f"no:{name}")),
        "-q", "-o", "addopts=", "--rootdir", str(target),
        "--millrun-params", str(corpus.params), "--millrun-output-dir", str(out),
        *extra, str(target),
    ]  # fmt: skip
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=corpus.folder, env=clean_env(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started, {}, f"timed out after {timeout:g} s"
    wall = time.perf_counter() - started
    with log.open("a", encoding="utf-8") as sink:
        sink.write(f"$ {shlex.join(command)}\n{done.stdout}{done.stderr}\n")
    counts = {
        word: int(number)
        for number, word in re.findall(r"(\d+) (passed|failed|cached|error|errors)\b", done.stdout)
    }
    error = "" if done.returncode in (0, 5) else f"exit status {done.returncode} (see {log})"
    return wall, counts, error


def incremental_rows(corpus: Corpus, run_dir: Path, timeout: float, repeat: int) -> list[StepRow]:
    """``pytest -n 2`` on the corpus: without the cache, then cold, warm, one code cell edited.

    Each round starts from an empty output folder; the edit (a comment appended to the
    code cell of the first notebook) is undone after the round.  Also timed: ``pytest
    -n 2`` on as many trivial passing Python tests as the corpus has items, so that
    (warm - trivial) / items is what a cache hit costs beyond pytest's own per-item cost.
    """
    steps: dict[str, list[StepRow]] = {}
    notebook = corpus.notebooks[0]
    original = notebook.read_text(encoding="utf-8")
    n2 = ["-n", "2", "--millrun-kernel-start", "fork"]
    for round_ in range(max(1, repeat)):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        log = run_dir / "log.txt"
        cached = [*n2, "--millrun-cache"]
        trivial = run_dir / "trivial"
        trivial.mkdir()
        (trivial / "test_trivial.py").write_text(
            "import pytest\n\n\n"
            f"@pytest.mark.parametrize('i', range({corpus.executions}))\n"
            "def test_trivial(i):\n    pass\n",
            encoding="utf-8",
        )
        plan = [
            ("pytest -n 2 (no cache)", run_dir / "plain", n2),
            (f"pytest -n 2 on {corpus.executions} trivial Python tests", trivial, n2),
            ("--millrun-cache, cold", run_dir / "out", cached),
            ("--millrun-cache, warm (nothing changed)", run_dir / "out", cached),
            ("--millrun-cache, 1 code cell of 1 notebook edited", run_dir / "out", cached),
        ]
        try:
            for step, out, extra in plan:
                if step.endswith("edited"):
                    edited = json.loads(original)
                    edited["cells"][1]["source"] = (
                        "".join(edited["cells"][1]["source"]) + "\n# edited"
                    )
                    notebook.write_text(json.dumps(edited), encoding="utf-8")
                print(
                    f"[{corpus.key}] {step} (round {round_ + 1}) ...", file=sys.stderr, flush=True
                )
                wall, counts, error = _pytest_step(corpus, out, extra, log, timeout)
                ran = counts.get("passed", 0) + counts.get("failed", 0)
                row = StepRow(step, wall, ran, counts.get("cached", 0), error)
                print(
                    f"    {wall:.1f} s, ran {row.ran}, cached {row.cached} {error}", file=sys.stderr
                )
                steps.setdefault(step, []).append(row)
        finally:
            notebook.write_text(original, encoding="utf-8")
    return [
        sorted(found, key=lambda r: (bool(r.error), r.wall))[(len(found) - 1) // 2]
        for found in steps.values()
    ]


def incremental_table(rows: Sequence[StepRow], items: int) -> str:
    """The steps, each against the cold run, and the targets of issue 22."""

    def wall(word: str) -> float | None:
        return next((r.wall for r in rows if word in r.step), None)

    cold, warm, edited = wall("cold"), wall("warm"), wall("edited")
    collect, plain = wall("trivial"), wall("no cache")
    lines = ["| step | wall s | ran | cached | x cold |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r.wall / cold:.2f}" if cold else "n/a"
        ran = "-" if "trivial" in r.step else str(r.ran)
        lines.append(f"| {r.step} | {r.wall:.1f} | {ran} | {r.cached} | {ratio} |")
    notes = []
    if cold and warm is not None:
        target = max(0.1 * cold, 3.0)
        notes.append(f"warm: {warm:.1f} s; target at most max(10% of cold, 3 s) = {target:.1f} s")
    if cold and edited is not None:
        notes.append(f"one notebook edited: {edited / cold:.0%} of cold; target at most 35%")
    if warm is not None and collect is not None:
        per_item = (warm - collect) / items * 1000
        notes.append(
            f"a cache hit costs {per_item:.1f} ms per item beyond pytest's own (warm minus the "
            f"trivial tests, over {items} items; start-up included); target 5 ms"
        )
    if cold and plain:
        notes.append(f"cold with --millrun-cache / without: {cold / plain:.2f}")
    failures = [f"{r.step}: {r.error}" for r in rows if r.error]
    return "\n".join([*lines, "", *(f"- {n}" for n in notes + failures)])


def sweep_rows(variations: int, workdir: Path, timeout: float) -> list[StepRow]:
    """1 notebook x N variations as a user runs it (record, results, report, snapshots), twice."""
    spec = CorpusSpec("sweep", 1, variations, TRIVIAL_CODE)
    corpus = write_corpus(spec, workdir / "sweep")
    run_dir = workdir / "runs" / "sweep"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    common = [
        "-n", "2", "--millrun-cache", "--millrun-record", "y",
        "--millrun-results", str(run_dir / "results.csv"),
        "--millrun-report", str(run_dir / "report.html"),
        "--millrun-snapshots", str(run_dir / "snaps"),
    ]  # fmt: skip
    rows = []
    for step, extra in (
        (f"{variations} variations, cold (snapshots written)", ["--millrun-snapshot-update"]),
        (f"{variations} variations, warm", []),
    ):
        print(f"[sweep] {step} ...", file=sys.stderr, flush=True)
        wall, counts, error = _pytest_step(
            corpus, run_dir / "out", [*common, *extra], run_dir / "log.txt", timeout
        )
        rows.append(StepRow(step, wall, counts.get("passed", 0), counts.get("cached", 0), error))
        print(f"    {wall:.1f} s {counts} {error}", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time pytest-millrun's plugin and CLI against a plain papermill loop.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny corpora (2x4 and 1x2): a smoke run"
    )
    parser.add_argument("--corpus", choices=("a", "b", "all"), default="all")
    parser.add_argument(
        "--kernel-start-modes",
        "--modes",
        dest="modes",
        nargs="+",
        choices=KERNEL_MODES,
        default=list(KERNEL_MODES),
        help="kernel start modes to run the plugin and CLI rows with (default: both)",
    )
    parser.add_argument(
        "--runners",
        nargs="+",
        choices=[r.key for r in RUNNERS],
        default=[r.key for r in RUNNERS],
        help="which runners to time (default: all)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="where corpora and outputs go; its a/, b/ and runs/ are replaced "
        f"(default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every row this many times, in rounds, and report each row's median run "
        "(default: 1)",
    )
    parser.add_argument(
        "--incremental",
        choices=("with", "only", "no"),
        default="with",
        help="the incremental rows (pytest -n 2 --millrun-cache on corpus a: cold, warm, one "
        "cell edited): with the table (default), only them, or not",
    )
    parser.add_argument(
        "--sweep",
        type=int,
        default=0,
        metavar="N",
        help="also time 1 notebook x N variations, cold then warm, with --millrun-cache, "
        "record, results, report and snapshots (default: not run)",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds before a row is stopped"
    )
    return parser.parse_args(argv)


def plan_rows(
    runners: Sequence[Runner], modes: Sequence[str], supported: bool, notes: list[str]
) -> Iterator[tuple[Runner, str]]:
    """(runner, mode) pairs to run; a mode the installed millrun lacks becomes a note."""
    usable = []
    for mode in dict.fromkeys(modes):
        if supported or mode == IMPLICIT_MODE:
            usable.append(mode)
        else:
            notes.append(
                f"kernel start mode {mode!r} is not available: this millrun has no "
                f"--kernel-start option; its rows are skipped"
            )
    if not supported and IMPLICIT_MODE in usable:
        notes.append(
            f"no --kernel-start option: the {IMPLICIT_MODE!r} rows run without the flag "
            f"(millrun's only behaviour)"
        )
    for runner in runners:
        if not runner.has_modes:
            yield runner, "-"
        else:
            for mode in usable:
                yield runner, mode


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if missing_modules(["papermill", "nbformat", "pytest_millrun"]):
        print(
            f"papermill and pytest_millrun must be importable by {sys.executable}; "
            "run this with the project's venv python.",
            file=sys.stderr,
        )
        return 2

    load = os.getloadavg()[0]
    notes: list[str] = []
    specs = corpus_specs(args.quick)
    keys = ["a", "b"] if args.corpus == "all" else [args.corpus]
    workdir: Path = args.workdir.resolve()
    corpora: list[Corpus] = []
    for key in keys:
        missing = missing_modules(specs[key].needs)
        if missing:
            notes.append(
                f"corpus {key} skipped: {', '.join(missing)} not importable by {sys.executable}"
            )
            print(notes[-1], file=sys.stderr)
            continue
        corpora.append(write_corpus(specs[key], workdir / key))

    runners = []
    for runner in (r for r in RUNNERS if r.key in args.runners):
        missing = missing_modules(runner.needs)
        if missing:
            notes.append(f"{runner.label} skipped: {', '.join(missing)} not importable")
        else:
            runners.append(runner)
    supported = kernel_start_supported()
    plan = list(plan_rows(runners, args.modes, supported, notes))
    for note in notes:
        if not note.startswith("corpus"):
            print(note, file=sys.stderr)

    runs = workdir / "runs"
    if runs.exists():
        shutil.rmtree(runs)
    rows: list[Row] = []
    if args.repeat > 1:
        notes.append(f"each row is the median of {args.repeat} runs, taken in rounds")
    foreign = foreign_pytest_plugins()
    if foreign:
        notes.append(f"pytest plugins not part of a pytest-millrun install turned off: {foreign}")
    for corpus in corpora if args.incremental != "only" else ():
        warm_up(corpus, runs / "warmup")
        tries: dict[tuple[str, str], list[Row]] = {}
        for round_ in range(max(1, args.repeat)):
            for runner, mode in plan:
                if runner.corpora and corpus.key not in runner.corpora:
                    continue
                print(
                    f"[{corpus.key}] {runner.label} ({mode}): {corpus.executions} executions"
                    f"{f' (round {round_ + 1})' if args.repeat > 1 else ''} ...",
                    file=sys.stderr,
                    flush=True,
                )
                row = measure(
                    corpus,
                    runner,
                    mode,
                    runs / f"{corpus.key}-{runner.key}-{mode}",
                    flag_modes=supported,
                    timeout=args.timeout,
                )
                status = "ok" if row.ok else f"PROBLEM: {row.error or 'missing outputs'}"
                print(f"    {row.wall:.1f} s, {status}", file=sys.stderr, flush=True)
                tries.setdefault((runner.key, mode), []).append(row)
        rows += [median_row(found) for found in tries.values()]

    extra: list[str] = []
    steps: list[StepRow] = []
    incremental = [c for c in corpora if c.key == "a"] if args.incremental != "no" else []
    for corpus in incremental:
        found = incremental_rows(corpus, runs / "incremental", args.timeout, args.repeat)
        steps += found
        extra += [
            "",
            "## Incremental runs (corpus a, fork mode)",
            "",
            incremental_table(found, corpus.executions),
        ]
    if args.sweep:
        found = sweep_rows(args.sweep, workdir, args.timeout)
        steps += found
        extra += [
            "",
            f"## A sweep of {args.sweep} variations, pytest -n 2",
            "",
            incremental_table(found, args.sweep),
        ]
    if not rows and not steps:
        print("Nothing was run.", file=sys.stderr)
        return 1
    text = write_report(args.results, rows, notes, argv, load, extra)
    print(text)
    print(f"(written to {args.results})", file=sys.stderr)
    return 0 if all(r.ok for r in rows) and not any(r.error for r in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
