"""
Limits on what one connection may make the server hold: how long it may stay
silent, how slowly it may send a request, and how large the request's
headers may be.

twisted.web closes a connection that sends nothing for C{timeOut} seconds,
but a peer that sends a byte a second resets that timer forever, and holds a
request (for an upload, a staging file) half done for as long as it likes.
L{LimitedChannel} adds a minimum rate: while a request is arriving, it must
bring at least C{min_rate * window} bytes in every C{window} seconds, or the
connection gets C{408} and is closed. Once a request has arrived whole the
rule is off until the next one starts, so a quiet event stream or a client
that reads a download slowly is never dropped by it. Nor is a client the
server itself stopped reading from (L{LimitedChannel.pause_reading}, while
the disk catches up with an upload): that time counts neither against the
rate nor as silence.

A client whose request body may take long to arrive (a large upload on a
slow link, behind a proxy that takes the whole body at once and trickles
it on) asks for word that it is still coming (L{PROGRESS_HEADER}): while
bytes of its body keep arriving, the server answers C{102 Processing}
every C{progress_interval} seconds, so the client can tell a slow link from
a dead one. HTTP/1.1 lets a server send any number of 1xx answers before
the final one; clients that did not ask are never sent any.

Headers over the limits get C{431} with a JSON body (twisted.web alone
answers a bare C{400}, or for one overlong line closes without a word).

A request with a body is shown to the site's L{LimitedSite.admit} as soon as
its headers are in, before a byte of the body is read: one the site refuses
(no credential, a wrong one) is answered at once, nothing more is read from
its connection, and the connection is closed a moment later (L{LINGER}, time
for the answer to reach the peer before the close resets the connection).
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from ..wire.headers import PROGRESS_HEADER, PROGRESS_PROCESSING

__all__ = [
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_ENTRIES",
    "MAX_OTHER_BODY",
    "MAX_UPLOAD",
    "ConnectionLimits",
    "LimitedChannel",
    "LimitedSite",
    "PROCESSING",
    "Refused",
]

#: The largest manifest (C{POST /sync} body) taken by default: room for
#: C{MAX_MANIFEST_ENTRIES} entries of ~250 bytes each (a client's entry is
#: ~150-180 bytes: a million files make ~150-175 MiB). It is read a piece at
#: a time (L{boxsync.server.manifest}), never held in memory whole.
MAX_MANIFEST_BYTES = 256 * 2**20

#: The most files one manifest may list by default.
MAX_MANIFEST_ENTRIES = 1_000_000

#: The largest body of any other request that is not an upload (a batch,
#: which is held in memory while it is parsed), by default: a client's
#: batch carries at most 4 MiB of files.
MAX_OTHER_BODY = 32 * 2**20

#: The largest upload taken by default (C{--max-upload}).
MAX_UPLOAD = 16 * 2**30

_REASONS = {
    401: b"Unauthorized",
    403: b"Forbidden",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
}

#: Seconds a refused connection stays open, reading nothing, after its
#: answer: closing it with unread bytes resets it, and a reset can destroy
#: an answer the peer has not read yet.
LINGER = 1.0

#: The interim answer that tells a client its request body is still
#: arriving.
PROCESSING = b"HTTP/1.1 102 Processing\r\n\r\n"


class Refused(Exception):
    """
    A request the site will not read the body of.

    @ivar status: what the request is answered with (401 or 403).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@frozen
class ConnectionLimits:
    """
    @ivar idle_timeout: seconds a connection may send nothing before or
        inside a request (C{None}: forever).
    @ivar min_rate: bytes per second a request must arrive at, on average
        over each C{window} (0: no minimum). By default 512: a link of
        1 KiB/s still gets through, a trickle of 200 bytes/s is cut within
        one window.
    @ivar window: seconds over which C{min_rate} is measured.
    @ivar max_header_bytes: the most bytes of request line and headers.
    @ivar max_headers: the most header fields in one request.
    @ivar progress_interval: how often, in seconds, a request whose body is
        still arriving is told so (C{102 Processing}), if it asked.
    """

    idle_timeout: float | None = 60.0
    min_rate: int = 512
    window: float = 20.0
    max_header_bytes: int = 16384
    max_headers: int = 100
    progress_interval: float = 10.0


