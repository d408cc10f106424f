"""
The server on its bad days: a full disk, uploads over the limit, large files,
and what it logs.
"""

from __future__ import annotations

import json
import os
from io import BytesIO
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from treq import content
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.web.resource import Resource

from boxsync.wire import EVENT_STREAM, FileEntry, Manifest, encode_manifest
from boxsync.server.auth import Forbidden, Unauthorized
from boxsync.server.limits import LINGER, PROCESSING, ConnectionLimits
from boxsync.server.staging import StagingFile
from boxsync.server.uploads import PUBLIC_BODY, BodyTooLarge, UploadSite
from tests.helpers import RunningServer, file_sha, json_of, open_stream, put, random_file, running_server, sha, timed
from tests.conftest import KEY
from tests.integration.test_legacy import http_request, send


@pytest_twisted.ensureDeferred
async def test_disk_full_is_507_and_commits_nothing(server: RunningServer, http: Any, tmp_path: Path) -> None:
    assert server.service is not None
    site = server.service.site
    real = site.new_staging
    leftovers = tmp_path / "full-staging"

    def on_a_full_disk() -> StagingFile:
        # Writes to /dev/full fail with ENOSPC, as on a full file system.
        return StagingFile(leftovers, os.open("/dev/full", os.O_WRONLY))

    site.new_staging = on_a_full_disk
    try:
        response = await put(http, server, "big.bin", os.urandom(200_000), base=0)
        assert response.code == 507
        assert "no space" in (await json_of(response))["error"]
    finally:
        site.new_staging = real
    assert not (server.box / "big.bin").exists()
    assert (await http.get(server.file_url("big.bin"), headers=server.headers())).code == 404
    # The server keeps serving, and the same upload works once there is room.
    response = await put(http, server, "big.bin", b"fits now", base=0)
    assert response.code == 201 and (await json_of(response))["seq"] == 1


