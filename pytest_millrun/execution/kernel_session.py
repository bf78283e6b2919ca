"""Runs in the host: the one kernel session protocol, what the host asks of a kernel besides cells.

Why one protocol: everything millrun runs in a notebook's kernel apart from its
cells -- the set-up before the first cell, work after each cell, and reading what
the run produced at the end -- goes through the same three requests, whatever
asks for it.  Each concern is a :class:`KernelSessionPart`; a :class:`KernelSession`
composes the parts one execution needs into

* **one silent request at start**, sent by the kernel client once the kernel
  answers (:mod:`pytest_millrun.execution.kernels`): in the kernel itself, a
  forked child or a spawned process alike, never in the fork template;
* **after each code cell**, the parts' cell code, in the kernel, from IPython's
  ``post_run_cell`` event (no request per cell; in a Python kernel without
  IPython, one silent request per cell), and the parts' host-side hooks
  (nbclient's ``on_cell_execute`` / ``on_cell_executed``) -- only when some
  part has them, so a run whose parts need nothing per cell pays nothing;
* **one request at the end** (:meth:`KernelSession.end`), while the kernel is still
  alive: one ``user_expressions`` entry per part, so each part's payload (or its
  error) comes back on its own, and is handed to that part's
  :meth:`~KernelSessionPart.read_end`.

Parts declare the kernel languages their code is written for; a part does not
run in a kernel of another language (nothing Python reaches a bash kernel).
The source sent lives in :mod:`pytest_millrun.inkernel.kernel_parts`.
"""

from __future__ import annotations

import ast
import functools
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

#: The in-kernel module that keeps the namespaces of parts with more than one request.
HOME = "_millrun_kernel_session"
#: The request after each cell, when some part has cell code: the kernel compiled it at start.
CELL_REQUEST = f"__import__('sys').modules[{HOME!r}].after_cell()"


@dataclass(frozen=True)
class EndReply:
    """What the end request brought back for one part: its payload, or why there is none."""

    payload: Any = None
    #: Empty when the payload came back; else the kernel's ``ename: evalue``, or why not asked.
    error: str = ""
    #: False when the part was not asked at all: the kernel is of another language.
    asked: bool = True


class KernelSessionPart:
    """One concern's share of the kernel session; override what it needs, the rest costs nothing.

    Code is Python source for a kernel of one of :attr:`languages`.  The start,
    cell and end code of one part share a namespace of their own in the kernel,
    holding ``user_namespace`` (the notebook's globals); the end code leaves what
    the host gets in ``payload`` (JSON-compatible; other objects become their
    repr).  An exception in the start code is reported by the end request; one in
    the cell code is left in the namespace as ``cell_error`` for the end code.
    """

    #: The part's key in :attr:`KernelSession.report` (and ``ExecutionResult.kernel_report``).
    name: ClassVar[str] = ""
    #: Kernel languages (``language_info.name``, lowercase) the code is for; None: any kernel.
    languages: ClassVar[frozenset[str] | None] = frozenset({"python"})
    #: Whether the end request is wanted after a cell raised (the kernel being alive).
    end_after_failure: ClassVar[bool] = True

    def start_code(self) -> str | None:
        """Statements run once in the kernel before the first cell."""
        return None

    def cell_code(self) -> str | None:
        """Statements run in the kernel after each code cell, the failing one included."""
        return None

    def end_code(self) -> str | None:
        """Statements run in the kernel at the end; they set ``payload``."""
        return None

    def read_end(self, reply: EndReply) -> Any:
        """Take the end reply; what it returns (unless None) goes into the session's report."""
        return reply.payload if not reply.error else None

    def cell_started(self, cell_index: int, cell: Any) -> None:
        """Host side, just before a code cell is sent to the kernel."""

    def cell_finished(self, cell_index: int, cell: Any, execute_reply: Mapping[str, Any]) -> None:
        """Host side, once a code cell's reply and outputs are in (also when it raised)."""

    def notebook_done(self, nb: Any) -> None:
        """Host side, with the output notebook before its last save, however the run ended."""


def _overrides(part: KernelSessionPart, method: str) -> bool:
    return getattr(type(part), method) is not getattr(KernelSessionPart, method)


def kernel_source(module: ModuleType, *functions: str) -> str:
    """An in-kernel module's code, or only its named functions, without docstrings or
    annotations: less to send and compile, and no annotation an older Python cannot read."""
    with _trimming:  # a worker's threads: CPython 3.11's ast is not thread-safe (gh-106905)
        return _trimmed(module.__file__ or "", functions)


_trimming = threading.Lock()


@functools.cache
def _trimmed(path: str, functions: tuple[str, ...]) -> str:
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    if functions:
        tree.body = [node for node in tree.body if getattr(node, "name", None) in functions]
        if len(tree.body) != len(functions):
            raise ValueError(f"{path} does not define all of {functions}")
    return ast.unparse(ast.fix_missing_locations(_Trim().visit(tree)))


