"""
The client's side of the HTTP API that C{docs/protocol.md} describes.

L{BoxsyncAPI} makes one request per method: it opens the event stream, uploads,
deletes and downloads files, streaming every body in pieces, and turns the
server's error answers into the exceptions below. It does not decide what to
transfer (the engine does) and it does not limit how many transfers run at
once.

Every body it reads has its own silence watchdog: treq's C{timeout=} covers
only the wait for the response headers, and an event stream or a large
download can stall for good after them.

A download is written to disk and hashed in batches in a worker thread
(L{boxsync.writer}), so that the reactor thread only reads the socket.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import termios
import urllib.parse
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

from attrs import define, field, frozen
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IProducer,
    IPushProducer,
    IReactorThreads,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Cooperator, LoopingCall
from twisted.internet.tcp import Connection
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from ..paths import normalize
from ..wire import (
    BATCH,
    BATCH_MAX_BYTES,
    BASE_HEADER,
    CLIENT_HEADER,
    EVENT_STREAM,
    JSON,
    MTIME_HEADER,
    SEQ_HEADER,
    SHA256_HEADER,
    SHA256_TRAILER,
    STREAM_HEADER,
    TRAILER_HEADER,
    CommitResult,
    ErrorAnswer,
    Event,
    Manifest,
    Refusal,
    RemoteFile,
    ProtocolError,
    BatchFile,
    SSEParser,
    count_header,
    decode_event,
    encode_manifest,
    encode_part,
    encode_path_list,
    parse_batch_results,
    parse_health,
    parse_listing,
    parse_parts,
)
from ..writer import HashingWriter, inline

__all__ = [
    "APIError",
    "BadRequest",
    "AuthError",
    "NotFound",
    "StaleBase",
    "TooLarge",
    "ServerFull",
    "StreamIdle",
    "DigestMismatch",
    "error_for",
    "CommitResult",
    "DownloadResult",
    "RemoteFile",
    "EventStream",
    "BoxsyncAPI",
]

#: How many seconds a response may stay silent before it is given up.
DEFAULT_IDLE_TIMEOUT = 45.0

#: The most bytes of a JSON answer (an error or a commit) this client reads.
_MAX_JSON = 64 * 1024

#: The most bytes of one file's result in the answer to a batch, besides
#: the file itself (its path, digest and error).
_MAX_RESULT = 8 * 1024

#: How much of a partial download is read at a time to seed its hash.
_HASH_BLOCK = 1024 * 1024

#: How many bytes a download reads from its socket at a time (Twisted's TCP
#: transports read 64 KiB), and an upload from its file (C{FileBodyProducer}
#: reads 64 KiB): fewer, larger reads cost the reactor thread less (an
#: upload of 1 GiB, hashed as it is sent: 2.3 CPU-s at 64 KiB, 2.0 at this).
_READ_SIZE = 256 * 1024


class APIError(Exception):
    """
    The server answered a request with an error status.

    @ivar status: the HTTP status code.
    @ivar message: the C{error} of the JSON body, or what the body said.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}"


class BadRequest(APIError):
    """
    C{400}: the request was malformed (a bad path, manifest or sha256).
    """


class AuthError(APIError):
    """
    C{401} (no key) or C{403} (a wrong key).
    """


class NotFound(APIError):
    """
    C{404}: no such file, or it is deleted.
    """


class StaleBase(APIError):
    """
    C{412}: the path is no longer at the base the request stated.

    @ivar current_seq: the path's current seq, as the server named it.
    """

    def __init__(self, status: int, message: str, current_seq: int | None) -> None:
        super().__init__(status, message)
        self.current_seq = current_seq


class TooLarge(APIError):
    """
    C{413}: the server refuses a body this large.
    """


class ServerFull(APIError):
    """
    C{507}: the server's disk is full; nothing was committed, try again later.
    """


#: The exception for each refusal (but L{StaleBase}, which carries a seq).
_ERRORS: dict[int, type[APIError]] = {
    Refusal.BAD_REQUEST: BadRequest,
    Refusal.UNAUTHORIZED: AuthError,
    Refusal.FORBIDDEN: AuthError,
    Refusal.NOT_FOUND: NotFound,
    Refusal.TOO_LARGE: TooLarge,
    Refusal.DISK_FULL: ServerFull,
}


