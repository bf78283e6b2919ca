"""Runs in the parent: a run's results gathered in plan order, whatever order they finish in.

Why one class: every dispatcher (in this process, a pool, an executor, Dask) hands
results back as they finish, must give them to the caller in the plan's order, tell
``on_result`` at once, and on Ctrl-C raise one :class:`RunInterrupted` that accounts
for every job, with the partial results of the interrupted ones.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_millrun.core.data import ExecutionResult, RunInterrupted


class Gathered:
    """The results so far of a run of ``count`` jobs, by their index in the plan."""

    def __init__(
        self, count: int, on_result: Callable[[ExecutionResult], None] | None = None
    ) -> None:
        self.count = count
        self.on_result = on_result
        self.done: dict[int, ExecutionResult] = {}

    def add(self, index: int, result: ExecutionResult) -> None:
        """A finished job: kept, and told to ``on_result`` as it comes."""
        self.done[index] = result
        if self.on_result is not None:
            self.on_result(result)

    def keep(self, index: int, result: ExecutionResult) -> None:
        """A job cut short by the stop: kept for the interrupted run's results, not told."""
        self.done[index] = result

    def ordered(self) -> list[ExecutionResult]:
        return [self.done[index] for index in sorted(self.done)]

    def interrupted(self) -> RunInterrupted:
        """The exception that ends a stopped run, with what finished and how much did not."""
        ordered = self.ordered()
        return RunInterrupted(ordered, self.count - len(ordered))
