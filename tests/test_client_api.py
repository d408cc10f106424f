"""
Tests for L{boxsync.client.api}: the real client, through treq and the real
reactor, against a small fake of the server on 127.0.0.1 that follows
C{docs/protocol.md} just far enough.
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
from boxsync.client.errors import (
    APIError,
    AuthError,
    BadRequest,
    DigestMismatch,
    NotFound,
    ServerFull,
    StaleBase,
    StreamIdle,
    TooLarge,
)
from boxsync.client.results import CommitResult, DownloadResult
from boxsync.client.sockets import READ_SIZE, read_more
from boxsync.writer import BATCH_SIZE
from boxsync.wire import (
    Download,
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
    data: bytes | None  # None: a tombstone
    seq: int
    mtime_ns: int = 0

    def to_json(self, path: str) -> dict[str, Any]:
        return {
            "path": path,
            "seq": self.seq,
            "sha256": None if self.data is None else sha256(self.data),
            "size": 0 if self.data is None else len(self.data),
            "mtime_ns": self.mtime_ns,
            "deleted": self.data is None,
        }


@define(eq=False)
class FakeBox(Resource):
    """
    Just enough of a boxsync server: bearer auth, C{/healthz}, an event
    stream the test writes to, and C{/files/} with commits, ranges and
    C{If-Range}; plus switches to misbehave.

    @ivar on_stream: called with each C{POST /sync} request once its
        manifest is read; the test writes the stream.
    @ivar ranges: whether C{Range} is honoured.
    @ivar corrupt: whether downloads get one byte flipped (the ETag stays).
    @ivar stall_after: if set, downloads stop sending after this many bytes
        and hang.
    @ivar forced: answers to give, by file path, whatever the request.
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
    forced: dict[str, tuple[int, dict[str, Any]]] = field(factory=dict)
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
        if raw == "/healthz":
            return self.json(request, 200, {"status": "ok"})
        auth = request.getHeader("authorization")
        if auth is None:
            return self.json(request, 401, {"error": "no key"})
        if auth != f"Bearer {TOKEN}":
            return self.json(request, 403, {"error": "wrong key"})
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
        if path in self.forced:
            status, body = self.forced[path]
            return self.json(request, status, body)
        handler = getattr(self, "render_file_" + method)
        result: bytes | int = handler(request, path, seen)
        return result

    def json(self, request: Request, status: int, body: dict[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        return json.dumps(body).encode("utf-8")

    def commit(self, path: str, data: bytes | None, mtime_ns: int = 0) -> Version:
        self.seq += 1
        version = self.files[path] = Version(data, self.seq, mtime_ns)
        return version

    def stale(self, request: Request, path: str, seen: Seen) -> bytes | None:
        current = self.files.get(path)
        seq = current.seq if current else 0
        base = seen.header("X-Boxsync-Base")
        if base is not None and int(base) != seq:
            return self.json(request, 412, {"error": "stale base", "seq": seq})
        return None

    def render_file_PUT(self, request: Request, path: str, seen: Seen) -> bytes:
        refused = self.stale(request, path, seen)
        if refused is not None:
            return refused
        if seen.header("X-Boxsync-Sha256") not in (None, sha256(seen.body)):
            return self.json(request, 400, {"error": "sha256 mismatch"})
        version = self.commit(path, seen.body, int(seen.header("X-Boxsync-Mtime") or 0))
        return self.json(request, 201, version.to_json(path))

    def render_file_DELETE(self, request: Request, path: str, seen: Seen) -> bytes:
        current = self.files.get(path)
        if current is None or current.data is None:
            return self.json(request, 404, {"error": "no such file"})
        refused = self.stale(request, path, seen)
        if refused is not None:
            return refused
        return self.json(request, 200, self.commit(path, None).to_json(path))

    def render_file_GET(self, request: Request, path: str, seen: Seen) -> bytes | int:
        current = self.files.get(path)
        if current is None or current.data is None:
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
            if start >= len(data):
                request.setHeader("content-range", f"bytes */{len(data)}")
                return self.json(request, 416, {"error": "range not satisfiable"})
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
    box: FakeBox
    port: IListeningPort
    http: HTTPClient

    @property
    def url(self) -> str:
        address = self.port.getHost()
        assert isinstance(address, IPv4Address)
        return f"http://127.0.0.1:{address.port}"

    def api(
        self, token: str | None = TOKEN, idle_timeout: float = 5.0, threads: bool = True
    ) -> BoxsyncAPI:
        api = BoxsyncAPI(
            http=self.http,
            clock=self.reactor,
            base_url=self.url,
            token=token,
            client_name="laptop",
            idle_timeout=idle_timeout,
        )
        assert api.threads is self.reactor
        if not threads:
            api.threads = None
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

    def later(self, seconds: float, f: Callable[..., object], *args: object) -> None:
        self.reactor.callLater(seconds, f, *args)


def hello(request: Request) -> None:
    request.write(b"retry: 2000\n\n" + encode_event(Hello(stream="s1", seq=41)))


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def env(reactor: Any) -> AsyncIterator[Env]:
    box = FakeBox(on_stream=hello)
    port = reactor.listenTCP(0, Site(box), interface="127.0.0.1")
    pool = HTTPConnectionPool(reactor)
    environment = Env(reactor, box, port, HTTPClient(Agent(reactor, pool=pool)))
    try:
        yield environment
    finally:
        box.hang_up()
        await environment.wait(pool.closeCachedConnections())
        await environment.wait(maybeDeferred(port.stopListening))


class Events:
    """
    An C{on_event} callback that keeps the events and says when there are
    enough of them.
    """

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)
        for count, d in list(self._waiting):
            if len(self.events) >= count:
                self._waiting.remove((count, d))
                d.callback(None)

    def until(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.append((count, d))
        if len(self.events) >= count:
            self._waiting.remove((count, d))
            d.callback(None)
        return d


MANIFEST = Manifest(
    client="laptop",
    cursor=41,
    files=(FileEntry(path="docs/a.txt", sha256="0" * 64, size=12, mtime_ns=1, base=37),),
)

DOWNLOAD = Download(path="docs/a.pdf", sha256="a" * 64, size=1048576, mtime_ns=17, seq=42)


@pytest_twisted.ensureDeferred
async def test_healthz(env: Env) -> None:
    assert await env.call(env.api(token=None).healthz()) is True


@pytest_twisted.ensureDeferred
async def test_healthz_nobody_there(env: Env) -> None:
    api = env.api()
    await env.wait(maybeDeferred(env.port.stopListening))
    assert await env.call(api.healthz()) is False


@pytest_twisted.ensureDeferred
async def test_stream_events(env: Env) -> None:
    """
    The stream sends the manifest with the right headers and delivers the
    known events in order, however the frames are cut into chunks, skipping
    keep-alives and unknown events; C{done} fires when the server ends it.
    """
    events = Events()
    stream = await env.call(env.api().open_stream(MANIFEST, 41, events))
    await env.wait(events.until(1))
    assert events.events == [Hello(stream="s1", seq=41)]

    [seen] = env.box.seen
    assert (seen.method, seen.path) == ("POST", "/sync")
    assert seen.body == encode_manifest(MANIFEST)
    assert seen.header("Accept") == "text/event-stream"
    assert seen.header("Last-Event-ID") == "41"
    assert seen.header("Authorization") == f"Bearer {TOKEN}"
    assert seen.header("X-Boxsync-Client") == "laptop"

    frame = encode_event(DOWNLOAD) + encode_comment("keepalive")
    frame += b"event: from-the-future\ndata: {}\n\n" + encode_event(Ready(seq=42))
    for i, start in enumerate(range(0, len(frame), 7)):
        env.later(0.005 * i, seen.request.write, frame[start : start + 7])
    await env.wait(events.until(3))
    assert events.events == [Hello(stream="s1", seq=41), DOWNLOAD, Ready(seq=42)]
    assert stream.last_event_id == "42"
    assert stream.retry == 2000

    seen.request.finish()
    assert await env.wait(stream.done) is None


@pytest_twisted.ensureDeferred
async def test_stream_idle(env: Env) -> None:
    """
    A stream on which nothing arrives for C{idle_timeout} seconds is closed
    and fails with L{StreamIdle}.
    """
    events = Events()
    stream = await env.call(env.api(idle_timeout=0.5).open_stream(MANIFEST, None, events))
    with pytest.raises(StreamIdle):
        await env.wait(stream.done)
    [seen] = env.box.seen
    assert seen.header("Last-Event-ID") is None
    assert await env.wait(seen.gone) is False
    assert events.events == [Hello(stream="s1", seq=41)]


@pytest_twisted.ensureDeferred
async def test_stream_keepalives(env: Env) -> None:
    """
    Keep-alive comments keep a stream open past C{idle_timeout}.
    """

    def keepalives(request: Request) -> None:
        hello(request)
        for i in range(1, 9):
            env.later(0.15 * i, request.write, encode_comment("keepalive"))
        env.later(0.15 * 9, request.finish)

    env.box.on_stream = keepalives
    stream = await env.call(env.api(idle_timeout=0.5).open_stream(MANIFEST, None, Events()))
    assert await env.wait(stream.done) is None


@pytest_twisted.ensureDeferred
async def test_stream_cancel(env: Env) -> None:
    """
    Cancelling a stream closes its connection; C{done} fails with
    C{CancelledError}.
    """
    events = Events()
    stream = await env.call(env.api().open_stream(MANIFEST, None, events))
    await env.wait(events.until(1))
    stream.cancel()
    with pytest.raises(CancelledError):
        await env.wait(stream.done)
    assert await env.wait(env.box.seen[0].gone) is False


@pytest_twisted.ensureDeferred
async def test_stream_bad_event(env: Env) -> None:
    """
    A malformed event ends the stream with a L{ProtocolError}, and so does an
    exception from C{on_event}.
    """
    env.box.on_stream = lambda request: request.write(b"event: hello\ndata: [1]\n\n")
    stream = await env.call(env.api().open_stream(MANIFEST, None, Events()))
    with pytest.raises(ProtocolError):
        await env.wait(stream.done)

    def refuse(event: object) -> None:
        raise ZeroDivisionError()

    env.box.on_stream = hello
    stream = await env.call(env.api().open_stream(MANIFEST, None, refuse))
    with pytest.raises(ZeroDivisionError):
        await env.wait(stream.done)


@pytest.mark.parametrize("token, status", [(None, 401), ("wrong", 403)])
@pytest_twisted.ensureDeferred
async def test_auth_errors(env: Env, token: str | None, status: int) -> None:
    error = await env.fails(env.api(token=token).open_stream(MANIFEST, None, Events()), AuthError)
    assert error.status == status
    assert error.message in ("no key", "wrong key")
    assert env.box.seen[0].header("Authorization") == (token and f"Bearer {token}")


@pytest_twisted.ensureDeferred
async def test_upload(env: Env, tmp_path: Path) -> None:
    """
    An upload streams the file with its headers and gives back the commit.
    """
    data = os.urandom(300_000)
    local = tmp_path / "local"
    local.write_bytes(data)
    api = env.api()
    api.stream_id = "s1"
    progress: list[int] = []
    path = "dir one/naïve 100%.txt"
    result = await env.call(api.upload(path, local, 0, sha256(data), 17, progress.append))
    assert result == CommitResult(
        path=path, seq=1, sha256=sha256(data), size=len(data), mtime_ns=17, deleted=False
    )
    assert sum(progress) == len(data)
    assert len(progress) > 1
    [seen] = env.box.seen
    assert (seen.method, seen.path) == ("PUT", "/files/dir%20one/na%C3%AFve%20100%25.txt")
    assert seen.body == data
    assert seen.header("Content-Length") == str(len(data))
    assert seen.header("X-Boxsync-Base") == "0"
    assert seen.header("X-Boxsync-Sha256") == sha256(data)
    assert seen.header("X-Boxsync-Mtime") == "17"
    assert seen.header("X-Boxsync-Client") == "laptop"
    assert seen.header("X-Boxsync-Stream") == "s1"


@pytest_twisted.ensureDeferred
async def test_upload_last_writer_wins(env: Env, tmp_path: Path) -> None:
    """
    Without a base, sha256 or mtime, those headers are left out.
    """
    local = tmp_path / "local"
    local.write_bytes(b"")
    env.box.commit("a", b"old")
    result = await env.call(env.api().upload("a", local, None, None, None))
    assert (result.seq, result.size) == (2, 0)
    [seen] = env.box.seen
    for name in ("X-Boxsync-Base", "X-Boxsync-Sha256", "X-Boxsync-Mtime", "X-Boxsync-Stream"):
        assert seen.header(name) is None


@pytest_twisted.ensureDeferred
async def test_upload_stale_base(env: Env, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.write_bytes(b"mine")
    for _ in range(5):
        env.box.commit("a.txt", b"theirs")
    error = await env.fails(env.api().upload("a.txt", local, 3, None, None), StaleBase)
    assert (error.status, error.current_seq, error.message) == (412, 5, "stale base")


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


@pytest.mark.parametrize(
    "status, error",
    [(400, BadRequest), (404, NotFound), (413, TooLarge), (507, ServerFull), (500, APIError)],
)
@pytest_twisted.ensureDeferred
async def test_upload_errors(
    env: Env, tmp_path: Path, status: int, error: type[APIError]
) -> None:
    local = tmp_path / "local"
    local.write_bytes(b"x" * 100_000)
    env.box.forced["a"] = (status, {"error": f"no {status}"})
    raised = await env.fails(env.api().upload("a", local, 0, None, None), APIError)
    assert type(raised) is error
    assert (raised.status, raised.message) == (status, f"no {status}")


@pytest_twisted.ensureDeferred
async def test_delete(env: Env) -> None:
    env.box.commit("a", b"data")
    env.box.commit("a", b"data 2")
    api = env.api()
    api.stream_id = "s1"
    error = await env.fails(api.delete("a", 1), StaleBase)
    assert error.current_seq == 2
    result = await env.call(api.delete("a", 2))
    assert result == CommitResult(
        path="a", seq=3, sha256=None, size=0, mtime_ns=0, deleted=True
    )
    assert env.box.seen[-1].header("X-Boxsync-Base") == "2"
    assert env.box.seen[-1].header("X-Boxsync-Stream") == "s1"
    await env.fails(api.delete("a", 3), NotFound)


DATA = bytes(range(256)) * 2000  # 512,000 bytes


@pytest.mark.parametrize("threads", [True, False])
@pytest_twisted.ensureDeferred
async def test_download(env: Env, tmp_path: Path, threads: bool) -> None:
    env.box.commit("dir/ä b", DATA)
    dest = tmp_path / "dest"
    progress: list[int] = []
    api = env.api(threads=threads)
    result = await env.call(api.download("dir/ä b", dest, sha256(DATA), progress.append))
    assert result == DownloadResult(sha256=sha256(DATA), size=len(DATA), seq=1)
    assert dest.read_bytes() == DATA
    assert sum(progress) == len(DATA)
    [seen] = env.box.seen
    assert seen.path == "/files/dir/%C3%A4%20b"
    assert seen.header("Range") is None


@pytest_twisted.ensureDeferred
async def test_download_resume(env: Env, tmp_path: Path) -> None:
    """
    A partial C{dest} is completed with a C{Range} request, on condition
    that the server still has the expected version.
    """
    env.box.commit("a", DATA)
    dest = tmp_path / "dest"
    dest.write_bytes(DATA[:100_000])
    progress: list[int] = []
    result = await env.call(env.api().download("a", dest, sha256(DATA), progress.append))
    assert result == DownloadResult(sha256=sha256(DATA), size=len(DATA), seq=1)
    assert dest.read_bytes() == DATA
    assert progress[0] == 100_000
    assert sum(progress) == len(DATA)
    [seen] = env.box.seen
    assert seen.header("Range") == "bytes=100000-"
    assert seen.header("If-Range") == f'"{sha256(DATA)}"'
    assert seen.request.code == 206


@pytest_twisted.ensureDeferred
async def test_download_resume_refused(env: Env, tmp_path: Path) -> None:
    """
    When the server sends the whole file rather than the rest, C{dest}
    starts over.
    """
    env.box.commit("a", DATA)
    env.box.ranges = False
    dest = tmp_path / "dest"
    dest.write_bytes(b"junk" * 1000)
    result = await env.call(env.api().download("a", dest, sha256(DATA), None))
    assert (result.size, dest.read_bytes()) == (len(DATA), DATA)
    assert env.box.seen[0].header("Range") == "bytes=4000-"


@pytest_twisted.ensureDeferred
async def test_download_resume_past_the_end(env: Env, tmp_path: Path) -> None:
    """
    A C{dest} already as long as the file or longer gets C{416}: it starts
    over.
    """
    env.box.commit("a", DATA)
    dest = tmp_path / "dest"
    dest.write_bytes(DATA + b"more")
    result = await env.call(env.api().download("a", dest, sha256(DATA), None))
    assert (result.size, dest.read_bytes()) == (len(DATA), DATA)
    first, second = env.box.seen
    assert (first.request.code, first.header("Range")) == (416, f"bytes={len(DATA) + 4}-")
    assert (second.request.code, second.header("Range")) == (200, None)


@pytest_twisted.ensureDeferred
async def test_download_without_expected_sha256(env: Env, tmp_path: Path) -> None:
    """
    Without an expected sha256 nothing can be resumed safely: C{dest} is
    overwritten.
    """
    env.box.commit("a", DATA)
    dest = tmp_path / "dest"
    dest.write_bytes(DATA[:100])
    result = await env.call(env.api().download("a", dest, None, None))
    assert (result.sha256, dest.read_bytes()) == (sha256(DATA), DATA)
    assert env.box.seen[0].header("Range") is None


@pytest_twisted.ensureDeferred
async def test_download_other_version(env: Env, tmp_path: Path) -> None:
    """
    When the server has another version than the one expected, the download
    stops at the headers and C{dest} is deleted.
    """
    env.box.commit("a", DATA)
    env.box.stall_after = 1000  # the body never ends: only the headers count
    dest = tmp_path / "dest"
    dest.write_bytes(DATA[:100])
    error = await env.fails(env.api().download("a", dest, "b" * 64, None), DigestMismatch)
    assert (error.path, error.expected, error.actual) == ("a", "b" * 64, sha256(DATA))
    assert not dest.exists()
    [seen] = env.box.seen
    assert seen.request.code == 200  # If-Range did not match
    assert await env.wait(seen.gone) is False


@pytest_twisted.ensureDeferred
async def test_download_digest_mismatch(env: Env, tmp_path: Path) -> None:
    """
    Bytes that do not hash to the expected sha256 are deleted.
    """
    env.box.commit("a", DATA)
    env.box.corrupt = True
    dest = tmp_path / "dest"
    error = await env.fails(env.api().download("a", dest, sha256(DATA), None), DigestMismatch)
    assert error.actual == sha256(bytes([DATA[0] ^ 1]) + DATA[1:])
    assert not dest.exists()


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


@pytest_twisted.ensureDeferred
async def test_download_not_found(env: Env, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    error = await env.fails(env.api().download("nothing", dest, None, None), NotFound)
    assert error.message == "no such file"
    assert not dest.exists()


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


@pytest_twisted.ensureDeferred
async def test_download_disk_full(env: Env, tmp_path: Path) -> None:
    """
    A download that cannot be written fails with the write's error, and the
    connection is not left behind half read.
    """
    env.box.commit("big", BIG)
    error = await env.fails(env.api().download("big", Path("/dev/full"), None, None), OSError)
    assert "No space left" in str(error)
    env.box.commit("small", DATA)
    result = await env.call(env.api().download("small", tmp_path / "dest", None, None))
    assert result.size == len(DATA)


def testread_more() -> None:
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
