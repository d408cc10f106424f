"""
The wire side of the history: a version as the history routes list it, and
the body of a restore.

  - C{GET /history/<path>}: every version of a path kept, newest first, the
    live one (if any) first of all;
  - C{GET /versions/<seq>}: the bytes of one version (with C{Range});
  - C{GET /trash?under=FOLDER}: the files deleted there, newest deletion
    first, each as its last version (with C{rows=1}, in rows: see
    L{Deleted});
  - C{GET /snapshot?under=FOLDER&at=TIME}: the versions the folder's files
    had at a time;
  - C{POST /restore}: a version made the current one again, as a new
    commit.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Iterable, NamedTuple

from attrs import asdict, frozen

from .values import (
    ProtocolError,
    check_count,
    check_mtime,
    check_counts,
    check_path,
    check_paths,
    check_sha256,
    check_sha256s,
)

__all__ = [
    "VersionEntry",
    "Restore",
    "Deleted",
    "TRASH_ROWS_FEATURE",
    "iso_time",
    "json_lines",
    "parse_time",
    "parse_trash",
    "parse_versions",
    "trash_rows",
]

#: What a server that answers C{GET /trash?rows=1} in rows (L{trash_rows})
#: lists among its C{features} (C{GET /healthz}). An older server leaves
#: the parameter out and answers a list of versions, which
#: L{parse_trash} reads as well.
TRASH_ROWS_FEATURE = "trash-rows"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_time(ns: int) -> str | None:
    """
    A time in ns since the epoch as ISO 8601 (UTC) to the millisecond, or
    C{None} for 0 (not known).
    """
    if ns <= 0:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    return f"{_iso_second(seconds)}.{rest // 1_000_000:03d}+00:00"


@lru_cache(maxsize=1024)
def _iso_second(seconds: int) -> str:
    # The files of a trash were mostly deleted in the same few seconds.
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


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
    # Whole microseconds, not a float's seconds (which would lose the last
    # of the milliseconds iso_time writes).
    return check_count((when - _EPOCH) // timedelta(microseconds=1) * 1000, "time")


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
            mtime_ns=check_mtime(data.get("mtime_ns", 0)),
            client=str(data.get("client", "")),
            ended_seq=None if ended is None else check_count(ended, "ended_seq"),
            ended_time=ended_time if isinstance(ended_time, str) else None,
            deleted=bool(data.get("deleted", False)),
        )


@frozen
class Restore:
    """
    Make version C{seq} of C{path} its current one, or (with C{to}) a new
    version of the path C{to}.

    @ivar base: the seq the client saw the path restored to at (0: deleted,
        or none); C{None}: whatever it is at now.
    @ivar to: the path the version is restored to, if not its own.
    """

    path: str
    seq: int
    base: int | None = None
    to: str | None = None

    def to_json(self) -> dict[str, Any]:
        # Without C{to}, as before it was known.
        return asdict(self, filter=lambda attribute, value: attribute.name != "to" or value is not None)

    @classmethod
    def from_json(cls, data: object) -> Restore:
        """
        @raise ProtocolError: if C{data} is not a restore.
        """
        if not isinstance(data, dict):
            raise ProtocolError("a restore must be a JSON object")
        base, to = data.get("base"), data.get("to")
        return cls(
            check_path(data.get("path")),
            check_count(data.get("seq"), "seq"),
            None if base is None else check_count(base, "base"),
            None if to is None else check_path(to),
        )


class Deleted(NamedTuple):
    """
    A file deleted and not back since, as the trash lists it: its last
    version, and the delete.

    In rows, C{GET /trash?rows=1} answers C{{"columns": [...], "rows":
    [[...], ...]}}, a row a file with these fields in this order, times
    in ns since the epoch: some 130 bytes a file, where the versions'
    form takes 330, and read a column at a time.

    @ivar time_ns: when the last version was committed (0: not known).
    @ivar client: who committed it.
    """

    path: str
    seq: int
    time_ns: int
    size: int
    sha256: str
    client: str
    deleted_seq: int
    deleted_ns: int

    @property
    def time(self) -> str | None:
        return iso_time(self.time_ns)

    @property
    def deleted_time(self) -> str | None:
        return iso_time(self.deleted_ns)


def json_lines(files: Iterable[Deleted]) -> list[str]:
    """
    Each of C{files} as a JSON object on one line (for C{--json}): its
    path, seq, time (ISO 8601), size, sha256, client, deleted_seq and
    deleted_time.
    """
    text, time = _encode_string, _JSONTimes().text
    return [
        f'{{"path": {text(path)}, "seq": {seq}, "time": {time(time_ns)}, "size": {size}, "sha256": "{sha256}", '
        f'"client": {text(client)}, "deleted_seq": {deleted_seq}, "deleted_time": {time(deleted_ns)}}}'
        for path, seq, time_ns, size, sha256, client, deleted_seq, deleted_ns in files
    ]


class _JSONTimes(dict[int, str]):
    """
    Times in ns since the epoch as JSON values (an ISO 8601 string, or
    C{null} for 0), each millisecond made once: a trash's files were
    deleted, and mostly made, in a few hundred of them.
    """

    def text(self, ns: int) -> str:
        ms = ns // 1_000_000 if ns > 0 else -1
        found = self.get(ms)
        if found is None:
            iso = iso_time(ns)
            found = self[ms] = "null" if iso is None else f'"{iso}"'
        return found


_COLUMNS = list(Deleted._fields)

#: A L{Deleted} of its fields, made in C (a NamedTuple's own constructor is
#: Python code: 100,000 rows take 0.1 s more).
_deleted = functools.partial(tuple.__new__, Deleted)


#: A string as JSON with its non-ASCII characters as they are (as
#: C{json.dumps(text, ensure_ascii=False)}, in C).
_encode_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


def trash_rows(rows: str) -> bytes:
    """
    The body of a C{GET /trash?rows=1} answer listing C{rows}, the text of a
    JSON array of the files' rows (each the fields of a L{Deleted}, in
    order).
    """
    return b'{"columns": ' + json.dumps(_COLUMNS).encode("ascii") + b', "rows": ' + rows.encode("utf-8") + b"}\n"


def parse_trash(answer: object) -> list[Deleted]:
    """
    The deleted files a C{GET /trash} answer lists, in rows (L{trash_rows})
    or, from an older server, as versions.

    @raise ProtocolError: if it lists none of either form.
    """
    if isinstance(answer, dict) and answer.get("columns") == _COLUMNS and isinstance(answer.get("rows"), list):
        return _rows(answer["rows"])
    return [
        Deleted(
            v.path, v.seq, parse_time(v.time) if v.time else 0, v.size, v.sha256, v.client,
            v.ended_seq or 0, parse_time(v.ended_time) if v.ended_time else 0,
        )
        for v in parse_versions(answer)
    ]


def parse_versions(answer: object) -> list[VersionEntry]:
    """
    The versions listed under C{files} in a history answer.

    @raise ProtocolError: if it lists none.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("files"), list):
        raise ProtocolError("the answer must list files")
    return [VersionEntry.from_json(entry) for entry in answer["files"]]


def _rows(rows: list[Any]) -> list[Deleted]:
    """
    C{rows} checked a column at a time: 100,000 files in a few tens of ms.
    """
    if set(map(type, rows)) - {list} or set(map(len, rows)) - {len(_COLUMNS)}:
        raise ProtocolError(f"each row of the trash must list {len(_COLUMNS)} values")
    if not rows:
        return []
    path, seq, time_ns, size, sha256, client, deleted_seq, deleted_ns = zip(*rows)
    if set(map(type, client)) - {str}:
        raise ProtocolError("each client must be a string")
    return list(
        map(
            _deleted,
            zip(
                check_paths(path),
                check_counts(seq, "seq"),
                check_counts(time_ns, "time_ns"),
                check_counts(size, "size"),
                check_sha256s(sha256),
                client,
                check_counts(deleted_seq, "deleted_seq"),
                check_counts(deleted_ns, "deleted_ns"),
            ),
        )
    )
