"""Live progress and cell output as they come, in a real terminal (a pty) and redirected:
pytest ``-n 0``, ``-n 2`` (the xdist controller draws what its workers run) and the command."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from millrun_testing import wait_until, write_notebook, write_params

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--millrun", "nbs"]
MILLRUN = [sys.executable, "-m", "pytest_millrun"]
SLOW = ["x = 1", "import time\ntime.sleep(3)"]  # with the parameters cell: cell 3/3 sleeps
TALKING = ["print('first line', flush=True)\nimport time\ntime.sleep(3)\nprint('last line')"]


class Screen:
    """A command on a real pseudo-terminal of 120 x 40: everything it wrote, as it came."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {**os.environ, "TERM": "xterm"}
        env.pop("COLUMNS", None)
        self.process = subprocess.Popen(
            args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env,
            start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.data = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the terminal's other side closed
                return
            if not chunk:
                return
            self.data += chunk

    @property
    def text(self) -> str:
        return bytes(self.data).decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        return wait_until(
            lambda: re.search(pattern, self.text), timeout,
            lambda: f"{pattern!r} on the screen, which shows:\n{self.text[-3000:]!r}",
        )  # fmt: skip

    def finish(self, timeout: float = 120) -> str:
        self.process.wait(timeout)
        self.reader.join(10)
        return self.text

    def close(self) -> None:
        if self.process.poll() is None:  # the group this test started, and only it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        self.reader.join(10)
        with contextlib.suppress(OSError):
            os.close(self.master)


@pytest.fixture
def screen(tmp_path: Path) -> Iterator[type[Screen]]:
    started: list[Screen] = []

    class Started(Screen):
        def __init__(self, args: list[str], cwd: Path = tmp_path) -> None:
            super().__init__(args, cwd)
            started.append(self)

    yield Started
    for one in started:
        one.close()


def test_pytest_shows_the_running_cell_and_its_age_on_a_terminal(
    tmp_path: Path, screen: type[Screen]
) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", SLOW)
    shown = screen([*PYTEST, "-n", "0"])
    shown.wait_for(r"nbs/slow\.ipynb::slow\[0\] cell 3/3 [1-9]s")  # its age moves
    text = shown.finish()
    assert "1 passed" in text
    assert shown.process.returncode == 0


def test_under_xdist_the_controller_shows_every_worker_s_running_cell(
    tmp_path: Path, screen: type[Screen]
) -> None:
    for name in ("slow_a", "slow_b"):
        write_notebook(tmp_path / "nbs" / f"{name}.ipynb", ["x = 1", "import time\ntime.sleep(4)"])
    shown = screen([*PYTEST, "-n", "2"])
    line = shown.wait_for(r"slow_\w\[0\] cell 3/3 \d+s \| [^\r\n]*slow_\w\[0\] cell 3/3 \d+s")
    assert {"slow_a[0]", "slow_b[0]"} <= set(re.findall(r"slow_\w\[0\]", line.group(0)))
    text = shown.finish()
    assert "2 passed" in text


def test_the_command_shows_the_running_cells_in_its_bar(
    tmp_path: Path, screen: type[Screen]
) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", SLOW)
    write_params(tmp_path / "params.json", [{"x": 2}])
    shown = screen([*MILLRUN, "nbs", "params.json", "--output-dir", "out"])
    shown.wait_for(r"running=1 \| slow\.ipynb \[0\] cell 4/4 [1-9]s")  # parameters injected
    text = shown.finish()
    assert "1 passed, 0 failed" in text


def test_quiet_pytest_shows_no_progress(tmp_path: Path, screen: type[Screen]) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", SLOW)
    shown = screen([*PYTEST, "-n", "0", "-q"])
    text = shown.finish()
    assert "1 passed" in text
    assert "cell 3/3" not in text


@pytest.mark.parametrize("workers", ["0", "2"])
def test_cell_output_appears_on_the_terminal_before_the_notebook_ends(
    tmp_path: Path, screen: type[Screen], workers: str
) -> None:
    write_notebook(tmp_path / "nbs" / "talk.ipynb", TALKING)
    shown = screen([*PYTEST, "-n", workers, "--millrun-log-output"])
    shown.wait_for(r"\[nbs/talk\.ipynb::talk\[0\]\] first line")
    assert "last line" not in shown.text
    text = shown.finish()
    assert "[nbs/talk.ipynb::talk[0]] last line" in text
    assert "1 passed" in text


def test_the_command_s_log_output_comes_before_the_notebook_ends(
    tmp_path: Path, screen: type[Screen]
) -> None:
    write_notebook(tmp_path / "nbs" / "talk.ipynb", TALKING)
    write_params(tmp_path / "params.json", [{"x": 2}])
    shown = screen([*MILLRUN, "nbs", "params.json", "--output-dir", "out", "--log-output"])
    shown.wait_for(r"\[talk\.ipynb \[0\]\] first line")
    assert "last line" not in shown.text
    assert "[talk.ipynb [0]] last line" in shown.finish()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_redirected_output_has_the_cells_lines_and_no_cursor_moves(
    tmp_path: Path, workers: str
) -> None:
    write_notebook(tmp_path / "nbs" / "talk.ipynb", TALKING)
    done = subprocess.run(
        [*PYTEST, "-n", workers, "--millrun-log-output"], cwd=tmp_path, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "[nbs/talk.ipynb::talk[0]] first line\n" in out
    assert "[nbs/talk.ipynb::talk[0]] last line\n" in out
    assert "\r" not in out
    assert "\x1b" not in out


def test_the_command_s_redirected_output_has_no_cursor_moves(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "talk.ipynb", TALKING)
    write_params(tmp_path / "params.json", [{"x": 2}])
    done = subprocess.run(
        [*MILLRUN, "nbs", "params.json", "--output-dir", "out", "--log-output"], cwd=tmp_path,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    both = done.stdout + done.stderr
    assert "[talk.ipynb [0]] first line\n" in both
    assert "\r" not in both
    assert "\x1b" not in both


@pytest.mark.parametrize("workers", ["0", "2"])
def test_redirected_pytest_says_what_still_runs_at_each_heartbeat(
    tmp_path: Path, workers: str
) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", SLOW)
    env = {**os.environ, "MILLRUN_HEARTBEAT_SECONDS": "1"}  # a minute, shortened
    done = subprocess.run(
        [*PYTEST, "-n", workers], cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "millrun: still running: nbs/slow.ipynb::slow[0] (cell 3/3, " in done.stdout
    assert "\r" not in done.stdout
    assert "\x1b" not in done.stdout


def test_the_command_without_a_bar_says_what_still_runs_at_each_heartbeat(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", SLOW)
    write_params(tmp_path / "params.json", [{"x": 2}])
    env = {**os.environ, "MILLRUN_HEARTBEAT_SECONDS": "1"}
    done = subprocess.run(
        [*MILLRUN, "nbs", "params.json", "--output-dir", "out"], cwd=tmp_path,
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "millrun: still running: slow.ipynb [0] (cell 4/4, " in done.stderr
