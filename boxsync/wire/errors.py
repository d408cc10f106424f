"""
The error answers of the protocol: the statuses it names, and the JSON body
that says why (C{{"error": ..., "seq": ...}}).

The server maps its exceptions to a L{Refusal} and writes an L{ErrorAnswer};
the client reads the L{ErrorAnswer} back and maps the L{Refusal} to its own
exceptions.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

from attrs import frozen

__all__ = ["Refusal", "ErrorAnswer"]


class Refusal(IntEnum):
    """
    The statuses a request is refused with, by what they mean.
    """

    #: A malformed request: a bad path, manifest, header or sha256.
    BAD_REQUEST = 400
    #: No key.
    UNAUTHORIZED = 401
    #: A wrong key, or a revoked token.
    FORBIDDEN = 403
    #: No such file, or it is deleted.
    NOT_FOUND = 404
    #: A commit by recipe names blocks the server lacks (with C{missing}).
    MISSING_BLOCKS = 409
    #: The path is no longer at the base the request stated (with its C{seq}).
    STALE_BASE = 412
    #: A body larger than the server takes.
    TOO_LARGE = 413
    #: Too many event streams open for one token.
    TOO_MANY_STREAMS = 429
    #: A file left out of a full batch download, or the index out of reach
    #: for now: ask for it again.
    ASK_AGAIN = 503
    #: The server's disk is full; nothing was committed.
    DISK_FULL = 507


@frozen
class ErrorAnswer:
    """
    Why a request (or one file of a batch) was refused.

    @ivar seq: with L{Refusal.STALE_BASE}, the path's current seq.
    """

    status: int
    message: str
    seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.seq is not None:
            body["seq"] = self.seq
        return body

    @classmethod
    def parse(cls, status: int, body: bytes) -> ErrorAnswer:
        """
        Read the body of an error answer; a body that is not the protocol's
        JSON becomes the message as it is.
        """
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        return cls._read(status, data, body[:200].decode("utf-8", "replace"))

    @classmethod
    def from_json(cls, status: int, data: object) -> ErrorAnswer:
        """
        Read an error answer already parsed (one file's result in a batch).
        """
        return cls._read(status, data, json.dumps(data)[:200])

    @classmethod
    def _read(cls, status: int, data: object, fallback: str) -> ErrorAnswer:
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            message = data["error"]
        else:
            message = fallback or f"HTTP {status}"
        seq = data.get("seq") if isinstance(data, dict) else None
        valid = isinstance(seq, int) and not isinstance(seq, bool)
        return cls(status, message, seq if valid else None)
