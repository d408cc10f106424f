"""
``twistd boxsync``: the server's command-line options and service maker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet.endpoints import quoteStringArgument
from twisted.python import usage

from .auth import ApiKeyAuth

__all__ = ["Options", "makeService"]

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1:backlog=4096"


def _size(value: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    value = value.strip().lower().removesuffix("b").removesuffix("i")
    if value and value[-1] in units:
        size = int(float(value[:-1]) * units[value[-1]])
    else:
        size = int(value)
    if size <= 0:
        raise ValueError(f"a size must be positive, not {value!r}")
    return size


def _listen_on(address: str) -> str:
    """
    The endpoint for C{SERVER_ADDRESS}, as the old server read it:
    C{host:port}, C{[v6 address]:port} or C{:port} (every interface).
    """
    host, _, port = address.strip().rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise usage.UsageError(f"SERVER_ADDRESS={address!r} is not host:port") from None
    host = host.removeprefix("[").removesuffix("]")
    interface = f":interface={quoteStringArgument(host)}" if host else ""
    return f"tcp:{number}{interface}:backlog=4096"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve a boxsync box. The key can also come from BOXSYNC_API_KEY "
        "(or API_KEY); without --listen, SERVER_ADDRESS=host:port is honoured."
    )
    optParameters = [
        ["box", "b", "./box", "The folder with the shared files."],
        ["api-key", "k", None, "The key clients must present (Authorization: Bearer KEY)."],
        ["max-upload", None, None, "Largest upload accepted, e.g. 50G (default: no limit)."],
        ["status-interval", None, "60", "Seconds between status lines in the log (0: none)."],
    ]
    optFlags = [
        ["insecure-no-auth", None, "Serve without any key: everyone gets in."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        An endpoint to listen on, e.g. tcp:8080:interface=127.0.0.1,
        ssl:8443:privateKey=key.pem:certKey=cert.pem or unix:/run/boxsync.sock
        (repeatable; default tcp:8080:interface=127.0.0.1).
        """
        self["listen"].append(description)

    def postOptions(self) -> None:
        if not self["listen"]:
            address = os.environ.get("SERVER_ADDRESS")
            if address:
                self["listen"] = [_listen_on(address)]
            else:
                self["listen"] = [DEFAULT_LISTEN]
        if self["api-key"] is None:
            self["api-key"] = os.environ.get("BOXSYNC_API_KEY") or os.environ.get("API_KEY")
        if not self["api-key"] and not self["insecure-no-auth"]:
            raise usage.UsageError(
                "no key: give --api-key KEY (or set BOXSYNC_API_KEY), "
                "or --insecure-no-auth to let everyone in"
            )
        try:
            self["max-upload"] = None if self["max-upload"] is None else _size(self["max-upload"])
            self["status-interval"] = float(self["status-interval"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from .service import BoxsyncService, ServerConfig

    config = ServerConfig(
        box=Path(options["box"]),
        listen=list(options["listen"]),
        auth=ApiKeyAuth(None if options["insecure-no-auth"] and not options["api-key"] else options["api-key"]),
        max_upload=options["max-upload"],
        status_seconds=options["status-interval"],
    )
    service = BoxsyncService(reactor, config)
    # A server that cannot start (a port in use, an unreadable box) exits.
    service.ready.addErrback(lambda failure: reactor.stop())
    return service
