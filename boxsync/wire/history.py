"""
The wire side of the history: a version as the history routes list it, and
the body of a restore.

  - C{GET /history/<path>}: every version of a path kept, newest first, the
    live one (if any) first of all;
  - C{GET /versions/<seq>}: the bytes of one version (with C{Range});
  - C{GET /trash?under=FOLDER}: the files deleted there, newest deletion
    first, each as its last version;
  - C{GET /snapshot?under=FOLDER&at=TIME}: the versions the folder's files
    had at a time;
  - C{POST /restore}: a version made the current one again, as a new
    commit.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from attrs import asdict, frozen

from .values import ProtocolError, check_count, check_path, check_sha256

__all__ = ["VersionEntry", "Restore", "iso_time", "parse_time"]


def iso_time(ns: int) -> str | None:
    """
    A time in ns since the epoch as ISO 8601 (UTC), or C{None} for 0 (not
    known).
    """
    if ns <= 0:
        return None
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="milliseconds")


def parse_time(text: str) -> int:
    """
    A time as ISO 8601 (a date, a date and time, with or without a zone:
    without one it is this machine's local time), or as ns since the epoch,
    in ns since the epoch.

    @raise ProtocolError: if C{text} is neither.
    """
    text = text.strip()
    if text.isascii() and text.isdigit():
        return check_count(int(text), "time")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ProtocolError(f"{text!r} is not a time such as 2026-12-01T09:00 or 2026-12-01 09:00+01:00") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return check_count(int(when.timestamp() * 1e9), "time")


@frozen
class VersionEntry:
    """
    One version of a path.

    @ivar time: when it was committed (ISO 8601), if known.
    @ivar client: who committed it.
    @ivar ended_seq: the commit that overwrote or deleted it (C{None}: it is
        the live version).
    @ivar deleted: whether that commit was a delete.
    """

    path: str
    seq: int
    time: str | None
    size: int
    sha256: str
    mtime_ns: int
    client: str
    ended_seq: int | None = None
    ended_time: str | None = None
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        # Not attrs' asdict: a trash lists 100,000 of them.
        return {
            "path": self.path,
            "seq": self.seq,
            "time": self.time,
            "size": self.size,
            "sha256": self.sha256,
            "mtime_ns": self.mtime_ns,
            "client": self.client,
            "ended_seq": self.ended_seq,
            "ended_time": self.ended_time,
            "deleted": self.deleted,
        }

    @classmethod
    def from_json(cls, data: object) -> VersionEntry:
        """
        @raise ProtocolError: if C{data} is not a version.
        """
        if not isinstance(data, dict):
            raise ProtocolError("a version must be a JSON object")
        ended = data.get("ended_seq")
        time, ended_time = data.get("time"), data.get("ended_time")
        return cls(
            path=check_path(data.get("path")),
            seq=check_count(data.get("seq"), "seq"),
            time=time if isinstance(time, str) else None,
            size=check_count(data.get("size"), "size"),
            sha256=check_sha256(data.get("sha256")),
            mtime_ns=check_count(data.get("mtime_ns", 0), "mtime_ns"),
            client=str(data.get("client", "")),
            ended_seq=None if ended is None else check_count(ended, "ended_seq"),
            ended_time=ended_time if isinstance(ended_time, str) else None,
            deleted=bool(data.get("deleted", False)),
        )


@frozen
class Restore:
    """
    Make version C{seq} of C{path} its current one.

    @ivar base: the seq the client saw the path at (0: deleted, or none);
        C{None}: whatever it is at now.
    """

    path: str
    seq: int
    base: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Restore:
        """
        @raise ProtocolError: if C{data} is not a restore.
        """
        if not isinstance(data, dict):
            raise ProtocolError("a restore must be a JSON object")
        base = data.get("base")
        return cls(
            check_path(data.get("path")),
            check_count(data.get("seq"), "seq"),
            None if base is None else check_count(base, "base"),
        )
