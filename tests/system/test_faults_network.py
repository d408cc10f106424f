"""
Faults on the link between a client and the server, through a TCP proxy
(tests/faults.py) that severs, refuses, freezes or slows it: the client
notices a silent peer within its idle timeout, reconnects with back-off and
misses no event.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed

from boxsync.client import cli
from boxsync.client.api import BoxsyncAPI
from boxsync.client.session import describe
from boxsync.server import tap
from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import MAX_BACKOFF, Proxy, backing_off, backoffs, converged, output, record, sha
from tests.faults import server  # noqa: F401 (the fixture)
from tests.conftest import KEY
from tests.helpers import running_server, timed

#: The server's keep-alive and the clients' idle timeout in these tests (45 s
#: and 15 s by default): a frozen link must be noticed within IDLE seconds.
KEEPALIVE = 0.5
IDLE = 2.0
#: How often the server tells an upload still arriving that it is (10 s by
#: default, against the clients' 45 s).
PROGRESS = 0.5
SERVER_OPTIONS = ["--keepalive", str(KEEPALIVE), "--progress-interval", str(PROGRESS)]


@pytest.fixture
def proxy(server: Server) -> Iterator[Proxy]:
    running = Proxy(server.port).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def pair(tmp_path: Path, server: Server, proxy: Proxy) -> Iterator[tuple[Client, Client]]:
    """
    Client a, straight to the server, and client b, through the proxy.
    """
    options = ["--idle-timeout", str(IDLE)]
    a = Client(server, tmp_path / "a", "a", options=options).start()
    b = Client(server, tmp_path / "b", "b", url=proxy.url, options=options).start()
    try:
        (a.folder / "first.txt").write_text("before the fault")
        wait_until(lambda: "first.txt" in tree(b.folder), what="the first sync")
        yield a, b
    finally:
        a.kill()
        b.kill()


def in_sync(a: Client, b: Client, server: Server, *names: str) -> bool:
    return all(name in tree(b.folder) for name in names) and converged(a.folder, b.folder, server.box)


@pytest.mark.slow
def test_severed_link(server: Server, proxy: Proxy, pair: tuple[Client, Client]) -> None:
    a, b = pair
    for fault in range(2):
        earlier = len(backoffs(b))
        # Cut the link, and keep refusing b for a while: a goes on meanwhile.
        proxy.refusing = True
        proxy.sever()
        (a.folder / f"while-cut-{fault}.txt").write_text(f"written while b was cut off ({fault})")
        wait_until(lambda: len(backoffs(b)) >= earlier + 4, what="b to retry")
        delays = backoffs(b)[earlier:]
        # Back-off: each wait at least as long as the one before, up to the
        # cap; and a drop after a good connection is retried soon, not after
        # the last outage's longest wait.
        assert backing_off(delays), delays
        assert delays[0] <= 0.5, delays
        proxy.refusing = False
        (b.folder / f"from-b-{fault}.txt").write_text(f"from b ({fault})")
        names = (f"while-cut-{fault}.txt", f"from-b-{fault}.txt")
        wait_until(lambda: in_sync(a, b, server, *names), timeout=60, what="sync after the cut")
    record("link severed", faults=2, files=2 * len(tree(b.folder)))


@pytest.mark.slow
def test_frozen_link_is_noticed_within_the_idle_timeout(
    server: Server, proxy: Proxy, pair: tuple[Client, Client]
) -> None:
    a, b = pair
    proxy.freeze()
    frozen_at = time.monotonic()
    (a.folder / "while-frozen.txt").write_text("written while b's link was frozen")
    wait_until(lambda: "nothing received or sent" in output(b), timeout=IDLE + 5, what="b to notice")
    noticed = time.monotonic() - frozen_at
    assert noticed < IDLE + 2, noticed
    proxy.thaw()
    wait_until(lambda: in_sync(a, b, server, "while-frozen.txt"), timeout=60, what="sync after the freeze")
    # And live events flow again.
    (a.folder / "after.txt").write_text("after the freeze")
    wait_until(lambda: in_sync(a, b, server, "after.txt"), what="a live event after the freeze")
    record("link frozen", faults=1, files=len(tree(b.folder)))


@pytest.mark.slow
def test_slow_link_is_not_taken_for_a_dead_one(
    server: Server, proxy: Proxy, pair: tuple[Client, Client]
) -> None:
    a, b = pair
    proxy.rate = 256 * 1024  # bytes per second, each way
    (a.folder / "down.bin").write_bytes(os.urandom(768 * 1024))
    (b.folder / "up.bin").write_bytes(os.urandom(768 * 1024))
    wait_until(lambda: in_sync(a, b, server, "down.bin", "up.bin"), timeout=60, what="sync over a slow link")
    # Three seconds a transfer, over an idle timeout of two: never dropped.
    assert "nothing received or sent" not in output(b)
    record("link slowed", faults=1, files=len(tree(b.folder)))


def test_keepalive_option() -> None:
    options = tap.Options()
    options.parseOptions(["--api-key", "k", "--keepalive", "0.5"])
    assert options["keepalive"] == 0.5
    assert tap.Options().parseOptions(["--api-key", "k"]) is None
    for bad in ["0", "-1", "nan", "inf", "soon"]:
        with pytest.raises(UsageError):
            tap.Options().parseOptions(["--api-key", "k", "--keepalive", bad])


def test_idle_timeout_option() -> None:
    assert cli.parse(["--idle-timeout", "2.5"], environ={}).idle_timeout == 2.5
    assert cli.parse([], environ={}).idle_timeout == 45.0
    for bad in ["0", "-1", "nan", "inf"]:
        with pytest.raises(SystemExit):
            cli.parse(["--idle-timeout", bad], environ={})


@pytest_twisted.ensureDeferred
async def test_an_upload_draining_slowly_is_not_silent(reactor: Any, tmp_path: Path) -> None:
    # Through a slow link the whole body fits in the socket's buffers long
    # before the server has it: the wait for the answer is not silence as
    # long as the buffers drain.
    data = os.urandom(768 * 1024)
    (tmp_path / "up.bin").write_bytes(data)
    async with running_server(reactor, tmp_path / "box", KEY) as server:
        proxy = Proxy(server.port, rate=256 * 1024).start()
        pool = HTTPConnectionPool(reactor, persistent=False)
        api = BoxsyncAPI(HTTPClient(Agent(reactor, pool=pool)), reactor, proxy.url, KEY, "slow", idle_timeout=1.0)
        try:
            upload = api.upload("up.bin", tmp_path / "up.bin", 0, sha(data), None)
            result = await timed(Deferred.fromCoroutine(upload), reactor)
        finally:
            proxy.stop()
            await pool.closeCachedConnections()
    assert result.sha256 == sha(data)


def test_an_upload_through_a_proxy_that_trickles_it_on_finishes(
    tmp_path: Path, server: Server
) -> None:
    """
    A slow link behind a proxy that takes the whole body at once: the
    client's socket is empty long before the server has the upload, and
    for much longer than the client's idle timeout. The server's word that
    it is still getting the body keeps the upload going to its end, on its
    first connection, instead of restarting it from byte 0 every time the
    client would have taken the wait for a dead link.
    """
    proxy = Proxy(server.port, rate=8192).start()
    data = os.urandom(64 * 1024)  # 8 s through the proxy, four idle timeouts
    a = Client(server, tmp_path / "a", "a", url=proxy.url, options=["--idle-timeout", str(IDLE)]).start()
    try:
        wait_until(lambda: proxy.accepted > 0, what="the client to connect")
        connections = proxy.accepted
        (a.folder / "slow.bin").write_bytes(data)
        wait_until(
            lambda: sha_of(server.box / "slow.bin") == sha(data), timeout=40, what="the upload to finish"
        )
        # The event stream and at most one upload connection, none of them
        # made again after a silence.
        assert proxy.accepted - connections <= 1
    finally:
        a.kill()
        proxy.stop()
    record("upload through a trickling proxy", faults=1, files=1)


def sha_of(path: Path) -> str | None:
    return sha(path.read_bytes()) if path.exists() else None


def test_wrapped_connection_errors_are_described_plainly() -> None:
    wrapped = ResponseFailed([Failure(ConnectionLost("the link went down"))])
    assert describe(wrapped) == str(ConnectionLost("the link went down"))
    assert describe(ValueError("first line\nsecond")) == "first line"


@pytest.mark.slow
def test_a_returning_server_is_noticed_within_seconds(tmp_path: Path, server: Server) -> None:
    """
    After an outage long enough for the back-off to reach its cap, a client
    is back within the cap (plus the time to connect) once the server is.
    """
    a = Client(server, tmp_path / "a", "a").start()
    try:
        (a.folder / "before.txt").write_text("before")
        wait_until(lambda: "before.txt" in tree(server.box), what="the first sync")
        server.stop()
        wait_until(lambda: len(backoffs(a)) >= 6, timeout=60, what="the back-off to reach its cap")
        assert max(backoffs(a)) > MAX_BACKOFF / 2
        (a.folder / "after.txt").write_text("written while the server was away")
        server.start()
        back = time.monotonic()
        wait_until(lambda: "after.txt" in tree(server.box), timeout=30, what="the client to come back")
        assert time.monotonic() - back < MAX_BACKOFF + 1.5
    finally:
        a.kill()
    record("server away for a while", faults=1, files=len(tree(server.box)))
