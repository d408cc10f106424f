"""
The legacy clients' wire format (``docs/protocol.md``, "Legacy clients"),
spoken byte for byte by a raw HTTP/1.1 client on a loopback socket: the
requests are written by hand as the old Node.js and Python clients write
them, and the chunked framing of every response is read here, so each test
can see exactly what went out in which chunk.
"""

from __future__ import annotations

import json
from io import BytesIO
import os
from pathlib import Path
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

import pytest
import pytest_twisted
from treq import content
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure

from boxsync.wire import Download, Event, Hello, InSync, Manifest, ProtocolError, Ready, Upload
from boxsync.server.auth import ApiKeyAuth, Forbidden
from boxsync.server import manifest
from boxsync.server.legacy import StreamedFiles, read_files
from boxsync.wire.legacy import LegacyEntry, encode_action, parse_files
from boxsync.server.tap import Options, makeService
from tests.helpers import (
    TIMEOUT,
    RunningServer,
    json_of,
    open_stream,
    put,
    running_server,
    sha,
    timed,
)

NS = 10**9
#: A moment in whole seconds, for mtimes.
T = 1_700_000_000


class RawHTTP(Protocol):
    """
    One HTTP/1.1 exchange by hand: writes the request bytes it is given and
    parses the response itself — status line, headers, then the body, kept
    as the server framed it: one entry of C{chunks} per HTTP chunk of a
    chunked body (or per read of any other body).
    """

    def __init__(self, reactor: Any, request: bytes) -> None:
        self.reactor = reactor
        self.request = request
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []
        self.chunked = False
        #: The body ended as its framing says (last chunk, Content-Length).
        self.complete = False
        self.lost: Deferred[None] = Deferred()
        self._buffer = b""
        self._state = "head"
        self._left: int | None = None
        self._waiters: list[tuple[Callable[[RawHTTP], bool], Deferred[None]]] = []

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        self._parse()
        self._check()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)
        self._check()

    def _parse(self) -> None:
        while self._buffer:
            if self._state == "head":
                head, sep, rest = self._buffer.partition(b"\r\n\r\n")
                if not sep:
                    return
                self._buffer = rest
                status_line, *lines = head.split(b"\r\n")
                self.status = int(status_line.split()[1])
                for line in lines:
                    name, _, value = line.partition(b":")
                    self.headers[name.strip().lower()] = value.strip()
                self.chunked = self.headers.get(b"transfer-encoding") == b"chunked"
                length = self.headers.get(b"content-length")
                self._left = None if length is None else int(length)
                self._state = "size" if self.chunked else "body"
                if self._left == 0:
                    self.complete = True
            elif self._state == "size":
                line, sep, rest = self._buffer.partition(b"\r\n")
                if not sep:
                    return
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.complete = True
                    self._state = "done"
                    return
                if len(rest) < size + 2:
                    return
                assert rest[size : size + 2] == b"\r\n", "bad chunk framing"
                self.chunks.append(rest[:size])
                self._buffer = rest[size + 2 :]
            elif self._state == "body":
                self.chunks.append(self._buffer)
                if self._left is not None:
                    self._left -= len(self._buffer)
                    self.complete = self._left <= 0
                self._buffer = b""
            else:
                return

    def _check(self) -> None:
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(self) or self.lost.called:
                self._waiters.remove(waiter)
                d.callback(None)

    async def wait(self, predicate: Callable[[RawHTTP], bool], seconds: float = TIMEOUT) -> None:
        if not predicate(self):
            d: Deferred[None] = Deferred()
            self._waiters.append((predicate, d))
            await timed(d, self.reactor, seconds)
        assert predicate(self), f"connection closed first: {self.status} {self.chunks}"

    async def response(self) -> RawHTTP:
        """
        Wait for the whole response (status, headers and a complete body).
        """
        await self.wait(lambda r: r.complete)
        return self

    async def headers_in(self) -> RawHTTP:
        await self.wait(lambda r: r.status != 0)
        return self

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def actions(self) -> list[dict[str, Any]]:
        """
        The legacy stream's lines, checking that each chunk is one line.
        """
        for chunk in self.chunks:
            assert chunk.endswith(b"\n") and chunk.count(b"\n") == 1, chunk
        lines = [json.loads(chunk) for chunk in self.chunks]
        for line in lines:
            assert set(line) == {"Path", "Action"} and line["Action"] in (1, 2), line
        return lines

    async def action(self, path: str, action: int = 1) -> list[dict[str, Any]]:
        """
        Wait for the line telling to C{action} C{path}; return all lines.
        """
        await self.wait(lambda r: {"Path": path, "Action": action} in r.actions())
        return self.actions()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


