"""
The box on disk: files under their real paths, and beside them, in the hidden
folder on the same file system, the staging area where uploads are written
before they are renamed into place, and the versions overwritten or deleted
since, each kept under its seq (C{.boxsync/versions/<seq>}) until the
retention drops it.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Container, Iterator, Sequence, TypeVar

from attrs import define, field
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ..fs import CHUNK_SIZE, hash_file, is_executable, kind_not_synced, mode_for, mtime_ns
from ..paths import HIDDEN_DIR, BadPath, from_local, printable
from .beneath import Folders, folder, open_regular, open_regular_fd, parent_of, segments
from .staging import StagingFile, as_box_error, discarding

__all__ = ["BoxStorage", "Change", "LocalFile", "LocalFolder"]

_T = TypeVar("_T")

#: The mode of a file in the box that is not executable; an executable one
#: has an x bit wherever this has an r bit (0755).
_FILE_MODE = 0o644

@define(frozen=True)
class LocalFile:
    """
    A file found in the box by L{BoxStorage.walk}, with its stamps: its
    ctime moves with any change to it, even one whose mtime is set back.
    """

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    executable: bool = False


@define(frozen=True)
class LocalFolder:
    """
    A folder found in the box by L{BoxStorage.walk}.

    @ivar empty: whether nothing at all is in it.
    """

    path: str
    mtime_ns: int
    empty: bool


@define(frozen=True)
class Change:
    """
    A change made in the box whose commit is not yet known: a file moved to
    wire path C{path} (C{placed}), or the file there taken away. Whatever
    was there before is kept, under the name C{previous} in the staging
    folder, until L{BoxStorage.settle} drops it or L{BoxStorage.undo} puts
    it back.

    @ivar ctime_ns: the placed file's ctime once in place (0 for a removal).
    """

    path: str
    placed: bool
    previous: Path | None
    ctime_ns: int = 0


@define
class BoxStorage:
    """
    The files of one box, below C{root}. Every file of the box is reached
    one segment at a time from the root's descriptor (L{beneath}): a
    symbolic link in the box is never followed, whenever it appears.

    @ivar reactor: runs blocking disk work in its thread pool.
    """

    reactor: IReactorThreads
    root: Path
    hidden: Path = field(init=False)
    staging: Path = field(init=False)
    versions: Path = field(init=False)
    #: What a walk could not take, said once each (a look walks the box
    #: every few minutes).
    _passed_over: set[tuple[str, str]] = field(factory=set, init=False)
    _saying: threading.Lock = field(factory=threading.Lock, init=False)
    log = Logger()

    def __attrs_post_init__(self) -> None:
        self.root = Path(os.path.realpath(self.root))
        self.hidden = self.root / HIDDEN_DIR
        self.staging = self.hidden / "staging"
        self.versions = self.hidden / "versions"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.versions.mkdir(exist_ok=True)

    def version_path(self, seq: int) -> Path:
        """
        Where the kept version C{seq} is.
        """
        return self.versions / str(seq)

    def has_version(self, seq: int) -> bool:
        """
        Whether the file of kept version C{seq} is there. Blocking.
        """
        try:
            os.lstat(self.version_path(seq))
        except FileNotFoundError:
            return False
        return True

    def open_version(self, seq: int) -> int | None:
        """
        The kept version C{seq}, open for reading (a descriptor), or C{None}
        if it is not kept. Blocking.
        """
        try:
            return os.open(self.version_path(seq), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None

    def stage_version(self, seq: int, sha256: str, size: int) -> StagingFile | None:
        """
        The kept version C{seq}, whose sha256 and size the index gives, as a
        staging file (a second name of it: nothing is copied), or C{None}
        if it is not kept. Blocking.
        """
        staged = self.staging / f"up-{os.urandom(8).hex()}"
        try:
            os.link(self.version_path(seq), staged, follow_symlinks=False)
        except OSError:
            return None
        fd = os.open(staged, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        if os.fstat(fd).st_size != size:
            os.close(fd)
            staged.unlink()
            return None
        return StagingFile.holding(staged, fd, sha256, size)

    def drop_versions(self, seqs: Sequence[int]) -> Any:
        """
        Remove the files of the kept versions C{seqs}.
        """

        def work() -> None:
            for seq in seqs:
                self.version_path(seq).unlink(missing_ok=True)

        return self.in_thread(work)

    def in_thread(self, fn: Callable[[], _T]) -> Any:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn)

    def clean_staging(self) -> int:
        """
        Remove staging files left by a crash; return how many.
        """
        count = 0
        for leftover in self.staging.iterdir():
            leftover.unlink()
            count += 1
        return count

    def new_staging(self) -> StagingFile:
        """
        A new staging file for an upload.

        @raise DiskFull: if the file system has no room for it.
        @raise BoxNotWritable: if the staging folder may not be written.
        """
        try:
            fd, name = tempfile.mkstemp(dir=self.staging, prefix="up-")
        except OSError as e:
            raise as_box_error(e) from e
        return StagingFile(Path(name), fd)

    def stage_copy(self, path: str) -> StagingFile | None:
        """
        A copy of the live file at C{path}, hashed as it is read, as a
        staging file; C{None} if there is no file there. Blocking.

        @raise DiskFull: if the file system has no room for it.
        """
        source = self.open_fd(path)
        if source is None:
            return None
        try:
            staged = self.new_staging()
            with discarding(staged):
                while piece := os.read(source, CHUNK_SIZE):
                    staged.write(piece)
                if staged.error is not None:
                    raise staged.error
        finally:
            os.close(source)
        return staged

    def open_file(self, path: str) -> BinaryIO | None:
        """
        The regular file at C{path}, open for reading, or C{None} if there
        is none there (a symbolic link is never followed).
        """
        return open_regular(self.root, path)

    def open_fd(self, path: str) -> int | None:
        """
        The regular file at C{path}, open for reading (a raw descriptor, for
        the caller to close), or C{None} if there is none there (a symbolic
        link is never followed).
        """
        opened = open_regular_fd(self.root, path)
        return None if opened is None else opened[0]

    def look(self, path: str) -> LocalFile | None:
        """
        The regular file at C{path} with its stamps, as L{walk} finds it, or
        C{None} if there is none there (a symbolic link is never followed).
        Blocking.
        """
        opened = open_regular_fd(self.root, path)
        if opened is None:
            return None
        fd, st = opened
        os.close(fd)
        return _found(path, st)

    def set_mtime(self, path: str, mtime_ns: int) -> LocalFile | None:
        """
        Give the regular file at C{path} the mtime C{mtime_ns} (a link is
        never followed); the file with its new stamps, or C{None} if there
        is none there. Blocking.
        """
        opened = open_regular_fd(self.root, path)
        if opened is None:
            return None
        fd, _ = opened
        try:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
            return _found(path, os.fstat(fd))
        finally:
            os.close(fd)

    def hash(self, path: str) -> str | None:
        """
        The sha256 of the regular file at C{path}, or C{None} if there is
        none (a symbolic link is never followed). Blocking.
        """
        opened = open_regular_fd(self.root, path)
        if opened is None:
            return None
        fd, _ = opened
        sha256, _ = hash_file(fd)
        return sha256

    def link(self, path: str, to: Path) -> bool:
        """
        Give the regular file at C{path} the second name C{to} (a new name
        on the box's file system); C{False} if there is no regular file
        there (a symbolic link is never followed). Blocking.
        """
        try:
            with parent_of(self.root, path) as (parent, name):
                os.link(name, to, src_dir_fd=parent, follow_symlinks=False)
        except (BadPath, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            return False  # PermissionError: a folder (Linux answers EPERM)
        # What was linked is checked under its new name, which only we use.
        if not stat.S_ISREG(os.lstat(to).st_mode):
            to.unlink()
            return False
        return True

    def folders(self) -> Folders:
        """
        The box's folders, for many paths one after the other (see
        L{Folders}).
        """
        return Folders(self.root)

    def read_small(self, path: str, limit: int, folders: Folders | None = None) -> bytes | None:
        """
        Up to C{limit} + 1 bytes of the regular file at C{path}, or C{None}
        if there is none (a symbolic link is never followed): one open and
        one C{fstat}, for the many small files of a batch (their folders
        opened once through C{folders}, given).
        """
        opened = open_regular_fd(self.root, path, folders)
        if opened is None:
            return None
        fd, st = opened
        try:
            # os.read rather than a file object: three system calls fewer.
            want = min(st.st_size, limit) + 1
            pieces = []
            while want > 0 and (piece := os.read(fd, want)):
                pieces.append(piece)
                want -= len(piece)
            return b"".join(pieces)
        finally:
            os.close(fd)

    def finish(self, staged: StagingFile, mtime_ns: int) -> Any:
        """
        Make the bytes of C{staged} durable, with their final mode and
        mtime, in a thread: several uploads do this at once, before any of
        them is placed. On failure C{staged} is discarded.

        @raise DiskFull: if the file system has no room for them.
        """

        def work() -> None:
            with discarding(staged):
                staged.finish(mtime_ns)

        return self.in_thread(work)

    def _keep(self, parent: int, name: str) -> Path | None:
        """
        Keep the file C{name} in the folder open as C{parent}, if there is
        one, under a second name in the staging folder (a hard link: it
        costs no room).

        @return: that name, or C{None} if there is no file to keep.
        """
        kept = self.staging / f"keep-{os.urandom(8).hex()}"
        try:
            os.link(name, kept, src_dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (IsADirectoryError, PermissionError):
            return None  # a folder (Linux answers EPERM): the move refuses it
        return kept

    def _place(
        self, staged: StagingFile, parent: int, name: str, path: str, executable: bool
    ) -> Change | BaseException:
        """
        Give C{staged} its mode (L{mode_for} C{executable}) and rename it to
        C{name} in the folder open as C{parent}, keeping what was there (see
        L{_keep}).

        @return: the change, or the exception it met (C{staged} is then
            discarded).
        """
        previous = None
        try:
            os.chmod(staged.path, mode_for(_FILE_MODE, executable))
            previous = self._keep(parent, name)
            _replace(staged.path, parent, name, path)
            if staged.linked:
                staged.path.unlink(missing_ok=True)
            ctime_ns = os.stat(name, dir_fd=parent, follow_symlinks=False).st_ctime_ns
        except Exception as e:
            staged.discard()
            if previous is not None:
                previous.unlink()
            return as_box_error(e)
        return Change(path, True, previous, ctime_ns)

    def place_many(self, moves: Sequence[tuple[StagingFile, str, bool]]) -> Any:
        """
        Rename each finished staging file of C{moves} to its path, with its
        mode (executable or not), then
        fsync each folder that got a new name once: a whole group of uploads
        costs one thread hop and one fsync per folder. What each replaces is
        kept until the group's commit is known: L{settle} or L{undo} the
        changes then.

        @return: a Deferred that fires with, for each move, its L{Change} or
            the exception it met (its staging file is then discarded); the
            others are placed regardless.
        """

        def work() -> list[Change | BaseException]:
            outcomes: dict[int, Change | BaseException] = {}
            # The moves by folder: each folder is opened once and fsynced
            # once, after its moves, one folder open at a time.
            into: dict[tuple[str, ...], list[tuple[int, str]]] = {}
            for i, (staged, path, _) in enumerate(moves):
                try:
                    *above, name = segments(self.root, path)
                except BadPath as e:
                    staged.discard()
                    outcomes[i] = e
                    continue
                into.setdefault(tuple(above), []).append((i, name))
            for names, group in into.items():
                try:
                    with folder(self.root, names, create=True) as parent:
                        for i, name in group:
                            staged, path, executable = moves[i]
                            outcomes[i] = self._place(staged, parent, name, path, executable)
                        os.fsync(parent)
                except Exception as e:
                    error = as_box_error(e)
                    for i, _ in group:
                        outcome = outcomes.get(i)
                        if isinstance(outcome, Change):
                            self._undo(outcome)
                        elif outcome is None:
                            moves[i][0].discard()
                        else:
                            continue  # it failed on its own
                        outcomes[i] = error
            return [outcomes[i] for i in range(len(moves))]

        return self.in_thread(work)

    def set_executable(self, path: str, executable: bool) -> Any:
        """
        Make the regular file at C{path} executable or not (a symbolic link
        is never followed).

        @return: a Deferred that fires with its ctime once changed.
        @raise NotFound: if there is no regular file at C{path}.
        """

        def work() -> int:
            opened = open_regular_fd(self.root, path)
            if opened is None:
                raise FileNotFoundError(f"{path!r} is not a file in the box")
            fd, _ = opened
            try:
                os.fchmod(fd, mode_for(_FILE_MODE, executable))
                return os.fstat(fd).st_ctime_ns
            finally:
                os.close(fd)

        return self.in_thread(work)

    def settle(self, changes: Sequence[Change], kept: Sequence[int | None] = ()) -> Any:
        """
        The commit of C{changes} is durable: keep what each replaced as the
        version whose seq C{kept} gives for it (dropping it if C{None}).
        """

        def work() -> None:
            for change, seq in itertools.zip_longest(changes, kept[: len(changes)]):
                if change.previous is None:
                    continue
                if seq is None:
                    change.previous.unlink(missing_ok=True)
                else:
                    os.replace(change.previous, self.version_path(seq))

        return self.in_thread(work)

    def undo(self, changes: Sequence[Change]) -> Any:
        """
        The commit of C{changes} failed: put back what each replaced (and
        take away what each placed), latest first, so the box is as the
        index says it is.
        """

        def work() -> None:
            for change in reversed(changes):
                try:
                    self._undo(change)
                    self._prune(change.path)
                except (OSError, BadPath):
                    self.log.failure("cannot undo a change of {path}", path=change.path)
            for names in {tuple(segments(self.root, change.path)[:-1]) for change in changes}:
                try:
                    with folder(self.root, names) as fd:
                        os.fsync(fd)
                except (OSError, BadPath):
                    pass  # pruned, or the disk: the next start adopts the box

        return self.in_thread(work)

    def _undo(self, change: Change) -> None:
        """
        Put back what C{change} replaced or took away; take away what it
        placed.
        """
        putting_back = change.previous is not None
        try:
            with parent_of(self.root, change.path, create=putting_back) as (parent, name):
                if change.previous is not None:
                    os.replace(change.previous, name, dst_dir_fd=parent)
                elif change.placed:
                    os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            if putting_back:
                raise

    def _prune(self, path: str, keep: Container[str] = ()) -> None:
        """
        Remove the folders of C{path}, deepest first, while they are empty
        and not one of C{keep} (folders synced as folders of their own).
        """
        names = segments(self.root, path)[:-1]
        while names and "/".join(names) not in keep:
            *above, name = names
            try:
                with folder(self.root, above) as fd:
                    os.rmdir(name, dir_fd=fd)
            except (OSError, BadPath):
                return
            names = above

    def remove(self, path: str, keep: Container[str] = ()) -> Any:
        """
        Take the file (or folder) at C{path}, if any, out of the box, and
        the folders it leaves empty up to one of C{keep}; what is taken away
        is kept until the commit is known, as for L{place_many}.

        @return: a Deferred that fires with the L{Change}.
        """
        return self.remove_many([path], keep).addCallback(lambda changes: changes[0])

    def remove_many(self, paths: Sequence[str], keep: Container[str] = ()) -> Any:
        """
        L{remove} each of C{paths}, in one hop to the thread: a batch of
        deletes. If one cannot be removed, those removed before it are put
        back.

        @return: a Deferred that fires with the L{Change} of each path.
        """

        def work() -> list[Change]:
            changes: list[Change] = []
            try:
                for path in paths:
                    changes.append(self._remove(path, keep))
            except BaseException:
                for change in reversed(changes):
                    self._undo(change)
                raise
            return changes

        return self.in_thread(work)

    def _remove(self, path: str, keep: Container[str]) -> Change:
        previous = None
        try:
            with parent_of(self.root, path) as (parent, name):
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    shutil.rmtree(name, dir_fd=parent)
                else:
                    previous = self.staging / f"keep-{os.urandom(8).hex()}"
                    os.rename(name, previous, src_dir_fd=parent)
        except FileNotFoundError:
            pass  # nothing there, or no folder on the way
        self._prune(path, keep)
        return Change(path, False, previous)

    def make_folder(self, path: str) -> Any:
        """
        Make the folder at C{path}, and the missing ones above it, one
        segment at a time (never through a link).

        @return: a Deferred that fires with whether it was made (C{False}:
            it was there already).
        @raise BadPath: if a file or a link is there, or on the way.
        """

        def work() -> bool:
            with parent_of(self.root, path, create=True) as (parent, name):
                try:
                    os.mkdir(name, 0o755, dir_fd=parent)
                except FileExistsError:
                    if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                        raise BadPath(f"{path!r} is a file in the box") from None
                    return False
                os.fsync(parent)
                return True

        return self.in_thread(work)

    def remove_folder(self, path: str, keep: Container[str] = ()) -> Any:
        """
        Remove the folder at C{path} if nothing is in it, and the folders
        above it that it leaves empty, up to one of C{keep}. A folder that
        still holds something stays: what it holds has entries of its own.

        @return: a Deferred that fires with whether it is gone.
        """

        def work() -> bool:
            try:
                with parent_of(self.root, path) as (parent, name):
                    os.rmdir(name, dir_fd=parent)
            except (BadPath, FileNotFoundError):
                pass  # gone already, with a folder on the way
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    return False
                raise
            self._prune(path, keep)
            return True

        return self.in_thread(work)

    def walk(self) -> Iterator[LocalFile | LocalFolder]:
        """
        Every regular file and folder in the box (not the box itself, not
        the hidden folder). A link, a FIFO, a socket or a device is not
        synced, and the log says so. Blocking: run it in a thread.
        """
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
                if folder != self.root:
                    yield LocalFolder(
                        from_local(self.root, folder), mtime_ns(os.stat(folder, follow_symlinks=False)), not entries
                    )
            except FileNotFoundError:
                continue  # removed while the box was walked
            except (OSError, BadPath) as e:
                self._pass_over(str(folder), "the folder and what is in it", e)
                continue
            for entry in entries:
                if folder == self.root and entry.name == HIDDEN_DIR:
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    is_file = entry.is_file(follow_symlinks=False)
                    kind = kind_not_synced(entry.is_symlink(), is_dir, is_file)
                except FileNotFoundError:
                    continue  # removed while the box was walked
                if kind is not None:
                    self._pass_over(entry.path, "the entry", kind)
                elif is_dir:
                    stack.append(Path(entry.path))
                else:
                    try:
                        path = from_local(self.root, Path(entry.path))
                    except BadPath as e:
                        self._pass_over(entry.path, "the file", e)
                        continue
                    yield _found(path, entry.stat(follow_symlinks=False))

    def _pass_over(self, name: str, what: str, why: BaseException | str) -> None:
        """
        Say that C{what} at C{name} is not in the box's index, and why: once
        for each name and reason while the server runs, each name escaped
        (a newline in it would start a line of the log of its own).
        """
        said = (name, str(why))
        with self._saying:
            if said in self._passed_over:
                return
            self._passed_over.add(said)
        self.log.warn(
            "{what} {name} in the box is not synced: {why}", what=what, name=printable(name), why=printable(str(why))
        )


def _found(path: str, st: os.stat_result) -> LocalFile:
    return LocalFile(path, st.st_size, mtime_ns(st), st.st_ctime_ns, is_executable(st.st_mode))


def _replace(source: Path, parent: int, name: str, path: str) -> None:
    """
    Rename the staging file C{source} over C{name} in the folder open as
    C{parent}.

    @raise BadPath: if C{name} is a folder.
    """
    try:
        os.replace(source, name, dst_dir_fd=parent)
    except IsADirectoryError:
        raise BadPath(f"{path!r} is a folder in the box") from None
