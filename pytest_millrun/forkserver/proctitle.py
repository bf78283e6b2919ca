"""Runs in the template and in each forked kernel: what ``/proc`` shows of them.

Why: a fork keeps the template's command line and environment block, so process
tables (``pgrep -f ipykernel``, psutil) would show every kernel as the template.
The template is started with padding that makes room to overwrite both in place.
Standard library only (loaded in the template without the package).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _proc_area(first_field: int) -> tuple[int, int]:
    """(start, end) addresses from /proc/self/stat fields 48/49 (argv) or 50/51 (environ)."""
    with open("/proc/self/stat", "rb") as stat:
        data = stat.read()
    fields = data[data.rindex(b")") + 2 :].split()  # fields[0] is field 3 of proc(5)
    return int(fields[first_field - 3]), int(fields[first_field - 2])


def _rewrite_proc_area(first_field: int, payload: bytes, *, title: bool) -> bool:
    """Overwrite the original argv/environ block so /proc shows ``payload``.

    The block cannot grow, so the template is started with padding that makes
    room.  ``title=True`` ends the argv block with a non-NUL byte, the
    ``setproctitle`` convention: /proc/<pid>/cmdline then stops at the first
    NUL, and psutil splits the single string at spaces into the argv we want.
    """
    try:
        start, end = _proc_area(first_field)
        size = end - start
        if size <= 0 or len(payload) + 1 >= size:
            return False
        filler = b"\0" * (size - len(payload) - 1) + (b" " if title else b"\0")
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(payload + filler)
    except (OSError, ValueError, IndexError):
        return False
    return True


def set_cmdline(argv: Sequence[str]) -> bool:
    return _rewrite_proc_area(48, " ".join(argv).encode(errors="surrogateescape"), title=True)


def set_environ_block(env: Mapping[str, str]) -> bool:
    block = b"".join(
        f"{name}={value}".encode(errors="surrogateescape") + b"\0" for name, value in env.items()
    )
    return _rewrite_proc_area(50, block, title=False)
