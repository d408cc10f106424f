"""
The transfers under way: the registry with a fake clock, then a real server
on 127.0.0.1 whose uploads are held mid-body by a raw socket and whose
downloads are held by a reader that does not read; each shows in
C{GET /web/clients} with its bytes so far, only to its own account, and is
gone once it is committed, sent, or its connection dropped.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.web.test.requesthelper import DummyRequest

from boxsync.server.transfers import BATCH, BLOCKS, DOWN, UP, Transfers, upload_path
from tests.helpers import RunningServer, eventually, json_of, timed
from tests.integration import test_accounts
from tests.integration.test_accounts import TokenServer

#: A token-mode server with accounts alice (client laptop) and bob (desk).
accounts = test_accounts.accounts


def test_the_registry_by_account_and_client() -> None:
    clock = Clock()
    clock.advance(100)
    transfers = Transfers(clock)
    one = transfers.start("alice", "laptop", UP, "a.txt", 10)
    two = transfers.start("alice", "laptop", DOWN, "b.txt", None)
    transfers.start("bob", "desk", UP, "c.txt", 5)
    one.moved += 4
    assert {client: [t.to_json() for t in found] for client, found in transfers.of("alice").items()} == {
        "laptop": [
            {"path": "a.txt", "direction": "up", "size": 10, "moved": 4, "started": 100.0},
            {"path": "b.txt", "direction": "down", "size": None, "moved": 0, "started": 100.0},
        ]
    }
    assert list(transfers.of("bob")) == ["desk"]
    assert transfers.of("carol") == {}
    transfers.end("alice", one)
    transfers.end("alice", one)  # twice: nothing more
    transfers.end("bob", two)  # not bob's: bob's stays
    assert [t.path for t in transfers.of("alice")["laptop"]] == ["b.txt"]
    assert transfers.count() == 2


def test_a_transfer_lasts_as_long_as_its_request() -> None:
    transfers = Transfers(Clock())
    answered, dropped = DummyRequest([b""]), DummyRequest([b""])
    transfers.during(answered, "alice", "laptop", UP, "a.txt", 3)
    transfers.during(dropped, "alice", "laptop", UP, "b.txt", 3)
    assert transfers.count() == 2
    answered.finish()
    assert [t.path for t in transfers.of("alice")["laptop"]] == ["b.txt"]
    dropped.processingFailed(Exception("connection lost"))
    assert transfers.count() == 0


def test_what_an_upload_is_shown_as() -> None:
    assert upload_path(b"PUT", b"/files/docs/caf%C3%A9%20x.txt?x=1", None) == "docs/café x.txt"
    assert upload_path(b"POST", b"/upload", "old/é.txt".encode()) == "old/é.txt"
    assert upload_path(b"PUT", b"/blocks/" + b"a" * 64, None) == BLOCKS
    assert upload_path(b"POST", b"/batch/upload", None) == BATCH
    assert upload_path(b"POST", b"/sync", None) is None
    assert upload_path(b"GET", b"/files/a.txt", None) is None


# ---- a real server


def _transfers(server: TokenServer, account: str) -> list[tuple[str, str, str, int | None, int]]:
    assert server.service is not None
    found = server.service.app.transfers.of(account)
    return [(client, t.direction, t.path, t.size, t.moved) for client, each in found.items() for t in each]


async def _clients(server: RunningServer) -> list[dict[str, Any]]:
    import treq

    response = await timed(treq.get(f"{server.url}/web/clients", headers=server.headers(), persistent=False), server.reactor)
    assert response.code == 200
    answer = await json_of(response)
    return [c for c in answer["clients"] if c["transfers"]]


def _connect(server: RunningServer) -> socket.socket:
    # The server runs in this process: the kernel accepts for it, and a few
    # KiB are sent without waiting on it.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _head(server: RunningServer, method: str, url: str, **headers: str) -> bytes:
    lines = [f"{method} {url} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in server.headers(**headers).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_answer(sock: socket.socket) -> bytes:
    """
    Read until the server closes the connection (each request asks it to).
    Blocking: run it in a thread.
    """
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            raise AssertionError(f"no whole answer within 10 s: {bytes(data[:300])!r}") from None
        if not chunk:
            return bytes(data)
        data += chunk


@pytest_twisted.ensureDeferred
async def test_an_upload_shows_until_committed(accounts: TokenServer, reactor: Any) -> None:
    alice, bob = accounts.as_("laptop"), accounts.as_("desk")
    sock = _connect(alice)
    try:
        sock.sendall(_head(alice, "PUT", "/files/docs/big%20one.bin", Content_Length="1000", X_Boxsync_Client="laptop-2") + b"x" * 300)
        await eventually(reactor, lambda: _transfers(accounts, "alice") == [("laptop-2", UP, "docs/big one.bin", 1000, 300)])
        (shown,) = await _clients(alice)
        assert shown["client"] == "laptop-2"
        assert [(t["path"], t["direction"], t["size"], t["moved"]) for t in shown["transfers"]] == [
            ("docs/big one.bin", "up", 1000, 300)
        ]
        # Another account sees none of it.
        assert await _clients(bob) == [] and _transfers(accounts, "bob") == []
        sock.sendall(b"y" * 400)
        await eventually(reactor, lambda: _transfers(accounts, "alice") == [("laptop-2", UP, "docs/big one.bin", 1000, 700)])
        sock.sendall(b"z" * 300)
        answer = await timed(deferToThread(_read_answer, sock), reactor)
        assert answer.startswith(b"HTTP/1.1 201"), answer
        assert (accounts.box / "alice/docs/big one.bin").stat().st_size == 1000
        await eventually(reactor, lambda: _transfers(accounts, "alice") == [])
        assert await _clients(alice) == []
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_a_dropped_upload_leaves_nothing(accounts: TokenServer, reactor: Any) -> None:
    alice = accounts.as_("laptop")
    socks = [_connect(alice) for _ in range(3)]
    try:
        for n, sock in enumerate(socks):
            sock.sendall(_head(alice, "PUT", f"/files/dropped-{n}.bin", Content_Length="100000") + b"x" * 1000)
        await eventually(reactor, lambda: len(_transfers(accounts, "alice")) == 3)
    finally:
        for sock in socks:
            sock.close()
    await eventually(reactor, lambda: _transfers(accounts, "alice") == [])
    assert accounts.service is not None and accounts.service.app.transfers.count() == 0
    assert not (accounts.box / "alice/dropped-0.bin").exists()


@pytest_twisted.ensureDeferred
async def test_blocks_and_batches_count_by_request(accounts: TokenServer, reactor: Any) -> None:
    alice = accounts.as_("laptop")
    sock = _connect(alice)
    try:
        sock.sendall(_head(alice, "PUT", "/blocks/" + "a" * 64, Content_Length="5000") + b"x" * 10)
        await eventually(reactor, lambda: _transfers(accounts, "alice") == [("laptop", UP, BLOCKS, 5000, 10)])
    finally:
        sock.close()
    await eventually(reactor, lambda: _transfers(accounts, "alice") == [])


@pytest_twisted.ensureDeferred
async def test_a_download_shows_while_it_is_sent(accounts: TokenServer, reactor: Any) -> None:
    alice, bob = accounts.as_("laptop"), accounts.as_("desk")
    size = 64 * 2**20
    (accounts.box / "alice").mkdir(exist_ok=True)
    (accounts.box / "alice/large.bin").touch()
    os.truncate(accounts.box / "alice/large.bin", size)
    # Found by the server (adopted at start: restart it).
    await accounts.stop()
    await accounts.start()
    alice, bob = accounts.as_("laptop"), accounts.as_("desk")

    def held() -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", alice.port))
        return sock

    def stuck() -> bool:
        found = _transfers(accounts, "alice")
        return len(found) == 1 and found[0][:4] == ("laptop", DOWN, "large.bin", size) and 0 < found[0][4] < size

    # Read to the end: gone once sent.
    sock = held()
    try:
        sock.sendall(_head(alice, "GET", "/files/large.bin"))
        await eventually(reactor, stuck)
        (shown,) = await _clients(alice)
        assert shown["transfers"][0]["direction"] == "down"
        assert await _clients(bob) == []
        answer = await timed(deferToThread(_read_answer, sock), reactor, 60)
        assert answer.startswith(b"HTTP/1.1 200") and len(answer.partition(b"\r\n\r\n")[2]) == size
        await eventually(reactor, lambda: _transfers(accounts, "alice") == [])
    finally:
        sock.close()
    # Dropped halfway: gone too.
    sock = held()
    try:
        sock.sendall(_head(alice, "GET", "/files/large.bin", Range="bytes=1000-"))
        await eventually(reactor, lambda: [t[3] for t in _transfers(accounts, "alice")] == [size - 1000])
    finally:
        sock.close()
    await eventually(reactor, lambda: _transfers(accounts, "alice") == [])
