"""
The exceptions of the client's calls: the server's refusals, one class per
L{Refusal} the client tells apart, and what can go wrong on the client's
side of a transfer (silence, a digest that does not match).
"""

from __future__ import annotations

from ..wire import ErrorAnswer, Refusal

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
    "WrongScheme",
    "error_for",
    "error_from",
]


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


class MissingBlocks(APIError):
    """
    C{409}: a commit by recipe named blocks the server lacks.

    @ivar missing: their sha256s.
    """

    def __init__(self, status: int, message: str, missing: list[str]) -> None:
        super().__init__(status, message)
        self.missing = missing


class CorruptBlock(Exception):
    """
    A block arrived with bytes that are not its own (its sha256 differs):
    it is refused, and fetched again on the next try.
    """

    def __init__(self, sha256: str) -> None:
        super().__init__(sha256)
        self.sha256 = sha256

    def __str__(self) -> str:
        return f"block {self.sha256[:16]}… arrived corrupted"


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


class WrongScheme(Exception):
    """
    The server's URL names the wrong protocol for its port: C{http://} for
    one that speaks TLS, or C{https://} for one that does not (see
    L{boxsync.client.probe}). Retrying will not help; the message says what
    to write instead.
    """


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
