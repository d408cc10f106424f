"""
The boxsync wire protocol, shared by the server and the client.

Everything both sides must agree on lives here and nowhere else: the header
names, the manifest a client sends to ``POST /sync``, the events the server
sends back on the Server-Sent Events stream, and the SSE framing itself (an
encoder and an incremental parser). ``docs/protocol.md`` describes the same
things for people writing other clients.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Union

from attrs import asdict, field, frozen

from .paths import BadPath, normalize

__all__ = [
    "EVENT_STREAM",
    "JSON",
    "BASE_HEADER",
    "SHA256_HEADER",
    "MTIME_HEADER",
    "CLIENT_HEADER",
    "STREAM_HEADER",
    "SEQ_HEADER",
    "LAST_EVENT_ID",
    "count_header",
    "sha256_header",
    "TRAILER_HEADER",
    "SHA256_TRAILER",
    "SHA256_TRAILER_FEATURE",
    "ProtocolError",
    "FileEntry",
    "DeletedEntry",
    "Manifest",
    "Hello",
    "Upload",
    "Download",
    "Delete",
    "Remove",
    "Conflict",
    "InSync",
    "Ready",
    "Event",
    "encode_event",
    "encode_comment",
    "decode_event",
    "SSEMessage",
    "SSEParser",
    "parse_manifest",
    "file_entry",
    "deleted_entry",
    "manifest_client",
    "manifest_cursor",
    "encode_manifest",
    "BATCH",
    "BATCH_FILE_LIMIT",
    "BATCH_MAX_FILES",
    "BATCH_MAX_BYTES",
    "BatchFile",
    "encode_part",
    "parse_parts",
    "parse_upload_batch",
    "parse_path_list",
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
#: The name of the client making a request (shown in logs, conflict names).
CLIENT_HEADER = "X-Boxsync-Client"
#: The id of the client's open event stream, so its own commits are not
#: echoed back to it.
STREAM_HEADER = "X-Boxsync-Stream"
#: On a download: the seq of the version being sent.
SEQ_HEADER = "X-Boxsync-Seq"
#: The standard SSE header a reconnecting client sends its cursor in.
LAST_EVENT_ID = "Last-Event-ID"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ProtocolError(ValueError):
    """
    A message that does not follow the protocol.
    """


def _path(value: object) -> str:
    if not isinstance(value, str):
        raise ProtocolError("path must be a string")
    try:
        return normalize(value)
    except BadPath as e:
        raise ProtocolError(str(e)) from None


#: The largest count (seq, size, mtime) on the wire: SQLite's largest integer.
MAX_COUNT = 2**63 - 1


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ProtocolError(f"{what} must be an integer from 0 to {MAX_COUNT}")
    return value


def _sha256(value: object) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ProtocolError("sha256 must be 64 lowercase hex digits")
    return value


def sha256_header(value: str | None) -> str | None:
    """
    Check the value of an optional sha256 header.
    """
    if value is None:
        return None
    return _sha256(value.strip().lower())


def count_header(value: str | None, what: str) -> int | None:
    """
    Check the value of an optional non-negative integer header.
    """
    if value is None:
        return None
    try:
        return _count(int(value.strip()), what)
    except ValueError:
        raise ProtocolError(f"{what} must be a non-negative integer") from None


@frozen
class FileEntry:
    """
    One file a client has.

    @ivar base: the seq of the server version the file was last in sync with;
        0 if it never was.
    @ivar changed: whether the file differs from that base version.
    @ivar sha256: C{None} for a changed file the client has not hashed (it
        hashes a large file as it uploads it): it then matches no version.
    """

    path: str
    sha256: str | None
    size: int
    mtime_ns: int
    base: int = 0
    changed: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "base": self.base,
            "changed": self.changed,
        }


@frozen
class DeletedEntry:
    """
    A file the client deleted since it was in sync with version C{base}.
    """

    path: str
    base: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "base": self.base}


def _files(items: Iterable[FileEntry]) -> tuple[FileEntry, ...]:
    return tuple(items)


def _deleted(items: Iterable[DeletedEntry]) -> tuple[DeletedEntry, ...]:
    return tuple(items)


@frozen
class Manifest:
    """
    What a client tells the server when it opens its event stream.

    A client lists at least every file it changed (or never synced) and every
    file it deleted since C{cursor}, the highest seq it has applied; it may
    list unchanged files too. The server then needs nothing else to plan.
    """

    client: str = ""
    cursor: int = 0
    files: tuple[FileEntry, ...] = field(default=(), converter=_files)
    deleted: tuple[DeletedEntry, ...] = field(default=(), converter=_deleted)

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "cursor": self.cursor,
            "files": [f.to_json() for f in self.files],
            "deleted": [d.to_json() for d in self.deleted],
        }


def encode_manifest(manifest: Manifest) -> bytes:
    return json.dumps(manifest.to_json(), separators=(",", ":")).encode("utf-8")


def _json_object(text: bytes, what: str) -> dict[str, Any]:
    """
    C{text} parsed as a JSON object.

    @raise ProtocolError: if it is not one.
    """
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        # RecursionError: nested too deep (e.g. a body of 100,000 "[").
        raise ProtocolError(f"{what} is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return raw


def file_entry(item: object) -> FileEntry:
    """
    One item of a manifest's C{files}, checked.

    @raise ProtocolError: if it is malformed.
    """
    if not isinstance(item, dict):
        raise ProtocolError("each file must be a JSON object")
    changed = item.get("changed", True)
    if not isinstance(changed, bool):
        raise ProtocolError("changed must be true or false")
    sha256 = item.get("sha256")
    if sha256 is None and not changed:
        raise ProtocolError("a file listed without its sha256 must be changed")
    return FileEntry(
        path=_path(item.get("path")),
        sha256=None if sha256 is None else _sha256(sha256),
        size=_count(item.get("size"), "size"),
        mtime_ns=_count(item.get("mtime_ns", 0), "mtime_ns"),
        base=_count(item.get("base", 0), "base"),
        changed=changed,
    )


def deleted_entry(item: object) -> DeletedEntry:
    """
    One item of a manifest's C{deleted}, checked.

    @raise ProtocolError: if it is malformed.
    """
    if not isinstance(item, dict):
        raise ProtocolError("each deleted entry must be a JSON object")
    return DeletedEntry(path=_path(item.get("path")), base=_count(item.get("base", 0), "base"))


def manifest_client(value: object) -> str:
    """
    The C{client} of a manifest, checked.

    @raise ProtocolError: if it is not a string of at most 200 characters.
    """
    if not isinstance(value, str) or len(value) > 200:
        raise ProtocolError("client must be a string of at most 200 characters")
    return value


def manifest_cursor(value: object) -> int:
    """
    The C{cursor} of a manifest, checked.
    """
    return _count(value, "cursor")


def parse_manifest(body: bytes, max_entries: int = 1_000_000) -> Manifest:
    """
    Parse and check a manifest.

    @raise ProtocolError: if anything in it is malformed, a path is not
        acceptable, a path is listed twice, or it has over C{max_entries}
        entries.
    """
    raw = _json_object(body or b"{}", "manifest")
    client = manifest_client(raw.get("client", ""))
    files_raw = raw.get("files", [])
    deleted_raw = raw.get("deleted", [])
    if not isinstance(files_raw, list) or not isinstance(deleted_raw, list):
        raise ProtocolError("files and deleted must be lists")
    if len(files_raw) + len(deleted_raw) > max_entries:
        raise ProtocolError(f"manifest has over {max_entries} entries")
    files = [file_entry(item) for item in files_raw]
    deleted = [deleted_entry(item) for item in deleted_raw]
    seen: set[str] = set()
    entries: list[FileEntry | DeletedEntry] = [*files, *deleted]
    for entry in entries:
        if entry.path in seen:
            raise ProtocolError(f"{entry.path!r} is listed twice")
        seen.add(entry.path)
    return Manifest(client=client, cursor=manifest_cursor(raw.get("cursor", 0)), files=files, deleted=deleted)


# Events, server to client. Each has a wire name (the SSE "event:" field);
# those that report a commit carry its seq, which becomes the SSE "id:".


@frozen
class Hello:
    """
    The first event of every stream: the stream's id and the current seq.
    """

    name = "hello"
    stream: str
    seq: int


@frozen
class Upload:
    """
    Plan: send your copy of C{path}, stating C{base} as its base.
    """

    name = "upload"
    path: str
    base: int


@frozen
class Download:
    """
    Fetch version C{seq} of C{path} (plan, or a live commit by another client).
    """

    name = "download"
    path: str
    sha256: str
    size: int
    mtime_ns: int
    seq: int


@frozen
class Delete:
    """
    C{path} was deleted at C{seq}: delete the local copy if it is unchanged.
    """

    name = "delete"
    path: str
    seq: int


@frozen
class Remove:
    """
    Plan: your deletion of C{path} can be committed; send it with C{base}.
    """

    name = "remove"
    path: str
    base: int


@frozen
class Conflict:
    """
    Plan: both sides changed C{path}. Keep the local copy under a conflict
    name (and upload it as a new file), then download version C{seq}.
    """

    name = "conflict"
    path: str
    sha256: str
    size: int
    mtime_ns: int
    seq: int


@frozen
class InSync:
    """
    Plan: your copy of C{path} is the server's version C{seq}; record it.
    """

    name = "insync"
    path: str
    seq: int


@frozen
class Ready:
    """
    The plan is complete; everything up to C{seq} is covered by it.
    """

    name = "ready"
    seq: int


Event = Union[Hello, Upload, Download, Delete, Remove, Conflict, InSync, Ready]

_EVENT_TYPES: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (Hello, Upload, Download, Delete, Remove, Conflict, InSync, Ready)
}


def _event_id(event: Event) -> int | None:
    if isinstance(event, (Download, Delete, Ready)):
        return event.seq
    return None


def encode_event(event: Event, with_id: bool = True) -> bytes:
    """
    One SSE frame for C{event}. Commits and C{ready} carry their seq as the
    frame's id (unless C{with_id} is false, as for plan entries, whose order
    is not that of their seqs).
    """
    data = asdict(event)
    lines = []
    event_id = _event_id(event)
    if with_id and event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event.name}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_comment(text: str) -> bytes:
    return f": {text}\n\n".encode("utf-8")


@frozen
class SSEMessage:
    """
    One dispatched SSE message, before its data is decoded.
    """

    event: str
    data: str
    id: str | None


def decode_event(message: SSEMessage) -> Event | None:
    """
    The protocol event of an SSE message; C{None} for an event type this
    version does not know (newer servers may add some).

    @raise ProtocolError: if a known event's data is malformed.
    """
    cls = _EVENT_TYPES.get(message.event)
    if cls is None:
        return None
    try:
        data = json.loads(message.data)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        event: Event = cls(**data)
    except (ValueError, TypeError) as e:
        raise ProtocolError(f"bad {message.event} event: {e}") from None
    if hasattr(event, "path"):
        _path(event.path)
    return event


class SSEParser:
    """
    An incremental parser of a ``text/event-stream`` body, as the HTML
    standard defines it: feed it bytes as they arrive, get whole messages.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        buffer = self._buffer + chunk
        messages = []
        position = 0
        while True:
            line, end = _next_line(buffer, position)
            if end < 0:
                break
            position = end
            message = self._line(line.decode("utf-8", "replace"))
            if message is not None:
                messages.append(message)
        self._buffer = buffer[position:]
        return messages

    def _line(self, line: str) -> SSEMessage | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        if self._id is not None:
            self.last_id = self._id
        if not self._data:
            self._event = ""
            return None
        message = SSEMessage(
            event=self._event or "message", data="\n".join(self._data), id=self._id
        )
        self._event = ""
        self._data = []
        self._id = None
        return message


def _next_line(buffer: bytes, start: int) -> tuple[bytes, int]:
    """
    The line that begins at C{start}, ended by LF, CR or CRLF, and where the
    next one begins; C{-1} for the latter if the line is not complete yet.
    """
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start, lf if lf >= 0 else len(buffer))
    if cr >= 0:
        if cr + 1 == len(buffer):
            # A CR at the very end may be the first half of a CRLF.
            return b"", -1
        return buffer[start:cr], cr + (2 if buffer[cr + 1 : cr + 2] == b"\n" else 1)
    if lf >= 0:
        return buffer[start:lf], lf + 1
    return b"", -1


# Batches: many small files in one request each way (POST /batch/upload,
# POST /batch/download), so that a burst of small files does not cost a
# request, a response and a commit each. A batch body is a sequence of parts:
# one line of JSON (the part's header, with its "size"), then exactly that
# many bytes.

#: The media type of a batch body.
BATCH = "application/x-boxsync-batch"

#: The largest file a batch carries; larger files move on their own.
BATCH_FILE_LIMIT = 1024 * 1024

#: The most files one batch carries.
BATCH_MAX_FILES = 1000

#: The most file bytes the answer to a batch download carries: the files
#: past it are answered "ask again" (status 503).
BATCH_MAX_BYTES = 16 * 1024 * 1024


@frozen
class BatchFile:
    """
    The header of one file of a batch upload.

    @ivar base: the seq the change starts from (0: the path must not exist);
        C{None} for last writer wins.
    """

    path: str
    size: int
    sha256: str
    mtime_ns: int
    base: int | None = None

    def to_json(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "mtime_ns": self.mtime_ns,
        }
        if self.base is not None:
            header["base"] = self.base
        return header


def encode_part(header: dict[str, Any], data: bytes = b"") -> list[bytes]:
    """
    One part of a batch body: C{header} (whose C{"size"} must be the length
    of C{data}) and C{data}.
    """
    return [json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n", data]


def parse_parts(body: bytes, max_parts: int = BATCH_MAX_FILES) -> list[tuple[dict[str, Any], bytes]]:
    """
    Split a batch body into its parts: each header, and the bytes it announces.

    @raise ProtocolError: if a header is not a JSON object with a valid
        C{"size"} (0 if left out), a part is cut short, or there are over
        C{max_parts} parts.
    """
    parts: list[tuple[dict[str, Any], bytes]] = []
    view = memoryview(body)
    position = 0
    while position < len(body):
        if len(parts) == max_parts:
            raise ProtocolError(f"a batch has at most {max_parts} parts")
        end = body.find(b"\n", position)
        if end < 0:
            raise ProtocolError("a batch part's header has no end of line")
        header = _json_object(body[position:end], "a batch part's header")
        size = _count(header.get("size", 0), "size")
        start = end + 1
        if start + size > len(body):
            raise ProtocolError("a batch part is cut short")
        parts.append((header, bytes(view[start : start + size])))
        position = start + size
    return parts


def parse_upload_batch(body: bytes, max_files: int = BATCH_MAX_FILES) -> list[tuple[BatchFile, bytes]]:
    """
    Parse and check the body of a batch upload.

    @raise ProtocolError: if anything in it is malformed, a path is not
        acceptable or listed twice, a file is over L{BATCH_FILE_LIMIT}, or
        there are over C{max_files} files.
    """
    files = []
    seen: set[str] = set()
    for header, data in parse_parts(body, max_files):
        path = _path(header.get("path"))
        if path in seen:
            raise ProtocolError(f"{path!r} is in the batch twice")
        seen.add(path)
        if len(data) > BATCH_FILE_LIMIT:
            raise ProtocolError(f"{path!r} is over {BATCH_FILE_LIMIT} bytes: upload it on its own")
        base = header.get("base")
        entry = BatchFile(
            path=path,
            size=len(data),
            sha256=_sha256(header.get("sha256")),
            mtime_ns=_count(header.get("mtime_ns"), "mtime_ns"),
            base=None if base is None else _count(base, "base"),
        )
        files.append((entry, data))
    return files


def parse_path_list(body: bytes, max_paths: int = BATCH_MAX_FILES) -> list[str]:
    """
    Parse and check the body of a batch download: C{{"paths": [...]}}.

    @raise ProtocolError: if it is malformed, a path is not acceptable or
        there are over C{max_paths}.
    """
    raw = _json_object(body, "a batch download")
    paths = raw.get("paths")
    if not isinstance(paths, list):
        raise ProtocolError("paths must be a list")
    if len(paths) > max_paths:
        raise ProtocolError(f"a batch has at most {max_paths} files")
    return list(dict.fromkeys(_path(path) for path in paths))
