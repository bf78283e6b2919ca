"""The xdist scheduler of longest first, driven as xdist's DSession drives it, with stand-in
workers (no processes): what each worker is sent, and when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_millrun.plugin.scheduling import longest_first_scheduler, still_there

COLLECTION = ["nbs/a.ipynb::a[0]", "nbs/b.ipynb::b[0]", "nbs/c.ipynb::c[0]", "nbs/d.ipynb::d[0]"]
COLLECTION += ["nbs/e.ipynb::e[0]"]
DURATIONS = {"nbs/a.ipynb::a[0]": 0.1, "nbs/b.ipynb::b[0]": 0.2, "nbs/c.ipynb::c[0]": 0.3}
DURATIONS |= {"nbs/d.ipynb::d[0]": 1.2, "nbs/e.ipynb::e[0]": 2.0}


class Worker:
    """What xdist's WorkerController offers a scheduler: items sent, a shutdown."""

    def __init__(self, name: str) -> None:
        self.gateway = type("Gateway", (), {"id": name})()
        self.sent: list[int] = []
        self.sends = 0
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)
        self.sends += 1

    def shutdown(self) -> None:
        self.shutting_down = True


def names(indices: list[int]) -> list[str]:
    return [COLLECTION[i].split("::")[0].removeprefix("nbs/")[0] for i in indices]


def scheduled(
    pytester: pytest.Pytester, collection: list[str], durations: dict[str, float]
) -> tuple[Any, Worker, Worker]:
    config = pytester.parseconfig("--tx", "2*popen")
    scheduler = longest_first_scheduler(config, None, durations)
    one, two = Worker("gw0"), Worker("gw1")
    for worker in (one, two):
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    return scheduler, one, two


def started(pytester: pytest.Pytester, durations: dict[str, float]) -> tuple[Any, Worker, Worker]:
    return scheduled(pytester, COLLECTION, durations)


def test_each_worker_gets_two_items_longest_first_then_one_per_item_done(
    pytester: pytest.Pytester,
) -> None:
    scheduler, one, two = started(pytester, DURATIONS)
    assert (names(one.sent), names(two.sent)) == (["e", "c"], ["d", "b"])
    scheduler.mark_test_complete(two, two.sent[0], 1.2)  # d done: two holds b, gets a
    assert names(two.sent) == ["d", "b", "a"]
    assert not scheduler.pending
    scheduler.mark_test_complete(one, one.sent[0], 2.0)
    assert one.shutting_down  # nothing left to send


def test_a_worker_that_dies_gives_its_items_back_in_that_order(
    pytester: pytest.Pytester,
) -> None:
    scheduler, one, two = started(pytester, DURATIONS)
    crashed = scheduler.remove_node(one)  # running e, holding c
    assert crashed == "nbs/e.ipynb::e[0]"
    assert names(scheduler.pending) == ["c", "a"]  # c (0.3 s) before a (0.1 s)
    scheduler.mark_test_complete(two, two.sent[0], 1.2)
    assert names(two.sent) == ["d", "b", "c"]


def test_unknown_items_go_first(pytester: pytest.Pytester) -> None:
    known = {k: v for k, v in DURATIONS.items() if not k.startswith(("nbs/a", "nbs/b"))}
    scheduler, one, two = started(pytester, known)
    assert (names(one.sent), names(two.sent)) == (["a", "e"], ["b", "d"])
    assert names(scheduler.pending) == ["c"]


def held_while_the_quick_worker_finishes(scheduler: Any, worker: Worker) -> list[list[int]]:
    """What ``worker`` holds after each item it finishes, until nothing is pending."""
    held: list[list[int]] = []
    while scheduler.pending:
        scheduler.mark_test_complete(worker, scheduler.node2pending[worker][0], 0.01)
        held.append(list(scheduler.node2pending[worker]))
    return held


def test_unknown_items_first_do_not_carry_the_long_ones_off_to_one_worker(
    pytester: pytest.Pytester,
) -> None:
    """Markdown-only notebooks never get a duration, so they stay unknown, and go first.

    A whole chunk of them, as xdist sends chunks, would reach past them into the longest
    notebooks and commit those to one worker (measured: a 33 s and an 8 s notebook queued
    on one worker while the other sat idle for 27 s).  A known item is never queued
    behind more than the one item a worker must hold to run it.
    """
    unknown = [f"nbs/u{i:02}.ipynb::u{i:02}[0]" for i in range(12)]
    long = ["nbs/long1.ipynb::long1[0]", "nbs/long2.ipynb::long2[0]"]
    short = [f"nbs/s{i:02}.ipynb::s{i:02}[0]" for i in range(20)]
    collection = unknown + long + short
    durations = {long[0]: 33.0, long[1]: 8.0} | {nodeid: 1.0 for nodeid in short}
    scheduler, _, two = scheduled(pytester, collection, durations)
    for items in held_while_the_quick_worker_finishes(scheduler, two):
        assert all(collection[i] not in durations for i in items[2:]), items
    handed = [collection[i] for i in two.sent]
    assert [nodeid for nodeid in handed if nodeid in durations][:2] == long


def test_a_suites_other_tests_still_go_out_in_xdists_chunks(pytester: pytest.Pytester) -> None:
    """Only notebooks are timed: a suite's other tests stay unknown, and one at a time each
    would wait for a round trip to the controller before it could start."""
    tests = [f"tests/test_x.py::test_{i:03}" for i in range(200)]
    notebook = "nbs/a.ipynb::a[0]"
    scheduler, _, two = scheduled(pytester, [*tests, notebook], {notebook: 5.0})
    held = held_while_the_quick_worker_finishes(scheduler, two)
    assert max(len(items) for items in held) > 10
    assert two.sends < 40  # one at a time: about 200


def test_collections_that_differ_are_reported_and_nothing_is_sent(
    pytester: pytest.Pytester,
) -> None:
    config = pytester.parseconfig("--tx", "2*popen")
    reports: list[Any] = []
    config.hook.pytest_collectreport = lambda report: reports.append(report)  # type: ignore[method-assign]
    scheduler = longest_first_scheduler(config, None, DURATIONS)
    one, two = Worker("gw0"), Worker("gw1")
    for worker, collection in ((one, COLLECTION), (two, COLLECTION[:-1])):
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    assert one.sent == two.sent == []
    assert len(reports) == 1


def test_durations_of_notebooks_that_are_gone_are_not_kept(tmp_path: Path) -> None:
    (tmp_path / "nbs").mkdir()
    (tmp_path / "nbs" / "kept.ipynb").write_text("{}")
    known = {"nbs/kept.ipynb::kept[1]": 2.0, "nbs/gone.ipynb::gone[1]": 5.0}
    assert still_there(known, tmp_path) == {"nbs/kept.ipynb::kept[1]": 2.0}
