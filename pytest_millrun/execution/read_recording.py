"""Runs in the host: the kernel session part that records what a notebook reads (issue 32).

The recorder itself runs in the kernel (:mod:`pytest_millrun.inkernel.read_recorder`): its
source is sent with the session's start request, so it wraps ``open`` and the
listings before the first cell, in the forked child or the spawned kernel alike
(never in the fork template), and its record comes back with the end request.
What the record means for the cache (digests, what changed) is the cache's
business, done by :func:`pytest_millrun.dispatch.jobs.run_job` after a pass: running
a notebook knows nothing of the cache, so this part only carries the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_millrun.execution.kernel_session import EndReply, KernelSessionPart, kernel_source

#: In the kernel report, what a kernel of another language than Python says instead.
NOT_ASKED = "not_asked"
#: In the kernel report, why a Python kernel brought no record back.
PROBLEM = "problem"


class ReadsPart(KernelSessionPart):
    """Records the run's reads from its start; its report is the recorder's payload.

    ``settings`` are the recorder's (``ReadSettings.kernel_settings()``: roots,
    exclusions, ignored paths), plain JSON so a job carries them to any worker.
    The report is the payload, ``{NOT_ASKED: why}`` for a kernel of another
    language, or ``{PROBLEM: why}`` when the recorder failed in the kernel.
    """

    name = "reads"
    #: After a failing cell the cache keeps no key, but the read set is kept for the next
    #: run to ship to Dask workers: the file a notebook failed to find is shipped then.
    end_after_failure = True

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = {key: list(value) for key, value in settings.items()}

    def start_code(self) -> str:
        from pytest_millrun.inkernel import read_recorder as reads

        # the recorder's source first: it begins with its `from __future__` import
        return kernel_source(reads) + f"\nstart({self.settings!r})\n"

    def end_code(self) -> str:
        return "payload = finish()\n"

    def read_end(self, reply: EndReply) -> dict[str, Any]:
        if not reply.asked:
            return {NOT_ASKED: reply.error}
        if reply.error:
            return {PROBLEM: f"the kernel's read recorder failed: {reply.error}"}
        if not isinstance(reply.payload, dict):
            return {PROBLEM: f"the kernel's read record is unreadable: {reply.payload!r:.200}"}
        return reply.payload