def raw_key(server: RunningServer, key: str | None = None) -> str:
    """
    C{key}, or else the server's key, as the raw C{Authorization} value.
    """
    return (server.key or "") if key is None else key


def downloads(events: list[Event]) -> list[Download]:
    return [event for event in events if isinstance(event, Download)]


def http_request(
    server: RunningServer,
    method: str,
    target: str,
    headers: list[tuple[str, bytes | str]],
    body: bytes | None = None,
    chunked: bool = False,
) -> bytes:
    """
    The bytes of one request; the body with C{Content-Length}, or in chunks
    of 7 bytes with C{chunked}.
    """
    lines = [f"{method} {target} HTTP/1.1".encode(), f"Host: 127.0.0.1:{server.port}".encode()]
    for name, value in headers:
        raw = value if isinstance(value, bytes) else value.encode()
        lines.append(name.encode() + b": " + raw)
    if body is not None and chunked:
        lines.append(b"Transfer-Encoding: chunked")
        pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    else:
        lines.append(b"Content-Length: %d" % len(body or b""))
        framed = body or b""
    return b"\r\n".join(lines) + b"\r\n\r\n" + framed


async def send(server: RunningServer, request: bytes) -> RawHTTP:
    protocol = RawHTTP(server.reactor, request)
    endpoint = TCP4ClientEndpoint(server.reactor, "127.0.0.1", server.port)
    await timed(connectProtocol(endpoint, protocol), server.reactor)
    return protocol


def files_body(files: dict[str, int]) -> bytes:
    return json.dumps(
        {"files": [{"path": path, "lastUpdate": mtime} for path, mtime in files.items()]}
    ).encode()


async def node_sync(
    server: RunningServer, files: dict[str, int], key: str | None = None
) -> RawHTTP:
    """
    C{POST /sync} as the Node.js client sends it: the raw key, JSON written
    to the request stream (so chunked), no C{Accept}.
    """
    headers: list[tuple[str, bytes | str]] = [
        ("Authorization", raw_key(server, key)),
        ("Content-Type", "application/json"),
        ("Connection", "keep-alive"),
    ]
    body = files_body(files)
    return await send(server, http_request(server, "POST", "/sync", headers, body, chunked=True))


async def python_sync(server: RunningServer, files: dict[str, int]) -> RawHTTP:
    """
    C{POST /sync} as the Python client sends it with C{urllib.request}.
    """
    headers: list[tuple[str, bytes | str]] = [
        ("Accept-Encoding", "identity"),
        ("Authorization", raw_key(server)),
        ("Content-Type", "application/json"),
        ("User-Agent", "Python-urllib/3.11"),
        ("Connection", "close"),
    ]
    return await send(server, http_request(server, "POST", "/sync", headers, files_body(files)))


async def legacy_upload(
    server: RunningServer, file_path: bytes | str | None, data: bytes, key: str | None = None
) -> RawHTTP:
    headers: list[tuple[str, bytes | str]] = [("Authorization", raw_key(server, key))]
    if file_path is not None:
        headers.append(("File-Path", file_path))
    request = http_request(server, "POST", "/upload", headers, data)
    return await (await send(server, request)).response()


async def legacy_download(server: RunningServer, target: str, key: str | None = None) -> RawHTTP:
    headers: list[tuple[str, bytes | str]] = [("Authorization", raw_key(server, key))]
    request = http_request(server, "GET", "/download/" + target, headers)
    return await (await send(server, request)).response()


def node_url(path: str) -> str:
    """
    The Node.js client's C{encodeURIComponent}: slashes encoded too.
    """
    return quote(path, safe="!'()*-._~")


def python_url(path: str) -> str:
    """
    The Python client's C{urllib.parse.quote}: slashes kept.
    """
    return quote(path)


