"""
Bodies a real server must not take in: ones sent without a valid credential,
to every route that reads a body.

Each request is written by hand on a plain socket, its body sent as fast as
the server takes it; the server must answer before the body is through, and
stop reading it.
"""

from __future__ import annotations

import os
import select
import socket
import time
from pathlib import Path

from boxsync.protocol import EVENT_STREAM
from boxsync.testing import Server
from tests.faults import record, staged
from tests.faults import server  # noqa: F401 (the fixture)

MiB = 2**20

#: What each refused request says it will send.
DECLARED = 64 * MiB

#: Sent before the server could have answered: the kernel's buffers on both
#: ends, well below what was declared.
MOST_READ = 16 * MiB

ROUTES = [
    ("POST", "/sync", [("Accept", EVENT_STREAM), ("Content-Type", "application/json")], False),
    ("POST", "/sync", [], True),
    ("POST", "/batch/upload", [("Content-Type", "application/x-boxsync-batch")], True),
    ("POST", "/batch/download", [], False),
    ("PUT", "/files/big.bin", [], True),
    ("PUT", "/files/big.bin", [], False),
    ("POST", "/upload", [("File-Path", "big.bin")], False),
]


def deleted_files(pid: int) -> list[str]:
    """
    The files the process holds open that have no name (temporary files).
    """
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/") and target.endswith("(deleted)"):
            found.append(target)
    return found


def send_refused(
    server: Server, method: str, path: str, headers: list[tuple[str, str]], chunked: bool, credential: str | None
) -> tuple[int, int, list[str]]:
    """
    Send the headers, then as much of the body as the server takes until it
    answers (at most L{DECLARED} bytes, for at most 20 s).

    @return: the status of the answer, how many bytes of body were sent, and
        the server's nameless open files while the connection was still open.
    """
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if credential is not None:
        lines.append(f"Authorization: {credential}")
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {DECLARED}")
    piece = b"x" * 65536
    if chunked:
        piece = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 20
        while sent < DECLARED and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(piece)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
        sock.setblocking(True)
        answer = b""
        while b"\r\n\r\n" not in answer:
            got = sock.recv(65536)
            assert got, f"the server closed without answering after {sent} bytes"
            answer += got
        assert server.process is not None and server.process.popen is not None
        held = deleted_files(server.process.popen.pid)
        return int(answer.split(b" ", 2)[1]), sent, held
    finally:
        sock.close()


def test_bodies_without_a_valid_credential_are_refused_before_they_are_read(server: Server) -> None:
    """
    Every route with a body, with no credential and with a wrong one: the
    answer (401, 403) comes while the body is still being sent, at most the
    kernel's buffers of it ever leave the client, and the server holds no
    temporary or staging file for it.
    """
    refused = 0
    for method, path, headers, chunked in ROUTES:
        for credential, expected in [(None, 401), ("Bearer wrong-key", 403)]:
            status, sent, held = send_refused(server, method, path, headers, chunked, credential)
            what = f"{method} {path} ({'chunked' if chunked else 'sized'}, {credential})"
            assert status == expected, what
            assert sent < MOST_READ, f"{what}: {sent} bytes sent before the answer"
            assert held == [], f"{what}: the server holds {held}"
            assert staged(server.box) == []
            refused += 1
    record("bodies without a credential", faults=refused, files=0)
