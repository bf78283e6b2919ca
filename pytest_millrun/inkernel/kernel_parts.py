"""Runs inside the notebook's kernel: the parts' namespaces between the host's requests.

Sent as source by :mod:`pytest_millrun.execution.kernel_session` (each function
on its own, without docstrings and annotations), so it may use the standard
library only, must run on any Python 3 a kernel has, and must not leave a name
in the user's namespace.  :func:`start_part` runs in the silent request before
the first cell; :func:`end_part` is sent with each part's end expression.

A part whose code runs in more than one request (after each cell, or at the start
and at the end) keeps its namespace in a module of its own,
``sys.modules["_millrun_kernel_session"]``, made only for such a part, whose
``after_cell`` runs the parts' cell code (see :func:`start_part`).  A part with
start code only runs it in a throwaway namespace.
"""

from __future__ import annotations

from typing import Any


def start_part(name: str, start: str, cell: str, user: dict[str, Any], events: bool) -> None:
    """Run one part's start code in the namespace its cell and end code use too.

    With ``events``, the parts' cell code runs from IPython's ``post_run_cell``
    event, which ipykernel triggers after every cell it runs (not after a silent
    request), the failing one included: no request per cell.  Else the host asks
    for ``after_cell`` after each cell.  An error in the start stops no other
    part: it is kept in the part's namespace as ``start_error``, which its end
    request then reports.
    """
    import sys
    import types

    home: Any = sys.modules.get("_millrun_kernel_session")
    if home is None:
        home = types.ModuleType("_millrun_kernel_session", "millrun's kernel session parts")
        home.namespaces = {}
        home.cells = []

        def after_cell(*_event: Any) -> None:
            for namespace, code in home.cells:
                if "start_error" in namespace:
                    continue
                try:
                    exec(code, namespace)
                except Exception as exc:  # kept for the end: the next cell runs all the same
                    namespace.setdefault("cell_error", type(exc).__name__ + ": " + str(exc))

        home.after_cell = after_cell
        home.shell = None
        if events:
            ipython = sys.modules.get("IPython")
            home.shell = ipython.get_ipython() if ipython is not None else None
            if home.shell is not None:
                home.shell.events.register("post_run_cell", after_cell)
        sys.modules[home.__name__] = home
    namespace: dict[str, Any] = {"__name__": "millrun_" + name, "user_namespace": user}
    home.namespaces[name] = namespace
    try:
        if cell and events and home.shell is None:
            raise RuntimeError("no IPython shell here to run its code after each cell")
        if start:
            exec(compile(start, "<millrun " + name + " start>", "exec"), namespace)
        if cell:
            home.cells.append((namespace, compile(cell, "<millrun " + name + " cell>", "exec")))
    except Exception as exc:
        namespace["start_error"] = type(exc).__name__ + ": " + str(exc)


def end_part(namespace: dict[str, Any], user: dict[str, Any], name: str, source: str) -> Any:
    """Run a part's end code; its ``payload``, as an object IPython shows as its JSON text.

    Raises when the part's start failed, so that its end reply says why it has nothing.
    """
    import json

    if "start_error" in namespace:
        raise RuntimeError("its start code failed: " + namespace["start_error"])
    namespace["user_namespace"] = user
    exec(compile(source, "<millrun " + name + " end>", "exec"), namespace)
    text = json.dumps(namespace["payload"], default=repr)

    class Reply:
        def __repr__(self) -> str:
            return text

        def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
            printer.text(text)

    return Reply()
