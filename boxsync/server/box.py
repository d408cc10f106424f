"""
One account's box: where its storage, its index rows and its listeners meet.

Every change of the box goes through L{Box.upload}, L{Box.set_executable},
L{Box.delete}, L{Box.make_folder} or L{Box.delete_folder}: check the base,
move the bytes (or change the file's mode, or make or remove the folder),
commit the row under the next seq, tell the listeners.
The HTTP routes of every protocol (boxsync's own and the legacy one) call
these and nothing lower.
"""

from __future__ import annotations

import os
import time
from typing import Awaitable, BinaryIO, Callable, Sequence

from attrs import Factory, define, evolve, field, frozen
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ..blocks import BLOCK_MIN, Block, Recipe, recipe_of
from ..paths import folders_above
from ..wire import Held
from ..wire.blocks import BlockCommit
from ..wire.events import Incoming
from .blockstore import Arrivals, IBlockStore, LocalBlockStore
from .http import as_event
from .hub import Hub
from .index import FileRecord, IIndex, Moved, VersionRecord
from .relay import Announced, BlockNews, Commit, Relay, Seen
from .sharing import SharedVersions, VersionDamaged
from .staging import StagingFile
from .storage import BoxStorage, Change, LocalFile
from .turns import Turns

__all__ = ["Box", "StaleBase", "NotFound", "DigestMismatch", "MissingBlocks"]


class StaleBase(Exception):
    """
    The path is no longer at the base the change started from.
    """

    def __init__(self, path: str, current: int) -> None:
        super().__init__(f"{path!r} has changed on the server (now at seq {current})")
        self.current = current


class NotFound(Exception):
    """
    No live file at that path.
    """


class DigestMismatch(ValueError):
    """
    The uploaded bytes do not have the sha256 the client announced.
    """


class MissingBlocks(Exception):
    """
    A commit by recipe names blocks the account has nowhere.

    @ivar missing: their sha256s.
    """

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"{len(missing)} blocks are missing")
        self.missing = missing


def _row_seq(row: FileRecord | None) -> int:
    return 0 if row is None else row.seq


def _read_seq(row: FileRecord | None) -> int | None:
    """
    The seq of C{row} as read, for the index to check it is still the
    path's row as it commits (C{None}: no row).
    """
    return None if row is None else row.seq


def _or_stale(outcome: FileRecord | Moved) -> FileRecord | StaleBase:
    """
    The record committed, or the stale base of a path that moved on.
    """
    return StaleBase(outcome.path, _row_seq(outcome.row)) if isinstance(outcome, Moved) else outcome


def _stale(outcome: FileRecord | Moved) -> FileRecord:
    """
    The record committed.

    @raise StaleBase: if its path moved on.
    """
    record = _or_stale(outcome)
    if isinstance(record, StaleBase):
        raise record
    return record


def _live_seq(row: FileRecord | None) -> int | None:
    """
    The seq of the live version C{row} is, if it is one.
    """
    return None if row is None or row.deleted else row.seq


def _check(path: str, base: int | None, row: FileRecord | None) -> None:
    """
    @raise StaleBase: if a change from C{base} cannot apply to C{row}.
    """
    if base is not None:
        current = _row_seq(row)
        # Base 0 also matches a tombstone: a deleted path is free again.
        if base != current and not (base == 0 and row is not None and row.deleted):
            raise StaleBase(path, current)


def _take_group(queue: list[_Pending]) -> list[_Pending]:
    """
    Take from the front of C{queue} the longest run of uploads to distinct
    paths (a second upload of a path is checked against the first's commit,
    so it waits for the next group).
    """
    paths: set[str] = set()
    for n, pending in enumerate(queue):
        if pending.path in paths:
            break
        paths.add(pending.path)
    else:
        n = len(queue)
    group = queue[:n]
    del queue[:n]
    return group


@frozen
class _Unchanged:
    """
    An upload of the bytes its path holds already: nothing to commit, and
    its answer is the version that holds them.
    """

    record: FileRecord


