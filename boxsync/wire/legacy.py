"""
The wire format of the clients boxsync replaces.

The Go server before boxsync had two clients, in Node.js and in Python, that
people still run. They send a list of paths with whole-second mtimes and get
back one JSON line per file to move; they upload with a C{File-Path} header
and download from C{/download/<path>}. ``docs/protocol.md`` ("Legacy
clients") has the rules; L{boxsync.server.legacy} serves them.
"""

from __future__ import annotations

import json
import math

from attrs import frozen

from ..paths import BadPath, normalize
from .events import Download, Event, Upload
from .values import ProtocolError

__all__ = [
    "DOWNLOAD",
    "UPLOAD",
    "FILE_PATH_HEADER",
    "NDJSON",
    "LegacyEntry",
    "encode_action",
    "parse_files",
    "legacy_entry",
]

#: The actions of a legacy stream line.
DOWNLOAD = 1
UPLOAD = 2

#: The header of a legacy upload that names the file, raw (not encoded).
FILE_PATH_HEADER = "File-Path"

#: The media type of a legacy stream: one JSON object a line.
NDJSON = "application/x-ndjson"


def encode_action(event: Event, with_id: bool = False) -> bytes:
    """
    The line a legacy client reads for C{event}: C{Download} is action 1,
    C{Upload} action 2; every other event is left out (C{b""}).
    """
    if isinstance(event, Download):
        action = DOWNLOAD
    elif isinstance(event, Upload):
        action = UPLOAD
    else:
        return b""
    line = {"Path": event.path, "Action": action}
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


@frozen
class LegacyEntry:
    """
    One file a legacy client has, with its mtime in whole seconds.
    """

    path: str
    last_update: int


def _last_update(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError("lastUpdate must be a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError("lastUpdate must be a finite number")
        return math.floor(value)
    return value


def parse_files(body: bytes, max_entries: int = 1_000_000) -> tuple[list[LegacyEntry], int]:
    """
    The files of a legacy C{POST /sync} body, and how many were left out
    because boxsync refuses their paths (they are never synced, but do not
    stop the rest from syncing). A path listed twice counts once, as listed
    last.

    @raise ProtocolError: if the body is not of the legacy shape.
    """
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ProtocolError(f"body is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("body must be a JSON object")
    files = raw.get("files")
    if files is None:
        files = []
    if not isinstance(files, list):
        raise ProtocolError("files must be a list")
    if len(files) > max_entries:
        raise ProtocolError(f"over {max_entries} files")
    entries: dict[str, LegacyEntry] = {}
    refused = 0
    for item in files:
        entry = legacy_entry(item)
        if entry is None:
            refused += 1
            continue
        entries.pop(entry.path, None)
        entries[entry.path] = entry
    return list(entries.values()), refused


def legacy_entry(item: object) -> LegacyEntry | None:
    """
    One item of a legacy body's C{files}, checked; C{None} if boxsync
    refuses its path.

    @raise ProtocolError: if it is not of the legacy shape.
    """
    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
        raise ProtocolError('each file must be an object with a "path" string')
    last_update = _last_update(item.get("lastUpdate"))
    try:
        return LegacyEntry(normalize(item["path"]), last_update)
    except BadPath:
        return None
