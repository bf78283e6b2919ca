"""Runs in the host: the kernel session part that records which installed modules a run imported.

Why: a fork template that imports them once (issue 34's learned preloads) spares every
kernel of the next run their import.  The record is made in the kernel, one pass over
``sys.modules`` at the end (:mod:`pytest_millrun.inkernel.import_record`), and kept in
the output's metadata (``metadata.millrun.preloads``), so the command and the API learn
from the outputs as the plugin does from its cache.  Beside it goes what this process
found unfit to preload (a module that starts a thread at import), so it is not tried
again on the next run.  Which modules the next run preloads is
:mod:`pytest_millrun.core.learned_preloads`' business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pytest_millrun.core.discovery import OUTPUT_MARKER
from pytest_millrun.core.learned_preloads import IMPORTED, PRELOADS_ENTRY, UNSAFE
from pytest_millrun.execution.kernel_session import EndReply, KernelSessionPart, kernel_source

#: The part's key in ``ExecutionResult.kernel_report``.
IMPORTS_PART = "imports"
#: In the part's report (not in the output): the unsafe modules this run found, for ``-v``.
FOUND = "found"


class ImportsPart(KernelSessionPart):
    """Records the installed modules the run imported; its report is ``{imported, unsafe,
    found}``, of which the output keeps the first two."""

    name: ClassVar[str] = IMPORTS_PART

    def __init__(self, known_unsafe: Mapping[str, str] | None = None) -> None:
        #: What earlier runs found unfit to preload: kept in the record, so it stays known.
        self.known_unsafe = dict(known_unsafe or {})
        self._report: dict[str, Any] | None = None

    def start_code(self) -> str:
        from pytest_millrun.inkernel import import_record

        return kernel_source(import_record) + "\nstate = start()\n"

    def end_code(self) -> str:
        return "payload = finish(*state, user_namespace)\n"

    def read_end(self, reply: EndReply) -> dict[str, Any] | None:
        payload = reply.payload
        if reply.error or not isinstance(payload, list):
            return None
        from pytest_millrun.forkserver.template_registry import unsafe_preloads

        imported = sorted(str(name) for name in payload)
        found = {k: v for k, v in unsafe_preloads().items() if k not in self.known_unsafe}
        self._report = {IMPORTED: imported, UNSAFE: {**self.known_unsafe, **found}}
        return {**self._report, FOUND: found}

    def notebook_done(self, nb: Any) -> None:
        """Keep the record in the output, for the next run of any front end."""
        if self._report is not None:
            nb.metadata.setdefault(OUTPUT_MARKER, {})[PRELOADS_ENTRY] = self._report
