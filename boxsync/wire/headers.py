"""
The media types and header names of the protocol, and the checks of the
headers' values.
"""

from __future__ import annotations

from .values import MAX_COUNT, MIN_MTIME_NS, ProtocolError, check_count, check_sha256

__all__ = [
    "EVENT_STREAM",
    "JSON",
    "BASE_HEADER",
    "SHA256_HEADER",
    "TRAILER_HEADER",
    "SHA256_TRAILER",
    "SHA256_TRAILER_FEATURE",
    "MTIME_HEADER",
    "EXECUTABLE_HEADER",
    "EXECUTABLE_FEATURE",
    "FOLDERS_FEATURE",
    "INCOMING_FEATURE",
    "CLIENT_HEADER",
    "STREAM_HEADER",
    "BEFORE_HEADER",
    "SEQ_HEADER",
    "LAST_EVENT_ID",
    "PROGRESS_HEADER",
    "PROGRESS_PROCESSING",
    "sha256_header",
    "count_header",
    "mtime_header",
    "flag_header",
]

EVENT_STREAM = "text/event-stream"
JSON = "application/json"

#: The seq of the version an upload or a delete started from (0: none).
BASE_HEADER = "X-Boxsync-Base"
#: The sha256 (hex) the client computed for an upload body.
SHA256_HEADER = "X-Boxsync-Sha256"
#: On an upload, C{sha256}: the body ends with the sha256 (64 hex digits)
#: of the file's bytes, which come before it. A client hashes a large file
#: as it sends it rather than reading it twice.
TRAILER_HEADER = "X-Boxsync-Trailer"
#: The length of that trailer.
SHA256_TRAILER = 64
#: What a server that takes that trailer, and manifest entries of new files
#: without their sha256, lists among its C{features} (C{GET /healthz}).
SHA256_TRAILER_FEATURE = "sha256-trailer"
#: The modification time of an uploaded file, in nanoseconds.
MTIME_HEADER = "X-Boxsync-Mtime"
#: Whether a file is executable (C{1}) or not (C{0}): on an upload, on
#: C{PATCH /files/<path>} (a change of that alone), on a download.
EXECUTABLE_HEADER = "X-Boxsync-Executable"
#: What a server that keeps the executable bit of each version lists among
#: its C{features}, and a client that reads it on events lists in its
#: manifest's.
EXECUTABLE_FEATURE = "executable"
#: What a server that keeps folders (C{/folders/<path>}) lists among its
#: C{features}, and a client that reads the C{folder} event lists in its
#: manifest's.
FOLDERS_FEATURE = "folders"
#: What a client that reads the C{incoming} event (the blocks of a large
#: file another client is still sending) lists in its manifest's
#: C{features}.
INCOMING_FEATURE = "incoming"
#: The name of the client making a request (shown in logs, conflict names).
CLIENT_HEADER = "X-Boxsync-Client"
#: The id of the client's open event stream, so its own commits are not
#: echoed back to it.
STREAM_HEADER = "X-Boxsync-Stream"
#: On a download: the seq of the version being sent.
SEQ_HEADER = "X-Boxsync-Seq"
#: On a full page of C{GET /trash?rows=1}: the C{before} of the page after
#: it, so a client can ask for that one before it has read this one.
BEFORE_HEADER = "X-Boxsync-Before"
#: On a request with a body: C{102}, asking the server to answer
#: C{102 Processing} now and then while the body is still arriving.
PROGRESS_HEADER = "X-Boxsync-Progress"
PROGRESS_PROCESSING = "102"
#: The standard SSE header a reconnecting client sends its cursor in.
LAST_EVENT_ID = "Last-Event-ID"


def sha256_header(value: str | None) -> str | None:
    """
    Check the value of an optional sha256 header.
    """
    if value is None:
        return None
    return check_sha256(value.strip().lower())


def count_header(value: str | None, what: str, least: int = 0) -> int | None:
    """
    Check the value of an optional integer header, from C{least} (a count:
    non-negative) to L{MAX_COUNT}.
    """
    if value is None:
        return None
    try:
        return check_count(int(value.strip()), what, least)
    except ValueError:
        if least == 0:
            raise ProtocolError(f"{what} must be a non-negative integer") from None
        raise ProtocolError(f"{what} must be an integer from {least} to {MAX_COUNT}") from None


def mtime_header(value: str | None, what: str) -> int | None:
    """
    Check the value of an optional mtime header: nanoseconds since 1970
    (before it too, negative).
    """
    return count_header(value, what, MIN_MTIME_NS)


def flag_header(value: str | None, what: str) -> bool | None:
    """
    Check the value of an optional flag header: C{1} or C{0}.
    """
    if value is None:
        return None
    flag = value.strip()
    if flag not in ("0", "1"):
        raise ProtocolError(f"{what} must be 1 or 0")
    return flag == "1"
