"""
The events the server sends a client on its event stream.

Each has a wire name (the SSE C{event:} field); those that report a commit
carry its seq, which becomes the SSE C{id:}. L{boxsync.wire.sse} frames them.
"""

from __future__ import annotations

from typing import Any, Collection, Union

from attrs import evolve, field, frozen

from .headers import EXECUTABLE_FEATURE, FOLDERS_FEATURE, INCOMING_FEATURE
from .values import ProtocolError, check_count, check_sha256

__all__ = [
    "Hello",
    "Upload",
    "Download",
    "Folder",
    "Delete",
    "Remove",
    "Conflict",
    "InSync",
    "Ready",
    "Incoming",
    "MAX_INCOMING",
    "Event",
    "EVENT_TYPES",
    "event_id",
    "as_read_by",
]


@frozen
class Hello:
    """
    The first event of every stream: the stream's id and the current seq.

    @ivar box: the id of the box (of its index), the same for every server
        of it and for as long as it lives; a client whose files were synced
        with another box (or with this one before its index was restored
        from a backup: its seq is then behind the client's cursor) must not
        take what it lacks for deleted. C{None} from a server that does not
        say.
    @ivar other_history: C{True} if the box committed another version at
        the seq of the version the client says it holds (L{Manifest.held
        <boxsync.wire.manifest.Manifest.held>}): the box went back (restored
        from a backup) and on from there, so the client's bases and cursor
        are not of its history. C{None} otherwise, and to a client that
        did not say.
    """

    name = "hello"
    stream: str
    seq: int
    box: str | None = None
    other_history: bool | None = None


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

    @ivar executable: whether that version is executable; C{None} if the
        server does not say (it does not keep the bit, or the client does
        not read it).
    """

    name = "download"
    path: str
    sha256: str
    size: int
    mtime_ns: int
    seq: int
    executable: bool | None = None


@frozen
class Folder:
    """
    The box has the folder C{path}, as version C{seq}: make it (plan, or a
    live commit by another client).
    """

    name = "folder"
    path: str
    seq: int


@frozen
class Delete:
    """
    C{path} was deleted at C{seq}: delete the local copy if it is unchanged
    (a folder, if nothing is left in it).
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
    executable: bool | None = None


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


#: The most blocks one C{incoming} event names.
MAX_INCOMING = 1024


def _blocks(value: object) -> tuple[tuple[str, int], ...]:
    """
    A list of blocks as C{[sha256, size]} pairs, checked.
    """
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or len(value) > MAX_INCOMING:
        raise ProtocolError(f"blocks must list at most {MAX_INCOMING} [sha256, size] pairs")
    pairs = []
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ProtocolError("a block is a [sha256, size] pair")
        pairs.append((check_sha256(pair[0]), check_count(pair[1], "a block's size")))
    return tuple(pairs)


@frozen
class Incoming:
    """
    Live: another client is sending a new version of C{path}, of C{size}
    bytes, by its blocks; these are its C{blocks} from C{offset} on, in
    order. Each can be fetched (C{GET /blocks/<sha256>?wait=S}) as soon as
    it reaches the server, ahead of the commit, which comes as a
    C{download} event as usual. Also what the sending client says, along
    with C{POST /blocks/missing}.
    """

    name = "incoming"
    path: str
    size: int = field(converter=lambda value: check_count(value, "size"))
    offset: int = field(converter=lambda value: check_count(value, "offset"))
    blocks: tuple[tuple[str, int], ...] = field(converter=_blocks)

    def placed(self) -> list[tuple[int, str, int]]:
        """
        Each block with its offset in the file: (offset, sha256, size).
        """
        placed = []
        offset = self.offset
        for sha256, size in self.blocks:
            placed.append((offset, sha256, size))
            offset += size
        return placed

    def lacking(self, missing: Collection[str]) -> list[Incoming]:
        """
        The runs of these blocks that are among C{missing}, each announced
        on its own, from its offset: what of them is still to come. The
        others are somewhere already (a version before, a file copied).
        """
        runs: list[Incoming] = []
        run: list[tuple[str, int]] = []
        start = 0
        for offset, sha256, size in self.placed():
            if sha256 in missing:
                if not run:
                    start = offset
                run.append((sha256, size))
            elif run:
                runs.append(Incoming(self.path, self.size, start, run))
                run = []
        if run:
            runs.append(Incoming(self.path, self.size, start, run))
        return runs


Event = Union[Hello, Upload, Download, Folder, Delete, Remove, Conflict, InSync, Ready, Incoming]

#: The class of each event, by its wire name.
EVENT_TYPES: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (Hello, Upload, Download, Folder, Delete, Remove, Conflict, InSync, Ready, Incoming)
}


def event_id(event: Event) -> int | None:
    """
    The seq an event carries as its SSE id: that of a commit or of C{ready}.
    """
    if isinstance(event, (Download, Folder, Delete, Ready)):
        return event.seq
    return None


def as_read_by(event: Event, features: Collection[str]) -> Event | None:
    """
    C{event} as it goes to a client that reads C{features}: without what
    that client would not read (an older one refuses an event with a field
    it does not know), or C{None} if it is not to be sent at all.
    """
    if EXECUTABLE_FEATURE not in features and isinstance(event, (Download, Conflict)):
        if event.executable is not None:
            return evolve(event, executable=None)
    if FOLDERS_FEATURE not in features and isinstance(event, Folder):
        return None
    if INCOMING_FEATURE not in features and isinstance(event, Incoming):
        return None
    return event