@pytest_twisted.async_yield_fixture
async def small_server(tmp_path: Path, reactor: Any) -> AsyncIterator[RunningServer]:
    running = RunningServer(reactor, tmp_path / "box", KEY, max_upload=1000)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_upload_over_the_limit_is_413(small_server: RunningServer, http: Any) -> None:
    assert (await put(http, small_server, "ok.bin", b"x" * 1000)).code == 201
    response = await put(http, small_server, "big.bin", b"x" * 1001)
    assert response.code == 413
    assert not (small_server.box / "big.bin").exists()
    assert list((small_server.box / ".boxsync/staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_300_mib_round_trip(server: RunningServer, http: Any, tmp_path: Path, reactor: Any) -> None:
    source = tmp_path / "source.bin"
    digest = random_file(source, 300 * 2**20)
    with open(source, "rb") as body:
        response = await timed(
            http.put(
                server.file_url("big/file.bin"),
                data=body,
                headers=server.headers(X_Boxsync_Base="0", X_Boxsync_Sha256=digest),
            ),
            reactor,
            120,
        )
    assert response.code == 201
    assert (await json_of(response))["size"] == 300 * 2**20
    assert file_sha(server.box / "big/file.bin") == digest
    response = await timed(
        http.get(server.file_url("big/file.bin"), headers=server.headers(), unbuffered=True),
        reactor,
    )
    target = tmp_path / "target.bin"
    with open(target, "wb") as f:
        from treq import collect

        await timed(collect(response, f.write), reactor, 120)
    assert file_sha(target) == digest


@pytest_twisted.ensureDeferred
async def test_status_line(tmp_path: Path, reactor: Any, http: Any) -> None:
    from boxsync.server.auth import ApiKeyAuth
    from boxsync.server.service import BoxsyncService, ServerConfig

    lines: list[dict[str, Any]] = []
    service = BoxsyncService(
        reactor,
        ServerConfig(tmp_path / "box", ["tcp:0:interface=127.0.0.1"], ApiKeyAuth(None), status_seconds=0.05),
    )
    from twisted.internet.defer import Deferred

    seen: Deferred[None] = Deferred()

    def observe(event: dict[str, Any]) -> None:
        if "status:" in event.get("log_format", "") and not seen.called:
            lines.append(event)
            seen.callback(None)

    globalLogPublisher.addObserver(observe)
    service.startService()
    try:
        await timed(service.ready, reactor)
        await timed(seen, reactor, 10)
    finally:
        globalLogPublisher.removeObserver(observe)
        await service.stopService()
    event = lines[0]
    assert event["log_level"] == LogLevel.info
    assert event["clients"] == 0 and event["files"] == 0 and event["rss_mib"] > 10


@pytest_twisted.ensureDeferred
async def test_no_key_means_open(tmp_path: Path, reactor: Any, http: Any) -> None:
    running = RunningServer(reactor, tmp_path / "box", None)
    await running.start()
    try:
        response = await http.put(running.file_url("a.txt"), data=b"a")
        assert response.code == 201
        assert await content(await http.get(running.file_url("a.txt"))) == b"a"
    finally:
        await running.stop()


# Limits on manifests and other request bodies.


@pytest_twisted.async_yield_fixture
async def tight_server(tmp_path: Path, reactor: Any) -> AsyncIterator[RunningServer]:
    async with running_server(
        reactor, tmp_path / "box", KEY, max_upload=1000, config={"max_manifest": 2000, "max_manifest_entries": 3}
    ) as running:
        yield running


def manifest_of(count: int, depth: int = 0) -> bytes:
    """
    A valid manifest of C{count} files, C{depth} folders of 250 bytes deep.
    """
    folders = "".join(f"{letter * 250}/" for letter in "abcdefgh"[:depth])
    files = [FileEntry(f"{folders}f{i}.txt", sha(b""), 0, 0) for i in range(count)]
    return encode_manifest(Manifest(files=tuple(files)))


@pytest.mark.parametrize("chunked", [False, True])
@pytest_twisted.ensureDeferred
async def test_manifest_over_the_size_limit_is_413(tight_server: RunningServer, chunked: bool) -> None:
    body = manifest_of(3, depth=3)
    assert len(body) > 2000
    headers: list[tuple[str, bytes | str]] = [
        ("Authorization", f"Bearer {KEY}"),
        ("Accept", EVENT_STREAM),
        ("Connection", "close"),
    ]
    response = await (await send(tight_server, http_request(tight_server, "POST", "/sync", headers, body, chunked))).response()
    assert response.status == 413
    assert "the server's limit of 2.0 KiB (2,000 bytes)" in json.loads(response.body)["error"]
    assert tight_server.service is not None and tight_server.service.hub.count() == 0
    # Without the key it is refused as usual, before its size matters.
    headers[0] = ("Authorization", "Bearer wrong")
    response = await (await send(tight_server, http_request(tight_server, "POST", "/sync", headers, body, chunked))).response()
    assert response.status == 403


@pytest_twisted.ensureDeferred
async def test_manifest_within_the_limits_is_served(tight_server: RunningServer, http: Any) -> None:
    reader = await open_stream(http, tight_server, Manifest(files=(FileEntry("a.txt", sha(b"a"), 1, 0),)))
    events = await reader.ready()
    assert [e.name for e in events] == ["hello", "upload", "ready"]
    reader.close()


@pytest_twisted.ensureDeferred
async def test_manifest_entry_limit_is_400(tight_server: RunningServer, http: Any) -> None:
    response = await timed(
        http.post(
            f"{tight_server.url}/sync",
            data=manifest_of(4),
            headers=tight_server.headers(Accept=EVENT_STREAM),
        ),
        tight_server.reactor,
    )
    assert response.code == 400 and "over 3 entries" in (await json_of(response))["error"]
    legacy = json.dumps({"files": [{"path": f"f{i}", "lastUpdate": 0} for i in range(4)]}).encode()
    response = await timed(
        http.post(f"{tight_server.url}/sync", data=legacy, headers=tight_server.headers()), tight_server.reactor
    )
    assert response.code == 400 and "over 3 files" in (await json_of(response))["error"]


@pytest_twisted.ensureDeferred
async def test_any_other_body_over_the_limit_is_413(tight_server: RunningServer, http: Any) -> None:
    response = await timed(
        http.request("GET", f"{tight_server.url}/files", data=b"x" * 3000, headers=tight_server.headers()),
        tight_server.reactor,
    )
    assert response.code == 413


@pytest_twisted.ensureDeferred
async def test_chunked_upload_over_the_limit_is_413(tight_server: RunningServer) -> None:
    headers: list[tuple[str, bytes | str]] = [("Authorization", f"Bearer {KEY}"), ("Connection", "close")]
    request = http_request(tight_server, "PUT", "/files/big.bin", headers, b"x" * 1001, chunked=True)
    response = await (await send(tight_server, request)).response()
    assert response.status == 413
    assert not (tight_server.box / "big.bin").exists()
    assert list((tight_server.box / ".boxsync/staging").iterdir()) == []


def test_a_refused_body_is_never_kept(tmp_path: Path) -> None:
    """
    Past the limit, not a byte of the body is kept, in memory or on disk.
    """
    site = UploadSite(Resource(), lambda: pytest.fail("no upload here"), max_body=1000, reactor=Clock())
    for head, piece in [
        (b"Content-Length: 100000000\r\n", b"x" * 65536),
        (b"Transfer-Encoding: chunked\r\n", b"10000\r\n" + b"x" * 65536 + b"\r\n"),
    ]:
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"POST /sync HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
        request = channel.requests[0]
        for _ in range(20):
            channel.dataReceived(piece)
        assert isinstance(request.body_error, BodyTooLarge)
        assert isinstance(request.content, BytesIO) and request.content.getvalue() == b""
        channel.connectionLost(Failure(ConnectionDone()))


def _refusing(request: Any) -> None:
    header = request.requestHeaders.getRawHeaders(b"Authorization", [None])[0]
    if header is None:
        raise Unauthorized("an Authorization header is required")
    if header != b"Bearer right":
        raise Forbidden("the key is not valid")


@pytest.mark.parametrize(
    "path, credential, status",
    [
        (b"/sync", b"", 401),
        (b"/sync", b"Authorization: Bearer wrong\r\n", 403),
        (b"/batch/upload", b"", 401),
        (b"/files/a.bin", b"Authorization: wrong\r\n", 403),
        (b"/upload", b"", 401),
        (b"/no/such/route", b"", 401),
    ],
)
def test_a_body_without_a_valid_credential_is_refused_before_it_is_read(
    path: bytes, credential: bytes, status: int
) -> None:
    """
    Whatever the route, a request whose credential lets nobody in is
    answered as soon as its headers are in: no staging or temporary file is
    made, no byte of the body reaches the request, the connection is read
    no more, and it is closed a moment later.
    """
    clock = Clock()
    site = UploadSite(
        Resource(), lambda: pytest.fail("nothing is staged"), authorize=_refusing, reactor=clock
    )
    for length in [b"Content-Length: 100000000\r\n", b"Transfer-Encoding: chunked\r\n"]:
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + credential + length
            + b"\r\n" + b"10\r\n" + b"x" * 65536
        )
        channel.dataReceived(b"x" * 65536)
        answer = transport.value()
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer
        assert b"100 Continue" not in answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert channel.requests[0].content is None
        assert transport.producerState == "paused"
        assert not transport.disconnecting
        clock.advance(LINGER)
        assert transport.disconnecting
        channel.connectionLost(Failure(ConnectionDone()))
        assert clock.getDelayedCalls() == []


def test_a_body_with_a_valid_credential_is_read() -> None:
    site = UploadSite(Resource(), lambda: pytest.fail("not an upload"), authorize=_refusing, reactor=Clock())
    channel = site.buildProtocol(None)
    channel.makeConnection(StringTransport())
    channel.dataReceived(
        b"POST /sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer right\r\nContent-Length: 5\r\n\r\nabc"
    )
    assert channel.requests[0].content.getvalue() == b"abc"
    channel.connectionLost(Failure(ConnectionDone()))


def test_a_public_body_is_read_without_a_credential_up_to_its_limit() -> None:
    """
    The sign-in's body is its credential: it is read without one, but only
    up to L{PUBLIC_BODY} bytes.
    """
    site = UploadSite(
        Resource(), lambda: pytest.fail("not an upload"), authorize=_refusing, reactor=Clock(),
        public=[(b"POST", b"/web/session")],
    )
    for size, refused in [(100, False), (PUBLIC_BODY + 1, True)]:
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            b"POST /web/session?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"x" * 50
        )
        request = channel.requests[0]
        assert isinstance(request.body_error, BodyTooLarge) == refused
        assert request.content.getvalue() == (b"" if refused else b"x" * 50)
        assert transport.value() == b""
        channel.connectionLost(Failure(ConnectionDone()))


