"""
What a server's port speaks, asked when a request to it got no answer:
TLS, or plain HTTP. It tells a user who wrote C{http://} for a TLS port, or
C{https://} for a plain one, what to write instead, rather than why the
connection closed (or stayed silent).

One probe asks both: a TLS ClientHello followed by an empty line. A TLS
server answers the ClientHello with a TLS record (its ServerHello, or an
alert); a plain HTTP server takes the whole as a bad request line and
answers with C{HTTP/}. Only those bytes count, never an error's wording;
a port that answers neither way, or nothing within a few seconds, is taken
to speak what its URL says.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from attrs import define
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseFailed

from .errors import StreamIdle, WrongScheme

__all__ = ["PROBE_SECONDS", "SchemeCheck", "client_hello", "first_bytes", "speaks_tls"]

#: How many seconds a probe waits for the port's first bytes.
PROBE_SECONDS = 3.0

def client_hello(host: str) -> bytes:
    """
    The bytes a TLS client opens a connection to C{host} with.
    """
    connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    connection.set_connect_state()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        connection.set_tlsext_host_name(host.encode("idna"))  # a name, not an address
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    hello: bytes = connection.bio_read(64 * 1024)
    return hello


class _FirstBytes(Protocol):
    """
    Send some bytes, then gather the first C{want} that come back (fewer if
    the connection closes first).
    """

    def __init__(self, send: bytes, want: int) -> None:
        self._send = send
        self._want = want
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._send)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self._want:
            self._finish()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.done.called:
            self.done.callback(self.received[: self._want])


async def first_bytes(reactor: Any, host: str, port: int, send: bytes, want: int = 5) -> bytes:
    """
    The first C{want} bytes the port answers C{send} with (fewer, or none,
    if it closes or says nothing for L{PROBE_SECONDS}).
    """
    probe = _FirstBytes(send, want)
    factory = Factory.forProtocol(lambda: probe)
    factory.noisy = False  # a probe is no news for the log
    endpoint = HostnameEndpoint(reactor, host, port, timeout=PROBE_SECONDS)
    try:
        await endpoint.connect(factory).addTimeout(PROBE_SECONDS, reactor)
        return await probe.done.addTimeout(PROBE_SECONDS, reactor)
    except Exception:
        return probe.received
    finally:
        if probe.transport is not None:
            probe.transport.abortConnection()  # type: ignore[attr-defined]


def _tls_record(data: bytes) -> bool:
    """
    Whether C{data} starts a TLS record: a handshake (0x16) or an alert
    (0x15), of version 3.x.
    """
    return data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03"


async def speaks_tls(reactor: Any, host: str, port: int) -> bool | None:
    """
    Whether the port speaks TLS (C{True}) or plain HTTP (C{False});
    C{None} if it does not tell.
    """
    answer = await first_bytes(reactor, host, port, client_hello(host) + b"\r\n\r\n")
    if _tls_record(answer):
        return True
    if answer == b"HTTP/":
        return False
    return None


@define
class SchemeCheck:
    """
    Whether a failed request failed because C{url}'s scheme is the wrong one
    for its port: asked until the server has answered once (then it is the
    right one), so a flaky link costs no probe after each failure.

    @ivar reactor: connects the probe (a TCP reactor with a clock).
    """

    reactor: Any
    url: str
    _settled: bool = False

    def answered(self) -> None:
        """
        The server answered a request: the scheme is right.
        """
        self._settled = True

    async def __call__(self, error: BaseException) -> WrongScheme | None:
        """
        The L{WrongScheme} C{error} came of, if it did: only a request that
        got no answer at all (closed, or silent) is asked about.
        """
        if self._settled or not isinstance(error, (ResponseFailed, RequestTransmissionFailed, StreamIdle)):
            return None
        parts = urlsplit(self.url)
        tls = parts.scheme.lower() == "https"
        spoken = await speaks_tls(self.reactor, parts.hostname or "", parts.port or (443 if tls else 80))
        if spoken is True and not tls:
            return WrongScheme(f"the server at {self.url} speaks TLS: use https://")
        if spoken is False and tls:
            return WrongScheme(f"the server at {self.url} does not speak TLS: use http://")
        self._settled = spoken is not None
        return None
