"""
Hostile peers: oversized headers, overlong paths, connections that say
nothing, requests trickled a byte at a time. Each gets a clear 4xx (or is
dropped), leaves nothing half done, and costs the other clients nothing —
while a quiet event stream and a slowly read download, which are not hostile,
are left alone.

The connection rules are checked first on a channel driven by a fake clock,
then against a real server on a loopback port.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from boxsync.paths import LOCAL_PATH_MAX, MAX_PATH_BYTES, MAX_SEGMENT_BYTES
from boxsync.wire import Download, Manifest
from boxsync.server.limits import ConnectionLimits, LimitedSite
from tests.conftest import KEY
from tests.helpers import eventually, RunningServer, json_of, open_stream, put, running_server, sha, timed
from tests.integration.test_legacy import http_request, legacy_upload, send

LIMITS = ConnectionLimits(idle_timeout=30.0, min_rate=10, window=10.0, max_header_bytes=1000, max_headers=10)


class _Answer(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"ok"

    def render_POST(self, request: Any) -> bytes:
        return b"%d" % len(request.content.read())


class _Held(Resource):
    """
    A response that never ends, like an event stream.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> Any:
        request.write(b"started")
        return NOT_DONE_YET


def channel(limits: ConnectionLimits = LIMITS) -> tuple[Any, StringTransport, Clock]:
    root = Resource()
    root.putChild(b"answer", _Answer())
    root.putChild(b"held", _Held())
    clock = Clock()
    site = LimitedSite(root, limits, reactor=clock)
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


def status(transport: StringTransport) -> int:
    return int(transport.value().split(b" ", 2)[1])


def body_of(transport: StringTransport) -> Any:
    return json.loads(transport.value().partition(b"\r\n\r\n")[2])


def test_trickled_request_line_is_408_and_closed() -> None:
    protocol, transport, clock = channel()
    for byte in b"GET /answer HTTP/1.1\r\n":
        protocol.dataReceived(bytes([byte]))
        clock.advance(1)
        if transport.disconnecting:
            break
    # 10 bytes/s over 10 s is 100 bytes: 10 bytes in 10 s are too few.
    assert transport.disconnecting and clock.seconds() == 10
    assert status(transport) == 408
    assert "slower than 10 bytes/s" in body_of(transport)["error"]


def test_steady_slow_body_is_not_dropped() -> None:
    protocol, transport, clock = channel()
    protocol.dataReceived(b"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\n")
    for _ in range(30):
        # 20 bytes a second, twice the minimum, for 30 s.
        protocol.dataReceived(b"x" * 20)
        clock.advance(1)
    assert not transport.disconnecting
    assert status(transport) == 200 and transport.value().endswith(b"600")


