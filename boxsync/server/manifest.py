"""
A manifest read from its body a piece at a time, never held whole.

A manifest of a million files is ~150 MB of JSON. Parsed at once it cost the
server ~900 MB of memory and held the reactor for seconds. Here the body
(which twisted.web keeps in a temporary file) is read twice, 1 MiB at a
time, an entry at a time, and the reactor gets a turn every L{YIELD_EVERY}
entries:

1. L{read_manifest} checks every entry as L{parse_manifest} would, counts
   them, and keeps of each path only a 64-bit keyed hash (L{PathSet}, 8
   bytes an entry), to find a path listed twice and, while planning, to
   tell a listed path from an unlisted one;
2. L{StreamedManifest.pages} reads the entries again, a page at a time, as
   the plan asks for them (as fast as the client takes the events).

Memory is bounded by the page, the read size and 8 bytes an entry (the
number of entries is bounded by C{--max-manifest-entries}).
"""

from __future__ import annotations

import codecs
import json
import os
from array import array
from hashlib import blake2b
from typing import IO, Any, AsyncIterable, AsyncIterator, Callable, Iterator, TypeVar

from attrs import define, field
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from ..wire import (
    DeletedEntry,
    FileEntry,
    FolderEntry,
    Held,
    ProtocolError,
    deleted_entry,
    file_entry,
    folder_entry,
    manifest_client,
    manifest_cursor,
    manifest_features,
    manifest_held,
)

__all__ = [
    "Entry",
    "StreamedManifest",
    "PathSet",
    "in_pages",
    "members",
    "read_manifest",
    "YIELD_EVERY",
    "READ_SIZE",
    "MAX_VALUE",
]

_T = TypeVar("_T")

#: Entries parsed between two turns of the reactor (~5 ms of work).
YIELD_EVERY = 1000

#: Bytes of the body read at a time.
READ_SIZE = 1 << 20

#: The longest single value (an entry, the client's name) of a manifest, in
#: characters: a path is at most 4,096 bytes.
MAX_VALUE = 64 * 1024

#: Entries per page of the plan (one index read each).
PAGE = 500

_LISTS = ("files", "deleted", "folders")

#: An entry of a manifest.
Entry = FileEntry | DeletedEntry | FolderEntry
_SPACE = " \t\n\r"


@define
class PathSet:
    """
    A set of paths kept as 64-bit hashes, keyed anew for each set (so no
    client can choose paths that collide): 8 bytes a path, in buckets by
    the top 16 bits of the hash. A path not in the set is taken for one in
    it with a chance of 1 in 2⁶⁴ per path in the set.
    """

    _key: bytes = field(factory=lambda: os.urandom(16))
    _buckets: dict[int, array[int]] = field(factory=dict)

    def hash(self, path: str) -> int:
        """
        The hash C{path} is kept as.
        """
        digest = blake2b(path.encode("utf-8", "surrogatepass"), digest_size=8, key=self._key).digest()
        return int.from_bytes(digest, "big")

    def add(self, path: str) -> bool:
        """
        Add C{path}; C{False} if it (or a path of the same hash) was in.
        """
        h = self.hash(path)
        bucket = self._buckets.get(h >> 48)
        if bucket is None:
            bucket = self._buckets[h >> 48] = array("Q")
        elif h in bucket:
            return False
        bucket.append(h)
        return True

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        h = self.hash(path)
        bucket = self._buckets.get(h >> 48)
        return bucket is not None and h in bucket


class _Reader:
    """
    The JSON of a manifest body, read as a stream of top-level members and,
    for C{files} and C{deleted}, of their items one by one.
    """

    def __init__(self, body: IO[bytes], lists: tuple[str, ...]) -> None:
        self._body = body
        self._lists = lists
        self._text = ""
        self._at = 0
        self._decode = codecs.getincrementaldecoder("utf-8")().decode
        self._eof = False
        self._json = json.JSONDecoder()

    def _fill(self) -> bool:
        """
        Read more of the body; C{False} at its end.
        """
        if self._eof:
            return False
        if self._body.closed:
            raise CancelledError("the request is gone")
        data = self._body.read(READ_SIZE)
        try:
            more = self._decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise ProtocolError(f"manifest is not JSON: {e}") from None
        self._eof = not data
        self._text = self._text[self._at :] + more
        self._at = 0
        return True

    def _peek(self) -> str:
        """
        The next character that is not white space, or C{""} at the end.
        """
        while True:
            text, at = self._text, self._at
            while at < len(text) and text[at] in _SPACE:
                at += 1
            self._at = at
            if at < len(text):
                return text[at]
            if not self._fill():
                return ""

    def _take(self, expected: str) -> str:
        found = self._peek()
        if found not in expected or not found:
            raise ProtocolError(f"manifest is not JSON: {found or 'the end'!r} where {expected!r} belongs")
        self._at += 1
        return found

    def _value(self) -> Any:
        self._peek()
        while True:
            try:
                value, end = self._json.raw_decode(self._text, self._at)
            except json.JSONDecodeError as e:
                error: Exception | None = e
            except RecursionError as e:
                raise ProtocolError(f"manifest is not JSON: {e}") from None
            else:
                # A value that ends with the text read so far (a number) may
                # go on in what comes next.
                if end < len(self._text) or self._eof:
                    self._at = end
                    return value
                error = None
            if len(self._text) - self._at > MAX_VALUE:
                raise ProtocolError(f"a value of the manifest is over {MAX_VALUE} characters")
            if not self._fill():
                raise ProtocolError(f"manifest is not JSON: {error or 'it ends too soon'}")

    def members(self) -> Iterator[tuple[str, Any, bool]]:
        """
        Each top-level member as (name, value, C{False}), except that a
        member of C{lists} whose value is an array comes as (name, item,
        C{True}) for each of its items; an empty body is an empty object.
        """
        if self._peek() == "":
            return
        self._take("{")
        seen: set[str] = set()
        if self._peek() == "}":
            self._at += 1
        else:
            while True:
                name = self._value()
                if not isinstance(name, str):
                    raise ProtocolError("manifest is not JSON: a member's name is not a string")
                if name in seen:
                    raise ProtocolError(f"{name!r} is given twice")
                seen.add(name)
                self._take(":")
                if name in self._lists and self._peek() == "[":
                    yield from self._items(name)
                else:
                    yield name, self._value(), False
                if self._take(",}") == "}":
                    break
        if self._peek() != "":
            raise ProtocolError("manifest is not JSON: extra data after it")

    def _items(self, name: str) -> Iterator[tuple[str, Any, bool]]:
        self._take("[")
        if self._peek() == "]":
            self._at += 1
            return
        while True:
            yield name, self._value(), True
            if self._take(",]") == "]":
                return


