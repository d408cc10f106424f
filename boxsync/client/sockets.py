"""
The socket under a request or a response, reached through Twisted's
private attributes.

Twisted offers no public way from a response body to its TCP connection
(to read more than 64 KiB at a time) nor from a request body's consumer to
its socket (to ask the kernel how much of the body is still queued, and
how many bytes have come back while it is sent). All matter to large
transfers, so boxsync reaches in here, and only here: each
function looks for what it needs, and leaves anything else alone, so a
Twisted that moves these attributes costs speed, never correctness.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import sys
import termios

from twisted.internet.tcp import Connection

__all__ = ["READ_SIZE", "read_more", "unsent", "received"]

#: How many bytes a download reads from its socket at a time (Twisted's TCP
#: transports read 64 KiB), and an upload from its file (C{FileBodyProducer}
#: reads 64 KiB): fewer, larger reads cost the reactor thread less (an
#: upload of 1 GiB, hashed as it is sent: 2.3 CPU-s at 64 KiB, 2.0 at this).
READ_SIZE = 256 * 1024


def read_more(body_transport: object) -> None:
    """
    Have the TCP connection under a response body read L{READ_SIZE} bytes
    at a time (and buffer as much before it pauses a producer). Other
    transports are left alone.
    """
    # A response body's transport is Twisted's private proxy of the
    # connection's transport, which is TCP or TLS over TCP. The size stays
    # for the later requests of a pooled connection.
    transport = getattr(body_transport, "_producer", None)
    for _ in range(2):
        if isinstance(transport, Connection):
            transport.bufferSize = max(transport.bufferSize, READ_SIZE)
            return
        transport = getattr(transport, "transport", None)


#: Where Linux's C{struct tcp_info} keeps C{tcpi_bytes_received} (a u64,
#: since Linux 4.1), and how many bytes of the struct to ask for.
_BYTES_RECEIVED = struct.Struct("=Q")
_BYTES_RECEIVED_AT = 128
_TCP_INFO_SIZE = 256


def unsent(consumer: object) -> int | None:
    """
    How many bytes written to the consumer of a request body the connection
    has not delivered yet (sent but not acknowledged by the peer, or not
    sent): Linux's C{SIOCOUTQ} of its socket. C{None} if that cannot be told.
    """
    handle = _socket_of(consumer)
    if handle is None:
        return None
    try:
        raw = fcntl.ioctl(handle.fileno(), termios.TIOCOUTQ, bytes(4))
    except OSError:
        return None
    return int.from_bytes(raw, sys.byteorder, signed=True)


def received(consumer: object) -> int | None:
    """
    How many bytes the connection under the consumer of a request body has
    received so far (interim answers such as C{102 Processing} included,
    which Twisted's client reads and drops): Linux's C{tcpi_bytes_received}
    of its socket. C{None} if that cannot be told.
    """
    handle = _socket_of(consumer)
    if handle is None:
        return None
    try:
        info = handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _BYTES_RECEIVED_AT + _BYTES_RECEIVED.size:
        return None
    count: int = _BYTES_RECEIVED.unpack_from(info, _BYTES_RECEIVED_AT)[0]
    return count


def _socket_of(consumer: object) -> socket.socket | None:
    """
    The TCP socket under the consumer of a request body, if it can be found.
    """
    # Twisted hands a body producer a private wrapper of the transport.
    transport = getattr(consumer, "_consumer", consumer)
    for _ in range(3):  # TLS wraps the TCP transport
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if callable(get_handle) else None
        if isinstance(handle, socket.socket):
            return handle if handle.type == socket.SOCK_STREAM and handle.family != socket.AF_UNIX else None
        transport = getattr(transport, "transport", None)
    return None
