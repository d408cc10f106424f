"""
The manifest: what a client sends to C{POST /sync} about its files, and its
JSON codec.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from attrs import field, frozen

from .values import ProtocolError, check_count, check_flag, check_mtime, check_path, check_sha256, json_object

__all__ = [
    "FileEntry",
    "DeletedEntry",
    "FolderEntry",
    "Held",
    "Manifest",
    "encode_manifest",
    "parse_manifest",
    "file_entry",
    "deleted_entry",
    "folder_entry",
    "manifest_client",
    "manifest_cursor",
    "manifest_features",
    "manifest_held",
]


@frozen
class FileEntry:
    """
    One file a client has.

    @ivar base: the seq of the server version the file was last in sync with;
        0 if it never was.
    @ivar changed: whether the file differs from that base version.
    @ivar sha256: C{None} for a changed file the client has not hashed (it
        hashes a large file as it uploads it): it then matches no version.
    @ivar executable: whether the file is executable; C{None} from a client
        that does not say (its plan then ignores the bit).
    """

    path: str
    sha256: str | None
    size: int
    mtime_ns: int
    base: int = 0
    changed: bool = True
    executable: bool | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "base": self.base,
            "changed": self.changed,
        }
        if self.executable is not None:
            entry["executable"] = self.executable
        return entry


@frozen
class FolderEntry:
    """
    A folder a client syncs as a folder of its own (see
    C{docs/protocol.md}, "Folders"): one it had in sync with version C{base},
    or (C{base} 0) a new, empty one.
    """

    path: str
    base: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "base": self.base}


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


def _folders(items: Iterable[FolderEntry]) -> tuple[FolderEntry, ...]:
    return tuple(items)


@frozen
class Held:
    """
    A version a client holds, named by the seq of its commit: the box's
    commit of that seq must be this version, or the box is not the one the
    client has seen (restored from a backup, say, and gone on from there).
    """

    seq: int
    path: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "path": self.path, "sha256": self.sha256}


def _features(items: Iterable[str]) -> frozenset[str]:
    return frozenset(items)


@frozen
class Manifest:
    """
    What a client tells the server when it opens its event stream.

    A client lists at least every file it changed (or never synced) and every
    file it deleted since C{cursor}, the highest seq it has applied; it may
    list unchanged files too. The server then needs nothing else to plan.
    The same goes for the folders it syncs (C{folders}; a deleted one is
    among C{deleted}).

    @ivar features: what the client reads on its event stream beyond the
        first protocol (e.g. L{EXECUTABLE_FEATURE
        <boxsync.wire.headers.EXECUTABLE_FEATURE>}): the server sends it
        nothing else.
    @ivar held: the version with the highest seq the client holds, if it
        says (the server's hello then tells whether the box committed
        another at that seq: L{Hello.other_history
        <boxsync.wire.events.Hello.other_history>}).
    """

    client: str = ""
    cursor: int = 0
    files: tuple[FileEntry, ...] = field(default=(), converter=_files)
    deleted: tuple[DeletedEntry, ...] = field(default=(), converter=_deleted)
    features: frozenset[str] = field(default=frozenset(), converter=_features)
    folders: tuple[FolderEntry, ...] = field(default=(), converter=_folders)
    held: Held | None = None

    def to_json(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "client": self.client,
            "cursor": self.cursor,
            "files": [f.to_json() for f in self.files],
            "deleted": [d.to_json() for d in self.deleted],
        }
        if self.features:
            manifest["features"] = sorted(self.features)
        if self.folders:
            manifest["folders"] = [f.to_json() for f in self.folders]
        if self.held is not None:
            manifest["held"] = self.held.to_json()
        return manifest


def encode_manifest(manifest: Manifest) -> bytes:
    return json.dumps(manifest.to_json(), separators=(",", ":")).encode("utf-8")


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
    executable = item.get("executable")
    return FileEntry(
        path=check_path(item.get("path")),
        sha256=None if sha256 is None else check_sha256(sha256),
        size=check_count(item.get("size"), "size"),
        mtime_ns=check_mtime(item.get("mtime_ns", 0)),
        base=check_count(item.get("base", 0), "base"),
        changed=changed,
        executable=None if executable is None else check_flag(executable, "executable"),
    )


def deleted_entry(item: object) -> DeletedEntry:
    """
    One item of a manifest's C{deleted}, checked.

    @raise ProtocolError: if it is malformed.
    """
    return DeletedEntry(*_path_and_base(item, "deleted entry"))


def folder_entry(item: object) -> FolderEntry:
    """
    One item of a manifest's C{folders}, checked.

    @raise ProtocolError: if it is malformed.
    """
    return FolderEntry(*_path_and_base(item, "folder"))


def _path_and_base(item: object, what: str) -> tuple[str, int]:
    """
    The C{path} and C{base} of an entry, checked.

    @raise ProtocolError: if it is malformed.
    """
    if not isinstance(item, dict):
        raise ProtocolError(f"each {what} must be a JSON object")
    return check_path(item.get("path")), check_count(item.get("base", 0), "base")


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
    return check_count(value, "cursor")


def manifest_features(value: object) -> frozenset[str]:
    """
    The C{features} of a manifest, checked: the names a client reads, of
    which the server uses those it knows.

    @raise ProtocolError: if it is not a list of at most 100 strings of at
        most 100 characters.
    """
    if (
        not isinstance(value, list)
        or len(value) > 100
        or not all(isinstance(name, str) and len(name) <= 100 for name in value)
    ):
        raise ProtocolError("features must be a list of at most 100 short strings")
    return frozenset(value)


def manifest_held(value: object) -> Held | None:
    """
    The C{held} of a manifest, checked; C{None} if it has none.

    @raise ProtocolError: if it is not an object with a C{seq} of at least
        1, a C{path} and a C{sha256}.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError("held must be a JSON object")
    seq = check_count(value.get("seq"), "held seq")
    if seq < 1:
        raise ProtocolError("held seq must be at least 1")
    return Held(seq, check_path(value.get("path")), check_sha256(value.get("sha256")))


def parse_manifest(body: bytes, max_entries: int = 1_000_000) -> Manifest:
    """
    Parse and check a manifest.

    @raise ProtocolError: if anything in it is malformed, a path is not
        acceptable, a path is listed twice, or it has over C{max_entries}
        entries.
    """
    raw = json_object(body or b"{}", "manifest")
    client = manifest_client(raw.get("client", ""))
    files_raw = raw.get("files", [])
    deleted_raw = raw.get("deleted", [])
    folders_raw = raw.get("folders", [])
    if not all(isinstance(items, list) for items in (files_raw, deleted_raw, folders_raw)):
        raise ProtocolError("files, deleted and folders must be lists")
    if len(files_raw) + len(deleted_raw) + len(folders_raw) > max_entries:
        raise ProtocolError(f"manifest has over {max_entries} entries")
    files = [file_entry(item) for item in files_raw]
    deleted = [deleted_entry(item) for item in deleted_raw]
    folders = [folder_entry(item) for item in folders_raw]
    seen: set[str] = set()
    entries: list[FileEntry | DeletedEntry | FolderEntry] = [*files, *deleted, *folders]
    for entry in entries:
        if entry.path in seen:
            raise ProtocolError(f"{entry.path!r} is listed twice")
        seen.add(entry.path)
    return Manifest(
        client=client,
        cursor=manifest_cursor(raw.get("cursor", 0)),
        files=files,
        deleted=deleted,
        features=manifest_features(raw.get("features", [])),
        folders=folders,
        held=manifest_held(raw.get("held")),
    )