async def drained(server: RunningServer) -> None:
    """
    Wait (bounded) until the server has dropped every stream.
    """
    assert server.service is not None
    for _ in range(500):
        if server.service.hub.count() == 0:
            return
        await deferLater(server.reactor, 0.01, lambda: None)
    assert server.service.hub.count() == 0


def test_encode_action() -> None:
    download = Download("dir/é.txt", sha(b""), 0, 0, 3)
    assert encode_action(download) == '{"Path":"dir/é.txt","Action":1}\n'.encode()
    assert encode_action(Upload("a.txt", 0)) == b'{"Path":"a.txt","Action":2}\n'
    others: list[Event] = [Hello("s", 1), Ready(1), InSync("a.txt", 1)]
    for other in others:
        assert encode_action(other) == b""


def test_parse_files() -> None:
    body = files_body({"a.txt": T, "../out": T, ".boxsync/x": T})
    entries, refused = parse_files(body)
    assert [(e.path, e.last_update) for e in entries] == [("a.txt", T)]
    assert refused == 2
    assert parse_files(b'{"files": null}') == ([], 0)
    assert parse_files(b'{"files": [{"path": "f", "lastUpdate": 1.9}]}')[0][0].last_update == 1


@pytest.mark.parametrize(
    "body",
    [
        files_body({"a.txt": T, "../out": T, ".boxsync/x": T}),
        b'{"files": null}',
        b'{"other": [1], "files": [{"path": "f", "lastUpdate": 1.9}]}',
        b'{"files": [{"path": "a", "lastUpdate": 1}, {"path": "b", "lastUpdate": 2}, {"path": "a", "lastUpdate": 3}]}',
    ],
)
def test_a_streamed_legacy_body_is_the_parsed_one(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Read a piece at a time (here with every path hashed alike, and 5 bytes
    at a time), a legacy body gives the files L{parse_files} gives: a path
    listed twice once, where it was listed last.
    """
    monkeypatch.setattr(manifest, "READ_SIZE", 5)
    monkeypatch.setattr(manifest.PathSet, "hash", lambda self, path: 42)
    clock = Clock()
    d = Deferred.fromCoroutine(read_files(BytesIO(body), 10, clock))

    async def pages(files: StreamedFiles) -> list[LegacyEntry]:
        return [entry async for page in files.pages() for entry in page]

    d.addCallback(lambda files: Deferred.fromCoroutine(pages(files)).addCallback(lambda found: (files, found)))
    clock.advance(0)
    files, found = d.result
    entries, refused = parse_files(body)
    assert found == entries and files.refused == refused
    assert all(entry.path in files.listed for entry in entries)


def test_a_legacy_body_over_the_limit_is_refused() -> None:
    body = files_body({f"f{i}": T for i in range(11)})
    d = Deferred.fromCoroutine(read_files(BytesIO(body), 10, Clock()))
    failure = d.result
    d.addErrback(lambda _: None)
    assert failure.check(ProtocolError)


@pytest.mark.parametrize("key, status", [(None, 200), ("wrong", 403), ("Bearer wrong", 403)])
@pytest_twisted.ensureDeferred
async def test_raw_key(server: RunningServer, key: str | None, status: int) -> None:
    stream = await (await node_sync(server, {}, key)).headers_in()
    try:
        assert stream.status == status
    finally:
        stream.close()
    upload = await legacy_upload(server, "up.txt", b"up", key)
    assert upload.status == (200 if key is None else 403)
    assert (server.box / "up.txt").exists() == (key is None)
    download = await legacy_download(server, "up.txt", key)
    assert download.status == status
    if key is not None:
        assert "error" in json.loads(download.body)
    assert list((server.box / ".boxsync" / "staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_plan_by_mtime_then_live(server: RunningServer, http: Any) -> None:
    async def at(path: str, mtime_ns: int) -> dict[str, Any]:
        response = await put(http, server, path, path.encode(), X_Boxsync_Mtime=str(mtime_ns))
        assert response.code == 201
        return await json_of(response)

    await at("same.txt", T * NS)
    await at("server-newer.txt", T * NS)
    await at("client-newer.txt", T * NS)
    await at("sub-second.txt", T * NS + NS - 1)
    await at("sub-second-older.txt", T * NS + NS - 1)
    await at("server/only.txt", T * NS)
    for path in ["gone-listed.txt", "gone-unlisted.txt"]:
        record = await at(path, T * NS)
        response = await http.delete(
            server.file_url(path), headers=server.headers(X_Boxsync_Base=str(record["seq"]))
        )
        assert response.code == 200
    listed = {
        "same.txt": T,
        "server-newer.txt": T - 1,
        "client-newer.txt": T + 1,
        "sub-second.txt": T,
        "sub-second-older.txt": T + 1,
        "client/only.txt": T,
        "gone-listed.txt": T - 100,
    }
    stream = await (await node_sync(server, listed)).headers_in()
    try:
        assert stream.status == 200 and stream.chunked
        assert stream.headers[b"content-type"] == b"application/x-ndjson"
        # A commit made once the stream is open comes after the whole plan.
        await at("live.txt", T * NS)
        lines = await stream.action("live.txt")
        assert lines[-1] == {"Path": "live.txt", "Action": 1}
        plan = lines[:-1]
        assert len(plan) == len({json.dumps(line) for line in plan})
        assert sorted((line["Action"], line["Path"]) for line in plan) == [
            (1, "server/only.txt"),
            (2, "client-newer.txt"),
            (2, "client/only.txt"),
            (2, "gone-listed.txt"),
            (2, "sub-second-older.txt"),
        ]
        # A delete by a boxsync client is not for them: nothing goes out.
        record = await at("deleted-live.txt", T * NS)
        await stream.action("deleted-live.txt")
        response = await http.delete(
            server.file_url("deleted-live.txt"),
            headers=server.headers(X_Boxsync_Base=str(record["seq"])),
        )
        assert response.code == 200
        await at("after.txt", T * NS)
        lines = await stream.action("after.txt")
        assert lines[-2:] == [
            {"Path": "deleted-live.txt", "Action": 1},
            {"Path": "after.txt", "Action": 1},
        ]
    finally:
        stream.close()
    await drained(server)


@pytest_twisted.ensureDeferred
async def test_python_client_style(server: RunningServer, http: Any) -> None:
    await put(http, server, "dir/with space.txt", b"spaced", X_Boxsync_Mtime=str(T * NS))
    stream = await (await python_sync(server, {"mine.txt": T})).headers_in()
    try:
        await put(http, server, "live.txt", b"live")
        lines = await stream.action("live.txt")
        assert lines == [
            {"Path": "mine.txt", "Action": 2},
            {"Path": "dir/with space.txt", "Action": 1},
            {"Path": "live.txt", "Action": 1},
        ]
    finally:
        stream.close()
    response = await legacy_download(server, python_url("dir/with space.txt"))
    assert response.status == 200 and response.body == b"spaced"
    await drained(server)


@pytest_twisted.ensureDeferred
async def test_accept_chooses_the_protocol(server: RunningServer) -> None:
    for accept, content_type in [
        ("text/event-stream", b"text/event-stream"),
        ("Text/Event-Stream; q=1", b"text/event-stream"),
        ("*/*", b"application/x-ndjson"),
        (None, b"application/x-ndjson"),
    ]:
        headers: list[tuple[str, bytes | str]] = [("Authorization", f"Bearer {server.key}")]
        if accept is not None:
            headers.append(("Accept", accept))
        body = b'{"files": []}'
        stream = await send(server, http_request(server, "POST", "/sync", headers, body))
        await stream.headers_in()
        stream.close()
        assert (stream.status, stream.headers[b"content-type"]) == (200, content_type)
    await drained(server)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"files": "a.txt"}',
        b'{"files": ["a.txt"]}',
        b'{"files": [{"path": "a.txt"}]}',
        b'{"files": [{"path": "a.txt", "lastUpdate": "1700000000"}]}',
        b'{"files": [{"path": 1, "lastUpdate": 1}]}',
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_sync_body(server: RunningServer, body: bytes) -> None:
    headers: list[tuple[str, bytes | str]] = [("Authorization", raw_key(server))]
    request = http_request(server, "POST", "/sync", headers, body)
    response = await (await send(server, request)).response()
    assert response.status == 400
    assert "error" in json.loads(response.body)
    assert server.service is not None and server.service.hub.count() == 0


@pytest_twisted.ensureDeferred
async def test_upload_reaches_boxsync_clients(server: RunningServer, http: Any) -> None:
    stream = await open_stream(http, server, Manifest(client="boxsync"))
    try:
        await stream.ready()
        data = os.urandom(700_000)
        response = await legacy_upload(server, "dir/name.ext", data)
        assert response.status == 200
        assert (server.box / "dir/name.ext").read_bytes() == data
        first = downloads(await stream.wait(lambda es: isinstance(es[-1], Download)))[-1]
        assert first.path == "dir/name.ext" and first.sha256 == sha(data)
        fetched = await http.get(server.file_url("dir/name.ext"), headers=server.headers())
        assert await content(fetched) == data
        # No base: the last writer wins, also over a boxsync client's version.
        await put(http, server, "dir/name.ext", b"boxsync", base=first.seq)
        assert (await legacy_upload(server, "dir/name.ext", b"legacy")).status == 200
        assert (server.box / "dir/name.ext").read_bytes() == b"legacy"
        await stream.wait(lambda es: downloads(es)[-1].sha256 == sha(b"legacy"))
        # Raw UTF-8 in the header, or Latin-1 as both old clients write it.
        assert (await legacy_upload(server, "ünï/çödé.txt".encode(), b"utf8")).status == 200
        assert (server.box / "ünï/çödé.txt").read_bytes() == b"utf8"
        assert (await legacy_upload(server, "café.txt".encode("latin-1"), b"l1")).status == 200
        assert (server.box / "café.txt").read_bytes() == b"l1"
    finally:
        stream.close()
    assert list((server.box / ".boxsync" / "staging").iterdir()) == []


@pytest.mark.parametrize(
    "file_path",
    [
        None,
        "",
        "../escape.txt",
        "a/../../escape.txt",
        "/tmp/escape.txt",
        ".boxsync/index.sqlite",
        ".boxsync/staging/escape.txt",
        "a//escape.txt",
        "a/./escape.txt",
        "a\\..\\escape.txt",
        "x" * 256,
        "link/escape.txt",
    ],
)
@pytest_twisted.ensureDeferred
async def test_upload_path_attacks(
    server: RunningServer, tmp_path: Path, file_path: str | None
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (server.box / "link").symlink_to(outside)
    before = sorted(p.name for p in tmp_path.iterdir())
    index = (server.box / ".boxsync/index.sqlite").read_bytes()
    response = await legacy_upload(server, file_path, b"evil")
    assert response.status == 400, response.body
    assert "error" in json.loads(response.body)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list(outside.iterdir()) == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"evil"]
    assert (server.box / ".boxsync/index.sqlite").read_bytes() == index
    assert list((server.box / ".boxsync" / "staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_download_paths(server: RunningServer, http: Any, tmp_path: Path) -> None:
    files = {
        "a/b/c.txt": b"abc",
        "dir/with space.txt": b"space",
        "dír/ünïcode €.txt": b"unicode",
        "plus+and%.txt": b"plus",
    }
    for path, data in files.items():
        assert (await put(http, server, path, data)).code == 201
    response = await legacy_download(server, "a%2Fb%2Fc.txt")
    assert (response.status, response.body) == (200, b"abc")
    assert response.headers[b"content-length"] == b"3"
    response = await legacy_download(server, "dir/with%20space.txt")
    assert (response.status, response.body) == (200, b"space")
    for path, data in files.items():
        for target in (node_url(path), python_url(path)):
            response = await legacy_download(server, target)
            assert (response.status, response.body) == (200, data), target

    (tmp_path / "secret.txt").write_bytes(b"TOP-SECRET-CONTENT")
    (server.box / "link").symlink_to(tmp_path)
    for target in [
        "..%2Fsecret.txt",
        "../secret.txt",
        "a/../../secret.txt",
        "%2E%2E/secret.txt",
        "%2F" + quote(str(tmp_path / "secret.txt"), safe=""),
        ".boxsync%2Findex.sqlite",
        ".boxsync/index.sqlite",
        "link/secret.txt",
        "a%00b",
        "missing.txt",
        "a/b",
    ]:
        response = await legacy_download(server, target)
        assert response.status in (400, 404), (target, response.status)
        assert b"TOP-SECRET" not in response.body and b"SQLite" not in response.body


@pytest_twisted.async_yield_fixture
async def chatty_server(tmp_path: Path, reactor: Any) -> AsyncIterator[RunningServer]:
    """
    A server whose hub sends keep-alives every 50 ms.
    """
    async with running_server(reactor, tmp_path / "box", "chatty", keepalive_seconds=0.05) as s:
        yield s


@pytest_twisted.ensureDeferred
async def test_no_keepalives_on_legacy_streams(chatty_server: RunningServer, http: Any) -> None:
    server = chatty_server
    legacy = await (await node_sync(server, {})).headers_in()
    headers: list[tuple[str, bytes | str]] = [
        ("Authorization", f"Bearer {server.key}"),
        ("Accept", "text/event-stream"),
    ]
    sse = await send(server, http_request(server, "POST", "/sync", headers, b"{}"))
    try:
        # The boxsync stream sees keep-alives: the hub sent them to both.
        await sse.wait(lambda r: r.chunks.count(b": keepalive\n\n") >= 3)
        # Anything written to the legacy stream before this commit's line
        # arrives before it.
        await put(http, server, "marker.txt", b"marker")
        await legacy.action("marker.txt")
        assert legacy.chunks == [b'{"Path":"marker.txt","Action":1}\n']
    finally:
        legacy.close()
        sse.close()
    await drained(server)


@pytest_twisted.ensureDeferred
async def test_legacy_and_boxsync_clients_converge_http_level(
    server: RunningServer, http: Any
) -> None:
    """
    A legacy client (raw HTTP) and a boxsync client (the boxsync API over
    treq), each with its folder as a dict, on one box: they end up with the
    same files, each taking in the other's commits live. (At the HTTP level:
    the boxsync side follows its events by hand, not through the engine.)
    """
    legacy_files = {"from-legacy.txt": b"legacy 1", "both.txt": b"same"}
    legacy_mtimes = {"from-legacy.txt": T, "both.txt": T - 20}
    boxsync_files = {"from-boxsync.txt": b"boxsync 1", "both.txt": b"same"}
    seqs: dict[str, int] = {}

    async def boxsync_put(path: str, data: bytes) -> None:
        boxsync_files[path] = data
        response = await put(
            http, server, path, data, base=seqs.get(path, 0), X_Boxsync_Mtime=str((T - 10) * NS)
        )
        assert response.code == 201
        seqs[path] = (await json_of(response))["seq"]

    for path, data in list(boxsync_files.items()):
        await boxsync_put(path, data)
    boxsync = await open_stream(http, server, Manifest(client="boxsync", cursor=max(seqs.values())))
    legacy = await (await node_sync(server, legacy_mtimes)).headers_in()
    done = 0

    async def legacy_next(path: str) -> None:
        await legacy.wait(lambda r: {"Path": path, "Action": 1} in r.actions()[done:])

    async def legacy_apply() -> None:
        """
        Do what the legacy stream said since last time, as the old clients do.
        """
        nonlocal done
        for line in legacy.actions()[done:]:
            done += 1
            path = line["Path"]
            if line["Action"] == 2:
                assert (await legacy_upload(server, path, legacy_files[path])).status == 200
            else:
                response = await legacy_download(server, node_url(path))
                assert response.status == 200
                legacy_files[path] = response.body

    async def boxsync_next(data: bytes) -> None:
        await boxsync.wait(lambda es: any(getattr(e, "sha256", "") == sha(data) for e in es))

    async def boxsync_apply() -> None:
        for event in boxsync.events:
            if isinstance(event, Download) and seqs.get(event.path, 0) < event.seq:
                response = await http.get(server.file_url(event.path), headers=server.headers())
                boxsync_files[event.path] = await content(response)
                seqs[event.path] = event.seq

    def converged() -> None:
        assert legacy_files == boxsync_files
        on_disk = {
            p.relative_to(server.box).as_posix(): p.read_bytes()
            for p in server.box.rglob("*")
            if p.is_file() and ".boxsync" not in p.parts
        }
        assert on_disk == legacy_files

    try:
        await boxsync.ready()
        # The legacy plan, then a live commit that shows it is complete.
        await boxsync_put("first-live.txt", b"live")
        lines = await legacy.action("first-live.txt")
        assert sorted((line["Action"], line["Path"]) for line in lines) == [
            (1, "first-live.txt"),
            (1, "from-boxsync.txt"),
            (2, "from-legacy.txt"),
        ]
        await legacy_apply()
        await boxsync_next(b"legacy 1")
        await boxsync_apply()
        converged()

        # A boxsync edit reaches the legacy client live...
        await boxsync_put("from-boxsync.txt", b"boxsync 2")
        await legacy_next("from-boxsync.txt")
        await legacy_apply()
        assert legacy_files["from-boxsync.txt"] == b"boxsync 2"
        # ... and a legacy edit the boxsync client.
        legacy_files["from-legacy.txt"] = b"legacy 2"
        assert (await legacy_upload(server, "from-legacy.txt", b"legacy 2")).status == 200
        await boxsync_next(b"legacy 2")
        await boxsync_apply()
        assert boxsync_files["from-legacy.txt"] == b"legacy 2"
        converged()
    finally:
        legacy.close()
        boxsync.close()
    await drained(server)


@pytest.mark.parametrize(
    "address, listen",
    [
        (None, "tcp:8080:interface=127.0.0.1:backlog=4096"),
        ("0.0.0.0:9000", "tcp:9000:interface=0.0.0.0:backlog=4096"),
        (":9000", "tcp:9000:backlog=4096"),
        ("[::1]:9000", "tcp:9000:interface=\\:\\:1:backlog=4096"),
    ],
)
def test_old_deployment_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, address: str | None, listen: str
) -> None:
    """
    A deployment of the old server sets only C{API_KEY} and
    C{SERVER_ADDRESS}; the service made from them takes the raw key.
    (``tests/integration/test_tap.py`` covers the options in detail.)
    """
    for name in ["BOXSYNC_API_KEY", "SERVER_ADDRESS"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("API_KEY", "old-key")
    if address is not None:
        monkeypatch.setenv("SERVER_ADDRESS", address)
    options = Options()
    options.parseOptions(["--box", str(tmp_path / "box")])
    service = makeService(options)
    assert service.config.listen == [listen]
    assert service.config.auth == ApiKeyAuth("old-key")
    assert service.config.auth.authenticate(b"old-key").account
    with pytest.raises(Forbidden):
        service.config.auth.authenticate(b"other-key")


@pytest_twisted.ensureDeferred
async def test_legacy_client_and_boxsync_engine_converge(
    server: RunningServer, tmp_path: Path, reactor: Any
) -> None:
    """
    A legacy client (raw HTTP, as the Node client speaks) and the real
    boxsync client engine on one box: each gets the other's files, and the
    legacy stream hears the engine's commits live.
    """
    from boxsync.testing import tree
    from tests.helpers import Folder

    folder = Folder(reactor, server, tmp_path / "engine", "engine")
    try:
        legacy_files = {"legacy/a.txt": b"from the legacy client"}
        for path, data in legacy_files.items():
            assert (await legacy_upload(server, path, data)).status == 200
        (folder.root / "mine.txt").write_bytes(b"from boxsync")
        await folder.sync()
        assert (folder.root / "legacy/a.txt").read_bytes() == b"from the legacy client"

        # The legacy client syncs with what it has: it is told to fetch the
        # engine's file, and hears the engine's next commit live.
        stream = await (await node_sync(server, {"legacy/a.txt": T * 2})).headers_in()
        await stream.action("mine.txt")
        fetched = await legacy_download(server, "mine.txt")
        assert fetched.status == 200 and fetched.body == b"from boxsync"
        (folder.root / "live.txt").write_bytes(b"live from boxsync")
        await folder.sync()
        await stream.action("live.txt")
        stream.close()
        assert set(tree(folder.root)) == set(tree(server.box)) == {
            "legacy/a.txt",
            "mine.txt",
            "live.txt",
        }
    finally:
        await folder.close()

