"""
The HTTP client that talks to the server: one per process, over a pool of
persistent connections, checking an C{https://} server's certificate as a
browser does (against the system's certificate authorities, or those of a
C{--cacert} file), and using plain C{http://} only where nobody can listen in
(this machine), unless told it is fine.

Nothing here connects: L{connect} refuses what it must before the first
connection, and L{describe_failure} turns a failed connection into a line a
user can act on.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL.SSL import Error as TLSError
from service_identity import VerificationError
from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from ..errors import first_line
from .probe import SchemeCheck

__all__ = [
    "Connection",
    "ConnectionSettingsError",
    "check_server",
    "connect",
    "describe_failure",
    "unwrap",
    "is_loopback",
    "load_trust_root",
]


class ConnectionSettingsError(Exception):
    """
    The server's URL or the certificate authorities to trust cannot be used:
    one line saying why and what to do.
    """


@frozen
class Connection:
    """
    An HTTP client for the server and the pool its connections stay in.

    @ivar check: tells whether a request failed because the server's URL
        has the wrong scheme for its port.
    """

    http: HTTPClient
    pool: HTTPConnectionPool
    check: SchemeCheck

    async def close(self) -> None:
        """
        Close the connections kept open for reuse.
        """
        await self.pool.closeCachedConnections()


def is_loopback(host: str) -> bool:
    """
    Whether C{host} (a name or an address, without brackets) is this
    machine: C{localhost}, C{127.0.0.0/8} or C{::1}.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_server(server: str, insecure: bool = False) -> None:
    """
    Refuse a server URL that is not C{http://} or C{https://}, has no host,
    or is plain C{http://} to another machine without C{insecure}.

    @raise ConnectionSettingsError: saying which rule it breaks.
    """
    try:
        parts = urlsplit(server)
        parts.port
    except ValueError as e:
        raise ConnectionSettingsError(f"the server URL {server!r} is not valid: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConnectionSettingsError(
            f"the server URL {server!r} must start with https:// (or http:// for this machine)"
        )
    if not parts.hostname:
        raise ConnectionSettingsError(f"the server URL {server!r} names no host")
    if scheme == "http" and not insecure and not is_loopback(parts.hostname):
        raise ConnectionSettingsError(
            f"refusing plain http:// to {parts.hostname}, another machine: the token and the "
            "files would travel unencrypted. Use https://, or give --insecure if the network "
            "is trusted"
        )


def load_trust_root(path: Path) -> Any:
    """
    The certificate authorities in the PEM file C{path} (one or several), as
    the only ones to trust (an C{IOpenSSLTrustRoot}).

    @raise ConnectionSettingsError: if it cannot be read or holds no valid
        certificate.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConnectionSettingsError(f"cannot read the --cacert file {path}: {e.strerror or e}") from None
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConnectionSettingsError(
            f"the --cacert file {path} holds no valid certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
        ) from None
    return trustRootFromCertificates([Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in found])


def connect(reactor: IReactorTime, server: str, cacert: Path | None = None, insecure: bool = False) -> Connection:
    """
    An HTTP client for C{server} (nothing is connected yet). An C{https://}
    server's certificate must be signed by an authority the system trusts
    (by one of those in C{cacert} instead, if given) and name the host of
    C{server}; C{insecure} allows plain C{http://} to another machine, and
    never turns these checks off.

    @raise ConnectionSettingsError: for a URL L{check_server} refuses or a
        C{cacert} that L{load_trust_root} cannot use.
    """
    check_server(server, insecure)
    trust_root = None if cacert is None else load_trust_root(cacert)
    pool = HTTPConnectionPool(reactor, persistent=True)
    # As many as the engine's jobs at once (small files move 32 at a time):
    # each keeps its connection rather than opening one per file.
    pool.maxPersistentPerHost = 32
    agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trust_root), pool=pool)
    return Connection(HTTPClient(agent), pool, SchemeCheck(reactor, server))


def unwrap(error: BaseException) -> BaseException:
    """
    The first cause of a failed request: treq's C{ResponseFailed} and its kin
    wrap a list of failures.
    """
    reasons = getattr(error, "reasons", None)
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], Failure):
        return reasons[0].value or error
    return error


def describe_failure(error: BaseException) -> str:
    """
    Why a request failed, in one line: for TLS, what was wrong with the
    certificate and what to do about it.
    """
    error = unwrap(error)
    if isinstance(error, TLSError):
        # pyOpenSSL's errors are lists of (library, function, reason).
        queue = error.args[0] if error.args and isinstance(error.args[0], list) else []
        reason = "; ".join(str(e[-1]) for e in queue if isinstance(e, tuple) and e) or str(error)
        if "certificate verify failed" in reason:
            return (
                f"the server's certificate cannot be trusted ({reason}); if a private "
                "certificate authority signed it, give its certificate with --cacert FILE"
            )
        return f"the TLS connection failed ({reason}); is it an https:// server?"
    if isinstance(error, VerificationError):
        return f"the server's certificate is not for the host in the server URL ({error})"
    return first_line(error)