@pytest.mark.parametrize(
    "version, asked, told",
    [(b"HTTP/1.1", b"X-Boxsync-Progress: 102\r\n", True),
     (b"HTTP/1.1", b"", False),
     (b"HTTP/1.0", b"X-Boxsync-Progress: 102\r\n", False)],
)
def test_a_body_still_arriving_is_told_so_if_it_asked(version: bytes, asked: bytes, told: bool) -> None:
    """
    While the body of a request that asked arrives, the client hears
    C{102 Processing} once per interval in which some of it came, and no
    more once it is all in; an HTTP/1.0 client or one that did not ask
    hears nothing before its answer.
    """
    clock = Clock()
    limits = ConnectionLimits(progress_interval=5.0)
    site = UploadSite(Resource(), lambda: pytest.fail("not an upload"), reactor=clock, limits=limits)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /sync " + version + b"\r\nHost: x\r\n" + asked + b"Content-Length: 30000\r\n\r\n")
    for _ in range(3):
        channel.dataReceived(b"x" * 10000 if _ < 2 else b"x" * 9999)
        clock.advance(5.0)
    # An interval in which nothing came: nothing is said.
    clock.advance(5.0)
    assert transport.value() == (PROCESSING * 3 if told else b"")
    channel.dataReceived(b"x")
    clock.advance(20.0)
    assert transport.value().count(PROCESSING) == (3 if told else 0)
    channel.connectionLost(Failure(ConnectionDone()))
    assert not [call for call in clock.getDelayedCalls() if call.active() and call.func.__name__ == "_tell_progress"]


def test_limits_from_the_command_line(monkeypatch: Any) -> None:
    from boxsync.server.tap import Options, makeService

    monkeypatch.delenv("BOXSYNC_SERVER_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    options = Options()
    options.parseOptions(
        ["--api-key", "k", "--max-manifest", "1M", "--max-manifest-entries", "500",
         "--idle-timeout", "5", "--min-rate", "0", "--progress-interval", "2.5"]
    )
    config = makeService(options).config
    assert config.max_manifest == 2**20 and config.max_manifest_entries == 500
    assert config.connections == ConnectionLimits(idle_timeout=5.0, min_rate=0, progress_interval=2.5)
    assert config.connections.max_header_bytes == 16384
    with pytest.raises(UsageError):
        Options().parseOptions(["--api-key", "k", "--min-rate", "-1"])
