"""
Bodies against a real server: ones sent without a valid credential, to
every route that reads a body (each written by hand on a plain socket, as
fast as the server takes it: the server must answer before the body is
through, and stop reading it); a huge manifest; and bodies that trickle in.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import threading
import time

import psutil
import pytest

from bench.manifest import healthz, legacy_manifest, manifest, sync
from bench.measure import PeakRSS
from boxsync.wire import EVENT_STREAM
from boxsync.server.sessions import CSRF_HEADER, SIGN_IN
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


@pytest.mark.slow
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


def server_rss(server: Server) -> int:
    assert server.process is not None and server.process.popen is not None
    return int(psutil.Process(server.process.popen.pid).memory_info().rss)


@pytest.mark.slow
@pytest.mark.parametrize("legacy, entries", [(False, 200_000), (True, 400_000)])
def test_a_huge_manifest_neither_swells_the_server_nor_stalls_it(server: Server, legacy: bool, entries: int) -> None:
    """
    A manifest of 200,000 new files (35 MiB), or a legacy one of 400,000
    (25 MiB): the whole plan comes, while the server's RSS grows by under
    80 MiB (it grew by ~180 MiB when a manifest was parsed whole) and
    C{/healthz} never waits over 1.5 s (it stalled ~3 s).
    """
    body = legacy_manifest(entries) if legacy else manifest(entries)
    before = server_rss(server)
    outcome: dict[str, object] = {}
    poster = threading.Thread(target=sync, args=(server, body, outcome, entries if legacy else 0), daemon=True)
    slowest = 0.0
    assert server.process is not None and server.process.popen is not None
    with PeakRSS(lambda: [server.process.popen.pid]) as peak:  # type: ignore[union-attr]
        poster.start()
        deadline = time.monotonic() + 120
        while poster.is_alive() and time.monotonic() < deadline:
            slowest = max(slowest, healthz(server))
            poster.join(0.02)
    assert not poster.is_alive(), "the plan did not end in 120 s"
    assert outcome["status"] == 200 and outcome["events"] == entries, outcome
    grew = max(peak.peaks.values()) - before
    assert grew < 80 * MiB, f"the server grew by {grew / MiB:.0f} MiB"
    assert slowest < 1.5, f"/healthz waited {slowest:.1f} s"
    record(f"a {'legacy ' if legacy else ''}manifest of {entries:,} files", faults=1, files=entries)


def send_paced(server: Server, size: int, rate: float, outcome: dict[str, object]) -> None:
    """
    Upload C{size} bytes at C{rate} bytes a second, a tenth of a second's
    worth at a time, for at most 60 s; note the answer (C{None}: none).
    """
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=90)
    try:
        head = (
            f"PUT /files/paced-{rate:g}.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.key}\r\nContent-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode())
        piece = b"x" * max(1, int(rate / 10))
        start = time.monotonic()
        sent = 0
        while sent < size and time.monotonic() - start < 60:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered before the end
            try:
                sock.sendall(piece[: size - sent])
            except OSError:
                break
            sent += min(len(piece), size - sent)
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
        outcome["seconds"] = time.monotonic() - start
        sock.settimeout(30)
        answer = sock.recv(65536)
        outcome["status"] = int(answer.split(b" ", 2)[1]) if answer else None
    except OSError as e:
        outcome["error"] = e
    finally:
        sock.close()


@pytest.mark.slow
def test_the_default_minimum_rate_cuts_a_trickle_and_keeps_a_slow_link(server: Server) -> None:
    """
    With the default C{--min-rate}: an upload trickling at 200 bytes/s is cut
    with 408 within two windows (40 s), while one at 10 KiB/s beside it
    arrives whole.
    """
    trickle: dict[str, object] = {}
    slow: dict[str, object] = {}
    threads = [
        threading.Thread(target=send_paced, args=(server, 100_000, 200, trickle), daemon=True),
        threading.Thread(target=send_paced, args=(server, 200 * 1024, 10 * 1024, slow), daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert trickle.get("status") == 408 and float(trickle["seconds"]) < 45, trickle  # type: ignore[arg-type]
    assert slow.get("status") == 201, slow
    assert staged(server.box) == []
    record("a 200 B/s trickle beside a 10 KiB/s upload", faults=1, files=1)


@pytest.mark.slow
def test_a_sign_in_body_is_read_without_a_credential(server: Server) -> None:
    """
    The web page's sign-in is the one body read without a credential (it
    holds one); the session it opens then lets the page's bodies in.
    """
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        json_headers = {"Content-Type": "application/json"}
        connection.request("POST", SIGN_IN, body=json.dumps({"token": server.key}), headers=json_headers)
        response = connection.getresponse()
        signed_in = json.loads(response.read())
        assert response.status == 200
        cookie = response.getheader("Set-Cookie", "").split(";")[0]
        move = json.dumps({"from": "missing.txt", "to": "b.txt"})
        session = {**json_headers, "Cookie": cookie, CSRF_HEADER: signed_in["csrf"]}
        for headers, status in [(session, 404), (json_headers, 401)]:
            connection.request("POST", "/web/move", body=move, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == status
    finally:
        connection.close()
