"""
Upload bodies written and hashed off the reactor thread: the staging file
outlives any batch being written to it, the connection is not read while the
disk falls behind (and that wait is held against neither the minimum rate nor
the idle timeout), and what arrives is stored whole and exact, whatever the
size of its pieces, or refused as before (413, 507).
"""

from __future__ import annotations

import ctypes
import io
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, cast

import pytest
import pytest_twisted
from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from boxsync.blocks import BLOCK_MAX
from boxsync.server.limits import ConnectionLimits, LimitedChannel
from boxsync.server.staging import StagingFile
from boxsync.server.storage import BoxStorage
from boxsync.server.uploads import BodyTooLarge, StreamingRequest, UploadSite
from boxsync.writer import BATCH_SIZE, MAX_PENDING
from tests.conftest import KEY
from tests.helpers import RunningServer, file_sha, json_of, running_server, timed
from tests.integration.test_legacy import http_request, send
from tests.unit.test_writer import Later

MiB = 2**20


def head(length: int | None, path: bytes = b"/files/big.bin") -> bytes:
    """
    The head of an upload request, of C{length} bytes or (C{None}) chunked.
    """
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return b"PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s\r\n\r\n" % (
        path,
        KEY.encode(),
        framing,
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@define
class Upload:
    """
    An upload site over a real staging folder, driven by hand: bytes go in
    through a channel on a L{StringTransport}, batches run when the test
    says, time moves when the test says.
    """

    storage: BoxStorage
    clock: Clock
    later: Later
    channel: LimitedChannel
    transport: StringTransport
    made: list[StagingFile] = field(factory=list)

    @property
    def request(self) -> StreamingRequest:
        request = self.channel.requests[0]
        assert isinstance(request, StreamingRequest)
        return request

    def staging(self) -> list[Path]:
        return list(self.storage.staging.iterdir())

    def answer(self) -> bytes:
        return self.transport.value()


@pytest.fixture
def upload(tmp_path: Path) -> Callable[..., Upload]:
    def make(limits: ConnectionLimits = ConnectionLimits(), **options: Any) -> Upload:
        storage = BoxStorage(Clock(), tmp_path / "box")
        clock, later = Clock(), Later()
        made: list[StagingFile] = []

        def new_staging() -> StagingFile:
            made.append(storage.new_staging())
            return made[-1]

        site = UploadSite(
            Resource(), new_staging, limits=limits, reactor=clock, run=later, authorize=lambda header: None,
            **options,
        )
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return Upload(storage, clock, later, channel, transport, made)

    return make


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_disconnect_waits_for_the_batch_under_way(upload: Callable[..., Upload]) -> None:
    """
    The peer goes away while a batch is being written: the staging file and
    its descriptor stay until that batch is done, then both go; the batches
    that were waiting are never written.
    """
    up = upload()
    up.channel.dataReceived(head(10 * MiB))
    [staged] = up.made
    fd = staged.fileno()
    up.channel.dataReceived(b"a" * BATCH_SIZE + b"b" * BATCH_SIZE)
    assert len(up.later.queue) == 1
    up.channel.connectionLost(Failure(ConnectionDone()))
    assert is_open(fd) and up.staging() == [staged.path]
    up.later.step()
    assert not is_open(fd) and up.staging() == []
    assert up.later.queue == []


def test_a_disconnect_between_batches_discards_at_once(upload: Callable[..., Upload]) -> None:
    up = upload()
    up.channel.dataReceived(head(10 * MiB))
    up.channel.dataReceived(b"a" * 100)
    [staged] = up.made
    fd = staged.fileno()
    up.channel.connectionLost(Failure(ConnectionDone()))
    assert not is_open(fd)
    assert up.staging() == [] and up.later.queue == []


def test_reading_pauses_while_the_disk_falls_behind(upload: Callable[..., Upload]) -> None:
    """
    Past C{MAX_PENDING} bytes waiting, the connection is not read; it is
    read again once a batch is written. What the server holds stays bounded.
    """
    up = upload()
    up.channel.dataReceived(head(20 * MiB))
    piece = b"x" * 65536
    sent = 0
    while up.transport.producerState == "producing":
        assert sent < BATCH_SIZE + MAX_PENDING
        up.channel.dataReceived(piece)
        sent += len(piece)
    assert sent >= BATCH_SIZE + MAX_PENDING
    up.later.step()
    assert up.transport.producerState == "producing"


def fill(up: Upload) -> None:
    """
    Send until the server stops reading.
    """
    for _ in range(200):
        if up.transport.producerState != "producing":
            return
        up.channel.dataReceived(b"x" * 65536)
    raise AssertionError("the server never stopped reading")


def test_a_paused_upload_is_not_refused_for_its_rate(upload: Callable[..., Upload]) -> None:
    """
    The time the server does not read counts neither against the minimum
    rate nor as silence; once reading again the rule holds as before.
    """
    limits = ConnectionLimits(idle_timeout=30.0, min_rate=1000, window=10.0)
    up = upload(limits)
    up.channel.dataReceived(head(20 * MiB))
    up.clock.advance(9)  # 9 s of the first window gone, nothing sent
    fill(up)
    # Paused for far longer than the window and the idle timeout.
    up.clock.advance(1000)
    assert up.answer() == b"" and not up.transport.disconnecting
    up.later.step()
    assert up.transport.producerState == "producing"
    # The window goes on from where it stopped, with what came in it: now
    # the client sends nothing, and is dropped after the second window.
    up.clock.advance(1)
    assert up.answer() == b""
    up.clock.advance(10)
    assert b" 408 " in up.answer() and up.transport.disconnecting


def test_a_paused_upload_that_stays_silent_times_out(upload: Callable[..., Upload]) -> None:
    """
    Once the server reads again, a client that sends nothing is idle.
    """
    up = upload(ConnectionLimits(idle_timeout=30.0, min_rate=0))
    up.channel.dataReceived(head(20 * MiB))
    fill(up)
    up.clock.advance(100)
    assert not up.transport.disconnecting
    up.later.step()
    up.clock.advance(29)
    assert not up.transport.disconnecting
    up.clock.advance(2)
    assert b" 408 " in up.answer() and up.transport.disconnecting


def test_over_the_limit_while_batches_wait(upload: Callable[..., Upload]) -> None:
    """
    An upload goes over the limit while the connection is paused: what
    waits is dropped, the staging file goes once the batch under way is
    written, and the connection is read again, to drop the rest of the body.
    """
    piece = b"x" * 65536
    up = upload(max_upload=BATCH_SIZE + MAX_PENDING + 2 * len(piece))
    up.channel.dataReceived(head(None))
    [staged] = up.made
    fd = staged.fileno()
    for _ in range(200):
        if up.transport.producerState != "producing":
            break
        up.channel.dataReceived(chunk(piece))
    assert up.transport.producerState == "paused"
    for _ in range(4):
        up.channel.dataReceived(chunk(piece))
    assert isinstance(up.request.body_error, BodyTooLarge)
    assert up.transport.producerState == "producing"
    assert is_open(fd) and up.staging() == [staged.path]
    up.later.step()
    assert not is_open(fd) and up.staging() == [] and up.later.queue == []
    assert up.request.staged is None and up.request.writer is None


@pytest.mark.parametrize(
    "length, on_disk",
    [(BLOCK_MAX, False), (1000, False), (BLOCK_MAX + 1, True), (None, True)],
)
def test_a_body_no_larger_than_a_block_is_kept_in_memory(
    upload: Callable[..., Upload], length: int | None, on_disk: bool
) -> None:
    """
    A body that says it is no larger than a block (a block sent ahead) is
    collected in memory, not written to a temporary file and read back; a
    larger one, or one of no declared length, goes to a file.
    """
    up = upload()
    up.channel.dataReceived(head(length, b"/blocks/" + b"0" * 64))
    content = up.request.content
    assert content is not None
    try:
        content.fileno()
    except io.UnsupportedOperation:
        kept_in_memory = True
    else:
        kept_in_memory = False
    assert kept_in_memory is not on_disk


# The same through a real server and real threads.


@define
class Gate:
    """
    Runs each batch in a thread through C{run}, after C{before} (in that
    thread) has been told how many batches came before.
    """

    run: Callable[[Callable[[], None]], Deferred[None]]
    before: Callable[[int], None]
    count: int = 0

    def __call__(self, work: Callable[[], None]) -> Deferred[None]:
        n = self.count
        self.count += 1

        def gated() -> None:
            self.before(n)
            work()

        return self.run(gated)


@pytest_twisted.ensureDeferred
async def test_odd_pieces_are_stored_exactly(server: RunningServer, reactor: Any) -> None:
    """
    A chunked body in pieces of awkward sizes, across several batches:
    stored whole, with the right size and digest.
    """
    sizes = [1, 7, 65537, BATCH_SIZE - 1, 3, BATCH_SIZE + 5, 12345, 2 * BATCH_SIZE + 11, 999]
    body = os.urandom(sum(sizes))
    framed, at = [], 0
    for size in sizes:
        framed.append(b"%x\r\n%s\r\n" % (size, body[at : at + size]))
        at += size
    digest = hashlib.sha256(body).hexdigest()
    request = (
        b"PUT /files/odd.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"X-Boxsync-Base: 0\r\nX-Boxsync-Sha256: %s\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" % (KEY.encode(), digest.encode())
    ) + b"".join(framed) + b"0\r\n\r\n"
    response = await (await send(server, request)).response()
    assert response.status == 201, response.body
    assert file_sha(server.box / "odd.bin") == digest
    assert (server.box / "odd.bin").stat().st_size == len(body)
    assert list((server.box / ".boxsync/staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_disk_full_mid_upload_is_507(server: RunningServer, http: Any, reactor: Any) -> None:
    """
    The disk fills up after the first batches: 507, nothing committed or
    left in staging, and the server goes on serving.
    """
    assert server.service is not None
    site = server.service.site
    made: list[StagingFile] = []
    real_staging = site.new_staging
    full = os.open("/dev/full", os.O_WRONLY)

    def new_staging() -> StagingFile:
        made.append(real_staging())
        return made[-1]

    def before(n: int) -> None:
        if n == 2:
            # From the third batch on, writes fail as on a full disk.
            os.dup2(full, made[-1].fileno())

    real_run = site.run
    site.new_staging = new_staging
    site.run = Gate(real_run, before)
    try:
        data = os.urandom(6 * MiB)
        response = await timed(
            http.put(server.file_url("big.bin"), data=data, headers=server.headers(X_Boxsync_Base="0")), reactor
        )
        assert response.code == 507
        assert "no space" in (await json_of(response))["error"]
    finally:
        site.new_staging = real_staging
        site.run = real_run
        os.close(full)
    assert not (server.box / "big.bin").exists()
    assert list((server.box / ".boxsync/staging").iterdir()) == []
    response = await timed(
        http.put(server.file_url("big.bin"), data=data, headers=server.headers(X_Boxsync_Base="0")), reactor
    )
    assert response.code == 201 and file_sha(server.box / "big.bin") == hashlib.sha256(data).hexdigest()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Sender(Protocol):
    """
    Sends C{data}, and says when the connection is gone.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.gone: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.gone.callback(None)


async def until(reactor: Any, condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """
    Wait, checking every 10 ms, until C{condition} holds; fail after C{seconds}.
    """
    for _ in range(int(seconds * 100)):
        if condition():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"gave up after {seconds} s")


@pytest_twisted.ensureDeferred
async def test_a_disconnect_mid_upload_leaves_nothing(tmp_path: Path, reactor: Any) -> None:
    """
    A client goes away while a batch is being written in a thread: the
    staging file stays until that batch is done, then neither it nor its
    descriptor is left; no batch ever writes to a descriptor that was closed
    or reused.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    async with running_server(reactor, tmp_path / "box", KEY) as server:
        assert server.service is not None
        service, site = server.service, server.service.site
        staging = server.box / ".boxsync/staging"
        made: list[tuple[StagingFile, int]] = []
        started: list[int] = []
        wrong: list[str] = []
        release = threading.Event()
        real_staging = site.new_staging

        def new_staging() -> StagingFile:
            staged = real_staging()
            made.append((staged, os.fstat(staged.fileno()).st_ino))
            return staged

        def before(n: int) -> None:
            staged, inode = made[-1]
            try:
                if os.fstat(staged.fileno()).st_ino != inode:
                    wrong.append(f"batch {n} went to another file")
            except (OSError, ValueError) as e:
                wrong.append(f"batch {n}: {e}")
            started.append(n)
            if n == 1:
                release.wait(30)

        site.new_staging = new_staging
        site.run = Gate(site.run, before)
        baseline = open_fds()
        # Two batches and a half: the second is under way, and too little
        # waits to pause the reading (the server would not see the
        # disconnect until it read again).
        sender = Sender(head(64 * MiB) + os.urandom(2 * BATCH_SIZE + BATCH_SIZE // 2))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port)
        await timed(connectProtocol(endpoint, sender), reactor)
        try:
            await until(reactor, lambda: 1 in started)
            cast(ITCPTransport, sender.transport).abortConnection()
            await timed(sender.gone, reactor)
            # The server has seen the connection go...
            await until(reactor, lambda: not service.factory.protocols)
            # ...and keeps the file while the batch is being written.
            [(staged, _)] = made
            assert list(staging.iterdir()) == [staged.path]
        finally:
            release.set()
        await until(reactor, lambda: list(staging.iterdir()) == [])
        await until(reactor, lambda: open_fds() <= baseline)
        assert started == [0, 1] and wrong == []
        assert not (server.box / "big.bin").exists()


@pytest_twisted.ensureDeferred
async def test_over_the_limit_across_batches_is_413(tmp_path: Path, reactor: Any, http: Any) -> None:
    async with running_server(reactor, tmp_path / "box", KEY, max_upload=3 * MiB) as server:
        response = await timed(
            http.put(server.file_url("big.bin"), data=os.urandom(8 * MiB), headers=server.headers()), reactor
        )
        assert response.code == 413
        assert not (server.box / "big.bin").exists()
        await until(reactor, lambda: list((server.box / ".boxsync/staging").iterdir()) == [])
        data = os.urandom(3 * MiB)
        response = await timed(
            http.put(server.file_url("big.bin"), data=data, headers=server.headers()), reactor
        )
        assert response.code == 201 and file_sha(server.box / "big.bin") == hashlib.sha256(data).hexdigest()


def test_write_back_is_started_as_batches_are_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Every C{WRITE_BACK_BYTES} written, the disk is asked to start on them,
    in order and with nothing left out; the bytes and digest are those sent.
    """
    import boxsync.server.staging as staging_module
    from boxsync.writer import inline

    assert hasattr(ctypes.CDLL(None), "sync_file_range")  # Linux
    ranges: list[tuple[int, int]] = []
    real = staging_module.start_write_back

    def record(fd: int, offset: int, length: int) -> None:
        ranges.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(staging_module, "start_write_back", record)
    staged = BoxStorage(Clock(), tmp_path / "box").new_staging()
    writer = staged.writer(inline)
    data = os.urandom(3 * staging_module.WRITE_BACK_BYTES + 12345)
    for at in range(0, len(data), 100_003):
        writer.write(data[at : at + 100_003])
    done: list[object] = []
    writer.close().addBoth(done.append)
    assert done == [None]
    assert staged.size == len(data) and staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.path.read_bytes() == data
    assert len(ranges) >= 2 and ranges[0][0] == 0
    for (offset, length), (following, _) in zip(ranges, ranges[1:]):
        assert offset + length == following
    assert all(length >= staging_module.WRITE_BACK_BYTES for _, length in ranges)
    # Less than that is left for the final fsync.
    offset, length = ranges[-1]
    assert len(data) - (offset + length) < staging_module.WRITE_BACK_BYTES
    staged.discard()


async def put_with_trailer(
    server: RunningServer, body: bytes, chunked: bool = False, trailer: str = "sha256", **extra: str
) -> Any:
    """
    C{PUT /files/t.bin} of C{body}, which ends with what the trailer header
    (C{X-Boxsync-Trailer: trailer}) announces.
    """
    headers: list[tuple[str, bytes | str]] = [
        ("Authorization", f"Bearer {KEY}"),
        ("X-Boxsync-Trailer", trailer),
        ("Connection", "close"),
        *((name.replace("_", "-"), value) for name, value in extra.items()),
    ]
    request = http_request(server, "PUT", "/files/t.bin", headers, body, chunked=chunked)
    return await (await send(server, request)).response()


@pytest.mark.parametrize("size, chunked", [(3 * BATCH_SIZE + 5, False), (1000, True), (0, False)])
@pytest_twisted.ensureDeferred
async def test_a_sha256_trailer_is_checked_and_kept_out_of_the_file(
    server: RunningServer, size: int, chunked: bool
) -> None:
    """
    A body that ends with its sha256 is stored without those 64 bytes, in
    large pieces as in pieces of 7 bytes (the trailer split across many).
    """
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    response = await put_with_trailer(server, data + digest.encode(), chunked)
    assert response.status == 201, response.body
    assert (json.loads(response.body)["sha256"], json.loads(response.body)["size"]) == (digest, size)
    assert (server.box / "t.bin").read_bytes() == data
    assert list((server.box / ".boxsync/staging").iterdir()) == []


@pytest.mark.parametrize(
    "body, extra, error",
    [
        # The bytes are not those the trailer names (a file changed as it was sent).
        (b"data" + b"0" * 64, {}, "sha256"),
        (b"data" + b"Z" * 64, {}, "sha256 must be"),
        (b"short", {}, "shorter than its sha256 trailer"),
        (b"data" + hashlib.sha256(b"data").hexdigest().encode(), {"trailer": "md5"}, "must be sha256"),
        (
            b"data" + hashlib.sha256(b"data").hexdigest().encode(),
            {"X_Boxsync_Sha256": hashlib.sha256(b"data").hexdigest()},
            "give one",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_bad_sha256_trailer_commits_nothing(
    server: RunningServer, body: bytes, extra: dict[str, str], error: str
) -> None:
    response = await put_with_trailer(server, body, **extra)
    assert response.status == 400, response.body
    assert error in json.loads(response.body)["error"]
    assert not (server.box / "t.bin").exists()
    await until(server.reactor, lambda: list((server.box / ".boxsync/staging").iterdir()) == [])


def test_pieces_are_hashed_beside_their_writing(tmp_path: Path) -> None:
    """
    L{StagingFile.write_many} writes each piece in order and hashes it in a
    second thread: the file and its sha256 are those of the pieces joined.
    A piece that cannot be written ends it: the file is gone, the error
    kept, and no later piece is asked for.
    """
    storage = BoxStorage(Clock(), tmp_path / "box")
    pieces = [os.urandom(size) for size in (1, 3 * MiB, 0, 70_000, 2 * MiB)]
    staged = storage.new_staging()
    staged.write_many(iter(pieces))
    whole = b"".join(pieces)
    assert (staged.sha256, staged.size) == (hashlib.sha256(whole).hexdigest(), len(whole))
    staged.close()
    assert staged.path.read_bytes() == whole

    broken = storage.new_staging()
    os.close(broken.fileno())
    broken._fd = os.open(broken.path, os.O_RDONLY)
    asked: list[bytes] = []

    def pieces_asked() -> Iterator[bytes]:
        for piece in pieces:
            asked.append(piece)
            yield piece

    broken.write_many(pieces_asked())
    assert isinstance(broken.error, OSError) and not broken.path.exists() and asked == pieces[:1]
