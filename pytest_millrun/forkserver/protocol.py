"""Runs in the parent and in the template: the framed messages they exchange over their socket.

Why a module of its own: both sides of the fork server speak it, and the template
loads it without the package (see :mod:`.template_process`), so it may import nothing but
the standard library.  A message is a 4-byte length and a JSON body; descriptors
(the kernel's stdout/stderr one way, its pidfd the other) ride on the length's
bytes as ``SCM_RIGHTS``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

_HEADER: Final = struct.Struct("!I")
_MAX_MESSAGE: Final = 64 * 1024 * 1024
_MAX_FDS: Final = 4

#: Padding the parent adds to the template's environment, which the template drops at
#: once: it makes room in the environ block for each kernel's (see :mod:`.proctitle`).
PAD_NAME: Final = "MILLRUN_FORK_PAD"


def send(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    """Send one message; ``fds`` travel as SCM_RIGHTS with its first bytes."""
    body = json.dumps(message).encode()
    header = _HEADER.pack(len(body))
    if fds:
        sent = socket.send_fds(sock, [header], list(fds))
        if sent < len(header):
            sock.sendall(header[sent:])
    else:
        sock.sendall(header)
    sock.sendall(body)


def recv(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Receive one message and the descriptors sent with it.  EOFError at a clean end."""
    header = b""
    fds: list[int] = []
    while len(header) < _HEADER.size:
        chunk, received, _flags, _addr = socket.recv_fds(sock, _HEADER.size - len(header), _MAX_FDS)
        fds += received
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise EOFError("the other end closed the channel")
        header += chunk
    (size,) = _HEADER.unpack(header)
    if size > _MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes is too large")
    body = bytearray()
    while len(body) < size:
        chunk = sock.recv(min(size - len(body), 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the channel mid-message")
        body += chunk
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("malformed message")
    return message, fds


def describe_error(exc: BaseException) -> dict[str, Any]:
    """A failure to fork or set up a kernel, as the parent turns it back into ``OSError``."""
    return {
        "type": type(exc).__name__,
        "errno": getattr(exc, "errno", None),
        "strerror": getattr(exc, "strerror", None),
        "filename": getattr(exc, "filename", None),
        "message": str(exc),
    }
