"""
Hints, from Linux inotify, that something in a synced folder changed.

The watcher reads the inotify file descriptor itself, driven by the reactor,
rather than through C{twisted.internet.inotify}: in Twisted 26.10 that module
stops reporting anything once any watched subdirectory is deleted, does not
watch a directory moved into the tree, and keeps reporting a renamed
directory under its old path. Here a watch descriptor maps to the current
path of its directory; a deleted or moved-out directory drops the watches of
its subtree only; a created or moved-in directory is watched (and listed, so
nothing written into it before the watch was added is missed).

Reports are hints: events are coalesced per path until the path has been
quiet for a short delay (a file closed after writing, or moved in whole, is
due at once), and the consumer checks the file itself. When
events were lost (the kernel queue overflowed) or the watcher is in trouble,
it asks for a rescan.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from pathlib import Path
from typing import Any, Callable, Protocol

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import libc
from ..paths import BadPath, folders_above, to_local
from .ignore import IGNORE_FILE, IgnoreRules
from .walk import Skipped, walk, wire_path

__all__ = ["MASK", "Debouncer", "FolderListener", "FolderWatcher"]

# From <sys/inotify.h>. Not imported from twisted.internet.inotify, which
# cannot be imported where there is no inotify: this module can, and fails
# only when a watcher starts.
IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000

#: The events watched on every directory.
MASK = (
    IN_MODIFY
    | IN_CLOSE_WRITE
    | IN_MOVED_TO
    | IN_MOVED_FROM
    | IN_DELETE
    | IN_CREATE
    | IN_Q_OVERFLOW
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
_ROOT_MASK = MASK & ~IN_DONT_FOLLOW

_EVENT = struct.Struct("=iIII")
_READ_SIZE = 64 * 1024

CHANGED = "changed"
DELETED = "deleted"
RESCAN = "rescan"
# The key of a pending rescan among the pending paths: no wire path is empty.
_RESCAN_KEY = ""
#: The longest a change of a path that keeps changing is held back: it is
#: then looked at (and synced, as it is then) all the same.
MAX_WAIT = 10.0

# Timers may fire a hair before a deadline computed separately.
_SLACK = 1e-6


def _inotify(name: str, *argtypes: Any) -> Any:
    """
    The C library's inotify function C{name}.

    @raise OSError: if there is none (not Linux).
    """
    found = libc.function(name, *argtypes)
    if found is None:
        raise OSError(errno.ENOSYS, "inotify is not available")
    return found


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class ReactorTime(Protocol):
    """
    The part of C{IReactorTime} the watcher uses.
    """

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any
    ) -> IDelayedCall: ...


class WatchingReactor(ReactorTime, Protocol):
    """
    The parts of C{IReactorTime} and C{IReactorFDSet} the watcher uses.
    """

    def addReader(self, reader: IReadDescriptor) -> None: ...

    def removeReader(self, reader: IReadDescriptor) -> None: ...


class FolderListener(Protocol):
    """
    What the watcher reports to. Each report is a hint: look at the disk.
    """

    def changed(self, path: str) -> None:
        """
        The file at the wire path C{path} may have been created, written or
        moved in.
        """

    def deleted(self, path: str) -> None:
        """
        The file or directory at C{path} was deleted or moved away; for a
        directory, so was everything below it.
        """

    def rescan(self) -> None:
        """
        Events were lost or the rules changed: scan the whole folder.
        """

    def not_synced(self, path: str, reason: str | None) -> None:
        """
        Something at C{path} (relative to the folder, as the folder has it)
        that the wire cannot carry was made or moved in (with C{reason}), or
        is gone or moved away (C{reason} is C{None}).
        """


@define
class Debouncer:
    """
    Hold reports per path until the path has had no event for C{delay}
    seconds, then emit the last one; a path that never goes quiet (a log
    written without pause, a download in progress) is reported all the same
    C{max_wait} seconds after its first held event. Reports come out in the
    order they fall due, but a report brings along, ahead of it, the held
    reports of the folders above its path and of the paths below it that
    were first held before it, in the order they were: a file deleted and a
    folder made in its place, with a file closed in it at once, come out as
    the delete (then the folder), then the file.

    @ivar emit: called with the kind and the path of each report.
    """

    clock: ReactorTime
    delay: float
    emit: Callable[[str, str], None]
    max_wait: float = MAX_WAIT
    # Each path's last kind, when it falls due, when it was first held, and
    # its place in the order paths were first held (L{_held} then).
    _pending: dict[str, tuple[str, float, float, int]] = field(factory=dict)
    _held: int = 0
    # How many held paths lie below each folder, and the order of the
    # first of them held since there were none (none held below it now
    # came before that).
    _below: dict[str, tuple[int, int]] = field(factory=dict)
    _call: IDelayedCall | None = None

    def add(self, kind: str, path: str, quiet: bool = True, settled: bool = False) -> None:
        """
        Note an event of C{kind} on C{path}.

        @param quiet: whether the path is due once quiet for C{delay}; else
            (a write to a file still open) the event holds the path back,
            up to C{max_wait} from its first held event, whatever was due
            sooner (a file created, then written to: it is open).
        @param settled: the path is due at once (a file closed after it was
            written, or moved in whole): only the other events read with
            this one join it.
        """
        now = self.clock.seconds()
        held = self._pending.pop(path, None)
        if held is None:
            self._held += 1
            for folder in folders_above(path):
                count, since = self._below.get(folder, (0, self._held))
                self._below[folder] = (count + 1, since)
        first, order = (now, self._held) if held is None else (held[2], held[3])
        if settled:
            deadline = now
        elif quiet:
            deadline = min(now + self.delay, first + self.max_wait)
        else:
            deadline = first + self.max_wait
        self._pending[path] = (kind, deadline, first, order)
        if self._call is None:
            self._call = self.clock.callLater(max(0.0, deadline - now), self._flush)
        elif deadline < self._call.getTime():
            self._call.reset(max(0.0, deadline - now))

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: str) -> bool:
        """
        Whether a report of C{path} is held.
        """
        return path in self._pending

    def _take(self, path: str) -> tuple[str, str] | None:
        """
        The held report of C{path}, no longer held; C{None} if there is none.
        """
        held = self._pending.pop(path, None)
        if held is None:
            return None
        for folder in folders_above(path):
            count, since = self._below[folder]
            if count > 1:
                self._below[folder] = (count - 1, since)
            else:
                del self._below[folder]
        return held[0], path

    def _with_related(self, path: str) -> list[tuple[str, str]]:
        """
        The held reports of C{path} and of the folders above it and the
        paths below it that were first held before it, in the order they
        were first held, no longer held.
        """
        if path not in self._pending:
            return []  # Brought along by an earlier one.
        order = self._pending[path][3]
        related = [each for each in folders_above(path) if each in self._pending]
        if self._below.get(path, (0, order))[1] < order:
            prefix = path + "/"
            related.extend(each for each in self._pending if each.startswith(prefix))
        earlier = sorted((self._pending[each][3], each) for each in related if self._pending[each][3] < order)
        return [report for report in map(self._take, [each for _, each in earlier] + [path]) if report is not None]

    def _flush(self) -> None:
        self._call = None
        now = self.clock.seconds()
        due = [path for path, (_, deadline, _, _) in self._pending.items() if deadline <= now + _SLACK]
        reports: list[tuple[str, str]] = []
        for path in due:
            reports.extend(self._with_related(path))
        if self._pending:
            deadline = min(deadline for _, deadline, _, _ in self._pending.values())
            self._call = self.clock.callLater(max(0.0, deadline - now), self._flush)
        for kind, path in reports:
            self.emit(kind, path)

    def cancel(self) -> None:
        """
        Drop every pending report.
        """
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self._pending.clear()
        self._below.clear()


@implementer(IReadDescriptor)
@define(eq=False)
class FolderWatcher:
    """
    Watch every synced directory of a folder with inotify.

    Start it before the scan it complements, so nothing that happens between
    the two is missed.

    @ivar reactor: runs the reader and the timers.
    @ivar root: the synced folder.
    @ivar ignore: the folder's rules; the watcher reloads them when
        C{.boxsyncignore} changes, and asks for a rescan if they did.
    @ivar listener: receives the reports.
    @ivar delay: how long a path must be quiet before it is reported.
    """

    log = Logger()

    reactor: WatchingReactor
    root: Path
    ignore: IgnoreRules
    listener: FolderListener
    delay: float = 0.2
    _fd: int = -1
    # Each watched directory's watch descriptor and current wire path ("" is
    # the root), both ways.
    _paths: dict[int, str] = field(factory=dict)
    _wds: dict[str, int] = field(factory=dict)
    _buffer: bytes = b""
    _debouncer: Debouncer | None = None
    _limit_warned: bool = False

    def holds(self, path: str) -> bool:
        """
        Whether a report of C{path} is held, to come once it is quiet or
        closed (a file still being written): a rescan leaves it to come.
        """
        return self._debouncer is not None and path in self._debouncer

    def start(self) -> None:
        """
        Watch the folder, and report from now on.

        @raise OSError: if inotify is not available (the periodic scan must
            do) or the root cannot be watched.
        """
        if self._fd >= 0:
            return
        flags = os.O_NONBLOCK | os.O_CLOEXEC  # IN_NONBLOCK, IN_CLOEXEC
        self._fd = _check(_inotify("inotify_init1", ctypes.c_int)(flags), "inotify")
        self._debouncer = Debouncer(self.reactor, self.delay, self._emit)
        try:
            self._add_watch("", strict=True)
        except BaseException:
            self._close()
            raise
        self._watch_tree("", report=False)
        self.reactor.addReader(self)
        self.log.info(
            "Watching {root} ({count} directories)",
            root=str(self.root),
            count=len(self._wds),
        )

    def stop(self) -> None:
        """
        Stop watching; pending reports are dropped.
        """
        if self._fd >= 0:
            self.reactor.removeReader(self)
            self._close()

    @property
    def watched(self) -> frozenset[str]:
        """
        The wire paths of the watched directories (C{""}: the root).
        """
        return frozenset(self._wds)

    def _close(self) -> None:
        if self._debouncer is not None:
            self._debouncer.cancel()
        os.close(self._fd)
        self._fd = -1
        self._paths.clear()
        self._wds.clear()
        self._buffer = b""

    # IReadDescriptor

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "FolderWatcher"

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor dropped the reader (it is shutting down): close.
        """
        if self._fd >= 0:
            self._close()

    def doRead(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            self.log.failure("Reading inotify events failed")
            self._report(RESCAN, _RESCAN_KEY)
            return None
        buffer = self._buffer + data
        offset = 0
        while len(buffer) - offset >= _EVENT.size:
            wd, mask, _cookie, size = _EVENT.unpack_from(buffer, offset)
            end = offset + _EVENT.size + size
            if end > len(buffer):
                break
            name = buffer[offset + _EVENT.size : end].rstrip(b"\0")
            offset = end
            try:
                self._event(wd, mask, os.fsdecode(name))
            except Exception:
                self.log.failure("Handling an inotify event failed")
                self._resync()
        self._buffer = buffer[offset:]
        return None

    # Events

    def _event(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self.log.warn("inotify queue overflowed in {root}", root=str(self.root))
            self._resync()
            return
        directory = self._paths.get(wd)
        if directory is None:
            return
        if not name:
            self._self_event(wd, mask, directory)
            return
        relative = f"{directory}/{name}" if directory else name
        is_dir = bool(mask & IN_ISDIR)
        try:
            path = wire_path(relative)
        except BadPath as e:
            if not self.ignore.ignored(relative, is_dir):
                self._passed_over(mask, relative, str(e))
            return
        if self.ignore.ignored(path, is_dir):
            reason = self.ignore.by_default(path, is_dir)
            if reason is not None:
                self._passed_over(mask, relative, reason)
            return
        if path == IGNORE_FILE and not mask & IN_CREATE and self.ignore.reload():
            self._resync()
        if is_dir:
            if mask & (IN_CREATE | IN_MOVED_TO):
                self._watch_tree(path, report=True)
            elif mask & (IN_DELETE | IN_MOVED_FROM):
                self._forget(path)
                self._report(DELETED, path)
        elif mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
            # Closed after writing, or moved in whole: ready now.
            self._report(CHANGED, path, settled=True)
        elif mask & IN_CREATE:
            self._report(CHANGED, path)
        elif mask & IN_MODIFY:
            # Written to, and still open: synced once closed, or after
            # MAX_WAIT if it never is (a log, a download in progress).
            self._report(CHANGED, path, quiet=False)
        elif mask & (IN_DELETE | IN_MOVED_FROM):
            self._report(DELETED, path)

    def _passed_over(self, mask: int, relative: str, reason: str) -> None:
        """
        Tell the listener of an event on C{relative}, a name the wire cannot
        carry (for C{reason}).
        """
        try:
            if mask & (IN_CREATE | IN_MOVED_TO):
                self.listener.not_synced(relative, reason)
            elif mask & (IN_DELETE | IN_MOVED_FROM):
                self.listener.not_synced(relative, None)
        except Exception:
            self.log.failure("Reporting {path!r} skipped failed", path=relative)

    def _self_event(self, wd: int, mask: int, directory: str) -> None:
        """
        An event on a watched directory itself. Its parent reports the
        deletion or move of a subdirectory; only the root's matter here.
        """
        if mask & IN_IGNORED:
            self._paths.pop(wd, None)
            if self._wds.get(directory) == wd:
                del self._wds[directory]
        if directory == "" and mask & (
            IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
        ):
            self.log.error("{root} was moved or deleted", root=str(self.root))
            self._report(RESCAN, _RESCAN_KEY)

    def _report(self, kind: str, path: str, quiet: bool = True, settled: bool = False) -> None:
        if self._debouncer is not None:
            self._debouncer.add(kind, path, quiet, settled)

    def _emit(self, kind: str, path: str) -> None:
        try:
            if kind == CHANGED:
                self.listener.changed(path)
            elif kind == DELETED:
                self.listener.deleted(path)
            else:
                self.listener.rescan()
        except Exception:
            self.log.failure("Reporting {kind} {path!r} failed", kind=kind, path=path)

    # Watches

    def _watch_tree(self, top: str, report: bool) -> None:
        """
        Watch the directory C{top} and every directory below it, each before
        it is listed; if C{report}, report C{top} and every file and
        directory found as changed (an empty one is a folder of its own).
        """
        if top and not self._add_watch(top):
            return
        if report and top:
            self._report(CHANGED, top)
        skipped: list[Skipped] = []
        try:
            for path, entry in walk(self.root, self.ignore, top, skipped=skipped if report else None):
                if entry.is_dir(follow_symlinks=False):
                    self._add_watch(path, entry.path)
                if report:
                    self._report(CHANGED, path)
        except OSError as e:
            # Gone (or replaced) since it was watched: its parent says so.
            self.log.debug("Cannot list {top!r}: {error}", top=top, error=e)
        for each in skipped:
            self.listener.not_synced(each.path, each.reason)

    def _add_watch(self, path: str, local: str | None = None, strict: bool = False) -> bool:
        """
        Watch the directory at the wire path C{path}.

        @param local: the directory's file name, if known (its name here
            may be in another form than the wire's).
        @param strict: raise errors instead of logging them.
        @return: whether it is watched.
        """
        # The root may be a link to the folder; nothing below it is followed.
        mask = MASK if path else _ROOT_MASK
        if local is None:
            try:
                local = str(to_local(self.root, path)) if path else str(self.root)
            except BadPath:
                return False
        try:
            wd = _check(
                _inotify("inotify_add_watch", ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)(
                    self._fd, os.fsencode(local), mask
                ),
                f"watching {local}",
            )
        except OSError as e:
            if strict:
                raise
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return False
            if e.errno == errno.ENOSPC:
                if not self._limit_warned:
                    self._limit_warned = True
                    self.log.error(
                        "Out of inotify watches (see "
                        "/proc/sys/fs/inotify/max_user_watches): changes in "
                        "some directories are seen only by scans"
                    )
                    self._report(RESCAN, _RESCAN_KEY)
                return False
            self.log.warn("Cannot watch {path!r}: {error}", path=path, error=e)
            return False
        old = self._paths.get(wd)
        if old is not None and old != path:
            # The same directory under a new name: it was moved while events
            # were lost. Its subtree moved with it.
            self._rename(old, path)
        stale = self._wds.get(path)
        if stale is not None and stale != wd:
            self._paths.pop(stale, None)
        self._paths[wd] = path
        self._wds[path] = wd
        return True

    def _subtree(self, path: str) -> list[str]:
        return [p for p in self._wds if p == path or p.startswith(path + "/")]

    def _rename(self, old: str, new: str) -> None:
        for path in self._subtree(old):
            wd = self._wds.pop(path)
            moved = new + path[len(old) :]
            self._paths[wd] = moved
            self._wds[moved] = wd

    def _forget(self, path: str) -> None:
        """
        Stop watching the directory C{path} and everything below it.
        """
        for gone in self._subtree(path):
            wd = self._wds.pop(gone)
            self._paths.pop(wd, None)
            # Fails harmlessly if the kernel already dropped the watch.
            _inotify("inotify_rm_watch", ctypes.c_int, ctypes.c_int)(self._fd, wd)

    def _resync(self) -> None:
        """
        Events were lost or the rules changed: watch exactly the synced
        directories again (watches that stay keep their descriptors, and get
        their current paths), and ask for a rescan.
        """
        before = set(self._paths)
        self._paths.clear()
        self._wds.clear()
        if self._add_watch(""):
            self._watch_tree("", report=False)
        for wd in before - set(self._paths):
            _inotify("inotify_rm_watch", ctypes.c_int, ctypes.c_int)(self._fd, wd)
        self._report(RESCAN, _RESCAN_KEY)