class _Trim(ast.NodeTransformer):
    def visit_Module(self, node: ast.Module) -> ast.AST:
        return self._without_docstring(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return self._without_docstring(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        args = node.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None:
                arg.annotation = None
        node.returns = None
        return self._without_docstring(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:
            return ast.Pass()
        return ast.Assign(targets=[node.target], value=node.value)

    def _without_docstring(self, node: Any) -> ast.AST:
        self.generic_visit(node)
        first = node.body[0] if node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            node.body = node.body[1:] or [ast.Pass()]
        return node  # type: ignore[no-any-return]


def _helper(name: str) -> str:
    from pytest_millrun.inkernel import kernel_parts as session

    return kernel_source(session, name)


@functools.cache
def start_request(parts: tuple[tuple[str, str, str, bool], ...], events: bool) -> str:
    """The silent start request's code for ``(name, start, cell, keep)`` per part, in order.

    ``events``: cell code runs from IPython's ``post_run_cell`` event (see
    :func:`pytest_millrun.inkernel.kernel_parts.start_part`), not from a request per cell.
    A part that keeps no namespace runs its start in a throwaway one; an error
    there stops no other part and has nowhere to go (that part asks nothing later).
    """
    lines = [_helper("start_part")] if any(keep for *_, keep in parts) else []
    for name, start, cell, keep in parts:
        if keep:
            lines.append(f"start_part({name!r}, {start!r}, {cell!r}, user, {events!r})")
        else:
            scope = f"{{'__name__': {'millrun_' + name!r}, 'user_namespace': user}}"
            lines.append(f"try:\n    exec({start!r}, {scope})\nexcept Exception:\n    pass")
    # one script in a namespace of its own, builtins reached through their module:
    # nothing is left in the user's, and a notebook's own `exec` or `globals` is no matter
    script = "\n".join(lines) + "\n"
    return (
        f"__import__('builtins').exec({script!r}, "
        "{'user': __import__('builtins').globals(), '__name__': 'millrun_session'})"
    )


def end_expression(name: str, source: str, *, kept: bool) -> str:
    """One Python expression that runs a part's end code in the kernel and shows its payload.

    A kept namespace is the one its start and cell code used; else a fresh one.
    The session's helpers run in a namespace of their own: nothing is left in
    the user's, and a notebook's own ``exec`` or ``json`` is no matter.
    """
    namespace = (
        f"__import__('sys').modules[{HOME!r}].namespaces[{name!r}]"
        if kept
        else f"{{'__name__': {'millrun_' + name!r}}}"
    )
    return (
        "(lambda b, h, ns: (b.exec(b.compile(h['src'], '<millrun session>', 'exec'), h), "
        "h['end_part'](ns, b.globals(), h['name'], h['end']))[1])"
        f"(__import__('builtins'), {{'src': {_helper('end_part')!r}, 'name': {name!r}, "
        f"'end': {source!r}, '__name__': 'millrun_session'}}, {namespace})"
    )


class KernelSession:
    """The parts of one execution, composed into the start, per-cell and end requests.

    The kernel client calls :meth:`start` once the kernel answers, millrun's
    papermill engine :meth:`install_cell_hooks`, :meth:`end` and
    :meth:`notebook_done`; :attr:`report` then holds each part's contribution.
    """

    def __init__(self, parts: Sequence[KernelSessionPart] = ()) -> None:
        names = [part.name for part in parts]
        if not all(names) or len(set(names)) < len(names):
            raise ValueError(f"kernel session parts need distinct, non-empty names: {names}")
        self.parts = tuple(parts)
        #: name -> (start, cell, end) source, each "" when the part has none
        self.sources = {
            part.name: (part.start_code() or "", part.cell_code() or "", part.end_code() or "")
            for part in parts
        }
        for part in parts:
            sends = any(self.sources[part.name])
            if sends and (part.languages is None or not part.languages <= {"python"}):
                raise ValueError(
                    f"Kernel session part {part.name} sends Python to kernels of "
                    f"{sorted(part.languages or ['any language'])}: its languages must be python."
                )
        #: The kernel's language (``language_info.name``, lowercase), known once it started.
        self.language: str | None = None
        #: part name -> what its :meth:`~KernelSessionPart.read_end` returned
        self.report: dict[str, Any] = {}
        self._kept: frozenset[str] = frozenset()
        self._cell_request = False

    def runs_in_kernel(self, part: KernelSessionPart) -> bool:
        """Whether ``part`` is for the language of the kernel this session started in."""
        return part.languages is None or (self.language or "") in part.languages

    def start(self, language: str | None, implementation: str | None = None) -> str | None:
        """Learn the kernel's language; the code of the start request, None if none is needed.

        ``implementation`` is the kernel's (``ipython`` for ipykernel): IPython's
        events run the parts' cell code without a request per cell.
        """
        self.language = language.lower() if language else None
        events = implementation == "ipython"
        entries = []
        for part in self.parts:
            start, cell, end = self.sources[part.name]
            if self.runs_in_kernel(part) and (start or cell):
                entries.append((part.name, start, cell, bool(cell) or bool(end)))
        self._kept = frozenset(name for name, *_, keep in entries if keep)
        self._cell_request = not events and any(cell for _, _, cell, _ in entries)
        return start_request(tuple(entries), events) if entries else None

    @property
    def needs_engine(self) -> bool:
        """Whether millrun's engine has work for the session (an end request, or per cell)."""
        return any(end for _, _, end in self.sources.values()) or any(self._cell_hooks())

    def _cell_hooks(self) -> tuple[bool, bool]:
        """Whether any part acts (before, after) a cell; decided before the language is known."""
        before = any(_overrides(part, "cell_started") for part in self.parts)
        after = any(
            self.sources[part.name][1] or _overrides(part, "cell_finished") for part in self.parts
        )
        return before, after

    def install_cell_hooks(self, client: Any) -> None:
        """Set nbclient's cell hooks on ``client``, only those some part needs."""
        before, after = self._cell_hooks()
        if before:
            client.on_cell_execute = self._cell_started
        if after:
            client.on_cell_executed = functools.partial(self._cell_executed, client)

    def _cell_started(self, cell: Any, cell_index: int, **_: Any) -> None:
        for part in self.parts:
            if self.runs_in_kernel(part):
                part.cell_started(cell_index, cell)

    async def _cell_executed(
        self, client: Any, cell: Any, cell_index: int, execute_reply: Any, **_: Any
    ) -> None:
        for part in self.parts:
            if self.runs_in_kernel(part):
                part.cell_finished(cell_index, cell, execute_reply)
        if self._cell_request:
            for _attempt in range(2):  # see _ask
                msg_id = client.kc.execute(
                    CELL_REQUEST, silent=True, store_history=False, allow_stdin=False
                )
                reply = await client.async_wait_for_reply(msg_id)
                if (reply or {}).get("content", {}).get("status") != "aborted":
                    break

    def end(self, client: Any, *, failed: bool) -> None:
        """After the last cell, or the cell that raised, while the kernel lives: one request.

        Parts of another language than the kernel's are not asked; they get an
        :class:`EndReply` saying so.
        """
        due = [
            part
            for part in self.parts
            if self.sources[part.name][2] and (part.end_after_failure or not failed)
        ]
        asked = [part for part in due if self.runs_in_kernel(part)]
        for part in due:
            if part not in asked:
                wanted = " or ".join(sorted(part.languages or ()))
                why = f"it is a {self.language} kernel, not {wanted}"
                self._hand(part, EndReply(error=why, asked=False))
        if not asked:
            return
        expressions = {
            f"millrun:{part.name}": end_expression(
                part.name, self.sources[part.name][2], kept=part.name in self._kept
            )
            for part in asked
        }
        content = _ask(client, user_expressions=expressions).get("content", {})
        for part in asked:
            self._hand(part, _end_reply(content, f"millrun:{part.name}"))

    def _hand(self, part: KernelSessionPart, reply: EndReply) -> None:
        value = part.read_end(reply)
        if value is not None:
            self.report[part.name] = value

    def notebook_done(self, nb: Any) -> None:
        """Every part sees the output notebook before its last save."""
        for part in self.parts:
            part.notebook_done(nb)


def _ask(client: Any, **kwargs: Any) -> dict[str, Any]:
    """One silent request (no cell, no execution count, no history); its reply.

    Asked again once if the kernel aborted it: ipykernel aborts the requests that
    reach it while it is still clearing its queue after a cell's error.
    """
    reply: dict[str, Any] = {}
    for _attempt in range(2):
        msg_id = client.kc.execute(
            "", silent=True, store_history=False, allow_stdin=False, **kwargs
        )
        reply = client.wait_for_reply(msg_id) or {}
        if reply.get("content", {}).get("status") != "aborted":
            break
    return reply


def _end_reply(content: Mapping[str, Any], key: str) -> EndReply:
    """One part's share of the end reply's content."""
    result = content.get("user_expressions", {}).get(key)
    if not result or result.get("status") != "ok":
        source = result or content
        return EndReply(
            error=f"{source.get('ename', 'no reply')}: {source.get('evalue', '')}".strip(": ")
        )
    text = result.get("data", {}).get("text/plain", "")
    try:
        return EndReply(payload=json.loads(text))
    except ValueError:
        return EndReply(error=f"unreadable reply {text[:200]!r}")