async def members(
    body: IO[bytes], clock: IReactorTime, lists: tuple[str, ...]
) -> AsyncIterator[tuple[str, Any, bool]]:
    """
    The members of the JSON object in C{body}, from its start, as
    L{_Reader.members} gives them (the items of the arrays in C{lists} one
    by one); the reactor gets a turn every L{YIELD_EVERY} items.
    """
    body.seek(0)
    count = 0
    for name, value, item in _Reader(body, lists).members():
        yield name, value, item
        if item:
            count += 1
            if count % YIELD_EVERY == 0:
                await deferLater(clock, 0, lambda: None)


#: How each list's items are read.
_READERS: dict[str, Callable[[object], Entry]] = {
    "files": file_entry,
    "deleted": deleted_entry,
    "folders": folder_entry,
}


async def _entries(
    body: IO[bytes], clock: IReactorTime, scalars: dict[str, Any] | None = None
) -> AsyncIterator[Entry]:
    """
    Every entry of the manifest in C{body}, checked, from its start; the
    other members go to C{scalars}.
    """
    async for name, value, item in members(body, clock, _LISTS):
        if not item:
            if name in _LISTS:
                raise ProtocolError("files, deleted and folders must be lists")
            if scalars is not None:
                scalars[name] = value
        else:
            yield _READERS[name](value)


@define
class StreamedManifest:
    """
    A manifest checked whole, whose entries are read again from its body
    when the plan needs them.

    @ivar files: how many files it lists.
    @ivar deleted: how many deleted files (and folders) it lists.
    @ivar listed: the paths it lists.
    @ivar features: what the client reads beyond the first protocol.
    """

    client: str
    cursor: int
    files: int
    deleted: int
    listed: PathSet
    _body: IO[bytes]
    _clock: IReactorTime
    features: frozenset[str] = frozenset()
    #: How many folders it lists.
    folders: int = 0
    #: The version with the highest seq the client holds, if it says.
    held: Held | None = None

    def pages(self) -> AsyncIterator[list[Entry]]:
        """
        The entries, L{PAGE} at a time, in the order the body lists them.
        """
        return in_pages(_entries(self._body, self._clock))


async def in_pages(items: AsyncIterable[_T]) -> AsyncIterator[list[_T]]:
    """
    C{items}, L{PAGE} at a time.
    """
    page: list[_T] = []
    async for item in items:
        page.append(item)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


async def read_manifest(body: IO[bytes], max_entries: int, clock: IReactorTime) -> StreamedManifest:
    """
    Check the manifest in C{body} (a file positioned anywhere), entry by
    entry, giving the reactor a turn now and then.

    @raise ProtocolError: if anything in it is malformed, a path is not
        acceptable, a path is listed twice, or it has over C{max_entries}
        entries.
    """
    scalars: dict[str, Any] = {}
    listed = PathSet()
    counts = {FileEntry: 0, DeletedEntry: 0, FolderEntry: 0}
    # The hashes added twice: a path listed twice, or (a chance of 1 in 2⁶⁴
    # a pair) two paths with one hash.
    twice: set[int] = set()
    async for entry in _entries(body, clock, scalars):
        counts[type(entry)] += 1
        if sum(counts.values()) > max_entries:
            raise ProtocolError(f"manifest has over {max_entries} entries")
        if not listed.add(entry.path):
            twice.add(listed.hash(entry.path))
    if twice:
        await _check_twice(body, clock, listed, twice)
    return StreamedManifest(
        manifest_client(scalars.get("client", "")),
        manifest_cursor(scalars.get("cursor", 0)),
        counts[FileEntry],
        counts[DeletedEntry],
        listed,
        body,
        clock,
        manifest_features(scalars.get("features", [])),
        counts[FolderEntry],
        manifest_held(scalars.get("held")),
    )


async def _check_twice(body: IO[bytes], clock: IReactorTime, listed: PathSet, twice: set[int]) -> None:
    """
    Paths of the hashes C{twice} were added twice to C{listed}: find
    whether one is really listed twice (rather than two paths sharing a hash).

    @raise ProtocolError: if one is.
    """
    seen: set[str] = set()
    async for entry in _entries(body, clock):
        if listed.hash(entry.path) not in twice:
            continue
        if entry.path in seen:
            raise ProtocolError(f"{entry.path!r} is listed twice")
        seen.add(entry.path)
