"""
What the client does to carry out a decision of L{reconcile}: upload a file
(or only its being executable), delete a path on the server, record a base,
delete a local file, keep a conflict copy, make a file executable or not,
move a verified download into place, and make, commit, remove or keep a
folder synced as a folder of its own.
"""

from __future__ import annotations

import errno
import os
import stat
from functools import partial
from pathlib import Path
from typing import Awaitable, Callable

from attrs import Factory, define, field
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..blocks import Recipe
from ..fs import make_folder, prune
from ..paths import BadPath, from_local
from ..wire import Download
from . import reconcile
from .api import BoxsyncAPI
from .errors import APIError, NotFound, StaleBase
from .localpaths import LocalPaths
from .placing import conflict_name, copy_beside, placed_base, prepare, set_executable, swap
from .progress import Reporter
from .results import DownloadResult
from .scanner import FileChanging, LocalFile
from .state import UNKNOWN_CTIME, Base, LocalState, folder_base
from .blockwise import ChangedWhileSent
from .transfers import SMALL_FILE, Transfers, changed_while_sent

__all__ = ["Actions"]


@define
class Actions:
    """
    @ivar name: this client's name, in the names of its conflict copies.
    @ivar look: looks at the file at a path now (see L{Engine._look}).
    @ivar changed: reports a path changed here, as the watcher does.
    @ivar resync: ends the session for a fresh scan and plan, with the
        reason, if there is one more to say than the failure itself.
    @ivar committed: told the seq of each commit this client makes (the
        server does not echo them), so the cursor can pass them.
    @ivar unanswered: the sha256 each path was last sent with, where no
        answer came (the connection dropped, the server stopped): the
        server may have committed it, so a version of the path with that
        sha256 is this client's own, not another's change to conflict with.
    @ivar paths: maps wire paths to the folder's files (as L{Looks.paths}).
    """

    root: Path
    name: str
    reactor: IReactorTime
    api: BoxsyncAPI
    state: LocalState
    reporter: Reporter
    transfers: Transfers
    look: Callable[[str], Awaitable[LocalFile | None]]
    changed: Callable[[str], None]
    resync: Callable[[str | None], None]
    committed: Callable[[int], None] = lambda seq: None
    log = Logger()
    # The paths whose delete L{remove_gone} is making.
    _removing: dict[str, DeferredLock] = field(factory=dict)
    unanswered: dict[str, str] = field(factory=dict)
    paths: LocalPaths = Factory(lambda self: LocalPaths(self.root, self.reactor), takes_self=True)
    #: Raises if the folder is no longer the one synced: then its files
    #: are not gone, and no delete is sent (see L{FolderIdentity}).
    check_folder: Callable[[], None] = lambda: None

    def _local(self, path: str) -> Path:
        return self.paths(path)

    async def carry_out(self, action: reconcile.Action, path: str, file: LocalFile | None) -> None:
        """
        Do what L{reconcile} decided about C{path}, whose file a look found
        to be C{file}.
        """
        if isinstance(action, reconcile.Record):
            assert file is not None
            self.state.put(file.as_base(action.seq))
        elif isinstance(action, reconcile.Send):
            assert file is not None
            await self.upload(file, action.base)
        elif isinstance(action, reconcile.SendMode):
            assert file is not None
            await self.send_mode(file, action.base)
        elif isinstance(action, reconcile.TakeMode):
            assert file is not None
            self.take_mode(file, action.seq, action.executable)
        elif isinstance(action, reconcile.SendEdit):
            self.state.put(Base(path, action.sha256, -1, -1, -1, action.seq, UNKNOWN_CTIME, action.executable))
            self.changed(path)
        elif isinstance(action, reconcile.Remove):
            # Perhaps made already by the upload of the file renamed from it.
            await self.remove_gone(path, action.base)
        elif isinstance(action, reconcile.Forget):
            self.state.forget(path)
        elif isinstance(action, reconcile.Revive):
            assert file is not None
            self.state.forget(path)
            await self.upload(file, action.seq)
        elif isinstance(action, reconcile.DeleteHere):
            local = self._local(path)
            base = self.state.get(path)
            if base is not None and base.size:
                self.transfers.set_aside(local, base.sha256, file)
            else:
                local.unlink()
            self._prune(local.parent)
            self.state.forget(path)
            self.reporter.deleted(path)
        else:
            await self._carry_out_folder(action, path)

    async def _carry_out_folder(self, action: reconcile.Action, path: str) -> None:
        """
        Do what L{reconcile} decided about the folder C{path}.
        """
        if isinstance(action, reconcile.MakeFolder):
            if action.over_file:
                # The server put the folder in the place of the file here.
                if action.keep_local:
                    self.keep_as_conflict(path)
                else:
                    self._local(path).unlink()
                self.state.forget(path)
            make_folder(self.root, self._local(path))
            self.state.put(folder_base(path, action.seq))
            self.reporter.message(f"made the folder {path}")
        elif isinstance(action, reconcile.RecordFolder):
            self.state.put(folder_base(path, action.seq))
        elif isinstance(action, reconcile.SendFolder):
            await self._send_folder(path, action.base)
        elif isinstance(action, reconcile.RemoveFolder):
            await self._remove_folder(path, action.base)
        elif isinstance(action, reconcile.DeleteFolderHere):
            local = self._local(path)
            try:
                local.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Something came into it since the look.
                await self._carry_out_folder(reconcile.KeepFolder(), path)
                return
            self.state.forget(path)
            self._prune(local.parent)
            self.reporter.deleted(path, folder=True)
        elif isinstance(action, reconcile.KeepFolder):
            self.state.forget(path)
            self.log.info(
                "{path} was deleted on the server; kept here, as something is in it", path=path
            )
        elif isinstance(action, reconcile.Clash):
            raise BadPath(f"{path}: {action.reason}")

    def _folder_gives_way(self, path: str, local: Path) -> bool:
        """
        Remove the folder C{local}, synced as a folder of its own, for the
        file the server has put in its place: only if nothing is in it.

        @return: whether it is gone.
        """
        base = self.state.get(path)
        if base is None or not base.folder:
            return False
        try:
            local.rmdir()
        except OSError:
            return False
        self.state.forget(path)
        return True

    def _folder_as_conflict(self, path: str, local: Path) -> None:
        """
        Keep the folder C{local}, which holds only what the box never had,
        under a conflict name, for the file the box has at C{path}; what is
        in it is synced under that name.
        """
        new = self._conflict_name(path)
        os.rename(local, self._local(new))
        self.state.forget_many([base.path for base in self.state.under(path)])
        self.log.warn(
            "{path} is a file in the box and a folder here, with files the box does not have "
            "(new, or changed here since the box deleted them); "
            "your folder is now {new}",
            path=path,
            new=new,
        )
        self.reporter.message(f"conflict: kept your folder {path} as {new}")
        moved = self._local(new)
        self.changed(new)
        for folder, _, names in os.walk(moved):
            for name in names:
                self.changed(from_local(self.root, Path(folder) / name))

    def _prune(self, folder: Path) -> None:
        """
        Remove C{folder} and the folders above it while they are empty,
        but not one synced as a folder of its own (it has a base).
        """
        prune(self.root, folder, lambda local: self.state.get(from_local(self.root, local)) is not None)

    async def _send_folder(self, path: str, base: int) -> None:
        try:
            result = await self.api.make_folder(path, base)
        except StaleBase:
            # Changed on the server meanwhile: the next plan says how.
            self.resync(None)
            return
        self.state.put(folder_base(path, result.seq))
        self.reporter.message(f"made the folder {path} on the server")

    async def _remove_folder(self, path: str, base: int) -> None:
        self.check_folder()
        try:
            await self.api.delete_folder(path, base)
        except NotFound:
            pass
        except StaleBase:
            # Made again on the server meanwhile: the next plan brings it.
            self.resync(None)
            return
        self.state.forget(path)
        self.reporter.deleted(path, on_server=True, folder=True)

    async def remove_gone(self, path: str, base: int) -> None:
        """
        Delete C{path}, at C{base}, on the server, if this client still has
        that base and there is no file at C{path} here; a second call for
        the same path waits for the first and finds it done (the delete of
        a renamed file's old path is made by the upload of its new path
        first, and by its own job too).
        """
        lock = self._removing.setdefault(path, DeferredLock())
        try:
            async with lock:
                known = self.state.get(path)
                if known is not None and known.seq == base and await self.look(path) is None:
                    await self.remove(path, base)
        finally:
            if not lock.locked and not lock.waiting:
                self._removing.pop(path, None)

    async def _moved_recipe(self, file: LocalFile) -> Recipe | None:
        """
        Commit the delete of the path C{file} was renamed from, if it was
        (L{LocalFile.moved_from}), before C{file} goes up: the server then
        takes the new file from the kept version, with nothing to copy, and
        a client that follows the commits in order sets its copy aside at
        the delete and takes it back under the new name, unread, where it
        would otherwise copy it from the old name first.

        @return: the recipe of that version, as the server has it, for a
            file large enough to move in blocks; C{None} if it is smaller,
            the server has no recipe for it, or it is not what C{file} has.
        """
        gone = file.moved_from
        if gone is None:
            return None
        await self.remove_gone(gone.path, gone.seq)
        if self.transfers.blockwise is None or file.size <= SMALL_FILE:
            return None
        recipe = await self.transfers.version_recipe(gone)
        return recipe if recipe is not None and (recipe.sha256, recipe.size) == (file.sha256, file.size) else None

    async def upload(self, file: LocalFile, base: int) -> None:
        try:
            recipe = await self._moved_recipe(file)
            result = await self.transfers.upload(file, self._local(file.path), base, recipe)
        except StaleBase:
            await self._resolve_stale(file.path)
            return
        except (APIError, ChangedWhileSent) as e:
            self.unanswered.pop(file.path, None)
            if not changed_while_sent(e):
                raise
            if file.sha256 is None:
                # Hashed as it was sent, and written to meanwhile: hashing it
                # first waits until it is stable (and an append then only
                # adds to what is sent next time).
                again = await self.look(file.path)
                if again is not None:
                    await self.upload(again, base)
                return
            # The file changed while it was sent: the watcher (or the next
            # scan) reports it again once it is stable.
            self.resync(f"{file.path} changed while it was sent")
            return
        except FileNotFoundError:
            # Renamed or removed since the look, before a byte was read (a
            # save through a temporary name): what became of it is the
            # watcher's next report on this path (or the next scan's), not
            # a failure to start the session over for.
            self.unanswered.pop(file.path, None)
            return
        except BaseException:
            if file.sha256 is not None:
                self.unanswered[file.path] = file.sha256
            raise
        self.unanswered.pop(file.path, None)
        self.state.put(file.as_base(result.seq, result.sha256))
        self.committed(result.seq)

    async def send_mode(self, file: LocalFile, base: int) -> None:
        """
        Commit C{file}, whose bytes are those of version C{base}, as made
        executable or not, without sending them again.
        """
        assert file.sha256 is not None
        try:
            result = await self.api.set_executable(file.path, base, file.sha256, file.executable)
        except (StaleBase, NotFound):
            # Another change came first: the next plan weighs this one
            # against it (a mode alone is no reason for a conflict copy).
            self.resync(None)
            return
        except APIError as e:
            if e.status != 405:
                raise
            # A server without the route keeps no modes: the whole file
            # goes up, as a new version of the same bytes.
            await self.upload(file, base)
            return
        self.state.put(file.as_base(result.seq))
        self.reporter.message(f"made {file.path} {_executable(file.executable)} on the server")

    def take_mode(self, file: LocalFile, seq: int, executable: bool) -> None:
        """
        Make C{file}, which has the bytes of version C{seq}, C{executable}
        or not as that version is, in place, and record it as its base.

        @raise FileChanging: if it changed since the look.
        """
        local = self._local(file.path)
        if not file.is_still(local):
            raise FileChanging(f"{file.path} changed while it was made executable or not")
        placed = set_executable(local, executable)
        assert file.sha256 is not None
        self.state.put(placed_base(local, file.path, file.sha256, placed, seq))
        self.reporter.message(f"made {file.path} {_executable(executable)}")

    async def remove(self, path: str, base: int) -> None:
        self.check_folder()
        try:
            self.committed((await self.transfers.batcher.delete(path, base)).seq)
        except NotFound:
            pass
        except StaleBase:
            # Someone changed the file meanwhile: their version wins over
            # our delete, so fetch it again.
            await self._resolve_stale(path)
            return
        self.state.forget(path)
        self.reporter.deleted(path, on_server=True)

    async def _resolve_stale(self, path: str) -> None:
        """
        The server moved on from our base while we changed C{path}: keep our
        copy as a conflict copy, take theirs; unless theirs is our own
        upload whose answer never came (L{unanswered}): then our edit goes
        up from it. A file never synced here (no base: new, or met at a
        first sync) is left to the plan of the resync, which compares it
        with theirs: the same bytes from another client are no conflict.
        """
        file = await self.look(path)
        sent = self.unanswered.pop(path, None)
        if file is not None and file.changed and sent is not None:
            # Which version the server has is asked only when it may be ours.
            try:
                seq, recipe = await self.api.recipe(path)
            except APIError:  # deleted since, or a server without recipes
                pass
            else:
                own = reconcile.answered_late(recipe.sha256, seq, file.executable, file, sent)
                if own is not None:
                    await self.carry_out(own, path, file)
                    return
        if file is not None and file.changed and self.state.get(path) is not None:
            self.keep_as_conflict(path)
        self.state.forget(path)
        # Resync: the plan brings the server's version (and the conflict
        # copy is a new file in the manifest).
        self.resync(None)

    def _conflict_name(self, path: str) -> str:
        """
        A conflict name for this client's copy of C{path} that nothing here
        has yet.
        """
        new = conflict_name(path, self.name, self.reactor.seconds())
        n = 1
        while os.path.lexists(self._local(new)):
            n += 1
            new = conflict_name(path, f"{self.name}-{n}", self.reactor.seconds())
        return new

    def keep_as_conflict(self, path: str, source: Path | None = None) -> str:
        """
        Keep the local copy of C{path} (or the file at C{source}, a copy of
        it taken out of the way) under a conflict name, and upload it.
        """
        new = self._conflict_name(path)
        source = source or self._local(path)
        special = not stat.S_ISREG(os.lstat(source).st_mode)
        os.rename(source, self._local(new))
        if special:
            self.log.warn(
                "{path} here was a link or a special file, which is not synced; it is now {new}",
                path=path,
                new=new,
            )
        else:
            self.log.warn("{path} changed on both sides; your copy is now {new}", path=path, new=new)
        self.reporter.message(f"conflict: kept your copy of {path} as {new}")
        self.changed(new)
        return new

    async def place(
        self,
        temp: Path,
        target: Path,
        event: Download,
        result: DownloadResult,
        seen: LocalFile | None,
    ) -> None:
        """
        Move a verified download (C{result}) of C{event} into place over
        C{seen}, what the look before the download found there (unchanged
        since its base), with the version's mtime and mode: executable or
        not as the download said, else as the event said, else as C{seen}
        was.

        The move itself is atomic (L{swap}): an edit saved since that look
        is what the move takes out of the way, and is kept as a conflict
        copy, never overwritten; a file that appeared since is looked at
        again.
        """
        path = event.path
        executable = result.executable
        if executable is None:
            executable = event.executable
        if executable is None and seen is not None:
            # A server that does not say: as the file it replaces.
            executable = seen.executable
        # Taken before the move: the file keeps its inode, size and mtime.
        placed = prepare(temp, event.mtime_ns, executable, result.placed)
        copied = False
        try:
            for attempt in range(3):
                if attempt:
                    seen = await self.look(path)
                    if seen is not None and seen.changed:
                        self.keep_as_conflict(path)
                        seen = None
                try:
                    try:
                        displaced = swap(temp, target, seen, self.root)
                    except OSError as e:
                        if e.errno != errno.EXDEV or copied:
                            raise
                        # A disk mounted inside the folder, which a rename
                        # cannot reach: the download is copied onto it.
                        temp = await self.transfers.batcher.in_thread(partial(copy_beside, temp, target, self.root))
                        copied = True
                        placed = prepare(temp, event.mtime_ns, executable, None)
                        displaced = swap(temp, target, seen, self.root)
                    break
                except FileExistsError:
                    if target.is_dir() and not target.is_symlink() and not self._folder_gives_way(path, target):
                        # The box deleted all below its file: what is left
                        # (changed since, or new) is kept, and goes up, under
                        # another name. Unchanged files had their deletes first.
                        self._folder_as_conflict(path, target)
                    continue  # a new file appeared since the look: look again
            else:
                raise FileChanging(f"{path} keeps appearing while a download is placed")
        except BaseException:
            if copied:
                temp.unlink(missing_ok=True)  # in the folder: never left there
            raise
        if displaced is not None:
            self.keep_as_conflict(path, displaced)
        self.state.put(placed_base(target, path, event.sha256, placed, result.seq))


def _executable(executable: bool) -> str:
    return "executable" if executable else "not executable"
