"""
What a synced folder holds now, compared with the state of the last sync.

A scan walks the folder and, for every file, tells its sha256, whether it is
executable, and whether either changed since its base. It reads a file only
when its stamps (size, mtime, inode, ctime and executable bit) differ from
those recorded with the base, so a scan of an unchanged folder costs one
C{stat} per file; a file whose mode alone changed is read (its ctime moved)
and found to be the same bytes, made executable or not. The ctime is what makes this
safe: an edit whose mtime is set back (C{cp -p}, C{rsync -t}, C{tar x}) still
moves it, and no tool can set it back. A base recorded from stamps too close
to the moment they were read is not trusted (git's "racy clean" rule: a
write in the same clock tick would leave them as they are). The scan is the truth about the folder; the
watcher only hints at what to look at between scans.

Everything here is synchronous and blocking: the engine runs it in a thread.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import unicodedata
from enum import Enum
from pathlib import Path
from typing import Callable, Container, Iterable, Mapping, TypeVar

from attrs import evolve, field, frozen
from twisted.logger import Logger

from .. import fs
from ..blocks import Recipe, holds, recipe_of
from ..paths import BadPath, folders_above, to_local
from ..wire import EXECUTABLE_FEATURE, FOLDERS_FEATURE, INCOMING_FEATURE, DeletedEntry, FileEntry, FolderEntry, Manifest
from .ignore import IgnoreRules
from .walk import Skipped, walk
from .state import UNKNOWN_CTIME, Base, Stamps

_T = TypeVar("_T")

__all__ = [
    "FileChanging",
    "Here",
    "LocalFile",
    "RACY_NS",
    "READS",
    "ReadElsewhere",
    "SETTLED_NS",
    "ScanResult",
    "StatKey",
    "changed_since",
    "is_racy",
    "holds_nothing",
    "look_here",
    "moved_here",
    "moved",
    "renamed_from",
    "scan",
    "scan_one",
    "stat_key",
    "unchanged",
]

log = Logger()

#: What this client reads on its event stream beyond the first protocol.
READS = frozenset({EXECUTABLE_FEATURE, FOLDERS_FEATURE, INCOMING_FEATURE})

#: How many times a file that changes while it is hashed is hashed again.
_ATTEMPTS = 3

#: How long ago a file must have been last written for it to be sent
#: unhashed (see C{unhashed_over} in L{scan}): a fresher one may still be
#: being written, and hashing it first waits until it is not.
SETTLED_NS = 1_000_000_000

#: How close to the moment they were read a file's mtime or ctime may be
#: for its stamps not to be trusted in a base: a coarse file system clock
#: (one tick of 1-10 ms on Linux) gives a write in the same tick the same
#: stamps. Such a file is read again at its next look.
RACY_NS = 50_000_000

#: A file's size, mtime, inode and ctime (ns), and whether it is executable:
#: if none changed, its bytes did not, nor its mode.
StatKey = tuple[int, int, int, int, bool]


class FileChanging(Exception):
    """
    A file kept changing while it was being hashed.
    """


class ReadElsewhere(Exception):
    """
    A file must be read to be compared with its base, and it is larger than
    the caller wants to read where it is (the reactor's thread).
    """


def stat_key(st: os.stat_result) -> StatKey:
    """
    The L{StatKey} of a file's C{stat}.
    """
    return (st.st_size, fs.mtime_ns(st), st.st_ino, st.st_ctime_ns, fs.is_executable(st.st_mode))


def changed_since(base: Base | None, sha256: str | None, executable: bool) -> bool:
    """
    Whether a file of C{sha256} (C{None}: not hashed), executable or not, is
    another version than C{base} (C{None}: it has no base).
    """
    return base is None or sha256 != base.sha256 or executable != base.executable


def is_racy(st: os.stat_result, now_ns: int) -> bool:
    """
    Whether the stamps of C{st}, read at C{now_ns}, are too fresh to be
    trusted later (see L{RACY_NS}).
    """
    # An mtime ahead of the clock was set so (a file dated tomorrow would
    # be read at every look until then): the ctime, which the kernel sets
    # to its clock at that change and at every write, says enough.
    written = st.st_mtime_ns if st.st_mtime_ns <= now_ns else st.st_ctime_ns
    return now_ns - max(written, st.st_ctime_ns) < RACY_NS


def _matches(key: StatKey, base: Base) -> bool:
    """
    Whether C{key} is the L{stat_key} C{base} recorded: the file is taken to
    be unchanged since.
    """
    return key == (base.size, base.mtime_ns, base.inode, base.ctime_ns, base.executable)


def unchanged(root: Path, path: str, base: Base) -> bool:
    """
    Whether the file at C{path} is, by its C{lstat} alone, the very file
    C{base} recorded (e.g. one this client has just placed, reported by the
    folder watcher). The parents are not checked: a match is the same file.
    """
    try:
        st = os.lstat(os.path.join(root, path))
    except FileNotFoundError:
        # Perhaps its name here is in another form than the wire's.
        try:
            st = os.lstat(to_local(root, path))
        except (OSError, BadPath):
            return False
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and _matches(stat_key(st), base)


@frozen
class LocalFile:
    """
    A file in the folder as the scan found it.

    @ivar sha256: C{None} for a new file left unread (see C{unhashed_over}
        in L{scan}): it is hashed as it is uploaded.
    @ivar base: the seq of the base (0 if the file has none).
    @ivar changed: whether the file differs from its base, in its bytes or
        in being executable.
    @ivar data: the bytes hashed, for a small file read on the reactor's
        thread (L{scan_one} with C{max_read}); else C{None}.
    @ivar racy: whether the stamps were too fresh when the file was read
        to be trusted in a base (L{is_racy}).
    @ivar executable: whether it is executable (L{fs.is_executable}).
    @ivar moved_from: the base of the path this file was renamed from (see
        L{moved_here}), whose sha256 it is taken to have without being
        read; C{None} if it was not.
    @ivar recipe: its blocks, if they were cut as it was hashed (see
        C{cut_over} in L{scan}); else C{None}.
    @ivar links: how many names the file has (hard links), as it was read
        (1 if it was not).
    """

    path: str
    sha256: str | None
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int
    base: int
    changed: bool
    data: bytes | None = field(default=None, eq=False, repr=False)
    racy: bool = field(default=False, eq=False)
    executable: bool = False
    moved_from: Base | None = field(default=None, eq=False)
    recipe: Recipe | None = field(default=None, eq=False, repr=False)
    links: int = field(default=1, eq=False)

    def to_entry(self) -> FileEntry:
        """
        The file's line in a manifest.
        """
        return FileEntry(
            self.path, self.sha256, self.size, self.mtime_ns, self.base, self.changed, self.executable
        )

    def as_base(self, seq: int, sha256: str | None = None) -> Base:
        """
        The base to record once this file is known to be version C{seq}
        (whose sha256 is C{sha256}, if this file was not hashed). Racy
        stamps are recorded with an unknown ctime: the next look reads the
        file again.
        """
        digest = self.sha256 or sha256
        if digest is None:
            raise ValueError(f"{self.path} was not hashed")
        ctime_ns = UNKNOWN_CTIME if self.racy else self.ctime_ns
        return Base(self.path, digest, self.size, self.mtime_ns, self.inode, seq, ctime_ns, self.executable)

    @property
    def stamps(self) -> StatKey:
        return (self.size, self.mtime_ns, self.inode, self.ctime_ns, self.executable)

    def is_still(self, local: str | Path, renamed: bool = False) -> bool:
        """
        Whether the file at C{local} has the stat this file was found with:
        then its bytes are the same.

        @param renamed: the file was renamed since (which moves its ctime):
            compare its other stamps only.
        """
        try:
            st = os.stat(local, follow_symlinks=False)
        except (OSError, ValueError):
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        if renamed:
            return stat_key(st)[:3] == self.stamps[:3]
        return stat_key(st) == self.stamps


class Here(Enum):
    """
    What a path of the folder holds now, as far as folders go.
    """

    NOTHING = "nothing"
    EMPTY = "an empty folder"
    FOLDER = "a folder"
    FILE = "a file"
    OTHER = "a link or a special file"


def look_here(root: Path, path: str, folders: dict[str, str] | None = None) -> Here:
    """
    What the wire path C{path} below C{root} holds now (C{NOTHING} if it
    cannot be reached without going through a link or a file).

    @param folders: as for L{to_local}.
    """
    try:
        local = to_local(root, path, folders)
        st = os.lstat(local)
    except (BadPath, FileNotFoundError, NotADirectoryError):
        return Here.NOTHING
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(local) as entries:
                return Here.FOLDER if next(entries, None) is not None else Here.EMPTY
        except FileNotFoundError:
            return Here.NOTHING
    return Here.FILE if stat.S_ISREG(st.st_mode) else Here.OTHER


@frozen
class ScanResult:
    """
    The outcome of a scan.

    @ivar files: every file found, by path (but those counted in
        C{unchanged}).
    @ivar unchanged: how many files were found unchanged by their stamps
        alone and left out of C{files} (a scan given the bases' L{Stamps}).
    @ivar folders: every folder synced as a folder of its own (see
        C{docs/protocol.md}, "Folders"), by path, with the seq of its base:
        one with a base, or a new one (seq 0) with nothing at all in it.
    @ivar deleted: the paths with a base that are no longer what the base
        is of (a file, a folder), with the seq of their base.
    @ivar skipped: what was passed over, and why.
    @ivar refreshed: the bases of files that were read again because their
        stat changed, and found identical to the base: record them so the
        next scan does not read them again.
    """

    files: dict[str, LocalFile]
    deleted: tuple[DeletedEntry, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    refreshed: tuple[Base, ...] = ()
    folders: dict[str, int] = field(factory=dict)
    unchanged: int = 0

    def to_manifest(self, client: str, cursor: int, only_changed: bool) -> Manifest:
        """
        The manifest to open an event stream with.

        @param only_changed: list only the files that changed or were never
            synced (enough once the server has seen C{cursor}); otherwise
            list every file (which a scan that left out the unchanged
            files cannot).
        """
        if not only_changed and self.unchanged:
            raise ValueError("every file is wanted, but the scan left out the unchanged ones")
        files = tuple(
            f.to_entry()
            for f in self.files.values()
            if not only_changed or f.changed or f.base == 0
        )
        folders = tuple(
            FolderEntry(path, seq) for path, seq in self.folders.items() if not only_changed or seq == 0
        )
        return Manifest(
            client=client, cursor=cursor, files=files, deleted=self.deleted, features=READS, folders=folders
        )


def _stable(local: str | Path, read: Callable[[str | Path], tuple[_T, int]]) -> tuple[_T, os.stat_result]:
    """
    Read a file with C{read} (which gives what it made of the bytes and how
    many it read) and check it did not change meanwhile.

    @return: what C{read} made, and a C{stat} that matches the bytes read.
    @raise FileChanging: if it changed during every attempt.
    @raise OSError: if it cannot be read (C{FileNotFoundError}: it is gone).
    """
    for _ in range(_ATTEMPTS):
        before = os.stat(local, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            raise FileNotFoundError(f"{local} is no longer a regular file")
        result, size = read(local)
        after = os.stat(local, follow_symlinks=False)
        if stat_key(before) == stat_key(after) and size == after.st_size:
            return result, after
    raise FileChanging(f"{local} changes while it is read")


def _hash_stable(local: str | Path) -> tuple[str, os.stat_result]:
    """
    Hash a file (see L{_stable}).
    """
    return _stable(local, fs.hash_file)


def _holds(local: str | Path, recipe: Recipe) -> tuple[bool, int]:
    fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return holds(fd, recipe), os.fstat(fd).st_size
    finally:
        os.close(fd)


def _cut(local: str | Path) -> tuple[Recipe, int]:
    recipe = recipe_of(local)
    return recipe, recipe.size


def _read_whole(local: str | Path) -> tuple[bytes, int]:
    with open(local, "rb") as f:
        data = f.read()
    return data, len(data)


def _unchanged(path: str, key: StatKey, base: Base) -> LocalFile:
    """
    The file at C{path}, whose stamps C{key} are those C{base} recorded.
    """
    size, mtime_ns, inode, ctime_ns, executable = key
    return LocalFile(path, base.sha256, size, mtime_ns, inode, ctime_ns, base.seq, False, None, False, executable)


def _examine(
    local: str | Path,
    path: str,
    st: os.stat_result,
    base: Base | None,
    max_read: int | None = None,
    unhashed_over: int | None = None,
    cut_over: int | None = None,
) -> tuple[LocalFile, bool]:
    """
    Compare a file with its base, reading it only if its stat changed.

    @param max_read: the largest file to read (C{None}: any).
    @param unhashed_over: a file with no base larger than this, last
        written over L{SETTLED_NS} ago, is not read (C{None}: every file
        is): it is new, whatever its bytes.
    @param cut_over: a file larger than this that must be read is cut into
        its blocks as it is hashed, in the same read (L{LocalFile.recipe}),
        so an upload of it need not read it all again (C{None}: none is).
    @return: the file, and whether it was read and found identical to its
        base (whose stat should then be refreshed).
    @raise ReadElsewhere: if it must be read and is larger than C{max_read}.
    """
    key = stat_key(st)
    if base is not None and _matches(key, base):
        return _unchanged(path, key, base), False
    seq = base.seq if base is not None else 0
    data = None
    recipe = None
    sha256: str | None
    racy = False
    if (
        base is None
        and unhashed_over is not None
        and st.st_size > unhashed_over
        and time.time_ns() - fs.mtime_ns(st) >= SETTLED_NS
    ):
        sha256, changed, refreshed = None, True, False
        racy = is_racy(st, time.time_ns())
    else:
        if max_read is None and cut_over is not None and st.st_size > cut_over:
            recipe, st = _stable(local, _cut)
            sha256 = recipe.sha256
        elif max_read is None:
            sha256, st = _hash_stable(local)
        elif st.st_size > max_read:
            raise ReadElsewhere(path)
        else:
            # Small: its bytes are kept, and an upload sends what was hashed.
            data, st = _stable(local, _read_whole)
            sha256 = hashlib.sha256(data).hexdigest()
        changed = changed_since(base, sha256, fs.is_executable(st.st_mode))
        racy = is_racy(st, time.time_ns())
        # A racy file found identical is left to be read again next time.
        refreshed = not changed and not racy
        key = stat_key(st)
    size, mtime_ns, inode, ctime_ns, executable = key
    found = LocalFile(
        path, sha256, size, mtime_ns, inode, ctime_ns, seq, changed, data, racy, executable, recipe=recipe,
        links=st.st_nlink,
    )
    return found, refreshed


#: What identifies a file across a rename: its size, mtime, inode and
#: whether it is executable (a rename moves its ctime).
_Identity = tuple[int, int, int, bool]


def _identities(bases: Iterable[Base]) -> dict[_Identity, Base | None]:
    """
    The bases a renamed file can be recognised by (see L{moved_here}), by
    the identity their file had (C{None}: several had it).
    """
    found: dict[_Identity, Base | None] = {}
    for base in bases:
        if base.folder or base.ctime_ns == UNKNOWN_CTIME or not base.size:
            continue
        key = (base.size, base.mtime_ns, base.inode, base.executable)
        found[key] = None if key in found else base
    return found


def moved_here(root: Path, path: str, st: os.stat_result, bases: Mapping[_Identity, Base | None]) -> Base | None:
    """
    The base of the path the file at C{path} (whose stat is C{st}) was
    renamed from, if it was: a file with no base of its own whose size,
    mtime, inode and executable bit are those a trusted base (one whose
    ctime is known) recorded, whose ctime is not older than that base's,
    and whose recorded path holds no file now. Its bytes are then that
    base's if they hash to its sha256 (see L{moved}); it need not be cut.

    The rename itself moved the ctime, so it cannot be compared: a file
    written since the base was recorded shows it in its size or its mtime,
    as a download's swap trusts (see L{LocalFile.is_still}).
    """
    size, mtime_ns, inode, ctime_ns, executable = stat_key(st)
    base = bases.get((size, mtime_ns, inode, executable))
    if base is None or base.path == path or ctime_ns < base.ctime_ns:
        return None
    # Still there (a hard link, or it came back): not a rename.
    return base if holds_nothing(root, base.path) else None


def holds_nothing(root: Path, path: str, folders: dict[str, str] | None = None) -> bool:
    """
    Whether nothing is at the wire path C{path} below C{root} now (nor can
    be reached there): the path a file was renamed from. A path that cannot
    be looked at does not count as empty.

    @param folders: as for L{to_local}.
    """
    try:
        os.lstat(to_local(root, path, folders))
    except (FileNotFoundError, NotADirectoryError, BadPath):
        return True
    except OSError:
        return False
    return False


def renamed_from(root: Path, path: str, st: os.stat_result, bases: Iterable[Base]) -> Base | None:
    """
    The one of C{bases} whose path the file at C{path} (whose stat is
    C{st}, and which has no base of its own) seems renamed from, by its
    stamps (see L{moved_here}); else C{None}. Nothing is read: L{moved}
    then makes sure.
    """
    return moved_here(root, path, st, _identities(bases))


def moved(local: str | Path, path: str, base: Base, recipe: Recipe | None = None) -> LocalFile | None:
    """
    The file at C{path} (C{local} here), renamed from C{base}'s path, if
    its bytes are still that base's; else C{None}.

    It is read to know: the rename moved its ctime, so nothing else tells
    a file edited in place with its size and mtime put back (C{cp -p},
    C{rsync -t}) before it was renamed. It is hashed whole, or, given the
    C{recipe} of the base's version (as the server has it), block by
    block on every core (see L{holds}). It is not cut: its blocks are those
    of the base's version, which the server has.

    @raise FileChanging: if it changes while it is read.
    """
    if recipe is not None and (recipe.sha256, recipe.size) == (base.sha256, base.size):
        same, st = _stable(local, lambda name: _holds(name, recipe))
    else:
        sha256, st = _hash_stable(local)
        same = sha256 == base.sha256
    if not same:
        return None
    size, mtime_ns, inode, ctime_ns, executable = stat_key(st)
    racy = is_racy(st, time.time_ns())
    return LocalFile(
        path, base.sha256, size, mtime_ns, inode, ctime_ns, 0, True, None, racy, executable, moved_from=base
    )


def _same_content(files: dict[str, LocalFile], gone: list[Base]) -> None:
    """
    Mark each new file of C{files} that was read and found to have the
    content of one of the bases of paths C{gone} as moved from there (a
    rename not known by its stamps, or a copy and a delete): its upload
    then follows the old path's delete, and takes the kept version.
    """
    by_content = {base.sha256: base for base in gone if not base.folder and base.size}
    if not by_content:
        return
    for path, file in files.items():
        base = by_content.get(file.sha256 or "") if file.base == 0 and file.moved_from is None else None
        if base is not None and base.size == file.size:
            files[path] = evolve(file, moved_from=base)


def _below_any(path: str, directories: set[str]) -> bool:
    """
    Whether C{path} is one of C{directories} or lies below one of them.
    """
    return path in directories or any(folder in directories for folder in folders_above(path))


def scan(
    root: Path,
    state: Mapping[str, Base] | Callable[[], Mapping[str, Base]],
    ignore: IgnoreRules,
    unhashed_over: int | None = None,
    cut_over: int | None = None,
    stamps: Stamps | Callable[[], Stamps] | None = None,
) -> ScanResult:
    """
    Find every synced file below C{root} and compare it with its base, and
    every folder synced as a folder of its own.

    A path with a base that is not found as a regular file (or, for a
    folder's base, as a folder) is reported deleted unless it is ignored
    now or lies at or below something that could not be read (a file that
    cannot be read is not a deleted file).

    @param state: the bases, by path (a snapshot of L{LocalState.all}), or
        a function that gives them, called once every file is found and
        its stamps read: the bases may be read from the database
        meanwhile, in another thread.
    @param unhashed_over: new files (with no base) larger than this, and
        not written to for L{SETTLED_NS}, are listed unhashed (C{None}: all
        are hashed); see L{LocalFile.sha256}.
    @param cut_over: files larger than this that are read are cut as they
        are hashed (see L{LocalFile.recipe}).
    @param stamps: the bases' stamps (L{LocalState.stamps}), or a function
        that gives them, as for C{state}. Given them, the files whose stamps
        are their base's are compared all at once, and only counted in the
        result, not listed; C{state} is called only if something else is
        found (a new or changed file, a base not found).
    @raise OSError: if C{root} cannot be listed.
    """
    skipped: list[Skipped] = []
    empty: set[str] = set()
    directories: list[str] = []
    # Each file's stamps only (its whole stat would take twice the memory):
    # one whose stamps are not its base's is looked at again below.
    stamped: list[tuple[str, str, StatKey]] = []
    # Made at the first new file: an unchanged folder has none.
    identities: dict[_Identity, Base | None] | None = None
    for path, entry in walk(root, ignore, skipped=skipped, empty=empty):
        if entry.is_dir(follow_symlinks=False):
            directories.append(path)
            continue
        try:
            stamped.append((path, entry.path, stat_key(entry.stat(follow_symlinks=False))))
        except FileNotFoundError:
            continue
        except OSError as e:
            _unreadable(root, entry.path, e.strerror, skipped)
    matched: set[str] = set()
    if stamps is not None:
        known = stamps() if callable(stamps) else stamps
        matched = {path for path, _, key in stamped if (path, *key) in known.files}
        if len(matched) == len(stamped) == len(known.files) and known.folders.keys() <= set(directories):
            # Every file is its base, and every base is found.
            return _scanned(
                root,
                ScanResult(
                    {},
                    skipped=tuple(skipped),
                    folders=_folders(directories, empty, known.folders, ()),
                    unchanged=len(matched),
                ),
            )
    if callable(state):
        state = state()
    files: dict[str, LocalFile] = {}
    refreshed: list[Base] = []
    for path, local, key in stamped:
        if path in matched:
            continue
        base = state.get(path)
        if base is not None and base.folder:
            # A file where a folder was: the folder's delete goes first,
            # the file is new once it has.
            continue
        try:
            if base is not None and _matches(key, base):
                files[path] = _unchanged(path, key, base)
                continue
            st = os.lstat(local)
            gone = None
            if base is None:
                identities = _identities(state.values()) if identities is None else identities
                gone = moved_here(root, path, st, identities)
            taken = None if gone is None else moved(local, path, gone)
            if taken is not None:
                files[path] = taken
                continue
            found, same = _examine(local, path, os.lstat(local), base, None, unhashed_over, cut_over)
        except FileNotFoundError:
            continue
        except (OSError, FileChanging) as e:
            _unreadable(root, local, e.strerror if isinstance(e, OSError) else "changes while read", skipped)
            continue
        files[path] = found
        if same:
            refreshed.append(found.as_base(found.base))
    folders = _folders(directories, empty, {path: base.seq for path, base in state.items() if base.folder}, state)
    # By wire path: a base is recorded under it.
    blind = {unicodedata.normalize("NFC", s.path) for s in skipped if s.covers}
    deleted = [
        DeletedEntry(path, base.seq)
        for path, base in state.items()
        if not (path in folders if base.folder else (path in files or path in matched))
        and not ignore.ignored(path, base.folder)
        and not (blind and _below_any(path, blind))
    ]
    _same_content(files, [state[entry.path] for entry in deleted])
    return _scanned(root, ScanResult(files, tuple(deleted), tuple(skipped), tuple(refreshed), folders, len(matched)))


def _scanned(root: Path, result: ScanResult) -> ScanResult:
    """
    Log what a scan of C{root} found, and give it back.
    """
    log.debug(
        "Scanned {root}: {files} files ({unchanged} known unchanged by their stamps alone), "
        "{folders} folders of their own, {deleted} deleted, {skipped} skipped",
        root=str(root),
        files=len(result.files) + result.unchanged,
        unchanged=result.unchanged,
        folders=len(result.folders),
        deleted=len(result.deleted),
        skipped=len(result.skipped),
    )
    return result


def _folders(
    directories: list[str], empty: set[str], folder_seqs: Mapping[str, int], bases: Container[str]
) -> dict[str, int]:
    """
    The folders of C{directories} synced as folders of their own: those
    with a folder's base (whose seqs C{folder_seqs} gives), and the new
    empty ones, with no base in C{bases} (seq 0). A folder where a file
    with a base was is not, yet: the file's delete goes first.
    """
    folders: dict[str, int] = {}
    for path in directories:
        if path in folder_seqs:
            folders[path] = folder_seqs[path]
        elif path in empty and path not in bases:
            folders[path] = 0
    return folders


def _unreadable(root: Path, local: str, reason: str | None, skipped: list[Skipped]) -> None:
    skipped.append(Skipped(os.path.relpath(local, root), f"cannot read: {reason}", covers=True))


def scan_one(
    root: Path,
    path: str,
    base: Base | None,
    max_read: int | None = None,
    unhashed_over: int | None = None,
    folders: dict[str, str] | None = None,
    cut_over: int | None = None,
) -> LocalFile | None:
    """
    Look at one file, as L{scan} does.

    @param path: its wire path.
    @param base: its base, if it has one.
    @param max_read: the largest file to read (C{None}: any): a caller on
        the reactor's thread looks at small files itself, and hands larger
        ones that must be read to a thread.
    @param unhashed_over: as for L{scan}.
    @param folders: as for L{to_local} (given on the reactor's thread only).
    @param cut_over: as for L{scan}.

    @return: the file, or C{None} if there is no regular file at C{path}
        (or the path is not acceptable).
    @raise FileChanging: if the file keeps changing while it is read.
    @raise OSError: if the file cannot be read.
    @raise ReadElsewhere: if it must be read and is larger than C{max_read}.
    """
    try:
        local = to_local(root, path, folders)
        st = os.stat(local, follow_symlinks=False)
    except (BadPath, FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        return _examine(local, path, st, base, max_read, unhashed_over, cut_over)[0]
    except FileNotFoundError:
        return None