class LimitedChannel(HTTPChannel):
    """
    An L{HTTPChannel} that drops peers that send requests too slowly and
    answers oversized headers with C{431}.

    @ivar limits: set by L{LimitedSite} when it builds the channel.
    @ivar clock: the site's reactor, set with C{limits}.
    """

    limits = ConnectionLimits()
    clock: IReactorTime | None = None
    #: Some bytes of a request have come, but not the whole request yet.
    _pending = False
    #: A whole request has come and is being answered.
    _busy = False
    _received = 0
    _mark = 0
    _header_bytes = 0
    _header_count = 0
    _rate_check: IDelayedCall | None = None
    #: The server stopped reading (L{pause_reading}).
    _held = False
    #: What was left of the rate check's window when reading was paused.
    _rate_left: float | None = None
    #: The request was refused: what else comes is never looked at.
    _refused = False
    _closing: IDelayedCall | None = None
    #: The next C{102 Processing}, while a body that asked for them arrives.
    _progress: IDelayedCall | None = None
    #: How many bytes had come at the last one.
    _progress_mark = 0
    log = Logger()

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if data and not self._pending and not self._busy:
            self._pending = True
            self._mark = self._received - len(data)
            if self.limits.min_rate > 0:
                self._rate_check = self.callLater(self.limits.window, self._check_rate)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> Any:
        self._header_bytes += len(line)
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"request headers over {self.limits.max_header_bytes} bytes")
            return None
        return super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(431, f"a request line or header over {self.limits.max_header_bytes} bytes")

    def headerReceived(self, line: bytes) -> bool:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(431, f"over {self.limits.max_headers} request headers")
            return False
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        # self.length: 0 when no body comes, None for a chunked one.
        admit = getattr(self.site, "admit", None)  # type: ignore[attr-defined]
        if self.length != 0 and admit is not None:
            try:
                admit(self.requests[-1])
            except Refused as e:
                self._refuse_body(e.status, str(e))
                return
        if self.length != 0 and self._wants_progress():
            self._progress_mark = self._received
            self._progress = self.callLater(self.limits.progress_interval, self._tell_progress)
        super().allHeadersReceived()

    def _wants_progress(self) -> bool:
        request = self.requests[-1]
        asked = request.requestHeaders.getRawHeaders(PROGRESS_HEADER, [""])[-1]
        return bool(
            self._version == b"HTTP/1.1"  # type: ignore[attr-defined]
            and asked.strip() == PROGRESS_PROCESSING
        )

    def _tell_progress(self) -> None:
        """
        Tell the client its request body is still arriving, if any of it came
        since the last time.
        """
        self._progress = None
        if not self._pending or self._refused:
            return
        if self._received > self._progress_mark or self._held:
            self.transport.write(PROCESSING)  # type: ignore[union-attr]
        self._progress_mark = self._received
        self._progress = self.callLater(self.limits.progress_interval, self._tell_progress)

    def _stop_progress(self) -> None:
        if self._progress is not None and self._progress.active():
            self._progress.cancel()
        self._progress = None

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def _refuse_body(self, status: int, message: str) -> None:
        """
        Answer a request whose body is refused, read nothing more from the
        peer, and close the connection after L{LINGER} seconds.
        """
        self._refused = True
        self._answer(status, message)
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self._closing = self.callLater(LINGER, self.loseConnection)

    def allContentReceived(self) -> None:
        self._pending = False
        self._busy = True
        self._header_bytes = self._header_count = 0
        self._stop_rate_check()
        self._stop_progress()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        self._busy = False
        super().requestDone(request)

    def pause_reading(self) -> None:
        """
        Read nothing more from the peer until L{resume_reading}: the server
        has more of the request than it can handle yet. Until then the
        clock of the minimum rate is stopped and the connection is not idle.
        """
        if self._held:
            return
        self._held = True
        check = self._rate_check
        if check is not None and check.active() and self.clock is not None:
            self._rate_left = max(0.0, check.getTime() - self.clock.seconds())
            check.cancel()
            self._rate_check = None
        self.pauseProducing()

    def resume_reading(self) -> None:
        """
        Read from the peer again, after L{pause_reading}; the minimum rate's
        window goes on where it stopped.
        """
        if not self._held:
            return
        self._held = False
        if self._rate_left is not None:
            self._rate_check = self.callLater(self._rate_left, self._check_rate)
            self._rate_left = None
        self.resetTimeout()
        self.resumeProducing()

    def timeoutConnection(self) -> None:
        if self._held:
            # The server is the one not reading: start the count again.
            self.setTimeout(self.timeOut)
            return
        if self._pending:
            self._answer(408, "no data from the client for too long")
        super().timeoutConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_rate_check()
        self._stop_progress()
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        super().connectionLost(reason)

    def _check_rate(self) -> None:
        self._rate_check = None
        if not self._pending:
            return
        limits = self.limits
        if self._received - self._mark < limits.min_rate * limits.window:
            self.log.info(
                "dropping {peer}: its request came slower than {rate} bytes/s",
                peer=str(self.transport.getPeer()),  # type: ignore[union-attr]
                rate=limits.min_rate,
            )
            self._refuse(408, f"the request came slower than {limits.min_rate} bytes/s")
            return
        self._mark = self._received
        self._rate_check = self.callLater(limits.window, self._check_rate)

    def _stop_rate_check(self) -> None:
        if self._rate_check is not None and self._rate_check.active():
            self._rate_check.cancel()
        self._rate_check = None
        self._rate_left = None

    def _answer(self, status: int, message: str) -> None:
        """
        Answer a request that never arrived whole, and close after it.
        """
        self._pending = False
        self._stop_rate_check()
        self._stop_progress()
        body = json.dumps({"error": message}).encode() + b"\n"
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n"
        ) % (status, _REASONS[status], len(body))
        self.transport.write(head + body)  # type: ignore[union-attr]

    def _refuse(self, status: int, message: str) -> None:
        self._answer(status, message)
        self.loseConnection()


class LimitedSite(Site):
    """
    A L{Site} whose connections keep to L{ConnectionLimits}.
    """

    protocol = LimitedChannel  # type: ignore[assignment]

    def __init__(self, resource: Any, limits: ConnectionLimits = ConnectionLimits(), **kwargs: Any) -> None:
        super().__init__(resource, timeout=limits.idle_timeout, **kwargs)
        self.limits = limits

    def admit(self, request: Any) -> None:
        """
        Let the body of C{request}, whose headers have arrived, be read: by
        default every body is.

        @raise Refused: if it must not be.
        """

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        limits = self.limits
        channel.limits = limits
        channel.clock = self.reactor
        # twisted.web's own checks, at the same limits (ours answer first).
        channel.MAX_LENGTH = channel.totalHeadersSize = limits.max_header_bytes
        channel.maxHeaders = limits.max_headers
        return channel
