"""
The sync engine: keeps one folder identical to the box.

Each session (L{Sessions}) scans the folder, opens the event stream with a
manifest of what changed, and works through the plan and the live events;
the folder watcher feeds it local changes. Every event and every change is
a job on its path (L{Jobs}); what a job does is decided by L{reconcile}
from the path's base and a look at the file, and carried out here, the
bytes moving through L{Transfers} and downloads put in place by
L{placing}. Nothing is ever overwritten or deleted unless it is unchanged
since its base: otherwise the local copy is kept as a conflict copy first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from attrs import define, evolve, field
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..blocks import Recipe
from ..paths import HIDDEN_DIR, BadPath
from ..reactors import IClientReactor
from ..wire import (
    FOLDERS_FEATURE,
    SHA256_TRAILER_FEATURE,
    Conflict,
    Delete,
    Download,
    Event,
    Folder,
    Hello,
    Incoming,
    InSync,
    Ready,
    Remove,
    Upload,
)
from ..wire.blocks import BLOCKS_FEATURE, ENCODINGS
from . import reconcile
from .actions import Actions
from .api import BoxsyncAPI
from .batch import Batcher
from .blockwise import Blockwise
from .identity import FolderIdentity, InsideSameBox, check_not_inside
from .ignore import IGNORE_FILE, IgnoreRules
from .jobs import Jobs, this_path_only
from .localpaths import LocalPaths
from .looks import Looks
from .passedover import PassedOver
from .placing import TMP_DAYS, remove_older
from .prefetch import Prefetch
from .room import KeepFree, Room
from .progress import Reporter
from .scanner import (
    Here,
    LocalFile,
    ScanResult,
    look_here,
    scan,
    unchanged,
)
from .session import Attempt, Fatal, NotInSync, Phase, Sessions, describe
from .state import Base, LocalState
from .transfers import SMALL_FILE, Transfers
from .walk import passed_over
from .wentback import WentBack

__all__ = ["Engine", "Fatal", "NotInSync", "SMALL_FILE"]


@define
class Engine:
    """
    @ivar once: stop as soon as the folder and the box agree.
    @ivar transfers: how many transfers of files larger than L{SMALL_FILE}
        run at once.
    @ivar keep_free: how much of the folder's disk downloads leave free.
    @ivar jobs: how many jobs run at once; the small transfers of all of
        them are gathered into batches (L{Batcher}), so a burst of small
        files moves this many at a time.
    @ivar held: whether the watcher holds a report of a path, to come (a
        file still being written): a rescan leaves that path to it.
    """

    reactor: IClientReactor
    root: Path
    api: BoxsyncAPI
    state: LocalState
    ignore: IgnoreRules
    reporter: Reporter
    name: str
    once: bool = False
    transfers: int = 4
    jobs: int = 256
    max_backoff: float = 5.0
    rescan_seconds: float = 300.0
    keep_free: KeepFree = KeepFree()
    held: Callable[[str], bool] = lambda path: False
    log = Logger()

    sessions: Sessions = field(init=False)
    _jobs: Jobs = field(init=False)
    _transfers: Transfers = field(init=False)
    _actions: Actions = field(init=False)
    _identity: FolderIdentity = field(init=False)
    _looks: Looks = field(init=False)
    _paths: LocalPaths = field(init=False)
    # The paths with a local change queued whose job has not started yet.
    _queued: set[str] = field(factory=set)
    _stream: Any = None
    # The sha256 of each file as this session's manifest reported it, and
    # whether it was executable.
    _sent: dict[str, tuple[str, bool]] = field(factory=dict)
    # What the box lost of this folder's versions, if it went back.
    _went_back: WentBack = field(factory=WentBack)
    # The files this session's scan hashed, until first looked at again.
    #: Whether the server takes an upload's sha256 after its bytes.
    _trailers: bool = False
    #: Whether the server keeps folders as folders of their own.
    _folders: bool = False
    _idle_waiters: list[Deferred[None]] = field(factory=list)
    #: What is passed over (links, special files, names the wire cannot
    #: carry, what could not be read), each with why.
    skipped: PassedOver = field(factory=PassedOver)

    def __attrs_post_init__(self) -> None:
        self._identity = FolderIdentity.of(self.root)
        self.sessions = Sessions(self.reactor, self.once, self.max_backoff)
        self._jobs = Jobs(self.reactor, self.jobs, self.transfers, self._job_failed, self._check_idle)
        self._paths = LocalPaths(self.root, self.reactor)
        if self.state.later is None:
            # The bases recorded by the jobs of one turn of the reactor (a
            # batch's files) are written in one transaction.
            self.state.later = lambda write: self.reactor.callLater(0, write)
        tmp = self.root / HIDDEN_DIR / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        kept = remove_older(tmp, time.time() - TMP_DAYS * 86400)
        for name in kept:
            if name.startswith("in-"):
                # Fetched ahead by an earlier run: of no use without it.
                (tmp / name).unlink(missing_ok=True)
        room = Room(tmp, self.reactor, keep=self.keep_free)
        self._transfers = Transfers(
            self.root,
            self.api,
            Batcher(self.api, self.reactor, self._thread),
            self._jobs,
            self.reporter,
            tmp,
            {name.split("-")[1] for name in kept if name.startswith("dl-")},
            copies=self._copies,
            recipes=self._own_recipe,
            aside={name[4:] for name in kept if name.startswith("del-")},
            clock=self.reactor,
            prefetch=Prefetch(self.api, self.reactor, self._thread, tmp, self._own_recipe, room),
            room=room,
        )
        self._looks = Looks(
            self.root,
            self.reactor,
            self.state,
            self._thread,
            self._transfers.version_recipe,
            paths=self._paths,
            cut_over=self._cut_over,
        )
        self._actions = Actions(
            self.root,
            self.name,
            self.reactor,
            self.api,
            self.state,
            self.reporter,
            self._transfers,
            self._look,
            self.changed,
            self._resync_for,
            lambda seq: self._attempt.own.add(seq),
            paths=self._paths,
            check_folder=self._identity.check,
        )

    @property
    def _attempt(self) -> Attempt:
        return self.sessions.attempt

    @property
    def last_error(self) -> str | None:
        """
        The last failure of the current session, if any.
        """
        return self._attempt.error

    # Running

    async def run(self) -> None:
        """
        Sync until stopped (or, with C{once}, until in sync).

        @raise AuthError: if the server refuses the credentials.
        @raise NotInSync: with C{once}, if the folder could not be brought
            in sync.
        """
        await self.sessions.run(self._session)

    def stop(self) -> None:
        """
        Stop: close the stream; running transfers are abandoned cleanly (a
        download leaves no partial file in the folder).
        """
        self.sessions.stop()
        self._end_session()
        self._jobs.stop()

    def pause(self) -> None:
        """
        Stop syncing until L{resume}: the stream is closed, transfers under
        way end, and changes are left for the scan that starts the next
        session.
        """
        self.sessions.pause()
        self._end_session()
        self._jobs.stop()

    def resume(self) -> None:
        self.sessions.resume()

    @property
    def paused(self) -> bool:
        return self.sessions.paused

    async def _session(self) -> bool:
        """
        One connection: scan, send the manifest, act on the plan and on live
        events until the stream ends (or, with C{once}, until in sync).

        @return: whether it ended in sync.
        """
        attempt = self.sessions.begin()
        features = await self.api.features()
        self._trailers = SHA256_TRAILER_FEATURE in features
        self._transfers.blockwise = (
            Blockwise(self.api, self._thread, [name for name in ENCODINGS if name in features])
            if BLOCKS_FEATURE in features
            else None
        )
        self._transfers.batcher.blocks = BLOCKS_FEATURE in features
        self._folders = FOLDERS_FEATURE in features
        self.ignore.reload()
        if self.state.rules != self.ignore.fingerprint:
            if self.state.rules is not None and self.state.cursor:
                # Paths may have stopped being ignored: compare every file
                # with the box, not only what changed since the cursor.
                self.log.info("the ignore rules changed: comparing every file with the box")
                self.state.cursor = 0
            self.state.rules = self.ignore.fingerprint
        cursor = self.state.cursor
        self._recall_left_in_box(cursor)
        self._went_back = await WentBack.recall(self.state, self.api, cursor)
        result = await self.scan(every_file=not cursor)
        manifest = result.to_manifest(self.name, cursor, only_changed=cursor > 0)
        self._sent = {e.path: (e.sha256, bool(e.executable)) for e in manifest.files if e.sha256 is not None}
        self._looks.hashed = {
            path: file for path, file in result.files.items() if file.changed or file.base == 0
        }
        self.log.info(
            "connecting to {url}: {files} files to report, cursor {cursor}",
            url=self.api.base_url,
            files=len(manifest.files) + len(manifest.deleted),
            cursor=cursor,
        )
        # What this folder has seen of the box as the stream is asked for:
        # every commit answered so far is in the seq its hello tells. Jobs
        # go on meanwhile, and a commit answered after the server read that
        # seq would make it look behind.
        attempt.held = self.state.highest_seq()
        # And the version it names that by, for the box to check.
        manifest = evolve(manifest, held=self.state.witness())
        stream = await self.api.open_stream(manifest, cursor or None, self._on_event)
        self._stream = stream
        if attempt.other_box:
            stream.cancel()  # its hello came first
        try:
            if self.once and await _first(self.idle(), stream.done) is not stream.done:
                # In sync, unless a job failed: then try again.
                return not attempt.failed
            # Taken over: this may run within the stream's own callbacks (its
            # end woke _first), where its result cannot be awaited yet.
            ended: Deferred[None] = Deferred()
            stream.done.chainDeferred(ended)
            await ended
            return False
        finally:
            self._stream = None
            if not stream.done.called:
                stream.cancel()
                stream.done.addErrback(lambda failure: failure.trap(CancelledError))

    def idle(self) -> Deferred[None]:
        """
        Fires once the plan is done and no job is running or waiting.
        """
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    @property
    def pending(self) -> int:
        """
        How many jobs are running or waiting.
        """
        return self._jobs.active

    @property
    def in_sync(self) -> bool:
        """
        Whether a stream is open, its plan is done, and no job is left or failed.
        """
        return (
            self._stream is not None
            and self.sessions.phase is Phase.LIVE
            and not (self._jobs.active or self._attempt.failed or self._jobs.problems)
        )

    def _check_idle(self) -> None:
        if self._jobs.active or self._attempt.plan_seq is None or self.sessions.phase is Phase.STOPPED:
            # Stopped: the last jobs end as the folder's state is closed.
            return
        if not (self._attempt.failed or self._jobs.problems):
            self._attempt.synced = True
            seq = self._attempt.reached()
            if seq is not None and seq > self.state.cursor:
                self.state.cursor = seq
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    async def scan(self, every_file: bool = False) -> ScanResult:
        """
        Scan the folder (in a thread) and record what the scan refreshed.

        @param every_file: list every file found in the result, not only
            those that changed (see L{ScanResult.unchanged}).
        """
        self.ignore.reload()
        unhashed = self._unhashed_over()
        cut = self._cut_over()
        # The bases (or, to list only what changed, their stamps) are read
        # once every file's stamps are, in the same thread: read in a
        # second thread meanwhile, each thread would wait for the other's
        # hold on the interpreter at every stat (a restart of 100,000
        # in-sync files took 2.3 s so, 2.0 s in one thread).
        stamps = None if every_file else self.state.stamps
        result: ScanResult = await self._thread(
            lambda: scan(self.root, self.state.all, self.ignore, unhashed, cut, stamps)
        )
        # What the scan found missing was deleted only if the folder is
        # still the one synced.
        self._identity.check()
        if result.refreshed:
            self.state.put_many(result.refreshed)
        self.skipped.found((each.path, each.reason) for each in result.skipped)
        return result

    def not_synced(self, path: str, reason: str | None) -> None:
        if reason is None:
            self.skipped.gone(path)
        else:
            self.skipped.add(path, reason)

    def _cut_over(self) -> int | None:
        """
        The size over which a file that is read is cut into its blocks as
        it is hashed: large files move by their blocks, if the server takes
        them (their uploads then need not read them again).
        """
        return SMALL_FILE if self._transfers.blockwise is not None else None

    def _unhashed_over(self) -> int | None:
        """
        The size over which a new file is not hashed before its upload but
        as it is sent, if the server takes that (files that move alone).
        """
        return SMALL_FILE if self._trailers else None

    def _copies(self, event: Download) -> list[Path]:
        """
        The local files known to have the content of the download C{event},
        other than the file it replaces.
        """
        paths = [base.path for base in self.state.with_sha256(event.sha256) if base.path != event.path]
        found = []
        for path in paths:
            try:
                found.append(self._local(path))
            except BadPath:
                continue
        return found

    async def _own_recipe(self, path: str) -> dict[Path, Recipe]:
        """
        The recipe of the file at C{path} here, as the server has it for
        the version this client has, if the file's stamps are still those
        its base recorded (so it need not be cut to find its blocks): by its
        local path; else nothing.
        """
        base = self.state.get(path)
        if base is None or base.folder or not unchanged(self.root, path, base):
            return {}
        recipe = await self._transfers.version_recipe(base)
        return {} if recipe is None else {self._local(path): recipe}

    def _thread(self, fn: Callable[[], Any]) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn)

    # Events from the server

    def _on_event(self, event: Event) -> None:
        if self._attempt.other_box:
            return  # the session ends: nothing it says is of this folder
        if isinstance(event, Hello):
            self.api.stream_id = event.stream
            self._check_box(event)
            return
        if isinstance(event, Ready):
            self._attempt.plan_seq = event.seq
            self.sessions.phase = Phase.LIVE
            self.log.info("plan received; up to seq {seq}", seq=event.seq)
            self._check_idle()
            return
        if isinstance(event, Incoming):
            self._incoming(event)
            return
        if isinstance(event, (Download, Folder, Delete)):
            self._attempt.latest[event.path] = max(event.seq, self._attempt.latest.get(event.path, 0))
            if self._attempt.plan_seq is not None:
                self._attempt.seen = max(self._attempt.seen, event.seq)
        handlers: dict[type, Callable[[Any], Awaitable[None]]] = {
            Upload: self._upload_event,
            Download: self._download,
            Folder: self._folder_event,
            Delete: self._delete_local,
            Remove: self._remove_event,
            Conflict: self._conflict_event,
            InSync: self._insync,
        }
        handler = handlers[type(event)]
        self.submit(event.path, lambda: handler(event))  # type: ignore[union-attr]

    def _check_box(self, hello: Hello) -> None:
        """
        Make sure the server's box is the one the bases are of. If it is
        another (a new box, or this one restored from a backup: its seq is
        behind what this folder has seen, or it committed another version
        at the seq of the one this folder names its history by), a file
        here that it lacks was not deleted there: every base is forgotten,
        and the next session compares every file with the box as a first
        sync does, deleting nothing. A folder inside another synced with
        the same box stops the client (L{check_not_inside}).
        """
        if hello.box is not None:
            try:
                check_not_inside(self.root, hello.box)
            except InsideSameBox as e:
                self._stop_for(e)
                return
        known, held = self.state.box, self._attempt.held
        went_back_to = None
        if hello.box is not None and known is not None and hello.box != known:
            why = "it is another box"
        elif hello.seq < held:
            why = f"its last change is {hello.seq}, before the {held} this folder has seen"
            went_back_to = hello.seq
        elif hello.other_history:
            why = (
                "it went back to an earlier state and on from there: "
                "its changes are not the ones this folder has seen"
            )
        else:
            if hello.box is not None and known is None:
                self.state.box = hello.box
            return
        self.log.warn(
            "the server's box is not the one {root} was synced with ({why}): comparing every file with it as "
            "at a first sync, deleting nothing here or there",
            root=str(self.root),
            why=why,
        )
        self.state.start_over(hello.box, went_back_to)
        self._attempt.other_box = True
        self._attempt.resync = True
        self._attempt.error = f"the server's box is not the one this folder was synced with ({why})"
        self._end_session()

    def _incoming(self, event: Incoming) -> None:
        """
        Fetch ahead the blocks of a large file another client is sending,
        if it is to come here.
        """
        prefetch = self._transfers.prefetch
        if (
            prefetch is None
            or self._transfers.blockwise is None
            or event.size <= SMALL_FILE
            or self.sessions.paused
            or self.ignore.ignored(event.path)
        ):
            return
        try:
            self._local(event.path)
        except BadPath:
            return
        prefetch.announced(event)

    # Local changes (from the watcher)

    def changed(self, path: str) -> None:
        if self.sessions.paused:
            return  # the scan of the next session finds it
        if path in self._queued:
            # A job that has not looked yet will see this change too.
            return
        base = self.state.get(path)
        if base is not None and unchanged(self.root, path, base):
            # Most often the watcher's report of a file this client has
            # just placed: a job would find it unchanged too.
            return
        self._queued.add(path)

        async def job() -> None:
            self._queued.discard(path)
            await self._local_change(path)

        self.submit(path, job)

    def deleted(self, path: str) -> None:
        self.skipped.gone(path)
        for base in self.state.under(path):
            self.changed(base.path)
        # The folder it was in may be empty now: a folder of its own.
        parent = path.rpartition("/")[0]
        if parent:
            self.changed(parent)

    def rescan(self) -> None:
        Deferred.fromCoroutine(self._rescan()).addErrback(self._rescan_failed)

    def _rescan_failed(self, failure: Failure) -> None:
        if failure.check(*Fatal):
            self._stop_for(failure.value)  # type: ignore[arg-type]
            return
        self.log.failure("rescan failed", failure)

    def _stop_for(self, error: Exception, about: str = "") -> None:
        """
        End the session for C{error} (met by the job of the path C{about},
        if any), which stops the client.
        """
        self.log.error("{about}{error}", about=f"{about}: " if about else "", error=error)
        self._attempt.fatal = error
        self._end_session()

    def _end_session(self) -> None:
        """
        Close this session's stream, if it is open yet.
        """
        if self._stream is not None:
            self._stream.cancel()

    async def _rescan(self) -> None:
        result = await self.scan()
        if self._rules_changed():
            return
        for file in result.files.values():
            if (file.changed or file.base == 0) and not self.held(file.path):
                self.changed(file.path)
        for deleted in result.deleted:
            self.changed(deleted.path)
        for path, seq in result.folders.items():
            if seq == 0:
                self.changed(path)

    def _rules_changed(self) -> bool:
        """
        Whether the ignore rules are no longer those of this session: the
        session then ends, and the next compares every file with the box.
        """
        self.ignore.reload()
        if self.state.rules is None or self.state.rules == self.ignore.fingerprint:
            return False
        self._attempt.planned = True
        self._resync_for("the ignore rules changed")
        return True

    # Jobs

    def submit(self, path: str, job: Callable[[], Awaitable[None]]) -> Deferred[None]:
        """
        Run C{job} after every earlier job on C{path}, within the limit of
        jobs at once.
        """
        return self._jobs.submit(path, job)

    def _job_failed(self, failure: Failure, path: str, job: Callable[[], Awaitable[None]]) -> None:
        if failure.check(CancelledError):
            return
        if self.sessions.phase is Phase.STOPPED:
            # Whatever a stop cut short is no trouble to report, but it is
            # not done either.
            self._attempt.failed = True
            return
        if failure.check(*Fatal):
            self._stop_for(failure.value, path)  # type: ignore[arg-type]
            return
        error = describe(failure.value, self.root, path)  # type: ignore[arg-type]
        alone = not self.once and this_path_only(failure.value)
        # A path that fails again as it did is tried again quietly (status
        # lists it): said at every try, it would be a line a minute for ever.
        said = self.log.debug if alone and self._jobs.problems.get(path) == error else self.log.warn
        said("{path}: {error}", path=path, error=error)
        self._attempt.error = f"{path}: {error}"
        if alone:
            self._jobs.retry_later(path, job, error)
            return
        self._request_resync()

    @property
    def problems(self) -> dict[str, str]:
        """
        The paths that cannot be synced for now, each with why.
        """
        return self._jobs.problems

    def _request_resync(self) -> None:
        """
        Something did not go through: end this session, so that the next
        (after a back-off) starts from a fresh scan and plan.
        """
        self._attempt.failed = True
        if self.once:
            # The idle check ends a --once session; it sees the failure.
            return
        self._attempt.resync = True
        self._end_session()

    def _resync_for(self, reason: str | None) -> None:
        if reason is not None:
            self._attempt.error = reason
        self._request_resync()

    def _local(self, path: str) -> Path:
        return self._paths(path)

    def _look(self, path: str, to_upload: bool = False, local: Path | None = None) -> Deferred[LocalFile | None]:
        """
        The file at C{path} (mapped to C{local}, if the caller has it) now
        (see L{Looks.look}); a large new file is not hashed for an upload if
        the server takes its hash after its bytes.
        """
        unhashed = self._unhashed_over() if to_upload else None
        return Deferred.fromCoroutine(self._looks.look(path, unhashed, local))

    def _as_folder(self, path: str) -> tuple[Base | None, Here] | None:
        """
        The base of C{path} and what it holds now, if what happens there
        concerns a folder (L{reconcile.is_folder}) and the server keeps
        folders; else C{None}: a file's rules apply.
        """
        if not self._folders:
            return None
        base, here = self.state.get(path), look_here(self.root, path, self._paths.folders())
        return (base, here) if reconcile.is_folder(base, here) else None

    async def _folder_action(self, action: reconcile.Action, path: str, here: Here) -> None:
        """
        Carry out C{action} about a path that holds C{here} and concerns a
        folder.
        """
        await self._actions.carry_out(action, path, None)
        if isinstance(action, (reconcile.Remove, reconcile.RemoveFolder)) and here is not Here.NOTHING:
            # A file became a folder, or the other way round: what is there
            # is new once the delete is committed.
            self.changed(path)

    async def _local_change(self, path: str) -> None:
        folder = self._as_folder(path)
        if folder is not None:
            base, here = folder
            if not self.ignore.ignored(path, here in (Here.EMPTY, Here.FOLDER)):
                await self._folder_action(reconcile.on_folder_change(base, here), path, here)
            return
        if self.ignore.ignored(path):
            return
        file = await self._look(path, to_upload=True)
        if file is None and self._passed_over(path):
            # A link or a FIFO put in the place of a synced file does not
            # delete it: the box keeps its version.
            return
        if file is not None and file.changed and file.links > 1:
            self._other_names(file)
        await self._actions.carry_out(reconcile.on_local_change(self.state.get(path), file), path, file)
        if path == IGNORE_FILE:
            self._rules_changed()

    def _other_names(self, file: LocalFile) -> None:
        """
        Look again at the other synced names of C{file}, a file with hard
        links written through one of them: the watcher hears only of the
        name it was written through, but every name now has its bytes.
        """
        for other in self.state.with_inode(file.inode):
            if other.path != file.path and not other.folder:
                self.changed(other.path)

    def _passed_over(self, path: str) -> bool:
        """
        Count what is at C{path}, if it is not synced for its kind (a link,
        a FIFO made here), as passed over, said now rather than at the next
        scan.

        @return: whether it is.
        """
        try:
            local = self._local(path)
        except BadPath:
            return False
        reason = passed_over(local)
        if reason is not None:
            self.skipped.add(os.path.relpath(local, self.root), reason)
        return reason is not None

    async def _upload_event(self, event: Upload) -> None:
        folder = self._as_folder(event.path)
        if folder is not None:
            await self._actions.carry_out(reconcile.on_folder_upload(event, *folder), event.path, None)
            return
        file = await self._look(event.path, to_upload=True)
        await self._actions.carry_out(reconcile.on_upload(event, self.state.get(event.path), file), event.path, file)

    async def _insync(self, event: InSync) -> None:
        if self._outdated(event.path, event.seq):
            return
        folder = self._as_folder(event.path)
        if folder is not None:
            _, here = folder
            await self._actions.carry_out(reconcile.on_folder_insync(event.seq, here), event.path, None)
            return
        file = await self._look(event.path)
        action = reconcile.on_insync(event.seq, self._sent.get(event.path), file)
        await self._actions.carry_out(action, event.path, file)

    async def _download(self, event: Download) -> None:
        path = event.path
        if not self._comes_here(path, event.seq):
            return
        try:
            target = self._local(path)
        except BadPath as e:
            self.log.warn("cannot place {path} here: {error}", path=path, error=e)
            return
        file = await self._look(path, local=target)
        action = reconcile.on_download(event, file, self._actions.unanswered.pop(path, None))
        if not isinstance(action, reconcile.Fetch):
            await self._actions.carry_out(action, path, file)
            return
        if action.keep_local:
            self._actions.keep_as_conflict(path)
            file = None
        fetched = await self._transfers.download(event)
        if fetched is None:
            if self._attempt.latest.get(path, 0) <= event.seq:
                # No newer version came to say why this one could not be
                # had: the next session's plan finds out, rather than the
                # file be left out in silence.
                self._resync_for(f"{path}: version {event.seq} could not be had whole")
            return
        temp, result = fetched
        await self._actions.place(temp, target, event, result, file)
        if path == IGNORE_FILE:
            self._rules_changed()

    async def _conflict_event(self, event: Conflict) -> None:
        if self._went_back.older(event.path, event.seq):
            # The box went back to a state before the version this folder
            # has: its version is older, not another side's change.
            self.log.info(
                "{path}: the box lost the version this folder has (it went back to an earlier state); "
                "it goes up again over the box's older one",
                path=event.path,
            )
            await self._upload_event(Upload(event.path, event.seq))
            return
        await self._download(
            Download(event.path, event.sha256, event.size, event.mtime_ns, event.seq, event.executable)
        )

    async def _folder_event(self, event: Folder) -> None:
        if not self._comes_here(event.path, event.seq, is_dir=True):
            return
        here = look_here(self.root, event.path, self._paths.folders())
        file = await self._look(event.path) if here is Here.FILE else None
        await self._actions.carry_out(reconcile.on_folder(event.seq, here, file), event.path, None)

    async def _delete_local(self, event: Delete) -> None:
        self._brought_from_box(event.path, event.seq)
        if self._outdated(event.path, event.seq):
            return
        self._transfers.deleted(event.path)
        folder = self._as_folder(event.path)
        if folder is not None:
            await self._actions.carry_out(reconcile.on_folder_delete(*folder), event.path, None)
            return
        file = await self._look(event.path)
        await self._actions.carry_out(reconcile.on_delete(event.seq, self.state.get(event.path), file), event.path, file)

    async def _remove_event(self, event: Remove) -> None:
        folder = self._as_folder(event.path)
        if folder is not None:
            base, here = folder
            await self._folder_action(reconcile.on_folder_remove(event.base, base, here), event.path, here)
            return
        await self._actions.remove_gone(event.path, event.base)

    def _recall_left_in_box(self, cursor: int) -> None:
        """
        At a session's start, what the box holds that is not brought here:
        as remembered, if the box is to tell only what changed since the
        C{cursor}; forgotten if it is to tell every file again.
        """
        self.skipped.forget_box()
        if not cursor:
            self.state.brought_from_box()
            return
        for path, (seq, reason) in self.state.left_in_box().items():
            self.skipped.left_in_box(path, seq, reason, said=True)

    def _comes_here(self, path: str, seq: int, is_dir: bool = False) -> bool:
        """
        Whether the box's version C{seq} of C{path} is to be brought here:
        no ignore rule leaves it out (one a default rule leaves out is
        listed), and this folder has nothing newer of it.
        """
        if self.ignore.ignored(path, is_dir):
            self._left_in_box(path, seq, is_dir)
            return False
        if self._outdated(path, seq):
            return False
        self._brought_from_box(path, seq)
        return True

    def _left_in_box(self, path: str, seq: int, is_dir: bool = False) -> None:
        """
        The box's version C{seq} of C{path} is not brought here: an ignore
        rule leaves it out. Listed and remembered if a default rule does
        (the folder's own rules are the user's word).
        """
        reason = self.ignore.by_default(path, is_dir)
        if reason is None:
            return
        why = f"in the box, not brought here: {reason}"
        if self.skipped.left_in_box(path, seq, why):
            self.state.leave_in_box(path, seq, why)

    def _brought_from_box(self, path: str, seq: int) -> None:
        if self.skipped.gone_from_box(path, seq):
            self.state.brought_from_box(path)

    def _outdated(self, path: str, seq: int) -> bool:
        return reconcile.outdated(self.state.get(path), seq)


async def _first(*ds: Deferred[Any]) -> Deferred[Any]:
    """
    Wait for the first of C{ds} to fire, and return it. The results stay in
    the Deferreds, for their owners to consume.
    """
    winner: Deferred[Deferred[Any]] = Deferred()

    def fired(result: Any, d: Deferred[Any]) -> Any:
        if not winner.called:
            winner.callback(d)
        return result

    for d in ds:
        d.addBoth(fired, d)
    return await winner
