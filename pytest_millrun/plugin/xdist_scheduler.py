"""Runs in pytest-xdist's controller: its ``load`` scheduling, longest first.

A module of its own because it subclasses xdist's ``LoadScheduling`` at import, and only the
controller of an xdist run needs it (:func:`pytest_millrun.plugin.scheduling.
longest_first_scheduler` imports it there); why a scheduler at all is said in
:mod:`pytest_millrun.plugin.scheduling`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xdist.scheduler import LoadScheduling

from pytest_millrun.pipeline.run_order import longest_first


class LongestFirstScheduling(LoadScheduling):  # type: ignore[misc]  # xdist: untyped here
    """``load`` scheduling that hands out the pending items longest first, one at a time.

    Each worker holds two items (the one it runs and the next, which a worker must
    know to run the first), topped up one by one as it finishes them, so the longest
    go out first and the short ones fill in at the end.  A worker that dies gives its
    items back into that order.  Items of unknown duration (new notebooks, those with
    no code cells, which never get one, and a suite's other tests) come first, in
    xdist's chunks cut short where the known ones begin: a whole chunk would reach past
    them and commit the longest notebooks to one worker.
    """

    collection: list[str] | None
    maxschedchunk: int | None
    pending: list[int]
    node2pending: dict[Any, list[int]]

    def __init__(self, config: Any, log: Any, durations: Mapping[str, float]) -> None:
        super().__init__(config, log)
        self.durations = durations

    def schedule(self) -> None:
        if self.collection is not None:
            super().schedule()  # a node added later: topped up like the others
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        collection: list[str] = next(iter(self.node2collection.values()))
        self.collection = collection
        self.pending[:] = self._ordered(range(len(collection)))
        if not collection:
            return
        if self.maxschedchunk is None:
            self.maxschedchunk = len(collection)
        for _ in range(2):
            for node in self.nodes:
                self._send_tests(node, 1)
        if not self.pending:
            for node in self.nodes:
                node.shutdown()

    def check_schedule(self, node: Any, duration: float = 0) -> None:
        if node.shutting_down:
            return
        unknown = self._unknown_ahead()
        if self.pending and not unknown:
            self._send_tests(node, max(0, 2 - len(self.node2pending[node])))
            return
        # xdist's own chunks for what is not timed (a suite's other tests too), but
        # never past it: the chunk would commit the longest notebooks to one worker
        saved, self.maxschedchunk = self.maxschedchunk, unknown
        try:
            super().check_schedule(node, duration)  # nothing left: xdist shuts it down
        finally:
            self.maxschedchunk = saved

    def _unknown_ahead(self) -> int:
        """How many pending items of unknown duration come before the first known one."""
        assert self.collection is not None  # scheduled once every node collected
        count = 0
        for index in self.pending:
            if self.collection[index] in self.durations:
                break
            count += 1
        return count

    def remove_node(self, node: Any) -> str | None:
        pending = self.node2pending.pop(node)
        if not pending:
            return None
        assert self.collection is not None
        crashed = self.collection[pending.pop(0)]
        self.pending[:] = self._ordered([*pending, *self.pending])
        for other in self.node2pending:
            self.check_schedule(other)
        return crashed

    def _ordered(self, indices: Sequence[int]) -> list[int]:
        collection = self.collection
        assert collection is not None
        return longest_first(list(indices), self.durations, key=lambda i: collection[i])
