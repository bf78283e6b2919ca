"""The cache's check on object storage: a warm run's sidecars against downloading whole outputs.

A real S3 endpoint on loopback (moto's server, its own process, as the tests start it), one
notebook x N variations whose outputs each carry ``--kib`` KiB of output (a figure's worth),
run once cold with ``cache=True`` (untimed).  Then, each in the same run:

* the baseline: what a check without sidecars costs, every whole output downloaded and its
  key checked locally (``verdict_for`` on the copy, the local cache's own check);
* the floor: the same keys made with nothing read (their notebook, environment, read set);
* the check as the cache makes it before dispatch (``CacheSplit``: every sidecar fetched at
  once, each folder listed once for the objects' versions, never an output);
* the whole warm ``execute_run`` (planning, the check, results), every variation cached.

    .venv/bin/python benchmarks/storage_bench.py [--variations 200] [--kib 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; stopped (by its own PID) afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def build(folder: Path, kib: int) -> Path:
    """One notebook whose output holds ``kib`` KiB of text besides its recorded ``total``."""
    folder.mkdir(parents=True)
    nb = new_notebook(cells=[new_code_cell("x = 0"), new_code_cell(
        f"total = x * 2\nprint(''.join(chr(65 + (i * 7 + x) % 26) for i in range({kib * 1024})))"
    )])  # fmt: skip
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    nbformat.write(nb, str(folder / "calc.ipynb"))
    return folder


def median_of(repeat: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variations", type=int, default=200, help="Variations of the notebook")
    parser.add_argument("--kib", type=int, default=200, help="KiB of output in each notebook")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds; each row's median")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    import fsspec

    from pytest_millrun import execute_run
    from pytest_millrun.cache import keys, verdicts
    from pytest_millrun.config.option_table import options_of
    from pytest_millrun.config.run_config import from_api
    from pytest_millrun.dispatch.jobs import RunOptions
    from pytest_millrun.pipeline import runner
    from pytest_millrun.pipeline.cache_split import CacheSplit

    with moto_server() as endpoint, tempfile.TemporaryDirectory() as folder:
        s3 = fsspec.filesystem("s3", endpoint_url=endpoint)
        s3.mkdir("bench")
        nbs = build(Path(folder, "nbs"), args.kib)
        params = [{"x": i} for i in range(args.variations)]
        run = {"output_dir": "s3://bench/sweep", "cache": True, "record": ["total"],
               "storage_options": {"endpoint_url": endpoint}}  # fmt: skip
        started = time.perf_counter()
        cold = execute_run(nbs, params, use_multiprocessing=True, workers=2,
                           kernel_start="fork", **run)  # fmt: skip
        cold_s = time.perf_counter() - started
        assert not any(r.cached for r in cold)
        listing = s3.ls("bench/sweep", detail=True)
        outputs = sum(e["size"] for e in listing if e["name"].rpartition("/")[2][0] != ".")
        sidecars = sum(e["size"] for e in listing if e["name"].rpartition("/")[2][0] == ".")

        keywords = {o.api: o.default for o in options_of("api")}
        keywords.update(notebook_dir_or_file=nbs, bulk_params=params, **run)
        config = from_api(keywords, {})
        jobs = runner.plan(dataclasses.replace(config, cache=False)).jobs
        settings = config.cache_settings
        local = Path(folder, "copies")
        local.mkdir()

        def check(download: bool) -> float:
            """Every job's verdict; ``download``: on a whole copy of its output (the baseline)."""
            keys.forget()
            started = time.perf_counter()
            inputs = verdicts.RunInputs(settings)
            for index, job in enumerate(jobs):
                where = local / f"{index}.ipynb"
                if download:
                    s3.get_file(job.output_url, str(where))
                verdict, _ = verdicts.verdict_for(
                    job.notebook, job.variation, where, inputs, settings, kernel_name=None,
                    record=job.record, papermill_kwargs={},
                )  # fmt: skip
                assert verdict.hit == download, verdict.reasons  # no copy: "no output"
            return time.perf_counter() - started

        def split() -> float:
            """The cache's own check before dispatch (the API's and the CLI's)."""
            started = time.perf_counter()
            parted = CacheSplit(jobs, settings, RunOptions())
            assert not parted.to_run, parted.to_run[0].cache_reasons
            return time.perf_counter() - started

        def warm_run() -> float:
            started = time.perf_counter()
            results = execute_run(nbs, params, **run)
            assert all(r.cached for r in results)
            return time.perf_counter() - started

        floor = median_of(args.repeat, lambda: check(False))
        baseline = median_of(args.repeat, lambda: check(True))
        sidecar = median_of(args.repeat, split)
        warm = median_of(args.repeat, warm_run)
    n = args.variations
    print(f"1 notebook x {n} variations on moto's S3 server (loopback); outputs "
          f"{outputs / n / 1024:.0f} KiB each, sidecars {sidecars / n / 1024:.1f} KiB each; "
          f"cold run (2 workers, fork) {cold_s:.1f} s; median of {args.repeat}\n")
    print("| check of a warm run | wall s | ms/variation | storage ms/variation | "
          "KiB read/variation | x baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [
        ("keys only, nothing read (the floor: notebook, environment, reads)", floor, 0),
        ("baseline: download every whole output, check it locally", baseline, outputs),
        ("sidecar beside each output + the object's version (the cache)", sidecar, sidecars),
        ("whole warm execute_run, all cached", warm, sidecars),
    ]
    for name, seconds, read in rows:
        storage = (seconds - floor) / n * 1000
        print(f"| {name} | {seconds:.2f} | {seconds / n * 1000:.1f} | {storage:.1f} | "
              f"{read / n / 1024:.1f} | {seconds / baseline:.2f} |")


if __name__ == "__main__":
    main()
