"""
The commands of C{boxsync-client} other than syncing: C{status} (what a
folder's client is doing) and C{ls} (what the box holds).
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from .api import BoxsyncAPI, RemoteFile
from .connect import connect
from .status import describe, human_size

__all__ = ["listing", "ls", "status"]


def status(options: Any, out: TextIO) -> int:
    """
    Print the status of C{options.folder}; 0 if it is in sync, 1 if not.

    @raise FileNotFoundError: if the folder was never synced.
    """
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
        rows.append((file.path, human_size(file.size), file.origin or "-", when))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        f"{path:<{widths[0]}}  {size:>{widths[1]}}  {origin:<{widths[2]}}  {when}".rstrip()
        for path, size, origin, when in rows
    ]
    total = sum(file.size for file in files)
    lines.append(f"{len(files)} files, {human_size(total)}")
    return lines


async def ls(reactor: Any, options: Any, out: TextIO, page: int = 1000) -> None:
    """
    Print what the box of C{options.server} holds.

    @raise APIError: if the server refuses.
    @raise ConnectionSettingsError: before connecting, if the server's URL or
        C{options.cacert} cannot be used.
    """
    connection = connect(reactor, options.server, options.cacert, options.insecure)
    api = BoxsyncAPI(
        connection.http,
        reactor,
        options.server,
        options.token,
        options.name,
        idle_timeout=options.idle_timeout,
    )
    files: list[RemoteFile] = []
    try:
        while True:
            found = await api.list_files(files[-1].path if files else "", page)
            files += found
            if len(found) < page:
                break
    finally:
        await connection.close()
    for line in listing(files):
        print(line, file=out)
