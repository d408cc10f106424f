"""
Tests for L{boxsync.client.api} where the server misbehaves: the real client
against a small faulty server that corrupts, ignores ranges and sends frames
in pieces (in memory), and that stalls and hangs (on 127.0.0.1, through the
real reactor: silences, dropped connections and how a socket cuts a body
are a socket's). Everything else is tested against the real server in
memory, in L{tests.integration.test_client_api}.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any, AsyncIterator, Callable, TypeVar

import pytest
import pytest_twisted
from attrs import define, field
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from boxsync.client.api import BoxsyncAPI
from boxsync.client.errors import DigestMismatch, StreamIdle
from boxsync.client.results import DownloadResult
from boxsync.client.sockets import READ_SIZE, read_more
from boxsync.writer import BATCH_SIZE
from tests.memory import InMemory, result_of
from boxsync.wire import (
    Download,
    Event,
    FileEntry,
    Hello,
    Manifest,
    ProtocolError,
    Ready,
    encode_comment,
    encode_event,
    encode_manifest,
)

TOKEN = "sekrit"
#: Every await in these tests gives up after this long instead of hanging.
PATIENCE = 10.0

T = TypeVar("T")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@define
class Seen:
    """
    One request the fake server received.

    @ivar gone: fires with C{True} when the response finished, C{False} when
        the connection was lost first.
    """

    method: str
    path: str
    headers: Headers
    body: bytes
    request: Request
    gone: Deferred[bool]

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return None if values is None else values[-1]


@define
class Version:
    data: bytes
    seq: int


@define(eq=False)
class FaultyBox(Resource):
    """
    Just enough of a boxsync server to misbehave: an event stream the test
    writes to, and C{GET /files/} with ranges and C{If-Range}.

    @ivar on_stream: called with each C{POST /sync} request once its
        manifest is read; the test writes the stream.
    @ivar ranges: whether C{Range} is honoured.
    @ivar corrupt: whether downloads get one byte flipped (the ETag stays).
    @ivar stall_after: if set, downloads stop sending after this many bytes
        and hang.
    @ivar hang: file paths whose requests are never answered.
    """

    isLeaf = True

    on_stream: Callable[[Request], object]
    files: dict[str, Version] = field(factory=dict)
    seq: int = 0
    seen: list[Seen] = field(factory=list)
    ranges: bool = True
    corrupt: bool = False
    stall_after: int | None = None
    hang: set[str] = field(factory=set)

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: Request) -> bytes | int:
        method = request.method.decode("ascii")
        raw = request.path.decode("ascii")
        gone: Deferred[bool] = request.notifyFinish().addCallbacks(
            lambda _: True, lambda _: False
        )
        body = request.content.read() if request.content is not None else b""
        seen = Seen(method, raw, request.requestHeaders, body, request, gone)
        self.seen.append(seen)
        if raw == "/sync" and method == "POST":
            request.setHeader("content-type", "text/event-stream")
            request.setHeader("cache-control", "no-cache")
            self.on_stream(request)
            return NOT_DONE_YET
        if not raw.startswith("/files/"):
            return self.json(request, 404, {"error": "no such route"})
        path = "/".join(urllib.parse.unquote(s) for s in raw.split("/")[2:])
        if path in self.hang:
            return NOT_DONE_YET
        return self.render_file(request, path, seen)

    def json(self, request: Request, status: int, body: dict[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        return json.dumps(body).encode("utf-8")

    def commit(self, path: str, data: bytes) -> None:
        self.seq += 1
        self.files[path] = Version(data, self.seq)

    def render_file(self, request: Request, path: str, seen: Seen) -> bytes | int:
        current = self.files.get(path)
        if current is None:
            return self.json(request, 404, {"error": "no such file"})
        data = current.data
        etag = f'"{sha256(data)}"'
        request.setHeader("etag", etag)
        request.setHeader("x-boxsync-seq", str(current.seq))
        request.setHeader("accept-ranges", "bytes")
        wanted = seen.header("Range")
        if_range = seen.header("If-Range")
        if self.ranges and wanted and if_range in (None, etag):
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            request.setResponseCode(206)
            request.setHeader("content-range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        if self.corrupt:
            data = bytes([data[0] ^ 1]) + data[1:]
        request.setHeader("content-length", str(len(data)))
        if self.stall_after is None:
            return data
        request.write(data[: self.stall_after])
        return NOT_DONE_YET

    def hang_up(self) -> None:
        """
        Drop every connection still waiting for its response.
        """
        for seen in self.seen:
            if not seen.gone.called:
                seen.request.loseConnection()


@define
class Env:
    reactor: Any
    box: FaultyBox
    port: IListeningPort
    http: HTTPClient

    @property
    def url(self) -> str:
        address = self.port.getHost()
        assert isinstance(address, IPv4Address)
        return f"http://127.0.0.1:{address.port}"

    def api(self, idle_timeout: float = 5.0) -> BoxsyncAPI:
        api = BoxsyncAPI(
            http=self.http,
            clock=self.reactor,
            base_url=self.url,
            token=TOKEN,
            client_name="laptop",
            idle_timeout=idle_timeout,
        )
        assert api.threads is self.reactor
        return api

    async def wait(self, d: Deferred[T], seconds: float = PATIENCE) -> T:
        """
        The result of C{d}, or a C{TimeoutError} after C{seconds}.
        """
        result: T = await d.addTimeout(seconds, self.reactor)
        return result

    async def call(self, coroutine: Any) -> Any:
        """
        Await an API call, or give up on it after a while.
        """
        return await self.wait(Deferred.fromCoroutine(coroutine))

    async def fails(self, coroutine: Any, error: type[BaseException]) -> Any:
        """
        The exception an API call fails with, which must be an C{error}.
        """
        with pytest.raises(error) as info:
            await self.call(coroutine)
        return info.value


def hello(request: Request) -> None:
    request.write(b"retry: 2000\n\n" + encode_event(Hello(stream="s1", seq=41)))


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def env(reactor: Any) -> AsyncIterator[Env]:
    box = FaultyBox(on_stream=hello)
    port = reactor.listenTCP(0, Site(box), interface="127.0.0.1")
    pool = HTTPConnectionPool(reactor)
    environment = Env(reactor, box, port, HTTPClient(Agent(reactor, pool=pool)))
    try:
        yield environment
    finally:
        box.hang_up()
        await environment.wait(pool.closeCachedConnections())
        await environment.wait(maybeDeferred(port.stopListening))


MANIFEST = Manifest(
    client="laptop",
    cursor=41,
    files=(FileEntry(path="docs/a.txt", sha256="0" * 64, size=12, mtime_ns=1, base=37),),
)

DOWNLOAD = Download(path="docs/a.pdf", sha256="a" * 64, size=1048576, mtime_ns=17, seq=42)

DATA = bytes(range(256)) * 2000  # 512,000 bytes


@define
class Faulty(InMemory):
    """
    The faulty server, in memory: for the faults that need no socket.
    """

    box: FaultyBox = field(factory=lambda: FaultyBox(on_stream=hello))
    http: HTTPClient = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.http = self.serve(Site(self.box))

    def api(self) -> BoxsyncAPI:
        return BoxsyncAPI(self.http, self.reactor, "http://box.example", TOKEN, "laptop")


@pytest.fixture
def faulty() -> Faulty:
    return Faulty()


def test_stream_events(faulty: Faulty) -> None:
    """
    The stream sends the manifest with the right headers and delivers the
    known events in order, however the frames are cut into chunks, skipping
    keep-alives and unknown events; C{done} fires when the server ends it.
    """
    events: list[Event] = []
    stream = faulty.run(faulty.api().open_stream(MANIFEST, 41, events.append))
    assert events == [Hello(stream="s1", seq=41)]

    [seen] = faulty.box.seen
    assert (seen.method, seen.path) == ("POST", "/sync")
    assert seen.body == encode_manifest(MANIFEST)
    assert seen.header("Accept") == "text/event-stream"
    assert seen.header("Last-Event-ID") == "41"
    assert seen.header("Authorization") == f"Bearer {TOKEN}"
    assert seen.header("X-Boxsync-Client") == "laptop"

    frame = encode_event(DOWNLOAD) + encode_comment("keepalive")
    frame += b"event: from-the-future\ndata: {}\n\n" + encode_event(Ready(seq=42))
    for start in range(0, len(frame), 7):
        seen.request.write(frame[start : start + 7])
        faulty.settle()
    assert events == [Hello(stream="s1", seq=41), DOWNLOAD, Ready(seq=42)]
    assert stream.last_event_id == "42"
    assert stream.retry == 2000

    seen.request.finish()
    faulty.settle()
    assert result_of(stream.done) is None


def test_stream_bad_event(faulty: Faulty) -> None:
    """
    A malformed event ends the stream with a L{ProtocolError}, and so does an
    exception from C{on_event}.
    """
    faulty.box.on_stream = lambda request: request.write(b"event: hello\ndata: [1]\n\n")
    stream = faulty.run(faulty.api().open_stream(MANIFEST, None, lambda event: None))
    with pytest.raises(ProtocolError):
        result_of(stream.done)

    def refuse(event: object) -> None:
        raise ZeroDivisionError()

    faulty.box.on_stream = hello
    stream = faulty.run(faulty.api().open_stream(MANIFEST, None, refuse))
    with pytest.raises(ZeroDivisionError):
        result_of(stream.done)


def test_an_event_about_a_path_out_of_the_folder_is_refused_alone(faulty: Faulty) -> None:
    """
    An event whose path no client may act on (C{../../x}) is refused and
    logged; the events around it still arrive, and the stream goes on.
    """
    events: list[object] = []
    bad = encode_event(DOWNLOAD).replace(DOWNLOAD.path.encode(), b"../../x")
    good = Download("good.txt", "0" * 64, 1, 1, 8)

    def stream(request: Any) -> None:
        hello(request)
        request.write(encode_event(DOWNLOAD) + bad + encode_event(good) + encode_event(Ready(seq=9)))

    faulty.box.on_stream = stream
    opened = faulty.run(faulty.api().open_stream(MANIFEST, None, events.append))
    assert events[1:] == [DOWNLOAD, good, Ready(seq=9)]
    assert not opened.done.called


def test_download_resume_refused(faulty: Faulty, tmp_path: Path) -> None:
    """
    When the server sends the whole file rather than the rest, C{dest}
    starts over.
    """
    faulty.box.commit("a", DATA)
    faulty.box.ranges = False
    dest = tmp_path / "dest"
    dest.write_bytes(b"junk" * 1000)
    result = faulty.run(faulty.api().download("a", dest, sha256(DATA), None))
    assert (result.size, dest.read_bytes()) == (len(DATA), DATA)
    assert faulty.box.seen[0].header("Range") == "bytes=4000-"


def test_download_digest_mismatch(faulty: Faulty, tmp_path: Path) -> None:
    """
    Bytes that do not hash to the expected sha256 are deleted.
    """
    faulty.box.commit("a", DATA)
    faulty.box.corrupt = True
    dest = tmp_path / "dest"
    with pytest.raises(DigestMismatch) as info:
        faulty.run(faulty.api().download("a", dest, sha256(DATA), None))
    assert info.value.actual == sha256(bytes([DATA[0] ^ 1]) + DATA[1:])
    assert not dest.exists()


# What needs a socket: connections refused, dropped and silent, and how a
# body is cut into reads.


@pytest_twisted.ensureDeferred
async def test_healthz_nobody_there(env: Env) -> None:
    api = env.api()
    await env.wait(maybeDeferred(env.port.stopListening))
    assert await env.call(api.healthz()) is False


@pytest_twisted.ensureDeferred
async def test_upload_unanswered(env: Env, tmp_path: Path) -> None:
    """
    An upload whose answer does not come within C{idle_timeout} seconds of
    the last byte sent is given up with L{StreamIdle}.
    """
    local = tmp_path / "local"
    local.write_bytes(b"x" * 200_000)
    env.box.hang.add("a")
    progress: list[int] = []
    api = env.api(idle_timeout=0.5)
    await env.fails(api.upload("a", local, 0, None, None, progress.append), StreamIdle)
    assert sum(progress) == 200_000
    assert await env.wait(env.box.seen[0].gone) is False


@pytest_twisted.ensureDeferred
async def test_download_idle_then_resume(env: Env, tmp_path: Path) -> None:
    """
    A download whose body stalls fails with L{StreamIdle} and keeps what it
    got, and the next try asks only for the rest.
    """
    env.box.commit("a", DATA)
    env.box.stall_after = 200_000
    dest = tmp_path / "dest"
    api = env.api(idle_timeout=0.5)
    await env.fails(api.download("a", dest, sha256(DATA), None), StreamIdle)
    assert dest.read_bytes() == DATA[:200_000]
    assert await env.wait(env.box.seen[0].gone) is False

    env.box.stall_after = None
    result = await env.call(api.download("a", dest, sha256(DATA), None))
    assert (result.size, dest.read_bytes()) == (len(DATA), DATA)
    assert env.box.seen[1].header("Range") == "bytes=200000-"


#: Larger than two batches, not a whole number of them.
BIG = os.urandom(2**16) * (2 * BATCH_SIZE // 2**16 + 3)


@pytest_twisted.ensureDeferred
async def test_download_large(env: Env, tmp_path: Path) -> None:
    """
    A body of several batches arrives whole and in order, the progress
    counted a batch at a time.
    """
    env.box.commit("big", BIG)
    dest = tmp_path / "dest"
    progress: list[int] = []
    result = await env.call(env.api().download("big", dest, sha256(BIG), progress.append))
    assert result == DownloadResult(sha256=sha256(BIG), size=len(BIG), seq=1)
    assert dest.read_bytes() == BIG
    assert sum(progress) == len(BIG)
    assert max(progress) < BATCH_SIZE + READ_SIZE


@pytest_twisted.ensureDeferred
async def test_download_cancelled(env: Env, tmp_path: Path) -> None:
    """
    A cancelled download keeps what arrived, written in full before the file
    is closed.
    """
    env.box.commit("big", BIG)
    env.box.stall_after = BATCH_SIZE + 1000
    dest = tmp_path / "dest"
    progress: list[int] = []
    arrived: Deferred[None] = Deferred()

    def on_progress(count: int) -> None:
        progress.append(count)
        if not arrived.called:
            arrived.callback(None)

    downloading = Deferred.fromCoroutine(
        env.api().download("big", dest, sha256(BIG), on_progress)
    )
    await env.wait(arrived)
    downloading.cancel()
    with pytest.raises(CancelledError):
        await env.wait(downloading)
    got = dest.read_bytes()
    assert got == BIG[: len(got)]
    assert len(got) >= BATCH_SIZE


def test_read_more() -> None:
    """
    The TCP connection under a response body, or under its TLS, reads
    C{READ_SIZE} bytes at a time; other transports are left alone.
    """
    from types import SimpleNamespace

    from twisted.internet.tcp import Connection

    plain, under_tls = Connection.__new__(Connection), Connection.__new__(Connection)
    read_more(SimpleNamespace(_producer=plain))
    read_more(SimpleNamespace(_producer=SimpleNamespace(transport=under_tls)))
    assert plain.bufferSize == under_tls.bufferSize == READ_SIZE
    other = SimpleNamespace(bufferSize=1)
    read_more(SimpleNamespace(_producer=other))
    read_more(object())
    assert other.bufferSize == 1
