"""
The commands of C{boxsync-client} other than syncing: C{status} (what a
folder's client is doing), C{pause} and C{resume} (its syncing) and C{ls}
(what the box holds, or a folder or a file of it).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from itertools import takewhile
from typing import Any, Callable, TextIO

from attrs import asdict, define, field

from ..garbage import collection_paused
from ..output import ascii_json, carries_unicode
from ..lock import FolderLock, Locked
from ..paths import HIDDEN_DIR, BadPath, normalize, printable
from ..reactors import IClientReactor
from ..wire import RemoteFile
from .api import BoxsyncAPI
from .connect import Connection, connect
from ..config import human_size
from .status import describe, facts
from .throttle import bucket

__all__ = [
    "JSONList",
    "LOCK_FILE",
    "NotInBox",
    "PAUSED_FILE",
    "PAUSE_SIGNAL",
    "box_path",
    "client_api",
    "listing",
    "ls",
    "pause",
    "paused",
    "status",
]

#: A paused folder has this file in its hidden folder.
PAUSED_FILE = "paused"

#: What tells a running client to look at whether it is paused.
PAUSE_SIGNAL = signal.SIGUSR1

#: The lock file of a synced folder, in its hidden folder: it names the pid
#: of the client running on it.
LOCK_FILE = "client.lock"


def paused(folder: Path) -> bool:
    """
    Whether syncing C{folder} is paused.
    """
    return (folder / HIDDEN_DIR / PAUSED_FILE).exists()


def pause(folder: Path, on: bool, out: TextIO) -> int:
    """
    Pause (C{on}) or resume syncing C{folder}, for the client running on it
    now (told at once) and for any started later.

    @raise FileNotFoundError: if the folder was never synced.
    """
    hidden = folder / HIDDEN_DIR
    if not hidden.is_dir():
        raise FileNotFoundError(f"{folder} is not a boxsync folder (no {HIDDEN_DIR}/)")
    mark = hidden / PAUSED_FILE
    if on:
        mark.touch()
    else:
        mark.unlink(missing_ok=True)
    word = "paused" if on else "resumed"
    try:
        # Only a client that holds the folder's lock is told: the pid in
        # the file of one that is gone may be another process's now.
        FolderLock.acquire(hidden / LOCK_FILE).release()
    except Locked as running:
        if running.pid is not None:
            os.kill(running.pid, PAUSE_SIGNAL)
            print(f"{folder}: {word} (client pid {running.pid})", file=out)
            return 0
    print(f"{folder}: {word} (no client is running on it now)", file=out)
    return 0


def status(options: Any, out: TextIO) -> int:
    """
    Print the status of C{options.folder}; 0 if it is in sync, 1 if not.

    @raise FileNotFoundError: if the folder was never synced.
    """
    if options.json:
        found = facts(options.folder.resolve())
        print(json.dumps(found, indent=1, sort_keys=True), file=out)
        return 0 if found["in_sync"] else 1
    lines, in_sync = describe(options.folder.resolve())
    for line in lines:
        print(line, file=out)
    return 0 if in_sync else 1


def listing(files: list[RemoteFile]) -> list[str]:
    """
    The lines of C{ls}: a table of path, size, who changed it last and when.
    """
    rows = [("PATH", "SIZE", "CHANGED BY", "MODIFIED")]
    for file in files:
        when = "" if file.mtime_ns is None else time.strftime(
            "%Y-%m-%d %H:%M", time.localtime(file.mtime_ns / 1e9)
        )
        rows.append((printable(file.path), human_size(file.size), printable(file.origin or "-"), when))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        f"{path:<{widths[0]}}  {size:>{widths[1]}}  {origin:<{widths[2]}}  {when}".rstrip()
        for path, size, origin, when in rows
    ]
    total = sum(file.size for file in files)
    lines.append(f"{len(files)} files, {human_size(total)}")
    return lines


def client_api(reactor: IClientReactor, connection: Connection, options: Any) -> BoxsyncAPI:
    """
    The API of C{options.server} over C{connection}, as the options set it
    up: the token, this client's name, the silence allowed, what a request
    that got no answer is checked for (a URL with the wrong scheme), the
    bandwidth limits.
    """
    return BoxsyncAPI(
        connection.http,
        reactor,
        options.server,
        options.token,
        options.name,
        idle_timeout=options.idle_timeout,
        diagnose=connection.check,
        up=bucket(reactor, options.limit_up),
        down=bucket(reactor, options.limit_down),
    )


class NotInBox(LookupError):
    """
    C{ls PATH} of a path that is neither a file nor a folder of the box.
    """


def box_path(given: str | None) -> str:
    """
    The wire path C{ls} is given (C{""}: the whole box), its slashes at
    either end dropped.

    @raise NotInBox: if it cannot be a path in the box.
    """
    path = (given or "").strip("/")
    if path in ("", "."):
        return ""
    try:
        return normalize(path)
    except BadPath as e:
        raise NotInBox(f"{given!r} is not a path in the box: {e}") from None


def _just_before(path: str) -> str:
    """
    A text that sorts (by its UTF-8 bytes, as the server sorts paths) just
    before C{path}: between the two lie only paths with the character
    U+10FFFF in them, never seen in a name. Listing after it starts at
    C{path}.
    """
    last = ord(path[-1]) - 1
    if 0xD800 <= last <= 0xDFFF:
        last = 0xD7FF  # no path holds a surrogate
    return f"{path[:-1]}{chr(last)}\U0010ffff"


async def _range(api: BoxsyncAPI, after: str, keep: Callable[[str], bool], page: int) -> list[RemoteFile]:
    """
    The files listed after C{after}, in path order, as long as C{keep}
    holds for their paths.
    """
    files: list[RemoteFile] = []
    while True:
        found = await api.list_files(after, page)
        kept = list(takewhile(lambda file: keep(file.path), found))
        files += kept
        if len(found) < page or len(kept) < len(found):
            return files
        after = found[-1].path


async def files_at(api: BoxsyncAPI, path: str, page: int = 1000) -> list[RemoteFile]:
    """
    The files of the box at C{path}: the file of that path, if there is one,
    and every file below it, in path order (C{""}: all of them). The files
    below a folder are one range of the listing (C{after=FOLDER/}), so only
    they are asked for.

    @raise NotInBox: if there is nothing at C{path}.
    """
    if not path:
        return await _range(api, "", lambda _: True, page)
    below = await _range(api, f"{path}/", lambda found: found.startswith(f"{path}/"), page)
    # The file itself sorts before the folder's range, after what is just
    # before it; paths in between (the character U+10FFFF) are passed over.
    itself = await _range(api, _just_before(path), lambda found: found <= path, 1)
    files = [file for file in itself if file.path == path] + below
    if not files:
        raise NotInBox(f"nothing in the box at {path}")
    return files


async def ls(reactor: IClientReactor, options: Any, out: TextIO, page: int = 1000) -> None:
    """
    Print what the box of C{options.server} holds at C{options.path} (a
    folder or a file; C{None}: all of it).

    @raise NotInBox: if there is nothing at that path.
    @raise APIError: if the server refuses.
    @raise ConnectionSettingsError: before connecting, if the server's URL or
        C{options.cacert} cannot be used.
    """
    path = box_path(options.path)
    connection = connect(reactor, options.server, options.cacert, options.insecure)
    api = client_api(reactor, connection, options)
    with collection_paused():
        try:
            files = await files_at(api, path, page)
        finally:
            await connection.close()
        if options.json:
            print_json_list([asdict(file) for file in files], out)
            return
        for line in listing(files):
            print(line, file=out)


def print_json_list(items: list[Any], out: TextIO) -> None:
    """
    Print C{items} as one JSON document, a list with an item a line: as easy
    to read as to parse, and quick for 100,000 items (an indented dump goes
    through Python's slow encoder).
    """
    print_json_lines([json.dumps(item, ensure_ascii=False) for item in items], out)


def print_json_lines(lines: list[str], out: TextIO) -> None:
    """
    Print C{lines}, each a JSON value, as one JSON document: a list with an
    item a line.
    """
    with JSONList(out) as listed:
        listed.add(lines)


@define
class JSONList:
    """
    One JSON document on C{out}, a list with an item a line, printed a page
    of items at a time (as a context manager: its brackets around them).
    """

    out: TextIO
    _items: int = 0
    _unicode: bool = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._unicode = carries_unicode(self.out)

    def __enter__(self) -> JSONList:
        self.out.write("[\n")
        return self

    def add(self, lines: list[str]) -> None:
        """
        Print C{lines}, each a JSON value, as the next items.
        """
        if lines:
            if not self._unicode:
                lines = [ascii_json(line) for line in lines]
            self.out.write((",\n" if self._items else "") + ",\n".join(lines))
            self._items += len(lines)

    def __exit__(self, failed: type[BaseException] | None, *details: object) -> None:
        # A list cut short by a failure is left unclosed: not valid JSON, so
        # that no reader takes it for the whole list.
        if failed is None:
            self.out.write("\n]\n")