class StreamIdle(Exception):
    """
    Nothing moved on a connection for C{seconds} seconds (not a byte of a
    body, not an event-stream keep-alive), so it was closed.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self) -> str:
        return f"nothing received or sent for {self.seconds:g} seconds"


class DigestMismatch(Exception):
    """
    A download did not have the sha256 it was expected to have; the partial
    file was deleted.
    """

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(path, expected, actual)
        self.path = path
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return f"{self.path}: expected sha256 {self.expected}, got {self.actual}"


@frozen
class DownloadResult:
    """
    A file downloaded completely: its sha256 and size, and the seq of the
    version the server sent.
    """

    sha256: str
    size: int
    seq: int
    #: The downloaded file's stat once its mtime was set, if the download
    #: set it (a batch does, in its thread).
    placed: os.stat_result | None = None


@define
class _Watchdog:
    """
    Call C{on_idle} once if L{poke} is not called for C{timeout} seconds.
    """

    clock: IReactorTime
    timeout: float
    on_idle: Callable[[], object]
    fired: bool = False
    _call: IDelayedCall | None = None

    def poke(self) -> None:
        """
        Something happened: start the countdown again.
        """
        if self._call is not None and self._call.active():
            self._call.reset(self.timeout)
        elif not self.fired:
            self._call = self.clock.callLater(self.timeout, self._fire)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self) -> None:
        self._call = None
        self.fired = True
        self.on_idle()


class _BodyReader(Protocol):
    """
    Hand a response body to C{sink} a chunk at a time, as it arrives, and give
    up on it when nothing arrives for C{idle_timeout} seconds.

    @ivar done: fires with C{None} once the whole body was delivered. It fails
        with L{StreamIdle} after a silence, with what C{sink} raised, or with
        the reason the connection was lost. Cancelling it closes the
        connection. Nothing reaches C{sink} after it has fired.
    """

    def __init__(
        self, clock: IReactorTime, idle_timeout: float, sink: Callable[[bytes], object]
    ) -> None:
        self._sink = sink
        self._watchdog = _Watchdog(clock, idle_timeout, self._idle)
        self.done: Deferred[None] = Deferred(lambda _: self._abort())

    def connectionMade(self) -> None:
        self._watchdog.poke()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._watchdog.poke()
        try:
            self._sink(data)
        except Exception:
            self._fail(Failure())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._watchdog.stop()
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)

    def _idle(self) -> None:
        self._fail(Failure(StreamIdle(self._watchdog.timeout)))

    def _fail(self, reason: Failure) -> None:
        if not self.done.called:
            self.done.errback(reason)
        self._abort()

    def _abort(self) -> None:
        self._watchdog.stop()
        if self.transport is not None:
            # The transport of a response body is a push producer; stopping it
            # closes the connection (there is no public "abort" for a body).
            IPushProducer(self.transport).stopProducing()


@define
class _Prefix:
    """
    The first C{left} bytes of a file open for reading, for a
    C{FileBodyProducer} (which would otherwise read on to whatever end the
    file has by then).
    """

    file: BinaryIO
    left: int

    def read(self, size: int) -> bytes:
        data = self.file.read(min(size, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.file.close()


@define
class _Hashing:
    """
    A file being sent, hashed as it is read: once C{size} bytes are read,
    their sha256 (hex) follows, or, if they are fewer or C{unchanged} says
    the file changed meanwhile, a digest of no file.
    """

    file: _Prefix
    size: int
    unchanged: Callable[[], bool]
    _digest: hashlib._Hash = field(factory=hashlib.sha256)
    _read: int = 0
    _ended: bool = False

    def read(self, size: int) -> bytes:
        data = self.file.read(size)
        if data:
            self._digest.update(data)
            self._read += len(data)
            return data
        if self._ended:
            return b""
        self._ended = True
        if self._read != self.size or not self.unchanged():
            return b"0" * SHA256_TRAILER
        return self._digest.hexdigest().encode("ascii")

    def close(self) -> None:
        self.file.close()


@implementer(IConsumer)
@define
class _CountingConsumer:
    """
    Pass writes on to C{consumer}, telling C{on_write} how many bytes each one
    carried.
    """

    consumer: IConsumer
    on_write: Callable[[int], object]

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.on_write(len(data))
        self.consumer.write(data)


@implementer(IBodyProducer)
@define
class _CountingProducer:
    """
    A request body that reports every piece of itself it sends.
    """

    producer: IBodyProducer
    on_write: Callable[[int], object]
    consumer: IConsumer | None = None

    @property
    def length(self) -> int:
        length: int = self.producer.length
        return length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self.consumer = consumer
        started: Deferred[None] = self.producer.startProducing(
            _CountingConsumer(consumer, self.on_write)
        )
        return started

    def unsent(self) -> int | None:
        """
        How many bytes of the body the connection has not delivered yet (sent
        but not acknowledged by the peer, or not sent): Linux's C{SIOCOUTQ}
        of its socket. C{None} if that cannot be told.
        """
        # Twisted hands a body producer a private wrapper of the transport.
        transport = getattr(self.consumer, "_consumer", self.consumer)
        for _ in range(3):  # TLS wraps the TCP transport
            get_handle = getattr(transport, "getHandle", None)
            handle = get_handle() if callable(get_handle) else None
            if isinstance(handle, socket.socket):
                try:
                    raw = fcntl.ioctl(handle.fileno(), termios.TIOCOUTQ, bytes(4))
                except OSError:
                    return None
                return int.from_bytes(raw, sys.byteorder, signed=True)
            transport = getattr(transport, "transport", None)
        return None

    def pauseProducing(self) -> None:
        self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.producer.stopProducing()


@define(eq=False)
class EventStream:
    """
    An open C{POST /sync} event stream.

    Its events go to the C{on_event} given to L{BoxsyncAPI.open_stream} as
    they arrive; events of unknown types are skipped.

    @ivar done: fires with C{None} when the server ends the stream; fails with
        L{StreamIdle} when it stayed silent too long, with
        L{ProtocolError} for a malformed event, with what C{on_event} raised,
        with C{CancelledError} after L{cancel}, or with the reason the
        connection was lost. Nothing is delivered after it has fired.
    """

    _reader: _BodyReader
    _parser: SSEParser

    @property
    def done(self) -> Deferred[None]:
        return self._reader.done

    @property
    def last_event_id(self) -> str | None:
        """
        The id of the last event that carried one.
        """
        return self._parser.last_id

    @property
    def retry(self) -> int | None:
        """
        How long the server asks clients to wait before reconnecting, in
        milliseconds, if it said.
        """
        return self._parser.retry

    def cancel(self) -> None:
        """
        Close the stream; C{done} fails with C{CancelledError}.
        """
        self._reader.done.cancel()


def _file_path(path: str) -> str:
    """
    The URL path of a file, quoted one segment at a time.
    """
    segments = normalize(path).split("/")
    return "/files/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)


def _header(response: IResponse, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    if not values:
        return None
    value: bytes | str = values[-1]
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _etag_sha256(response: IResponse) -> str | None:
    """
    The sha256 a response's C{ETag} names, if it has one.
    """
    etag = _header(response, "ETag")
    if etag is None:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"').lower()


def _range_start(response: IResponse) -> int | None:
    """
    Where the part in a C{206} answer starts, from its C{Content-Range}.
    """
    value = _header(response, "Content-Range")
    if value is None:
        return None
    unit, _, rest = value.strip().partition(" ")
    first, _, _ = rest.partition("-")
    if unit != "bytes" or not first.isdigit():
        return None
    return int(first)


def _hash_prefix(dest: Path, size: int) -> hashlib._Hash:
    """
    A sha256 of the first C{size} bytes of C{dest}, read a block at a time.
    """
    digest = hashlib.sha256()
    with dest.open("rb") as f:
        remaining = size
        while remaining > 0:
            block = f.read(min(_HASH_BLOCK, remaining))
            if not block:
                raise ProtocolError(f"{dest} shrank while being resumed")
            digest.update(block)
            remaining -= len(block)
    return digest


def _read_more(body_transport: object) -> None:
    """
    Have the TCP connection under a response body read C{_READ_SIZE} bytes
    at a time (and buffer as much before it pauses a producer). Other
    transports are left alone.
    """
    # A response body's transport is Twisted's private proxy of the
    # connection's transport, which is TCP or TLS over TCP. The size stays
    # for the later requests of a pooled connection.
    transport = getattr(body_transport, "_producer", None)
    for _ in range(2):
        if isinstance(transport, Connection):
            transport.bufferSize = max(transport.bufferSize, _READ_SIZE)
            return
        transport = getattr(transport, "transport", None)


def error_for(status: int, body: bytes) -> APIError:
    """
    The exception for an error answer with the given C{{"error": ...}} body.
    """
    return error_from(ErrorAnswer.parse(status, body))


def error_from(answer: ErrorAnswer) -> APIError:
    """
    The exception for an error answer.
    """
    if answer.status == Refusal.STALE_BASE:
        return StaleBase(answer.status, answer.message, answer.seq)
    return _ERRORS.get(answer.status, APIError)(answer.status, answer.message)


@define
class BoxsyncAPI:
    """
    The HTTP API of one boxsync server, for one client.

    @ivar http: the treq client requests go through (or anything with its
        C{request} method, such as treq's C{StubTreq}).
    @ivar clock: the clock for the silence watchdogs.
    @ivar base_url: the server's URL, such as C{"http://127.0.0.1:8080"}.
    @ivar token: the key sent as C{Authorization: Bearer <token>}, if any.
    @ivar client_name: this client's name, sent with every request.
    @ivar stream_id: the id of this client's open event stream (from its
        C{hello}), sent with commits so they are not echoed back; the engine
        sets it.
    @ivar idle_timeout: how many seconds a request may send nothing and
        receive nothing before it is given up with L{StreamIdle}.
    @ivar cooperator: runs the loops that read request bodies from files.
    @ivar threads: where downloads are written to disk and hashed; by
        default the clock, if it is a reactor with a thread pool. Without
        one they are written on the reactor thread.
    """

    log = Logger()

    http: HTTPClient
    clock: IReactorTime
    base_url: str
    token: str | None
    client_name: str
    stream_id: str | None = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    cooperator: Cooperator = field()
    threads: IReactorThreads | None = field()

    @cooperator.default
    def _cooperator(self) -> Cooperator:
        return Cooperator(scheduler=lambda work: self.clock.callLater(0, work))

    @threads.default
    def _threads(self) -> IReactorThreads | None:
        return self.clock if IReactorThreads.providedBy(self.clock) else None

    async def healthz(self) -> bool:
        """
        Whether the server answers its liveness probe.
        """
        return await self._health() is not None

    async def features(self) -> frozenset[str]:
        """
        What the server can do beyond the first protocol, as its liveness
        probe tells (nothing, if it does not answer).
        """
        return await self._health() or frozenset()

    async def _health(self) -> frozenset[str] | None:
        """
        The features the liveness probe lists, if the server is healthy.
        """
        try:
            response = await self._request("GET", "/healthz", self._headers())
            body = await self._json(response)
        except CancelledError:
            raise
        except Exception as e:
            self.log.info("{url} is not healthy: {error}", url=self.base_url, error=e)
            return None
        if response.code != 200:
            return None
        return parse_health(body)

    async def list_files(self, after: str = "", limit: int = 1000) -> list[RemoteFile]:
        """
        The live files whose paths sort after C{after}, in path order, at
        most C{limit}; fewer than C{limit} means there are no more.
        """
        query = urllib.parse.urlencode({"after": after, "limit": limit})
        response = await self._request("GET", f"/files?{query}", self._headers())
        await self._check(response, 200)
        chunks: list[bytes] = []
        await self._read(response, chunks.append).done
        return parse_listing(b"".join(chunks))

    async def open_stream(
        self,
        manifest: Manifest,
        last_event_id: int | None,
        on_event: Callable[[Event], object],
    ) -> EventStream:
        """
        Send C{manifest} and open the event stream that answers it.

        @param last_event_id: the cursor, sent as C{Last-Event-ID}, if any.
        @param on_event: called with each event, in order, as it arrives.
        @raise APIError: if the server refused the stream.
        """
        headers = self._headers(
            {"Accept": EVENT_STREAM, "Content-Type": JSON, "Cache-Control": "no-cache"}
        )
        if last_event_id is not None:
            headers.setRawHeaders("Last-Event-ID", [str(last_event_id)])
        body = FileBodyProducer(BytesIO(encode_manifest(manifest)), self.cooperator)
        response = await self._request("POST", "/sync", headers, body)
        await self._check(response, 200)
        content_type = _header(response, "Content-Type") or ""
        if content_type.split(";")[0].strip() != EVENT_STREAM:
            self._abandon(response)
            raise ProtocolError(f"expected an event stream, got {content_type!r}")
        parser = SSEParser()

        def received(chunk: bytes) -> None:
            for message in parser.feed(chunk):
                event = decode_event(message)
                if event is None:
                    self.log.debug("skipping unknown event {name}", name=message.event)
                else:
                    on_event(event)

        return EventStream(self._read(response, received), parser)

    async def upload(
        self,
        path: str,
        local: Path,
        base: int | None,
        sha256: str | None,
        mtime_ns: int | None,
        on_progress: Callable[[int], object] | None = None,
        size: int | None = None,
        hash_as_sent: bool = False,
        unchanged: Callable[[], bool] | None = None,
    ) -> CommitResult:
        """
        Commit the file C{local} as C{path}, streaming it from disk.

        @param base: the seq the change starts from (0: the path must not
            exist); C{None} for last-writer-wins.
        @param sha256: the file's sha256, which the server checks, if known.
        @param mtime_ns: the file's modification time, kept with it.
        @param on_progress: called with the number of bytes in each piece sent.
        @param size: send only the first C{size} bytes: the size the file had
            when it was hashed (a file being appended to still matches
            C{sha256} then). Default: all of it.
        @param hash_as_sent: without C{sha256}: compute it as the file is
            read and send it after the file's bytes, for the server to check
            (only for a server with the L{SHA256_TRAILER_FEATURE}: another
            would keep it as part of the file).
        @param unchanged: with C{hash_as_sent}, asked once all of the file is
            read whether it is still as it was when C{size} was taken: if
            not, the server is sent a sha256 that refuses the upload, as it
            refuses a file that changed after it was hashed.
        @raise StaleBase: if the path is no longer at C{base}.
        @raise APIError: for any other refusal.
        """
        trailer = hash_as_sent and sha256 is None
        headers = self._headers(
            {
                "Content-Type": "application/octet-stream",
                BASE_HEADER: base,
                SHA256_HEADER: sha256,
                TRAILER_HEADER: "sha256" if trailer else None,
                MTIME_HEADER: mtime_ns,
            },
            commit=True,
        )
        with local.open("rb") as f:
            source: BinaryIO | _Prefix | _Hashing = f if size is None else _Prefix(f, size)
            length = size
            if trailer:
                if size is None:
                    size = os.fstat(f.fileno()).st_size
                source = _Hashing(_Prefix(f, size), size, unchanged or (lambda: True))
                length = size + SHA256_TRAILER
            body = FileBodyProducer(source, self.cooperator, readSize=_READ_SIZE)
            if length is not None:
                body.length = length
            response = await self._request(
                "PUT", _file_path(path), headers, body, on_progress
            )
        await self._check(response, 201)
        return CommitResult.from_json(await self._json(response))

    async def upload_batch(
        self, files: Sequence[tuple[BatchFile, bytes]]
    ) -> list[CommitResult | APIError]:
        """
        Commit several small files in one request (C{POST /batch/upload}).

        @return: for each file, in order, its commit or the L{APIError} it
            met (a L{StaleBase}, a L{BadRequest} for a sha256 that does not
            match...), as if it had been sent alone.
        @raise APIError: if the server refused the whole batch (a server
            without batches answers 404 or 405).
        """
        body = b"".join(piece for file, data in files for piece in encode_part(file.to_json(), data))
        headers = self._headers({"Content-Type": BATCH}, commit=True)
        producer = FileBodyProducer(BytesIO(body), self.cooperator)
        response = await self._request("POST", "/batch/upload", headers, producer)
        await self._check(response, 200)
        answer = await self._json(response, _MAX_JSON + len(files) * _MAX_RESULT)
        return [
            outcome if isinstance(outcome, CommitResult) else error_from(outcome)
            for outcome in parse_batch_results(answer, len(files))
        ]

    async def download_batch(self, paths: Sequence[str]) -> list[tuple[dict[str, Any], bytes]]:
        """
        Fetch several small files in one answer (C{POST /batch/download}).

        @return: the parts of the answer, each a header (with C{path},
            C{status} and, for a file sent, its C{seq}, C{sha256} and
            C{mtime_ns}) and the file's bytes.
        @raise APIError: if the server refused the whole batch (a server
            without batches answers 404 or 405).
        @raise ProtocolError: if the answer is malformed or too long.
        """
        body = encode_path_list(list(paths))
        headers = self._headers({"Content-Type": JSON})
        producer = FileBodyProducer(BytesIO(body), self.cooperator)
        response = await self._request("POST", "/batch/download", headers, producer)
        await self._check(response, 200)
        answer = await self._small_body(response, BATCH_MAX_BYTES + len(paths) * _MAX_RESULT)
        return parse_parts(answer, len(paths))

    async def delete(self, path: str, base: int) -> CommitResult:
        """
        Commit the deletion of C{path}, which must still be at C{base}.

        @raise StaleBase: if it is not.
        @raise NotFound: if there is no such file.
        """
        headers = self._headers({BASE_HEADER: base}, commit=True)
        response = await self._request("DELETE", _file_path(path), headers)
        await self._check(response, 200)
        return CommitResult.from_json(await self._json(response))

    async def download(
        self,
        path: str,
        dest: Path,
        expected_sha256: str | None = None,
        on_progress: Callable[[int], object] | None = None,
    ) -> DownloadResult:
        """
        Fetch the current version of C{path} into C{dest}, a piece at a time.

        If C{dest} already holds part of the file (from an interrupted call)
        and C{expected_sha256} is given, only the rest is requested, provided
        the server still has that version; otherwise C{dest} is started over.
        A download that fails keeps C{dest} for the next try, but for a
        digest mismatch. The caller fsyncs and renames C{dest}.

        @param on_progress: called with the number of bytes of each piece
            written (after a resume, first with the size of the part there).
        @raise DigestMismatch: if the file (or the version the server has)
            does not have C{expected_sha256}; C{dest} is deleted.
        @raise NotFound: if there is no such file.
        @raise StreamIdle: if the server stayed silent too long.
        """
        offset = dest.stat().st_size if expected_sha256 and dest.exists() else 0
        headers = self._headers()
        if offset:
            headers.setRawHeaders("Range", [f"bytes={offset}-"])
            headers.setRawHeaders("If-Range", [f'"{expected_sha256}"'])
        response = await self._request("GET", _file_path(path), headers)
        if response.code == 416 and offset:
            # More than the whole file is there already: start over.
            self._abandon(response)
            dest.unlink(missing_ok=True)
            return await self.download(path, dest, expected_sha256, on_progress)
        await self._check(response, 200, 206)
        try:
            seq = count_header(_header(response, SEQ_HEADER), SEQ_HEADER)
            if seq is None:
                raise ProtocolError(f"download of {path!r} has no {SEQ_HEADER}")
            etag = _etag_sha256(response)
            if expected_sha256 and etag is not None and etag != expected_sha256:
                dest.unlink(missing_ok=True)
                raise DigestMismatch(path, expected_sha256, etag)
            if response.code == 206:
                if _range_start(response) != offset:
                    raise ProtocolError(f"{path!r} resumed at the wrong place")
                digest = _hash_prefix(dest, offset)
            else:
                offset, digest = 0, hashlib.sha256()
            f = dest.open("ab" if offset else "wb", buffering=0)
        except BaseException:
            self._abandon(response)
            raise
        if offset and on_progress is not None:
            on_progress(offset)
        with f:
            size = offset + await self._receive(response, f, digest, on_progress)
        actual = digest.hexdigest()
        if expected_sha256 and actual != expected_sha256:
            dest.unlink(missing_ok=True)
            raise DigestMismatch(path, expected_sha256, actual)
        return DownloadResult(sha256=actual, size=size, seq=seq)

    async def _receive(
        self,
        response: IResponse,
        file: BinaryIO,
        digest: hashlib._Hash,
        on_progress: Callable[[int], object] | None,
    ) -> int:
        """
        Append the body of C{response} to C{file} and feed it to C{digest},
        a batch at a time in a worker thread while the next batch arrives.

        @param on_progress: called with the size of each batch written.
        @return: how many bytes the body had.
        @raise Exception: what writing raised, else why the body did not
            arrive whole; either way, only once all that arrived is written.
        """
        writer = HashingWriter(file, digest, self._in_thread, on_progress)
        reader = self._read(response, writer.write)
        _read_more(reader.transport)
        writer.registerProducer(IPushProducer(reader.transport), True)
        try:
            await reader.done
        finally:
            await writer.close()
        return writer.received

    def _in_thread(self, work: Callable[[], None]) -> Deferred[None]:
        """
        Run C{work} in a thread of C{threads}, or right here without them.
        """
        if self.threads is None:
            return inline(work)
        return deferToThreadPool(self.threads, self.threads.getThreadPool(), work)

    def _headers(
        self, fields: dict[str, str | int | None] | None = None, commit: bool = False
    ) -> Headers:
        """
        The headers of a request: authorization, the client's name, the
        stream id for a commit, and those of C{fields} that have a value.
        """
        headers = Headers()
        if self.token is not None:
            headers.setRawHeaders("Authorization", [f"Bearer {self.token}"])
        headers.setRawHeaders(CLIENT_HEADER, [self.client_name])
        if commit and self.stream_id is not None:
            headers.setRawHeaders(STREAM_HEADER, [self.stream_id])
        for name, value in (fields or {}).items():
            if value is not None:
                headers.setRawHeaders(name, [str(value)])
        return headers

    async def _request(
        self,
        method: str,
        url_path: str,
        headers: Headers,
        body: IBodyProducer | None = None,
        on_write: Callable[[int], object] | None = None,
    ) -> IResponse:
        """
        Send a request and wait for the headers of its response, giving up
        with L{StreamIdle} when nothing is sent or received for
        C{idle_timeout} seconds (a large upload takes as long as it takes, as
        long as it moves).
        """
        requested: Deferred[Any]

        def idle() -> None:
            requested.cancel()

        watchdog = _Watchdog(self.clock, self.idle_timeout, idle)
        draining: LoopingCall | None = None
        if body is not None:

            def wrote(count: int) -> None:
                watchdog.poke()
                if on_write is not None:
                    on_write(count)

            counting = body = _CountingProducer(body, wrote)
            queued: int | None = None

            def moving() -> None:
                # Once the whole body is written it can take a long while to
                # drain (the socket's send buffer, a slow link): as long as
                # it does, the connection is not silent.
                nonlocal queued
                before, queued = queued, counting.unsent()
                if before is not None and queued is not None and queued < before:
                    watchdog.poke()

            draining = LoopingCall(moving)
            draining.clock = self.clock
            draining.start(min(1.0, self.idle_timeout / 4), now=False)
        requested = self.http.request(
            method,
            self.base_url.rstrip("/") + url_path,
            headers=headers,
            data=body,
            unbuffered=True,
            allow_redirects=False,
        )
        watchdog.poke()
        try:
            response: IResponse = await requested
            return response
        except Exception as e:
            if watchdog.fired:
                raise StreamIdle(self.idle_timeout) from e
            raise
        finally:
            watchdog.stop()
            if draining is not None and draining.running:
                draining.stop()

    def _read(
        self, response: IResponse, sink: Callable[[bytes], object]
    ) -> _BodyReader:
        """
        Start handing the body of C{response} to C{sink}.
        """
        reader = _BodyReader(self.clock, self.idle_timeout, sink)
        response.deliverBody(reader)
        return reader

    def _abandon(self, response: IResponse) -> None:
        """
        Close the connection of a response whose body is not wanted.
        """
        reader = self._read(response, lambda chunk: None)
        reader.done.addErrback(lambda reason: None)
        reader.done.cancel()

    async def _small_body(self, response: IResponse, limit: int = _MAX_JSON) -> bytes:
        """
        The whole body of a short answer (an error, a commit, a batch).

        @raise ProtocolError: if it is longer than C{limit} bytes.
        """
        chunks: list[bytes] = []
        size = 0

        def received(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"answer longer than {limit} bytes")
            chunks.append(chunk)

        await self._read(response, received).done
        return b"".join(chunks)

    async def _json(self, response: IResponse, limit: int = _MAX_JSON) -> Any:
        """
        The JSON body of a short answer.

        @raise ProtocolError: if it is not JSON, or too long.
        """
        try:
            return json.loads(await self._small_body(response, limit))
        except ValueError as e:
            raise ProtocolError(f"answer is not JSON: {e}") from None

    async def _check(self, response: IResponse, *expected: int) -> None:
        """
        Raise the L{APIError} for a response whose status is not one of
        C{expected}, having read its body.
        """
        if response.code not in expected:
            raise error_for(response.code, await self._small_body(response))