def test_the_rule_is_off_once_the_request_is_whole() -> None:
    protocol, transport, clock = channel()
    protocol.dataReceived(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(3600)
    assert not transport.disconnecting and b"started" in transport.value()


def test_each_request_of_a_connection_is_checked() -> None:
    protocol, transport, clock = channel()
    protocol.dataReceived(b"GET /answer HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(transport) == 200
    transport.clear()
    protocol.dataReceived(b"GET /ans")
    clock.advance(10)
    assert transport.disconnecting and status(transport) == 408


def test_a_silent_connection_is_closed_without_an_answer() -> None:
    protocol, transport, clock = channel()
    clock.advance(29)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting and transport.value() == b""


def test_silence_inside_a_request_is_408() -> None:
    protocol, transport, clock = channel(ConnectionLimits(idle_timeout=5.0, min_rate=0))
    protocol.dataReceived(b"GET /answer HTTP/1.1\r\n")
    clock.advance(5)
    assert transport.disconnecting and status(transport) == 408
    assert "no data" in body_of(transport)["error"]
    protocol.connectionLost(Failure(ConnectionError()))
    assert not [call for call in clock.getDelayedCalls() if call.active()]


@pytest.mark.parametrize(
    "head",
    [
        # One line over the limit, ended or not.
        b"GET /answer HTTP/1.1\r\nX-Big: " + b"x" * 1000 + b"\r\n\r\n",
        b"GET /answer HTTP/1.1\r\nX-Big: " + b"x" * 1100,
        b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\n\r\n",
        # Lines each within it, together over it.
        b"GET /answer HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"y" * 100) for i in range(10)) + b"\r\n",
        # Too many headers.
        b"GET /answer HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(11)) + b"\r\n",
    ],
    ids=["long-header", "unended-line", "long-url", "total-size", "count"],
)
def test_oversized_headers_are_431(head: bytes) -> None:
    protocol, transport, clock = channel()
    protocol.dataReceived(head)
    assert transport.disconnecting and status(transport) == 431
    assert "error" in body_of(transport)
    assert transport.value().count(b"HTTP/1.1") == 1


def test_headers_at_the_limits_are_fine() -> None:
    protocol, transport, clock = channel()
    head = b"GET /answer HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(10)) + b"\r\n"
    protocol.dataReceived(head)
    assert status(transport) == 200 and not transport.disconnecting


# Against a real server on a loopback port.

REAL = ConnectionLimits(idle_timeout=1.0, min_rate=100, window=0.5)


@pytest_twisted.async_yield_fixture
async def strict(tmp_path: Path, reactor: Any) -> AsyncIterator[RunningServer]:
    """
    A server with tight connection limits and no keep-alives to speak of.
    """
    async with running_server(
        reactor, tmp_path / "box", KEY, keepalive_seconds=60.0, config={"connections": REAL}
    ) as running:
        yield running


class Trickle(Protocol):
    """
    Sends C{head} at once, then C{body} C{piece} bytes every C{interval}
    seconds, and keeps what comes back.
    """

    def __init__(self, reactor: Any, head: bytes, body: bytes, piece: int, interval: float) -> None:
        self.head, self.body, self.piece = head, body, piece
        self.received = b""
        self.lost: Deferred[None] = Deferred()
        self.loop = LoopingCall(self._next)
        self.loop.clock = reactor
        self.interval = interval

    def connectionMade(self) -> None:
        self.transport.write(self.head)  # type: ignore[union-attr]
        self.loop.start(self.interval, now=False)

    def _next(self) -> None:
        if not self.body:
            self.loop.stop()
            return
        piece, self.body = self.body[: self.piece], self.body[self.piece :]
        self.transport.write(piece)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.loop.running:
            self.loop.stop()
        self.lost.callback(None)

    @property
    def status(self) -> int:
        return int(self.received.split(b" ", 2)[1])


async def trickle(server: RunningServer, head: bytes, body: bytes, piece: int, interval: float) -> Trickle:
    protocol = Trickle(server.reactor, head, body, piece, interval)
    endpoint = TCP4ClientEndpoint(server.reactor, "127.0.0.1", server.port)
    await timed(connectProtocol(endpoint, protocol), server.reactor)
    return protocol


def upload_head(server: RunningServer, path: str, body: bytes) -> bytes:
    """
    The request line and headers of a C{PUT} of C{body}, without the body.
    """
    headers: list[tuple[str, bytes | str]] = [("Authorization", f"Bearer {server.key}"), ("Connection", "close")]
    return http_request(server, "PUT", "/files/" + path, headers, body)[: -len(body)]


def staging(server: RunningServer) -> list[Path]:
    return list((server.box / ".boxsync" / "staging").iterdir())


@pytest_twisted.ensureDeferred
async def test_trickled_upload_is_dropped_and_leaves_nothing(strict: RunningServer, http: Any) -> None:
    # 10 bytes/s, a tenth of the minimum.
    slow = await trickle(strict, upload_head(strict, "slow.bin", b"x" * 1000), b"x" * 1000, 1, 0.1)
    await eventually(strict.reactor, lambda: len(staging(strict)) == 1)
    # Meanwhile, other clients are served as usual.
    response = await put(http, strict, "fast.bin", b"fast", base=0)
    assert response.code == 201
    await timed(slow.lost, strict.reactor, 10)
    assert slow.status == 408 and slow.body
    await eventually(strict.reactor, lambda: staging(strict) == [])
    assert not (strict.box / "slow.bin").exists()
    response = await http.get(strict.file_url("slow.bin"), headers=strict.headers())
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_steady_upload_is_not_dropped(strict: RunningServer, http: Any) -> None:
    data = os.urandom(4000)
    # 2,000 bytes/s for 2 s: over both the idle timeout and the window.
    steady = await trickle(strict, upload_head(strict, "steady.bin", data), data, 100, 0.05)
    await timed(steady.lost, strict.reactor, 20)
    assert steady.status == 201, steady.received
    assert (strict.box / "steady.bin").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_trickled_headers_are_dropped(strict: RunningServer) -> None:
    head = http_request(strict, "GET", "/healthz", [("X-Padding", "p" * 200)])
    slow = await trickle(strict, b"", head, 1, 0.1)
    await timed(slow.lost, strict.reactor, 10)
    assert slow.status == 408 and slow.body


@pytest_twisted.ensureDeferred
async def test_idle_connection_is_closed(strict: RunningServer) -> None:
    silent = await trickle(strict, b"", b"", 1, 0.1)
    await timed(silent.lost, strict.reactor, 10)
    assert silent.received == b""


@pytest_twisted.ensureDeferred
async def test_quiet_event_stream_is_kept(strict: RunningServer, http: Any) -> None:
    reader = await open_stream(http, strict, Manifest())
    await reader.ready()
    # Silent both ways for longer than the idle timeout and several windows.
    await deferLater(strict.reactor, 2.5)
    assert not reader.done.called
    assert (await put(http, strict, "late.txt", b"late", base=0)).code == 201
    await reader.wait(lambda events: any(isinstance(e, Download) and e.path == "late.txt" for e in events))
    reader.close()


class SlowReader(Protocol):
    """
    Sends a request, then reads the answer one socket read every
    C{interval} seconds.
    """

    def __init__(self, reactor: Any, request: bytes, interval: float) -> None:
        self.reactor, self.request, self.interval = reactor, request, interval
        self.received = b""
        self.reads = 0
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.reads += 1
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.reactor.callLater(self.interval, self._resume)

    def _resume(self) -> None:
        if not self.lost.called:
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_slowly_read_download_is_kept(strict: RunningServer, http: Any) -> None:
    data = os.urandom(3 * 2**20)
    assert (await put(http, strict, "big.bin", data, base=0)).code == 201
    headers: list[tuple[str, bytes | str]] = [("Authorization", f"Bearer {strict.key}"), ("Connection", "close")]
    reader = SlowReader(strict.reactor, http_request(strict, "GET", "/files/big.bin", headers), 0.05)
    endpoint = TCP4ClientEndpoint(strict.reactor, "127.0.0.1", strict.port)
    await timed(connectProtocol(endpoint, reader), strict.reactor)
    await timed(reader.lost, strict.reactor, 60)
    head, _, body = reader.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert hashlib.sha256(body).hexdigest() == sha(data)
    # It took longer than the idle timeout and the window.
    assert reader.reads * 0.05 > 1.5


@pytest_twisted.ensureDeferred
async def test_oversized_header_is_431_and_others_are_served(server: RunningServer, http: Any) -> None:
    big = await send(server, http_request(server, "GET", "/healthz", [("X-Big", "x" * 20000)]))
    await big.response()
    await timed(big.lost, server.reactor)
    assert big.status == 431 and "error" in json.loads(big.body)
    many = [(f"X-{i}", "y") for i in range(101)]
    crowded = await send(server, http_request(server, "GET", "/healthz", many))
    await crowded.response()
    assert crowded.status == 431
    response = await timed(http.get(f"{server.url}/healthz"), server.reactor)
    assert response.code == 200


def path_of(size: int) -> str:
    """
    A path of C{size} UTF-8 bytes, in segments of at most 255.
    """
    parts = []
    while size > MAX_SEGMENT_BYTES:
        parts.append("é" * 127)
        size -= 255
    parts.append("a" * size)
    path = "/".join(parts)
    assert max(len(part.encode()) for part in parts) <= MAX_SEGMENT_BYTES
    return path


@pytest_twisted.ensureDeferred
async def test_path_lengths_over_http(server: RunningServer, http: Any) -> None:
    # The longest path the box's file system holds is accepted ...
    room = LOCAL_PATH_MAX - 1 - len(os.fsencode(os.path.abspath(server.box))) - 1
    fits = path_of(room)
    response = await put(http, server, fits, b"fits", base=0)
    assert response.code == 201, await response.text()
    assert (await json_of(response))["path"] == fits
    response = await http.get(server.file_url(fits), headers=server.headers())
    assert response.code == 200 and await response.content() == b"fits"

    # ... and longer ones get 400 with nothing stored: one byte more and the
    # longest a wire path may be (these could not be in the box, so a GET or
    # a DELETE of them finds nothing: 404), then paths that are never valid.
    wide = "s" * (MAX_SEGMENT_BYTES + 1)
    too_long_here = [path_of(room + 1), path_of(MAX_PATH_BYTES)]
    invalid = [path_of(MAX_PATH_BYTES + 1), wide, f"dir/{wide}/x"]
    for path in too_long_here + invalid:
        for method in ("PUT", "GET", "DELETE"):
            expected = 404 if method != "PUT" and path in too_long_here else 400
            response = await timed(
                http.request(
                    method,
                    server.file_url(path),
                    data=b"x" if method == "PUT" else None,
                    headers=server.headers(X_Boxsync_Base="0"),
                ),
                server.reactor,
            )
            assert response.code == expected, (method, len(path.encode()))
            assert expected == 404 or "longer than" in (await json_of(response))["error"]
        legacy = await legacy_upload(server, path.encode(), b"legacy")
        assert legacy.status == 400
    assert staging(server) == []
    assert [p.name for p in server.box.iterdir() if p.name != ".boxsync"] == [fits.split("/")[0]]
    listed = await json_of(await http.get(f"{server.url}/files", headers=server.headers()))
    assert [entry["path"] for entry in listed] == [fits]


@pytest_twisted.ensureDeferred
async def test_ranges_past_the_end_of_the_file(server: RunningServer, http: Any) -> None:
    """
    C{bytes=-N} with N over the file's size means the whole file, and
    several ranges none of which is in the file get 416 (static.File alone
    fails mid-response on both).
    """
    assert (await put(http, server, "ten.txt", b"0123456789", base=0)).code == 201
    for url in (server.file_url("ten.txt"), f"{server.url}/download/ten.txt"):
        response = await timed(http.get(url, headers=server.headers(Range="bytes=-333")), server.reactor)
        assert response.code == 206 and await response.content() == b"0123456789"
        assert response.headers.getRawHeaders("Content-Range") == ["bytes 0-9/10"]
        response = await timed(http.get(url, headers=server.headers(Range="bytes=-3")), server.reactor)
        assert response.code == 206 and await response.content() == b"789"
        response = await timed(http.get(url, headers=server.headers(Range="bytes=-0")), server.reactor)
        assert response.code == 416
        # Several ranges, none in the file: 416 too, with an empty body.
        response = await timed(http.get(url, headers=server.headers(Range="bytes=50-60,20-30")), server.reactor)
        assert response.code == 416 and await response.content() == b""
        assert response.headers.getRawHeaders("Content-Range") == ["bytes */10"]
        # Several, one in it.
        response = await timed(http.get(url, headers=server.headers(Range="bytes=50-60,2-3")), server.reactor)
        assert response.code == 206 and b"23" in await response.content()


@pytest_twisted.ensureDeferred
async def test_url_path_not_utf8_is_400(server: RunningServer, http: Any) -> None:
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        for url in (f"{server.url}/files/%ED%A0%80", f"{server.url}/download/a%FF", f"{server.url}/%C3"):
            response = await timed(http.get(url, headers=server.headers()), server.reactor)
            assert response.code == 400
            assert (await json_of(response))["error"] == "the path in the URL is not UTF-8"
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == []
