"""
Batches: many small files in one request each way (C{POST /batch/upload},
C{POST /batch/download}), so that a burst of small files does not cost a
request, a response and a commit each.

A batch body is a sequence of parts: one line of JSON (the part's header,
with its C{"size"}), then exactly that many bytes.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from .values import ProtocolError, check_count, check_flag, check_mtime, check_path, check_sha256, json_object

__all__ = [
    "BATCH",
    "BATCH_FILE_LIMIT",
    "BATCH_MAX_FILES",
    "BATCH_MAX_BYTES",
    "BatchFile",
    "encode_part",
    "parse_parts",
    "parse_upload_batch",
    "encode_path_list",
    "parse_path_list",
    "encode_delete_list",
    "parse_delete_list",
]

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
    @ivar executable: whether the file is executable; C{None}: as the
        version it replaces is (not, for a new file).
    @ivar stored: the part carries no bytes: the server has the content
        already (as a file, a kept version or a block; C{POST
        /blocks/missing} says so), and takes it from there; C{size} is then
        0, the part's length.
    """

    path: str
    size: int
    sha256: str
    mtime_ns: int
    base: int | None = None
    executable: bool | None = None
    stored: bool = False

    def to_json(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "mtime_ns": self.mtime_ns,
        }
        if self.base is not None:
            header["base"] = self.base
        if self.executable is not None:
            header["executable"] = self.executable
        if self.stored:
            header["stored"] = True
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
        header = json_object(body[position:end], "a batch part's header")
        size = check_count(header.get("size", 0), "size")
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
        path = check_path(header.get("path"))
        if path in seen:
            raise ProtocolError(f"{path!r} is in the batch twice")
        seen.add(path)
        if len(data) > BATCH_FILE_LIMIT:
            raise ProtocolError(f"{path!r} is over {BATCH_FILE_LIMIT} bytes: upload it on its own")
        base = header.get("base")
        executable = header.get("executable")
        stored = check_flag(header.get("stored", False), "stored")
        if stored and data:
            raise ProtocolError(f"{path!r} is stored: its part carries no bytes")
        entry = BatchFile(
            path=path,
            size=len(data),
            sha256=check_sha256(header.get("sha256")),
            mtime_ns=check_mtime(header.get("mtime_ns")),
            base=None if base is None else check_count(base, "base"),
            executable=None if executable is None else check_flag(executable, "executable"),
            stored=stored,
        )
        files.append((entry, data))
    return files


def encode_path_list(paths: list[str]) -> bytes:
    """
    The body of a batch download of C{paths}.
    """
    return json.dumps({"paths": paths}).encode("utf-8")


def parse_path_list(body: bytes, max_paths: int = BATCH_MAX_FILES) -> list[str]:
    """
    Parse and check the body of a batch download: C{{"paths": [...]}}.

    @raise ProtocolError: if it is malformed, a path is not acceptable or
        there are over C{max_paths}.
    """
    paths = _listed(body, "a batch download", "paths", max_paths)
    return list(dict.fromkeys(check_path(path) for path in paths))


def _listed(body: bytes, what: str, key: str, most: int) -> list[Any]:
    """
    The list C{key} of the JSON object C{body}, C{what} it is.

    @raise ProtocolError: if there is none, or it has over C{most} items.
    """
    items = json_object(body, what).get(key)
    if not isinstance(items, list):
        raise ProtocolError(f"{key} must be a list")
    if len(items) > most:
        raise ProtocolError(f"a batch has at most {most} files")
    return items


def encode_delete_list(deletes: list[tuple[str, int]]) -> bytes:
    """
    The body of a batch delete of C{deletes}, each a path and the seq it
    must still be at.
    """
    return json.dumps({"files": [{"path": path, "base": base} for path, base in deletes]}).encode("utf-8")


def parse_delete_list(body: bytes, max_files: int = BATCH_MAX_FILES) -> list[tuple[str, int]]:
    """
    Parse and check the body of a batch delete: C{{"files": [{"path",
    "base"}, ...]}}.

    @raise ProtocolError: if it is malformed, a path is not acceptable or
        listed twice, or there are over C{max_files}.
    """
    deletes: dict[str, int] = {}
    for entry in _listed(body, "a batch delete", "files", max_files):
        if not isinstance(entry, dict):
            raise ProtocolError("each file of a batch delete is an object with its path and base")
        path = check_path(entry.get("path"))
        if path in deletes:
            raise ProtocolError(f"{path!r} is in the batch twice")
        deletes[path] = check_count(entry.get("base"), "base")
    return list(deletes.items())
