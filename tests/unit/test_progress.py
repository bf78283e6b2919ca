"""What the live progress says: cell ages, the status line, the minute's line, output lines,
and the side channel's records between the executing and the drawing process."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_millrun.core.progress import (
    Heartbeat,
    OutputLines,
    RunningCell,
    elapsed_words,
    heartbeat_line,
    status_line,
)
from pytest_millrun.execution.progress_reader import ChannelReader
from pytest_millrun.execution.progress_sink import ChannelSink, NotebookProgress


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0.4, "0s"), (9.9, "9s"), (65, "1m 05s"), (3599, "59m 59s"), (3720, "1h 02m"), (-1, "0s")],
)
def test_elapsed_time_is_short_and_moves_every_second(seconds: float, words: str) -> None:
    assert elapsed_words(seconds) == words


def test_the_status_line_names_each_running_notebook_its_cell_and_age_oldest_first() -> None:
    entries = [RunningCell("b[0]", 2, 5, 95.0), RunningCell("a[1]", 4, 5, 91.0)]
    assert status_line(entries, 100.0, 80) == "a[1] cell 4/5 9s | b[0] cell 2/5 5s"


def test_a_status_line_too_long_for_the_terminal_is_cut_and_says_so() -> None:
    entries = [RunningCell(f"notebook_{i}[0]", 1, 3, 0.0) for i in range(5)]
    line = status_line(entries, 2.0, 40)
    assert len(line) == 40
    assert line.endswith("...")
    assert line.startswith("notebook_0[0] cell 1/3 2s | ")


def test_nothing_running_or_no_room_gives_an_empty_status_line() -> None:
    assert status_line([], 0.0, 80) == ""
    assert status_line([RunningCell("a", 1, 1, 0.0)], 0.0, 0) == ""


def test_the_heartbeat_is_due_once_a_minute_while_something_runs() -> None:
    beat = Heartbeat(start=0.0, every=60.0)
    assert not beat.due(59.0, running=True)
    assert beat.due(60.0, running=True)
    assert not beat.due(100.0, running=True)
    assert beat.due(120.0, running=True)
    assert not beat.due(500.0, running=False)  # idle: the clock starts again
    assert not beat.due(540.0, running=True)
    assert beat.due(560.0, running=True)


def test_the_heartbeat_is_a_minute_unless_the_environment_says_another_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MILLRUN_HEARTBEAT_SECONDS", raising=False)
    assert Heartbeat(0.0).every == 60.0
    monkeypatch.setenv("MILLRUN_HEARTBEAT_SECONDS", "2.5")
    assert Heartbeat(0.0).every == 2.5
    for junk in ("soon", "0", "-1"):
        monkeypatch.setenv("MILLRUN_HEARTBEAT_SECONDS", junk)
        assert Heartbeat(0.0).every == 60.0


def test_the_heartbeat_line_is_plain_text_naming_what_runs() -> None:
    line = heartbeat_line([RunningCell("nbs/a.ipynb::a[0]", 4, 5, 0.0)], 125.0)
    assert line == "millrun: still running: nbs/a.ipynb::a[0] (cell 4/5, 2m 05s)"


def test_output_comes_in_whole_lines_prefixed_by_the_item_and_never_mixed() -> None:
    lines = OutputLines()
    assert lines.add("a[0]", "stdout", "hel") == []
    assert lines.add("b[0]", "stdout", "other\nhalf") == ["[b[0]] other"]
    assert lines.add("a[0]", "stdout", "lo\nwor") == ["[a[0]] hello"]
    assert lines.add("a[0]", "stderr", "oops\n") == ["[a[0]] stderr: oops"]
    assert lines.labels() == {"a[0]", "b[0]"}
    assert lines.flush("a[0]") == ["[a[0]] wor"]
    assert lines.flush() == ["[b[0]] half"]
    assert lines.labels() == set()


def test_output_lines_lose_the_escape_sequences_and_carriage_returns_of_the_cells() -> None:
    lines = OutputLines()
    text = "\x1b[31mred\x1b[0m\n 10%\r 50%\r100%\n"
    assert lines.add("a", "stdout", text) == ["[a] red", "[a] 100%"]


def test_a_running_cell_record_survives_the_channel_and_junk_is_none() -> None:
    entry = RunningCell("nbs/a.ipynb::a[0]", 2, 3, 12.5)
    assert RunningCell.from_json(entry.to_json()) == entry
    assert RunningCell.from_json('{"label": "a"') is None
    assert RunningCell.from_json('{"label": "a"}') is None


def test_the_channel_carries_the_running_cell_and_whole_output_lines(tmp_path: Path) -> None:
    sink = ChannelSink(str(tmp_path), log_output=True)
    reader = ChannelReader(tmp_path)
    progress = NotebookProgress(sink, "a[0]")
    progress.cell(2, 3)
    [running] = reader.running()
    assert (running.label, running.cell, running.cells) == ("a[0]", 2, 3)
    progress.output("stdout", "one\ntw")
    progress.output("stdout", "o\n")
    assert reader.outputs() == [("a[0]", "stdout", "one\ntw"), ("a[0]", "stdout", "o\n")]
    assert reader.outputs() == []  # read once
    with (tmp_path / next(tmp_path.glob("*.log")).name).open("a") as log:
        log.write('{"label": "a[0]", "stream"')  # a line being written: not yet read
    assert reader.outputs() == []
    progress.done()
    assert reader.running() == []


def test_a_channel_whose_folder_is_gone_never_fails_the_run(tmp_path: Path) -> None:
    progress = NotebookProgress(ChannelSink(str(tmp_path / "gone"), log_output=True), "a[0]")
    progress.cell(1, 1)
    progress.output("stdout", "text\n")
    progress.done()
    assert ChannelReader(tmp_path / "gone").running() == []


def test_cell_output_reaches_papermill_only_when_asked_for(tmp_path: Path) -> None:
    quiet = NotebookProgress(ChannelSink(str(tmp_path)), "a[0]")
    assert quiet.engine_kwargs(ours=True).keys() == {"millrun_progress"}
    assert quiet.engine_kwargs(ours=False) == {}
    talking = NotebookProgress(ChannelSink(str(tmp_path), log_output=True), "a[0]")
    assert talking.engine_kwargs(ours=False).keys() == {"stdout_file", "stderr_file"}