@define
class _Pending:
    """
    An upload whose bytes are durable, waiting for its group's commit.

    @ivar executable: whether the new version is executable; C{None}: as the
        version it replaces (not, for a new file).
    """

    path: str
    staged: StagingFile
    base: int | None
    mtime_ns: int
    origin: str
    stream: str | None
    # Part of a batch, whose upload is logged as a whole.
    batched: bool = False
    executable: bool | None = None
    done: Deferred[FileRecord] = field(factory=Deferred)

    def same_as(self, row: FileRecord) -> bool:
        """
        Whether this upload is the version C{row} already: its bytes, and
        its mode if it states one.
        """
        return (
            not row.deleted
            and row.sha256 == self.staged.sha256
            and self.executable in (None, row.executable)
        )

    def mode_over(self, row: FileRecord | None) -> bool:
        """
        Whether the new version is executable, over C{row}, the version
        it replaces.
        """
        if self.executable is not None:
            return self.executable
        return row is not None and not row.deleted and row.executable


@define
class Box:
    """
    @ivar arrivals: who waits here for a block still being sent.
    @ivar _queue: uploads ready to commit, in arrival order; whatever
        arrives while a group is being committed forms the next group, so a
        lone upload waits for nothing and a burst shares each step.
    """

    account: str
    index: IIndex
    storage: BoxStorage
    hub: Hub
    blocks: IBlockStore = field(
        default=Factory(lambda self: LocalBlockStore(self.account, self.index, self.storage), takes_self=True)
    )
    shared: SharedVersions = field(
        default=Factory(
            lambda self: SharedVersions(self.account, self.index, self.storage, self.blocks), takes_self=True
        )
    )
    relay: Relay | None = None
    turns: Turns = field(factory=Turns)
    arrivals: Arrivals = field(factory=Arrivals)
    _queue: list[_Pending] = field(factory=list)
    _committing: bool = False
    _seen: Seen = field(factory=Seen)
    _following: DeferredLock = field(factory=DeferredLock)
    log = Logger()

    async def committed_otherwise(self, held: Held) -> bool:
        """
        Whether this box committed another version than C{held} at its seq:
        then the client that holds it synced with a history this box does
        not have (the box was restored from a backup and went on from
        there). C{False} where the box cannot tell: nothing at that seq
        (not yet, or a delete or a folder there, or a version no longer
        kept).
        """
        found: FileRecord | VersionRecord | None = await self.index.version(self.account, held.seq)
        return found is not None and (found.path, found.sha256) != (held.path, held.sha256)

    async def _check_base(self, path: str, base: int | None) -> FileRecord | None:
        row: FileRecord | None = await self.index.get(self.account, path)
        _check(path, base, row)
        return row

    async def upload(
        self,
        path: str,
        staged: StagingFile,
        base: int | None,
        sha256: str | None,
        mtime_ns: int | None,
        origin: str = "",
        stream: str | None = None,
        executable: bool | None = None,
    ) -> FileRecord:
        """
        Commit C{staged} as the new version of C{path}.

        The bytes are made durable first, outside the box's lock and beside
        other uploads; then the upload joins the next group commit: one index
        read, the renames, one fsync per folder and one index transaction
        for the whole group. Nothing is acknowledged before it is durable.

        @param base: the seq the upload started from; C{None} for last
            writer wins.
        @param sha256: the digest the client announced, if any.
        @param executable: whether the new version is executable; C{None}
            (a client that does not say): as the version it replaces.
        @raise StaleBase: if C{path} has moved on from C{base}.
        @raise DigestMismatch: if the bytes do not match C{sha256}.
        """
        if sha256 is not None and sha256 != staged.sha256:
            staged.discard()
            raise DigestMismatch(
                f"body has sha256 {staged.sha256}, not {sha256} as announced"
            )
        if mtime_ns is None:
            mtime_ns = time.time_ns()
        await self.storage.finish(staged, mtime_ns)
        return await self.commit(path, staged, base, mtime_ns, origin, stream, executable)

    async def commit_recipe(self, commit: BlockCommit, origin: str = "", stream: str | None = None) -> FileRecord:
        """
        Commit a new version of C{commit.path} made of the blocks of its
        recipe: assembled in staging from the blocks the account has, its
        sha256 checked, then committed as an upload is.

        @raise MissingBlocks: if some of the blocks are nowhere.
        @raise StaleBase: if the path has moved on from C{commit.base}.
        @raise DigestMismatch: if the blocks do not make the sha256 said.
        """
        recipe = commit.recipe
        # A stale base is refused before a byte is read; a commit of the
        # very bytes the path holds (sent again) is not a conflict.
        row: FileRecord | None = await self.index.get(self.account, commit.path)
        try:
            _check(commit.path, commit.base, row)
        except StaleBase:
            if row is not None and not row.deleted and row.sha256 == recipe.sha256:
                return row
            raise
        # A kept version with this content (a rename: its delete came
        # first) becomes the new file under a second name; else the file
        # is made of its blocks.
        kept: int | None = await self.index.find_kept(self.account, recipe.sha256, recipe.size)
        staged = None
        if kept is not None:
            try:
                staged = await self.shared.staged(kept, recipe.sha256, recipe.size)
            except VersionDamaged:
                staged = None
        if staged is None:
            staged = self.storage.new_staging()
            try:
                missing = await self.blocks.assemble(recipe, staged)
            except BaseException:
                staged.discard()
                raise
            if missing:
                staged.discard()
                raise MissingBlocks(missing)
        record = await self.upload(
            commit.path, staged, commit.base, recipe.sha256, commit.mtime_ns, origin, stream, commit.executable
        )
        if record.sha256 == recipe.sha256 and recipe.size > BLOCK_MIN:
            await self.index.set_recipe(self.account, record.seq, recipe)
        await self.blocks.used(recipe)
        return record

    async def version_file(self, seq: int) -> tuple[BinaryIO, FileRecord | VersionRecord] | None:
        """
        Version C{seq}, open for reading, with its record: the live file if
        it is the live version of its path, else the kept one; C{None} if
        it is neither.
        """
        version: FileRecord | VersionRecord | None = await self.index.version(self.account, seq)
        if version is None:
            return None

        found: BinaryIO | None
        if isinstance(version, FileRecord):
            found = await self.storage.in_thread(lambda: self.storage.open_file(version.path))
        else:
            found = await self.shared.open(seq)
        return None if found is None else (found, version)

    async def restore(
        self,
        path: str,
        seq: int,
        base: int | None,
        origin: str = "",
        stream: str | None = None,
        to: str | None = None,
    ) -> FileRecord:
        """
        Make version C{seq} of C{path} the current one, as a new commit (its
        file becomes the live one under a second name: nothing is copied).
        The live version is kept, as any overwritten one.

        @param base: the seq the caller saw the path restored to at (0: none
            or deleted); C{None}: whatever it is at now.
        @param to: the path to restore the version to, if not C{path}: a
            copy of it, there (the live version too).
        @raise NotFound: if C{seq} is not a kept version of C{path}.
        @raise StaleBase: if the path restored to moved on from C{base}.
        """
        version: FileRecord | VersionRecord | None = await self.index.version(self.account, seq)
        if version is None or version.path != path:
            raise NotFound(f"version {seq} of {path!r} is not kept")
        target = path if to is None else to
        staged: StagingFile | None
        if isinstance(version, FileRecord):
            if target == path:
                await self._check_base(path, base)
                return version  # the live version already
            staged = await self.storage.in_thread(lambda: self.storage.stage_copy(path))
        else:
            staged = await self.shared.staged(seq, version.sha256, version.size)
        if staged is None:
            raise NotFound(f"version {seq} of {path!r} is not kept")
        return await self.upload(
            target, staged, base, version.sha256, version.mtime_ns, origin, stream, version.executable
        )

    async def recipe(self, path: str, seq: int | None = None) -> tuple[FileRecord | VersionRecord, Recipe]:
        """
        The live version of C{path} and its recipe (cut from the box file
        the first time it is asked for, and kept in the index).

        @param seq: the version of C{path} wanted instead, live or kept (a
            kept one only if its recipe is in the index).
        @raise NotFound: if there is no live file at C{path}, or the box
            file is no longer the version the index has (changed by hand:
            the next start-up adopts it); or if version C{seq} is not one of
            C{path} with a recipe.
        """
        if seq is not None:
            version: FileRecord | VersionRecord | None = await self.index.version(self.account, seq)
            if version is None or version.path != path:
                raise NotFound(f"version {seq} of {path!r} is not kept")
            if isinstance(version, VersionRecord):
                kept: Recipe | None = await self.index.recipe(self.account, seq)
                if kept is None:
                    raise NotFound(f"version {seq} of {path!r} has no recipe")
                return version, kept
        row: FileRecord | None = await self.index.get(self.account, path)
        if row is None or row.deleted or row.folder or seq not in (None, row.seq):
            raise NotFound(path)
        recipe: Recipe | None = await self.index.recipe(self.account, row.seq)
        if recipe is not None:
            return row, recipe

        def cut() -> Recipe | None:
            opened = self.storage.open_fd(path)
            if opened is None:
                return None
            try:
                return recipe_of(opened)
            finally:
                os.close(opened)

        recipe = await self.storage.in_thread(cut)
        if recipe is None or recipe.sha256 != row.sha256:
            raise NotFound(path)
        await self.index.set_recipe(self.account, row.seq, recipe)
        return row, recipe

    async def commit(
        self,
        path: str,
        staged: StagingFile,
        base: int | None,
        mtime_ns: int,
        origin: str = "",
        stream: str | None = None,
        executable: bool | None = None,
    ) -> FileRecord:
        """
        Commit C{staged}, whose bytes are durable already and have their
        final mtime (C{mtime_ns}), as the new version of C{path}, in the
        next group commit; it gets its mode as it is placed.

        @param base: the seq the upload started from; C{None} for last
            writer wins.
        @param executable: as for L{upload}.
        @raise StaleBase: if C{path} has moved on from C{base}.
        """
        pending = _Pending(path, staged, base, mtime_ns, origin, stream, executable=executable)
        record: FileRecord = await self._enqueue([pending])[0]
        return record

    def commit_batch(
        self,
        uploads: Sequence[tuple[str, StagingFile, int | None, int, bool | None]],
        origin: str = "",
        stream: str | None = None,
    ) -> list[Deferred[FileRecord]]:
        """
        Commit each of C{uploads} (path, staged file, base, mtime, whether
        executable) as L{commit} does, all in the same group; each is logged
        at debug level only (the batch is logged as a whole).

        @return: for each, a Deferred that fires with its stored record or
            fails with why it was refused.
        """
        return self._enqueue(
            [
                _Pending(path, staged, base, mtime_ns, origin, stream, batched=True, executable=executable)
                for path, staged, base, mtime_ns, executable in uploads
            ]
        )

    def _enqueue(self, pending: list[_Pending]) -> list[Deferred[FileRecord]]:
        self._queue.extend(pending)
        if not self._committing:
            Deferred.fromCoroutine(self._commit_queued())
        return [each.done for each in pending]

    async def _commit_queued(self) -> None:
        """
        Commit the queued uploads, a group at a time, until none is left.
        """
        self._committing = True
        try:
            while self._queue:
                group = _take_group(self._queue)
                outcomes: list[FileRecord | _Unchanged | Exception | Failure]
                try:
                    async with self.turns:
                        outcomes = list(await self._commit_group(group))
                except Exception:
                    failure = Failure()
                    for pending in group:
                        pending.staged.discard()
                    outcomes = [failure] * len(group)
                # In commit order, so events leave in seq order; a commit is
                # published even if its uploader has gone meanwhile.
                for pending, outcome in zip(group, outcomes):
                    if isinstance(outcome, FileRecord):
                        self._committed(pending, outcome)
                    if pending.done.called:
                        continue
                    if isinstance(outcome, _Unchanged):
                        pending.done.callback(outcome.record)
                    elif isinstance(outcome, FileRecord):
                        pending.done.callback(outcome)
                    else:
                        pending.done.errback(outcome)
        finally:
            self._committing = False

    def _committed(self, pending: _Pending, record: FileRecord) -> None:
        self.log.emit(
            LogLevel.debug if pending.batched else LogLevel.info,
            "{origin} uploaded {path} ({size} bytes) as seq {seq}",
            origin=pending.origin or "a client",
            path=record.path,
            size=record.size,
            seq=record.seq,
        )
        self._publish(record, pending.stream)

    async def _commit_group(self, group: list[_Pending]) -> list[FileRecord | _Unchanged | Exception]:
        """
        Check the bases of C{group}, move the accepted uploads into place and
        commit them in one transaction.

        @return: for each upload, its stored record or why it failed.
        """
        rows: dict[str, FileRecord] = await self.index.get_many(
            self.account, [pending.path for pending in group]
        )
        outcomes: dict[int, FileRecord | _Unchanged | Exception] = {}
        accepted: list[int] = []
        for i, pending in enumerate(group):
            row = rows.get(pending.path)
            try:
                _check(pending.path, pending.base, row)
            except StaleBase as e:
                pending.staged.discard()
                if row is not None and pending.same_as(row):
                    # The path already holds these very bytes: most often
                    # this client's own commit, whose answer it never got
                    # (the server went down), sent again. Not a conflict.
                    outcomes[i] = _Unchanged(row)
                else:
                    outcomes[i] = e
            else:
                accepted.append(i)
        modes = {i: group[i].mode_over(rows.get(group[i].path)) for i in accepted}
        placed = await self.storage.place_many(
            [(group[i].staged, group[i].path, modes[i]) for i in accepted]
        )
        changes: dict[int, Change] = {}
        for i, outcome in zip(accepted, placed):
            if isinstance(outcome, Change):
                changes[i] = outcome
            else:
                outcomes[i] = outcome
        if not changes:
            return [outcomes[i] for i in range(len(group))]
        records = await self._commit_changes(
            list(changes.values()),
            [_live_seq(rows.get(group[i].path)) for i in changes],
            [_read_seq(rows.get(group[i].path)) for i in changes],
            [
                FileRecord(
                    group[i].path,
                    group[i].staged.size,
                    group[i].staged.sha256,
                    group[i].mtime_ns,
                    0,
                    False,
                    group[i].origin,
                    change.ctime_ns,
                    modes[i],
                )
                for i, change in changes.items()
            ],
        )
        outcomes.update(zip(changes, records))
        return [outcomes[i] for i in range(len(group))]

    async def _commit_changes(
        self,
        changes: list[Change],
        replaced: list[int | None],
        expected: list[int | None],
        records: list[FileRecord],
    ) -> list[FileRecord | StaleBase]:
        """
        Commit C{records}, the rows of C{changes} made in the box: all of
        them or, if the commit fails, none, with the box put back as it was.
        What each change replaced is kept as the version C{replaced} names.
        Each is committed only if its path's row is still at the seq
        C{expected} gives (as read when its base was checked): one that
        moved on meanwhile, through another server on the same index, is
        undone in the box and refused as a stale base.

        @raise DiskFull: if the index's disk is full.
        """
        try:
            stored: list[FileRecord | Moved] = await self.index.commit_many(
                self.account, records, expected, [change.previous is not None for change in changes]
            )
        except BaseException:
            await self.storage.undo(changes)
            raise
        moved = [change for change, outcome in zip(changes, stored) if isinstance(outcome, Moved)]
        if moved:
            await self.storage.undo(moved)
        done = [n for n, outcome in enumerate(stored) if not isinstance(outcome, Moved)]
        await self.storage.settle([changes[n] for n in done], [replaced[n] for n in done])
        return [_or_stale(outcome) for outcome in stored]

    async def set_executable(
        self,
        path: str,
        base: int,
        sha256: str,
        executable: bool,
        origin: str = "",
        stream: str | None = None,
    ) -> FileRecord:
        """
        Commit a new version of C{path} that differs from the current one,
        at C{base}, only in being executable or not: its bytes stay where
        they are, the box file's mode changes.

        @param sha256: the sha256 of the bytes the client has.
        @raise NotFound: if there is no live file at C{path}.
        @raise StaleBase: if C{path} has moved on from C{base}, or its bytes
            are not C{sha256}.
        """
        async with self.turns:
            row = await self._check_base(path, base)
            if row is None or row.deleted:
                raise NotFound(path)
            if row.sha256 != sha256:
                raise StaleBase(path, row.seq)
            if row.executable == executable:
                return row
            try:
                ctime_ns = await self.storage.set_executable(path, executable)
            except FileNotFoundError:
                raise NotFound(path) from None
            try:
                # The bytes stay where they are: the version replaced has
                # no file of its own to keep.
                (outcome,) = await self.index.commit_many(
                    self.account,
                    [evolve(row, origin=origin, ctime_ns=ctime_ns, executable=executable)],
                    [row.seq],
                    [False],
                )
                record = _stale(outcome)
            except BaseException:
                await self.storage.set_executable(path, row.executable)
                raise
        self._announce("made executable" if executable else "made not executable", record, origin, stream)
        return record

    async def take_by_hand(
        self, record: FileRecord, row: FileRecord | None, found: LocalFile | None
    ) -> FileRecord | None:
        """
        Commit C{record}, what a person did by hand at its path in the box
        while this server ran (a new version, or a delete), as the start-up
        adoption would: only if neither the file there (C{found}, or none)
        nor the path's row (C{row}, or none) moved since they were looked
        at. A commit of a client's made meanwhile wins; what still differs
        is found again at the next look.

        @return: the record committed, or C{None} if none was.
        """
        path = record.path
        async with self.turns:
            if not await self._as_looked_at(path, found, row):
                return None
            # What was there is gone (written over or removed by hand):
            # nothing of it is kept.
            (outcome,) = await self.index.commit_many(
                self.account, [record], [None if row is None else row.seq], [False]
            )
        if isinstance(outcome, Moved):
            return None
        self.log.info(
            "{path} was {what} in the box by hand while the server ran: seq {seq}",
            path=path,
            what="removed" if record.deleted else "written",
            seq=outcome.seq,
        )
        self._publish(outcome, None)
        return outcome

    async def restamp_by_hand(self, row: FileRecord, found: LocalFile) -> None:
        """
        The file of C{row} was found with the row's bytes but other stamps
        (C{found}: a C{touch} by hand): its mtime is put back to the row's
        and its stamps recorded, no new version, if neither the file nor
        the row moved since they were looked at (as L{take_by_hand}).
        """
        path = row.path
        async with self.turns:
            if not await self._as_looked_at(path, found, row):
                return
            now: LocalFile | None = found
            if found.mtime_ns != row.mtime_ns:
                now = await self.storage.in_thread(lambda: self.storage.set_mtime(path, row.mtime_ns))
            if now is not None:
                await self.index.restamp(self.account, [(path, now.ctime_ns)])

    async def _as_looked_at(self, path: str, found: LocalFile | None, row: FileRecord | None) -> bool:
        """
        Whether the file at C{path} is still C{found} (C{None}: none) and its
        row still C{row}, as a look at the box by hand found them. Called in
        the box's turn.
        """
        now = await self.storage.in_thread(lambda: self.storage.look(path))
        return now == found and await self.index.get(self.account, path) == row

    async def delete(
        self, path: str, base: int | None, origin: str = "", stream: str | None = None
    ) -> FileRecord:
        """
        Delete C{path}: remove the file, commit a tombstone.

        @raise NotFound: if there is no live file at C{path}.
        @raise StaleBase: if C{path} has moved on from C{base}.
        """
        (outcome,) = await self.delete_many([(path, base)], origin, stream)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def delete_many(
        self,
        deletes: Sequence[tuple[str, int | None]],
        origin: str = "",
        stream: str | None = None,
        batched: bool = False,
    ) -> list[FileRecord | BaseException]:
        """
        Delete each of C{deletes} (a path and the seq it must still be at,
        or C{None} for whatever it is at) as L{delete} would, all in one
        commit; each succeeds or fails on its own.

        @param batched: a batch's deletes, logged as a whole by the caller
            (each file's line is at debug level).

        @return: for each, its tombstone or why it was not deleted
            (L{NotFound}, L{StaleBase}).
        """
        refused: dict[int, BaseException] = {}
        async with self.turns:
            rows: dict[str, FileRecord] = await self.index.get_many(self.account, [path for path, _ in deletes])
            going: list[tuple[int, FileRecord]] = []
            for place, (path, base) in enumerate(deletes):
                row = rows.get(path)
                try:
                    _check(path, base, row)
                    if row is None or row.deleted or row.folder:
                        raise NotFound(path)
                except (NotFound, StaleBase) as e:
                    refused[place] = e
                    continue
                going.append((place, row))
            # Removals below these folders leave them in place.
            keep = await self._folders_above(*(row.path for _, row in going))
            changes = await self.storage.remove_many([row.path for _, row in going], keep)
            records = await self._commit_changes(
                changes,
                [row.seq for _, row in going],
                [row.seq for _, row in going],
                [FileRecord(row.path, 0, row.sha256, time.time_ns(), 0, True, origin) for _, row in going],
            )
        committed = {place: record for (place, _), record in zip(going, records)}
        for record in records:
            if isinstance(record, FileRecord):
                self._announce("deleted", record, origin, stream, LogLevel.debug if batched else LogLevel.info)
        return [refused[place] if place in refused else committed[place] for place in range(len(deletes))]

    async def make_folder(
        self, path: str, base: int | None, origin: str = "", stream: str | None = None
    ) -> FileRecord:
        """
        Commit the folder C{path}, synced as a folder of its own, and make it
        in the box if it is not there. A folder that is there already is
        the version that holds it: nothing new is committed.

        @param base: the seq the change starts from (0: nothing live at
            C{path}); C{None}: whatever is there.
        @raise StaleBase: if C{path} has moved on from C{base}.
        @raise BadPath: if a file is at C{path} (or on the way) in the box.
        """
        async with self.turns:
            row = await self.index.get(self.account, path)
            if row is not None and row.folder and not row.deleted:
                await self.storage.make_folder(path)
                return row
            _check(path, base, row)
            made = await self.storage.make_folder(path)
            record = await self._commit_folder(
                path, False, origin, self.storage.remove_folder if made else None, _read_seq(row)
            )
        self._announce("made the folder", record, origin, stream)
        return record

    async def delete_folder(
        self, path: str, base: int, origin: str = "", stream: str | None = None
    ) -> FileRecord:
        """
        Delete the folder C{path}: commit its tombstone, and remove it from
        the box if nothing is in it (what is in it has entries of its own,
        whose deletes remove it).

        @raise NotFound: if there is no live folder at C{path}.
        @raise StaleBase: if C{path} has moved on from C{base}.
        """
        async with self.turns:
            row = await self._check_base(path, base)
            if row is None or row.deleted or not row.folder:
                raise NotFound(path)
            gone = await self.storage.remove_folder(path, await self._folders_above(path))
            record = await self._commit_folder(path, True, origin, self.storage.make_folder if gone else None, row.seq)
        self._announce("deleted the folder", record, origin, stream)
        return record

    async def _commit_folder(
        self,
        path: str,
        deleted: bool,
        origin: str,
        undo: Callable[[str], Awaitable[object]] | None,
        expected: int | None,
    ) -> FileRecord:
        """
        Commit the folder C{path} (its tombstone if C{deleted}), made (or
        removed) in the box already, if its row is still at the seq
        C{expected}; if the commit fails, C{undo} of the path puts the box
        back as it was.

        @raise StaleBase: if the path's row moved on from C{expected}.
        """
        try:
            (outcome,) = await self.index.commit_many(
                self.account, [FileRecord(path, 0, "", time.time_ns(), 0, deleted, origin, folder=True)], [expected]
            )
            return _stale(outcome)
        except BaseException:
            if undo is not None:
                await undo(path)
            raise

    async def _folders_above(self, *paths: str) -> set[str]:
        """
        The folders above C{paths} that are synced as folders of their own:
        a removal below them leaves them in place.
        """
        above: dict[str, None] = {}
        for path in paths:
            above.update(dict.fromkeys(folders_above(path)))
        rows: dict[str, FileRecord] = await self.index.get_many(self.account, list(above)) if above else {}
        return {folder for folder, row in rows.items() if row.folder and not row.deleted}

    def _announce(
        self, what: str, record: FileRecord, origin: str, stream: str | None, level: LogLevel = LogLevel.info
    ) -> None:
        """
        Log the commit of C{record} (at C{level}), and tell every stream but
        C{stream}.
        """
        self.log.emit(
            level,
            "{origin} {what} {path} as seq {seq}",
            origin=origin or "a client",
            what=what,
            path=record.path,
            seq=record.seq,
        )
        self._publish(record, stream)

    def _publish(self, record: FileRecord, stream: str | None) -> None:
        """
        Tell every stream but C{stream} of the commit of C{record}, here and,
        through the relay, on the other servers.
        """
        self._seen.fresh(record.seq)
        self.hub.publish(self.account, as_event(record), exclude=stream)
        if self.relay is not None:
            self.relay.tell(self.account, record.seq, stream)

    async def put_block(self, block: Block, data: bytes) -> None:
        """
        Keep C{data}, the bytes of C{block}, for a commit to come; whoever
        waits for it, on this server or through the relay on the others,
        may read it now.

        @raise BadBlock: if they are not its bytes.
        """
        await self.blocks.put(block, data)
        self.arrivals.arrived(block.sha256)
        if self.relay is not None:
            self.relay.tell_arrived(self.account, block.sha256)

    async def block(self, sha256: str, wait: float, clock: IReactorTime) -> bytes | None:
        """
        The bytes of the block C{sha256}, or C{None} if the account has it
        nowhere; if it has not, waiting up to C{wait} seconds (on C{clock})
        for it to arrive: a block of a file still being sent.
        """
        if not wait:
            found: bytes | None = await self.blocks.read(sha256)
            return found
        # Waited for before the block is looked for: one that arrives while
        # it is looked for is not missed.
        arrival = self.arrivals.wait(sha256)
        found = await self.blocks.read(sha256)
        if found is not None:
            arrival.cancel()
            arrival.addErrback(lambda failure: failure.trap(CancelledError))
            return found
        try:
            await arrival.addTimeout(wait, clock)
        except defer.TimeoutError:
            pass
        # Looked for at the end of the wait too: the news of its arrival on
        # another server may have been lost on the way.
        found = await self.blocks.read(sha256)
        return found

    def announce(self, runs: Sequence[Incoming], stream: str | None) -> None:
        """
        Tell every stream but C{stream}, here and through the relay on the
        other servers, of C{runs}: blocks on their way from a client.
        """
        for run in runs:
            self.hub.publish(self.account, run, exclude=stream)
            if self.relay is not None:
                self.relay.tell_incoming(self.account, run, stream)

    def heard(self, news: BlockNews) -> None:
        """
        C{news} from another server of blocks on their way: told to the
        streams here, or the blocks read by whoever waits for them.
        """
        if isinstance(news, Announced):
            self.hub.publish(self.account, news.incoming, exclude=news.stream)
            return
        for sha256 in news.hashes:
            self.arrivals.arrived(sha256)

    async def remote(self, commit: Commit) -> None:
        """
        Publish here what another server committed (C{commit}), but for what
        was published already.
        """
        async with self._following:
            count = commit.last - commit.first + 1
            records: list[FileRecord] = await self.index.since(self.account, commit.first - 1, count)
            if self._seen.low is None:
                self._seen.caught_up(commit.first - 1)
            for record in records:
                if record.seq <= commit.last and self._seen.fresh(record.seq):
                    self.hub.publish(self.account, as_event(record), exclude=commit.stream)

    async def follow(self) -> None:
        """
        From now on, publish here what other servers commit: every seq past
        the account's current one, once, whether its notification comes or
        is lost (L{catch_up} finds it then).
        """
        async with self._following:
            if self._seen.low is None:
                self._seen.caught_up(await self.index.current_seq(self.account))

    async def catch_up(self, page: int = 1000) -> None:
        """
        Publish what the index has past the last seq every earlier one of
        which was published here: commits whose notification was lost.
        """
        async with self._following:
            if self._seen.low is None:
                self._seen.caught_up(await self.index.current_seq(self.account))
                return
            while True:
                low = self._seen.low
                assert low is not None
                records: list[FileRecord] = await self.index.since(self.account, low, page)
                for record in records:
                    if self._seen.fresh(record.seq):
                        self.hub.publish(self.account, as_event(record))
                if records:
                    self._seen.caught_up(records[-1].seq)
                if len(records) < page:
                    return
