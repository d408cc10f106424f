"""
The transfers under way: for each account, the files its clients are sending
to the server and receiving from it right now, and how far along each is.

A transfer is registered when its request's body starts (an upload) or its
file starts being sent (a download), and taken out when its request ends,
however it ends: answered, failed, or its connection dropped. Counting its
bytes costs one addition per piece read or written. Nothing is kept of a
transfer once it is over.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote_to_bytes

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from ..wire.legacy import FILE_PATH_HEADER

__all__ = ["BATCH", "BLOCKS", "DOWN", "UP", "Transfer", "Transfers", "upload_path"]

UP = "up"
DOWN = "down"
#: The path shown for a block sent on its own (its file is not known yet).
BLOCKS = "blocks"
#: The path shown for a batch upload (its files are read once it is all in).
BATCH = "batch"


@define(eq=False)
class Transfer:
    """
    One file (or block, or batch) on its way.

    @ivar size: how many bytes it is, if known (a chunked upload's is not).
    @ivar moved: how many bytes have been received or sent so far.
    """

    client: str
    direction: str
    path: str
    size: int | None
    started: float
    moved: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "direction": self.direction,
            "size": self.size,
            "moved": self.moved,
            "started": self.started,
        }


@define
class Transfers:
    """
    The transfers under way, by account.
    """

    clock: IReactorTime
    _accounts: dict[str, dict[Transfer, None]] = field(factory=dict)

    def start(self, account: str, client: str, direction: str, path: str, size: int | None) -> Transfer:
        """
        Register a transfer of C{account}'s client C{client}; L{end} it.
        """
        transfer = Transfer(client, direction, path, size, self.clock.seconds())
        self._accounts.setdefault(account, {})[transfer] = None
        return transfer

    def end(self, account: str, transfer: Transfer) -> None:
        """
        Take C{transfer} out, if it is still in.
        """
        found = self._accounts.get(account)
        if found is None:
            return
        found.pop(transfer, None)
        if not found:
            del self._accounts[account]

    def during(
        self, request: IRequest, account: str, client: str, direction: str, path: str, size: int | None
    ) -> Transfer:
        """
        Register a transfer for as long as C{request} lasts: until it is
        answered or its connection is lost.
        """
        transfer = self.start(account, client, direction, path, size)
        cast(Request, request).notifyFinish().addBoth(lambda _: self.end(account, transfer))
        return transfer

    def of(self, account: str) -> dict[str, list[Transfer]]:
        """
        The transfers of C{account} under way, by client, oldest first.
        """
        found: dict[str, list[Transfer]] = {}
        for transfer in self._accounts.get(account, ()):
            found.setdefault(transfer.client, []).append(transfer)
        return found

    def accounts(self) -> set[str]:
        """
        The accounts with a transfer under way.
        """
        return set(self._accounts)

    def count(self) -> int:
        return sum(len(found) for found in self._accounts.values())

    def receiving(
        self, request: IRequest, method: bytes, uri: bytes, account: str, client: str, size: int | None
    ) -> Transfer | None:
        """
        Register the upload C{request} (whose headers have come: C{method},
        C{uri}), if it is one, for as long as it lasts.
        """
        path = upload_path(method, uri, request.getHeader(FILE_PATH_HEADER.encode()))
        if path is None:
            return None
        return self.during(request, account, client, UP, path, size)

    def sending(self, request: IRequest, producer: Any, account: str, client: str, path: str) -> None:
        """
        Count what C{producer} (one of C{static.File}'s) writes to
        C{request}, as a download of C{path}, until the request ends.
        """
        length = request.responseHeaders.getRawHeaders(b"Content-Length", [None])[-1]
        size = int(length) if length is not None else None
        transfer = self.during(request, account, client, DOWN, path, size)
        producer.request = _Counted(request, transfer)


class _Counted:
    """
    A request as a producer writes to it, each write counted in a transfer.
    """

    __slots__ = ("_request", "_transfer")

    def __init__(self, request: IRequest, transfer: Transfer) -> None:
        self._request = request
        self._transfer = transfer

    def write(self, data: bytes) -> None:
        self._transfer.moved += len(data)
        self._request.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def upload_path(method: bytes, uri: bytes, file_path: bytes | None) -> str | None:
    """
    What an upload request is shown as sending: the path of a file, or
    L{BLOCKS} or L{BATCH}; C{None} if the request is not an upload.

    @param file_path: the value of a legacy upload's path header.
    """
    path = uri.split(b"?", 1)[0]
    if method == b"PUT" and path.startswith(b"/files/"):
        return _text(unquote_to_bytes(path[len(b"/files/") :]))
    if method == b"POST" and path == b"/upload":
        return _text(file_path or b"")
    if method == b"PUT" and path.startswith(b"/blocks/"):
        return BLOCKS
    if method == b"POST" and path == b"/batch/upload":
        return BATCH
    return None


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")

