"""
The socket under a request or a response, reached through Twisted's
private attributes.

Twisted offers no public way from a response body to its TCP connection
(to read more than 64 KiB at a time) nor from a request body's consumer to
its socket (to ask the kernel how much of the body is still queued). Both
matter to large transfers, so boxsync reaches in here, and only here: each
function looks for what it needs, and leaves anything else alone, so a
Twisted that moves these attributes costs speed, never correctness.
"""

from __future__ import annotations

import fcntl
import socket
import sys
import termios

from twisted.internet.tcp import Connection

__all__ = ["READ_SIZE", "read_more", "unsent"]

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


def unsent(consumer: object) -> int | None:
    """
    How many bytes written to the consumer of a request body the connection
    has not delivered yet (sent but not acknowledged by the peer, or not
    sent): Linux's C{SIOCOUTQ} of its socket. C{None} if that cannot be told.
    """
    # Twisted hands a body producer a private wrapper of the transport.
    transport = getattr(consumer, "_consumer", consumer)
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
