"""
Where the client puts files in its folder: a verified download given its
mtime and mode and moved into place in one atomic step that never
overwrites an edit it has not seen, a file made executable (or not) in
place, the base recorded for either, the name a conflicting copy is kept
under, and the unfinished downloads that are kept for resuming (and for how
long).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from pathlib import Path

from ..fs import CANNOT, copy_range, exchange, is_executable, make_parents, mode_for, move_new, mtime_ns
from ..paths import MAX_PATH_BYTES, MAX_SEGMENT_BYTES
from ..writer import write_all
from .ignore import TEMP_PREFIX
from .scanner import LocalFile, stat_key
from .state import UNKNOWN_CTIME, Base

__all__ = [
    "SET_ASIDE_SECONDS",
    "TMP_DAYS",
    "conflict_name",
    "copy_beside",
    "placed_base",
    "prepare",
    "remove_older",
    "set_aside",
    "set_aside_path",
    "path_tag",
    "remove_set_aside",
    "set_executable",
    "swap",
]


#: The longest extension a conflict name keeps after its tag, in bytes; a
#: longer "extension" is part of the name.
_LONGEST_SUFFIX = 32
#: The most of a client's name a conflict name carries.
_LONGEST_CLIENT = 40


def conflict_name(path: str, client: str, when: float) -> str:
    """
    The name a conflicting local copy of C{path} is kept under, e.g.
    C{notes.conflict-laptop-20261124-101500.txt}; a long name is cut short
    before its tag, so that the name stays within L{MAX_SEGMENT_BYTES} and
    the path within L{MAX_PATH_BYTES}.
    """
    folder, slash, name = path.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    if not stem or len(suffix.encode()) > _LONGEST_SUFFIX:
        # No extension (or a dot file such as .bashrc), or not one.
        stem, dot, suffix = name, "", ""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    client = "".join(c if c.isalnum() or c in "-_" else "_" for c in client[:_LONGEST_CLIENT]) or "client"
    tag = f".conflict-{client}-{stamp}"
    kept = len(tag.encode()) + len(f"{dot}{suffix}".encode())
    room = min(MAX_SEGMENT_BYTES, MAX_PATH_BYTES - len(f"{folder}{slash}".encode())) - kept
    stem = stem.encode()[: max(room, 1)].decode(errors="ignore")
    return f"{folder}{slash}{stem}{tag}{dot}{suffix}"


def copy_beside(temp: Path, target: Path, root: Path) -> Path:
    """
    Copy a download C{temp}, in the client's hidden folder, beside
    C{target} (below C{root}, which has the folders it needs made if
    missing), with its mode, made durable, and remove it: for a C{target}
    on another file system (a disk mounted inside the synced folder), which
    a rename cannot reach. The copy has the name of a temporary file of the
    client's (never synced).

    @return: the copy.
    """
    make_parents(root, target)
    copy = target.parent / f"{TEMP_PREFIX}{os.urandom(8).hex()}"
    with open(temp, "rb") as source:
        st = os.fstat(source.fileno())
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(st.st_mode))
        try:
            if not copy_range(source.fileno(), 0, fd, 0, st.st_size):
                # Not in the kernel between these file systems.
                os.ftruncate(fd, 0)
                while chunk := source.read(1 << 20):
                    write_all(fd, [chunk])
            os.fsync(fd)
        except BaseException:
            os.unlink(copy)
            raise
        finally:
            os.close(fd)
    os.unlink(temp)
    return copy


def prepare(temp: Path, mtime_ns: int, executable: bool | None, placed: os.stat_result | None) -> os.stat_result:
    """
    Give the verified download C{temp} its mtime and mode before it is moved
    into place.

    @param executable: whether it is to be executable (L{mode_for}); C{None}:
        as it was made (under the umask).
    @param placed: its stat once it has its mtime, if the download gave it
        already (C{None}: not yet).
    @return: its stat once it has both.
    """
    if placed is None:
        os.utime(temp, ns=(mtime_ns, mtime_ns))
        placed = os.stat(temp)
    if executable is None or is_executable(placed.st_mode) == executable:
        return placed
    return set_executable(temp, executable, placed)


def set_executable(local: Path, executable: bool, st: os.stat_result | None = None) -> os.stat_result:
    """
    Make the file at C{local} executable or not, as L{mode_for} says, and
    return its stat then.

    @param st: its stat now, if known.
    """
    mode = (st or os.stat(local, follow_symlinks=False)).st_mode
    try:
        os.chmod(local, mode_for(mode, executable), follow_symlinks=False)
    except NotImplementedError:
        # What Linux answers for a link: never followed.
        raise OSError(errno.ELOOP, "a link, not a file", str(local)) from None
    return os.stat(local, follow_symlinks=False)


def placed_base(target: Path, path: str, sha256: str, placed: os.stat_result, seq: int) -> Base:
    """
    The base of a download just moved to C{target}, whose stat before the
    move was C{placed}.

    The move sets the file's ctime: it is taken from the file now if its
    inode, size and mtime show it is still the one placed. Otherwise (or if
    it cannot be looked at) the ctime is left unknown, and the next look
    reads the file. A download's mtime is the version's, not the clock's,
    so an edit in the same clock tick would still move it: the stamps are
    not racy.
    """
    ctime_ns = UNKNOWN_CTIME
    try:
        now = os.lstat(target)
    except OSError:
        pass
    else:
        if stat_key(now)[:3] == stat_key(placed)[:3]:
            ctime_ns = now.st_ctime_ns
    return Base(
        path,
        sha256,
        placed.st_size,
        mtime_ns(placed),
        placed.st_ino,
        seq,
        ctime_ns,
        is_executable(placed.st_mode),
    )



def swap(temp: Path, target: Path, seen: LocalFile | None, root: Path) -> Path | None:
    """
    Put the file C{temp} at C{target} (below C{root}, which has the folders
    it needs made if missing) in one atomic step, taking out of the
    way whatever is there: C{seen}, what the last look found there (C{None}:
    nothing), or a file saved there since.

    @return: the name (C{temp}'s) of the file taken out of the way, if it is
        not C{seen} unchanged: an edit to keep. C{None} otherwise.
    @raise FileExistsError: if C{seen} is C{None} and there is a file or a
        folder now, or if C{seen} is no longer what is there. (A link or a
        special file there is taken out of the way like an edit.)
    """
    if seen is None:
        try:
            move_new(temp, target, root)
        except FileExistsError:
            mode = os.lstat(target).st_mode
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                raise
            # A link or a special file (a FIFO, a socket): never synced, but
            # the user's all the same. Taken out of the way, not replaced.
            return _aside(temp, target)
        except OSError:
            os.replace(temp, target)  # no hard links on this file system
        return None
    if not seen.is_still(target):
        # Changed since the look (perhaps with its mtime set back, which
        # only the ctime shows, and the swap would move): look again.
        raise FileExistsError(errno.EEXIST, "changed since it was looked at", str(target))
    try:
        exchange(temp, target)
    except FileNotFoundError:
        return swap(temp, target, None, root)  # gone since the look
    except OSError as e:
        if e.errno not in CANNOT:
            raise
        os.replace(temp, target)  # cannot swap here: the look must do
        return None
    if seen.is_still(temp, renamed=True):
        os.unlink(temp)
        return None
    return temp



#: How many days an unfinished download is kept for resuming.
TMP_DAYS = 7


def remove_older(folder: Path, before: float) -> list[str]:
    """
    Remove the files of C{folder} last written before C{before}: unfinished
    downloads of versions that were superseded, or of paths since deleted.

    @return: the names of the files left.
    """
    kept = []
    for entry in os.scandir(folder):
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < before:
                os.unlink(entry.path)
            else:
                kept.append(entry.name)
        except FileNotFoundError:
            pass
    return kept


#: How long a file deleted by another client is set aside, in case
#: the same content comes back under another name (a rename there).
SET_ASIDE_SECONDS = 600


def path_tag(path: str) -> str:
    """
    The tag of a box path in the names of temporary files: a download of
    it, the blocks of it fetched ahead.
    """
    return hashlib.sha256(path.encode()).hexdigest()[:16]


def set_aside_path(tmp: Path, sha256: str) -> Path:
    """
    Where a deleted file with the content C{sha256} is set aside in C{tmp}.
    """
    return tmp / f"del-{sha256[:32]}"


def set_aside(local: Path, tmp: Path, sha256: str) -> bool:
    """
    Take the file C{local}, whose content has the sha256 C{sha256}, out of
    the folder into C{tmp} for L{SET_ASIDE_SECONDS} (see
    L{remove_set_aside}): a rename elsewhere arrives as a delete and a new
    file with the same content, which is then taken from here instead of
    sent again. A file on another file system than C{tmp} (a disk mounted
    inside the synced folder), which a rename cannot take there, is
    removed instead.

    @return: whether it was set aside.
    """
    try:
        os.replace(local, set_aside_path(tmp, sha256))
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        os.unlink(local)
        return False
    return True


def remove_set_aside(tmp: Path, seconds: float = SET_ASIDE_SECONDS) -> None:
    """
    Remove the files set aside in C{tmp} over C{seconds} ago.
    """
    before = time.time() - seconds
    for entry in os.scandir(tmp):
        try:
            # The move set its ctime: when it was set aside.
            if entry.name.startswith("del-") and entry.stat(follow_symlinks=False).st_ctime < before:
                os.unlink(entry.path)
        except FileNotFoundError:
            pass


def _aside(temp: Path, target: Path) -> Path:
    """
    Put C{temp} at C{target} in place of the link or special file there,
    which is kept under C{temp}'s name (swapped in one step where the file
    system can) or beside it.

    @return: where that link or special file is now.
    """
    try:
        exchange(temp, target)
        return temp
    except OSError as e:
        if e.errno not in CANNOT:
            raise
    aside = temp.with_name(temp.name + ".aside")
    os.rename(target, aside)
    move_new(temp, target, target.parent)
    return aside
