"""
Request bodies with limits, and upload bodies streamed straight into the
box's staging area.

Twisted's C{Request} collects a body in memory or in a temporary file
elsewhere before any resource sees it, however large. L{StreamingRequest}
instead opens a staging file on the box's own file system as soon as the
headers of an upload have arrived, and feeds the body to it as it comes
through a L{HashingWriter}: pieces are gathered into batches that are
written and hashed in a worker thread, in order, while the reactor thread
goes on reading the socket. While too much waits for the disk, the
connection is not read from. So an upload of any size costs the same small
memory and is never copied. An upload whose body ends with its sha256
(L{TRAILER_HEADER}) has those last bytes held back from the file, for the
route to check. Every other body (a manifest, a block) is collected as
before, but only up to a limit: past it, the rest is read and dropped, and
the request fails with L{BodyTooLarge}. One that says it is no larger than
a block (L{MEMORY_BODY}) is collected in memory, not in a temporary file
that would be written and read back.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Callable, Collection, cast

from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorThreads
from twisted.internet.tcp import Connection
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from ..blocks import BLOCK_MAX
from ..config import human_size
from ..wire import CLIENT_HEADER, EVENT_STREAM, SHA256_TRAILER, TRAILER_HEADER, ProtocolError, sha256_header
from ..writer import HashingWriter, Runner
from .auth import Forbidden, Principal, Unauthorized
from .limits import MAX_OTHER_BODY, LimitedChannel, LimitedSite, Refused
from .staging import StagingFile, as_box_error, discarding
from .transfers import Transfer, Transfers

__all__ = ["StreamingRequest", "UploadSite", "take_upload", "check_body", "trailer_sha256", "BodyTooLarge", "check_size"]

#: The largest body read without credentials (see L{UploadSite.public}).
PUBLIC_BODY = 16 * 1024

#: The largest body, of a declared length, collected in memory: a block
#: (Twisted's own bound is 100,000 bytes).
MEMORY_BODY = BLOCK_MAX

#: How many bytes the connection of an upload reads at a time (Twisted reads
#: 64 KiB): fewer, larger reads leave more of the reactor thread free.
READ_SIZE = 256 * 1024


class BodyTooLarge(ValueError):
    """
    The body is larger than the server accepts.
    """


def check_size(path: str, size: int, limit: int | None) -> None:
    """
    Refuse a file of C{size} bytes at C{path} over C{limit} (C{None}: no
    limit), however it is sent: whole, in a batch, by its blocks.

    @raise BodyTooLarge: if it is over.
    """
    if limit is not None and size > limit:
        raise BodyTooLarge(f"{path}: {_over(size, limit)}")


def _sized(size: int) -> str:
    return f"{human_size(size)} ({size:,} bytes)"


def _over(size: int, limit: int) -> str:
    """
    Why a body of C{size} bytes is refused, in sizes people read.
    """
    return f"{_sized(size)} is over the server's limit of {_sized(limit)}"


def is_upload(method: bytes, uri: bytes) -> bool:
    """
    Whether a request's body is file content to stream into the box.
    """
    path = uri.split(b"?", 1)[0]
    return (method == b"PUT" and path.startswith(b"/files/")) or (
        method == b"POST" and path == b"/upload"
    )


class UploadSite(LimitedSite):
    """
    A L{LimitedSite} whose requests stream uploads into staging files.

    @ivar new_staging: makes the staging file for an upload.
    @ivar max_upload: the largest upload body accepted, in bytes (C{None}:
        no limit).
    @ivar max_body: the largest manifest (C{POST /sync} body) accepted, in
        bytes (C{None}: no limit); the body of any other request is held to
        L{MAX_OTHER_BODY} too.
    @ivar authorize: checks the credentials (its C{Authorization} header or
        session cookie) of every request with a body before a byte of it is
        stored, raising L{Unauthorized} or L{Forbidden} if they do not let
        the caller in (see L{admit}).
    @ivar public: the (method, path) of the requests whose body is read
        without credentials, because it holds them (a sign-in); each such
        body is held to L{PUBLIC_BODY} bytes.
    @ivar run: runs the writing and hashing of each batch of an upload
        (by default in the reactor's thread pool).
    @ivar transfers: where each upload (a file, a block, a batch) let in is
        registered until its request ends, if given.
    """

    def __init__(
        self,
        resource: object,
        new_staging: Callable[[], StagingFile],
        max_upload: int | None = None,
        authorize: Callable[[Request], object] = lambda request: None,
        max_body: int | None = None,
        run: Runner | None = None,
        public: Collection[tuple[bytes, bytes]] = (),
        transfers: Transfers | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, requestFactory=StreamingRequest, **kwargs)
        self.new_staging = new_staging
        self.max_upload = max_upload
        self.max_body = max_body
        self.authorize = authorize
        self.public = frozenset(public)
        self.run: Runner = run or self._in_thread
        self.transfers = transfers
        self.under_way: set[StreamingRequest] = set()

    def answering(self) -> bool:
        """
        Whether a request is under way that will end by itself: any but an
        event stream and a wait for a block (those end when cut).
        """
        return any(not request.lingers() for request in self.under_way)

    def is_public(self, method: bytes, uri: bytes) -> bool:
        """
        Whether the body of a request is read without credentials.
        """
        return (method, uri.split(b"?", 1)[0]) in self.public

    def admit(self, request: Any) -> None:
        """
        Read the body of C{request} only if its credentials let the caller
        in (or it is L{public}): every other route's body is refused (401,
        403) before a byte of it is stored.
        """
        channel = request.channel
        if self.is_public(channel._command, channel._path):
            return
        try:
            principal = self.authorize(request)
        except Unauthorized as e:
            raise Refused(401, str(e)) from None
        except Forbidden as e:
            raise Refused(403, str(e)) from None
        if self.transfers is not None and isinstance(principal, Principal):
            client = request.getHeader(CLIENT_HEADER.encode())
            request.transfer = self.transfers.receiving(
                request,
                channel._command,
                channel._path,
                principal.account,
                client.decode("utf-8", "replace") if client else principal.client,
                channel.length,
            )

    def _in_thread(self, work: Callable[[], None]) -> Deferred[None]:
        # The site's reactor: a real one, whose threads do the disk work.
        reactor = cast(IReactorThreads, self.reactor)
        return deferToThreadPool(reactor, reactor.getThreadPool(), work)


@implementer(IPushProducer)
@define
class _Reading:
    """
    The reading of one upload's body, as a push producer for its writer:
    paused, the channel reads nothing (see L{LimitedChannel.pause_reading});
    stopped (the disk failed), it reads again, so the rest of the body is
    dropped and the client gets the answer.
    """

    channel: LimitedChannel
    paused: bool = False

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.channel.pause_reading()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.channel.resume_reading()

    def stopProducing(self) -> None:
        self.resumeProducing()


class StreamingRequest(Request):
    """
    A request whose upload body goes to a L{StagingFile} as it arrives, and
    whose other bodies are kept only up to the site's C{max_body}.

    @ivar staged: the staging file of an upload, until the route claims it.
    @ivar writer: what feeds C{staged}, with it.
    @ivar body_error: what went wrong with the body on its way in (too
        large, a full disk), for the route to raise.
    @ivar trailer: the last bytes of an upload body that ends with its
        sha256 (so far: at most its length); C{None} for any other body.
    @ivar transfer: where the bytes of an upload received so far are
        counted (see L{UploadSite.transfers}).
    """

    staged: StagingFile | None = None
    transfer: Transfer | None = None
    trailer: bytes | None = None
    writer: HashingWriter | None = None
    _reading: _Reading | None = None
    body_error: Exception | None = None
    _limit: int | None = None
    _received = 0
    log = Logger()

    def lingers(self) -> bool:
        """
        Whether this request is one that lasts until it is cut: an event
        stream, or a wait for a block still on its way.
        """
        content_type = self.responseHeaders.getRawHeaders(b"content-type") or []
        if any(value.startswith(EVENT_STREAM.encode()) for value in content_type):
            return True
        return bool(self.path and self.path.startswith(b"/blocks/") and b"wait=" in (self.uri or b""))

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        site = getattr(channel, "site", None)
        if not isinstance(site, UploadSite):
            super().gotLength(length)
            return
        site.under_way.add(self)
        upload = is_upload(channel._command, channel._path)  # type: ignore[attr-defined]
        if not upload:
            self._limit = site.max_body
            if site.is_public(channel._command, channel._path):  # type: ignore[attr-defined]
                self._limit = PUBLIC_BODY
            elif channel._path.split(b"?", 1)[0] != b"/sync":  # type: ignore[attr-defined]
                self._limit = min(self._limit or MAX_OTHER_BODY, MAX_OTHER_BODY)
            if self._refused(length, "request body"):
                return
            if length is not None and length <= MEMORY_BODY:
                self.content = BytesIO()
            else:
                super().gotLength(length)
            return
        self.content = BytesIO()
        self._limit = site.max_upload
        if self._refused(length, "upload"):
            return
        try:
            self.staged = staged = site.new_staging()
        except OSError as e:
            self.body_error = e
            return
        self.writer = staged.writer(site.run)
        trailer = self.requestHeaders.getRawHeaders(TRAILER_HEADER, [None])[-1]
        if trailer is not None and channel._command == b"PUT":  # type: ignore[attr-defined]
            if trailer.strip().lower() != "sha256":
                self.body_error = ProtocolError(f"{TRAILER_HEADER} must be sha256")
                self._drop()
                return
            self.trailer = b""
        transport = channel.transport
        if isinstance(transport, Connection):
            # Stays so for the later requests of this connection.
            transport.bufferSize = max(transport.bufferSize, READ_SIZE)
        if isinstance(channel, LimitedChannel):
            self._reading = _Reading(channel)
            self.writer.registerProducer(self._reading, True)

    def _refused(self, length: int | None, what: str) -> bool:
        if self._limit is None or length is None or length <= self._limit:
            return False
        self.content = BytesIO()
        self.body_error = BodyTooLarge(f"{what}: {_over(length, self._limit)}")
        return True

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_error is not None:
            return
        self._received += len(data)
        if self.transfer is not None:
            self.transfer.moved += len(data)
        if self._limit is not None and self._received > self._limit:
            # The rest of the body is read and dropped, so the client gets
            # the answer instead of a reset connection.
            self.body_error = BodyTooLarge(f"body: more than the server's limit of {_sized(self._limit)}")
            self._drop()
            if self.content is not None:
                self.content.close()
            self.content = BytesIO()
            return
        writer = self.writer
        if writer is None:
            super().handleContentChunk(data)
            return
        try:
            for piece in self._held_back(data):
                writer.write(piece)
        except Exception as e:
            # The rest of the body is dropped (the writer let go of the
            # connection); no batch is under way any more.
            self.body_error = cast(Exception, as_box_error(e))
            self._drop()

    def _held_back(self, data: bytes) -> list[bytes]:
        """
        What of the body so far goes to the file: all but the trailer's
        length at its end, if the body has a trailer. No large piece is
        copied.
        """
        held = self.trailer
        if held is None:
            return [data]
        if len(data) >= SHA256_TRAILER:
            self.trailer = data[-SHA256_TRAILER:]
            return [held, memoryview(data)[:-SHA256_TRAILER]]  # type: ignore[list-item]
        joined = held + data
        self.trailer = joined[-SHA256_TRAILER:]
        return [joined[:-SHA256_TRAILER]]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # The whole body is in: nothing more to read for it, however much
        # still waits for the disk.
        self._let_go()
        super().requestReceived(command, path, version)

    def _let_go(self) -> None:
        """
        Read the connection again, if the writer had paused it, and for good.
        """
        if self.writer is not None:
            self.writer.unregisterProducer()
        if self._reading is not None:
            self._reading.resumeProducing()
            self._reading = None

    def _drop(self) -> None:
        """
        Discard the staging file, once no batch is being written to it.
        """
        self._let_go()
        staged, writer = self.staged, self.writer
        self.staged = self.writer = None
        if staged is None:
            return
        if writer is None:
            staged.discard()
            return

        def failed(reason: Failure) -> None:
            self.log.failure("could not discard {path}", reason, path=str(staged.path))

        writer.abort().addCallback(lambda _: staged.discard()).addErrback(failed)

    def finish(self) -> object:
        self._drop()
        self._ended()
        return super().finish()

    def connectionLost(self, reason: object) -> None:
        self._drop()
        self._ended()
        super().connectionLost(reason)

    def _ended(self) -> None:
        site = getattr(self.channel, "site", None)
        if isinstance(site, UploadSite):
            site.under_way.discard(self)


def check_body(request: object) -> None:
    """
    @raise Exception: the error the body of C{request} met on its way in
        (too large, a full disk), if any.
    """
    error = getattr(request, "body_error", None)
    if error is not None:
        raise error


async def take_upload(request: object) -> StagingFile:
    """
    Claim the staging file of an upload request, once all of its body is
    written; from here on the caller must place or discard it.

    @raise Exception: the error the upload met on its way in (see
        L{check_body}) or while the last of it was written (a L{DiskFull}),
        if any; the staging file is then discarded.
    """
    check_body(request)
    staged = getattr(request, "staged", None)
    writer = getattr(request, "writer", None)
    if staged is None:
        raise RuntimeError("this request has no streamed upload")
    request.staged = request.writer = None  # type: ignore[attr-defined]
    if writer is not None:
        with discarding(staged):
            await writer.close()
    return staged


def trailer_sha256(request: object) -> str | None:
    """
    The sha256 an upload body ended with, if it had a trailer.

    @raise ProtocolError: if the trailer is not a sha256, or the body was
        shorter than one.
    """
    trailer: bytes | None = getattr(request, "trailer", None)
    if trailer is None:
        return None
    if len(trailer) < SHA256_TRAILER:
        raise ProtocolError("the body is shorter than its sha256 trailer")
    return sha256_header(trailer.decode("ascii", "replace"))
