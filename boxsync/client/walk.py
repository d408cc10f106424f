"""
What in a synced folder is synced: its regular files and folders, by wire
path. Links, other special files and names the wire cannot carry are passed
over, each with the reason (L{Skipped}); ignored paths and the hidden folder
are left out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from attrs import frozen

from ..paths import HIDDEN_DIR, BadPath, normalize
from .ignore import IgnoreRules

__all__ = ["Skipped", "walk", "wire_path"]


def wire_path(relative: str) -> str:
    """
    The wire path of a file, given by its path relative to the folder, with
    C{/} between segments.

    A name the wire cannot carry as it is, including one not in NFC form
    (the file could not be found again under the normalised name), is
    refused.

    @raise BadPath: if the path is not acceptable.
    """
    path = normalize(relative)
    if path != relative:
        raise BadPath(f"{relative!r} is not in NFC form")
    return path


@frozen
class Skipped:
    """
    Something in the folder that is not synced although no rule ignores it.

    @ivar path: its path relative to the folder (not always a wire path).
    @ivar reason: why it is skipped.
    @ivar unreadable: whether it could not be read (rather than it being
        something boxsync does not sync): what has a base at or below it is
        then not taken as deleted.
    """

    path: str
    reason: str
    unreadable: bool = False


def walk(
    root: Path,
    ignore: IgnoreRules,
    top: str = "",
    skipped: list[Skipped] | None = None,
    empty: set[str] | None = None,
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """
    The regular files and directories below C{root/top} that are synced, with
    their wire paths, depth first.

    A directory is yielded before it is listed, so a caller may act on it
    first (the watcher watches it). Symbolic links, other special files and
    names the wire cannot carry go to C{skipped}; ignored paths and the
    hidden folder are left out silently, and so is a directory below C{top}
    that vanishes while it is walked.

    @param top: the wire path of the directory to walk (C{""}: all of
        C{root}); it is not yielded itself.
    @param empty: gets the directories below C{top} that hold nothing at
        all (not even what is ignored or skipped) when they are listed.
    @raise OSError: if C{top} cannot be listed (a folder that is not there
        is not an empty folder).
    """
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(root / directory if directory else root) as entries:
                listed = 0
                for listed, entry in enumerate(entries, start=1):
                    found = _classify(directory, entry, ignore, skipped)
                    if found is None:
                        continue
                    yield found, entry
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(found)
                if not listed and directory != top and empty is not None:
                    empty.add(directory)
        except OSError as e:
            if directory == top:
                raise
            if skipped is not None and not isinstance(e, FileNotFoundError):
                skipped.append(
                    Skipped(directory, f"cannot list: {e.strerror}", unreadable=True)
                )


def _classify(
    directory: str,
    entry: os.DirEntry[str],
    ignore: IgnoreRules,
    skipped: list[Skipped] | None,
) -> str | None:
    """
    The wire path of C{entry} if it is a synced file or directory.
    """
    relative = f"{directory}/{entry.name}" if directory else entry.name
    if relative == HIDDEN_DIR:
        return None
    reason = None
    try:
        path = wire_path(relative)
    except BadPath as e:
        reason = str(e)
    else:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if entry.is_symlink():
                reason = "symbolic link"
            elif not is_dir and not entry.is_file(follow_symlinks=False):
                reason = "not a regular file"
        except OSError:
            return None
        if reason is None:
            return None if ignore.ignored(path, is_dir) else path
    if skipped is not None and not ignore.ignored(relative):
        skipped.append(Skipped(relative, reason))
    return None
