"""
What in a synced folder is synced: its regular files and folders, by wire
path (the NFC form of their names here). Links, other special files, names
the wire cannot carry and names that have the same wire path as another
(they differ only in their Unicode normalisation) are passed over, each
with the reason (L{Skipped}); so is the hidden folder of a folder synced on
its own inside this one (its state, written all the time, is that client's
alone: sent to the box, it would land on that folder's other copies, over
their state). Ignored paths and this folder's own hidden folder are left
out.
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from pathlib import Path
from typing import Iterator

from attrs import frozen

from ..fs import kind_not_synced
from ..paths import CLIENT_STATE_FILE, HIDDEN_DIR, BadPath, a_box, child, normalize, preferred, to_local
from .ignore import IgnoreRules
from .state import same_box

__all__ = ["NESTED_BOX", "NESTED_FOLDER", "NESTED_SAME_BOX", "Skipped", "passed_over", "walk", "wire_path"]

#: Why the hidden folder of a folder synced on its own inside this one is
#: not synced.
NESTED_FOLDER = f"the {HIDDEN_DIR}/ of a folder synced on its own inside this one"

#: Why a folder synced on its own with this folder's box, inside this
#: folder, is not synced: its files are the box's already, and would come
#: back into it, a level deeper at each turn.
NESTED_SAME_BOX = "a folder synced on its own with this same box (its files would come back into it, deeper each time)"

#: What a folder synced on its own has, below it.
_FOLDER_MARK = f"/{HIDDEN_DIR}/{CLIENT_STATE_FILE}"

#: Why a server's box inside this folder is not synced: its files would
#: come back into it, one level deeper at each turn, if it is this
#: client's server's.
NESTED_BOX = "a boxsync server's box (its server's files, not this folder's)"



def wire_path(relative: str) -> str:
    """
    The wire path of a file, given by its path relative to the folder, with
    C{/} between segments: its NFC form.

    @raise BadPath: if the path is not acceptable.
    """
    return normalize(relative)


def passed_over(local: Path) -> str | None:
    """
    Why what is at C{local} now is not synced for its kind (a link, a FIFO,
    a device...); C{None} if it is a regular file or a directory, or if
    there is nothing there.
    """
    try:
        mode = os.lstat(local).st_mode
    except OSError:
        return None
    return kind_not_synced(stat.S_ISLNK(mode), stat.S_ISDIR(mode), stat.S_ISREG(mode))


def _nfc(name: str) -> str:
    return name if name.isascii() else unicodedata.normalize("NFC", name)


@frozen
class Skipped:
    """
    Something in the folder that is not synced although no rule ignores it.

    @ivar path: its path relative to the folder, as the folder has it (not
        always a wire path).
    @ivar reason: why it is skipped.
    @ivar covers: whether what has a base at or below it is not taken as
        deleted: it could not be read, or it stands where synced files were
        (a link or a FIFO put in a file's or a folder's place, a box): the
        box keeps their versions.
    """

    path: str
    reason: str
    covers: bool = False


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
    first (the watcher watches it). Symbolic links, other special files,
    names the wire cannot carry and all but one (L{preferred}) of the names
    that have the same wire path go to C{skipped}; ignored paths and the
    hidden folder are left out silently, and so is a directory below C{top}
    that vanishes while it is walked.

    @param top: the wire path of the directory to walk (C{""}: all of
        C{root}); it is not yielded itself.
    @param empty: gets the directories below C{top} that hold nothing at
        all (not even what is ignored or skipped) when they are listed.
    @raise OSError: if C{top} cannot be listed (a folder that is not there
        is not an empty folder).
    """
    try:
        here = os.path.relpath(to_local(root, top), root) if top else ""
    except BadPath as e:
        raise NotADirectoryError(errno.ENOTDIR, str(e), top) from None
    # Each directory by its wire path and by its path here.
    stack = [(top, here)]
    while stack:
        directory, local = stack.pop()
        try:
            with os.scandir(root / local if local else root) as listing:
                entries = list(listing)
        except OSError as e:
            if directory == top:
                raise
            if skipped is not None and not isinstance(e, FileNotFoundError):
                skipped.append(Skipped(local, f"cannot list: {e.strerror}", covers=True))
            continue
        if directory and directory == top and ignore.ignored(top, True):
            # What is below is checked by its own name only.
            return
        if not entries and directory != top and empty is not None:
            empty.add(directory)
        same: dict[str, list[str]] = {}
        for entry in entries:
            same.setdefault(_nfc(entry.name), []).append(entry.name)
        for entry in entries:
            names = same[_nfc(entry.name)]
            kept = preferred(names) if len(names) > 1 else None
            found = _classify(root, directory, local, entry, kept, ignore, skipped)
            if found is None:
                continue
            yield found, entry
            if entry.is_dir(follow_symlinks=False):
                stack.append((found, f"{local}/{entry.name}" if local else entry.name))


def _classify(
    root: Path,
    directory: str,
    local: str,
    entry: os.DirEntry[str],
    kept: str | None,
    ignore: IgnoreRules,
    skipped: list[Skipped] | None,
) -> str | None:
    """
    The wire path of C{entry}, in the directory whose wire path is
    C{directory} and whose path here is C{local}, if it is a synced file or
    directory.

    @param kept: of the names in the directory that have the same wire path
        as C{entry}'s, the one synced; C{None} if there are no others.
    """
    relative = f"{local}/{entry.name}" if local else entry.name
    if relative == HIDDEN_DIR:
        return None
    reason = None
    # What stands in a place of synced files (a link, a FIFO) leaves them
    # in the box; a name the wire cannot carry, or a second form of one,
    # never was synced.
    in_place = False
    try:
        path = child(directory, entry.name)
    except BadPath as e:
        reason = str(e)
        path = relative
    else:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if kept is not None and entry.name != kept:
                other = f"{local}/{kept}" if local else kept
                reason = (
                    f"conflict: {other} has the same name on the wire "
                    "(the two differ only in Unicode normalisation)"
                )
            else:
                reason = kind_not_synced(entry.is_symlink(), is_dir, entry.is_file(follow_symlinks=False))
                in_place = True
        except OSError:
            return None
        if reason is None and is_dir and entry.name == HIDDEN_DIR:
            # Another client's own data: never this folder's to sync.
            if skipped is not None:
                skipped.append(Skipped(relative, NESTED_FOLDER))
            return None
        if reason is None and is_dir and a_box(entry.path) is not None:
            # Not watched, not walked: nothing below it is looked at, nor
            # taken for deleted.
            if skipped is not None:
                skipped.append(Skipped(relative, NESTED_BOX, covers=True))
            return None
        if reason is None and is_dir and os.path.lexists(entry.path + _FOLDER_MARK) and same_box(root, entry.path):
            # As a box inside; one synced with another box is this
            # folder's too (each client brings the other's changes).
            if skipped is not None:
                skipped.append(Skipped(relative, NESTED_SAME_BOX, covers=True))
            return None
        if reason is None:
            if not ignore.ignored_in_synced(path, entry.name, is_dir):
                return path
            if skipped is not None:
                by_default = ignore.by_default(path, is_dir)
                if by_default is not None:
                    skipped.append(Skipped(relative, by_default))
            return None
    if skipped is not None and not ignore.ignored(path):
        skipped.append(Skipped(relative, reason, covers=in_place))
    return None
