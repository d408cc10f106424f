"""
The index: one row per path and account — what the box holds (a file, or a
folder synced as one of its own), at which seq.

L{IIndex} is what the rest of the server uses; L{SQLIndex} its queries, in
SQL both SQLite and PostgreSQL understand, with the rows mapped to records
here once. L{SQLiteIndex} is the embedded implementation, on the standard
library's SQLite, with every query run in one dedicated thread so the
reactor never waits on the disk; L{boxsync.server.pgindex} the one on
PostgreSQL, for several servers sharing one index.
"""

from __future__ import annotations

import hashlib
import errno
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Protocol, Sequence, TypeVar, cast

from attrs import define, evolve, field, frozen
from twisted.internet.defer import fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from ..batches import batched
from ..blocks import BLOCK_MIN, Block, Recipe
from ..sqlite import DamagedDatabase, naming_damage, transaction, use_wal
from ..wire.values import MAX_COUNT
from .staging import DiskFull

__all__ = [
    "BlockSource",
    "Database",
    "FileRecord",
    "IIndex",
    "IndexUnavailable",
    "Moved",
    "SQLIndex",
    "SQLiteIndex",
    "TrashPage",
    "Stats",
    "VersionRecord",
]

_T = TypeVar("_T")


@frozen
class FileRecord:
    """
    The current version of one path: a live file, or a tombstone if
    C{deleted}.
    """

    path: str
    size: int
    sha256: str
    mtime_ns: int
    seq: int
    deleted: bool = False
    origin: str = ""
    #: The ctime of the box file once placed (0: not known): with its size
    #: and mtime, how the start-up adoption knows it is still that file.
    ctime_ns: int = 0
    #: Whether this version is executable.
    executable: bool = False
    #: Whether this is a folder (synced as one of its own: see
    #: C{docs/protocol.md}, "Folders"), with no bytes (C{sha256} empty).
    folder: bool = False
    #: When it was committed, in ns since the epoch (0: before that was kept).
    committed_ns: int = 0



@frozen
class VersionRecord:
    """
    A version of a path that was overwritten or deleted, kept (its file is
    the storage's, under its C{seq}).

    @ivar ended_seq: the seq of the commit that overwrote or deleted it.
    @ivar ended_ns: when that was, in ns since the epoch.
    """

    path: str
    size: int
    sha256: str
    mtime_ns: int
    seq: int
    origin: str
    ended_seq: int
    ended_ns: int
    committed_ns: int = 0
    executable: bool = field(default=False, converter=bool)


@frozen
class BlockSource:
    """
    Where a block can be read: at C{offset} in the version C{seq}, which is
    the live file at C{path}, or a kept version if C{path} is C{None}.
    """

    block: Block
    seq: int
    offset: int
    path: str | None


@frozen
class TrashPage:
    """
    A page of the trash as L{IIndex.trash_json} lists it.

    @ivar rows: the text of a JSON array of the files' rows.
    @ivar count: how many rows it holds.
    @ivar last: the C{ended_seq} of its last row (the C{before} of the
        page after it), if it has any.
    """

    rows: str
    count: int
    last: int | None


class IndexUnavailable(Exception):
    """
    The index cannot be used: its database cannot be reached, or was made
    by a newer boxsync.
    """


@frozen
class Moved:
    """
    A record of L{IIndex.commit_many} that was not committed: its path's
    row is no longer the one expected, but C{row}.
    """

    path: str
    row: FileRecord | None


@frozen
class Stats:
    files: int
    bytes: int
    seq: int


class IIndex(Interface):
    """
    The index of every account's files. All methods return Deferreds.
    """

    def get(account: str, path: str) -> Any:
        """
        The L{FileRecord} of C{path}, or C{None}.
        """

    def get_many(account: str, paths: Sequence[str]) -> Any:
        """
        A C{dict} from path to L{FileRecord} for those of C{paths} it has.
        """

    def since(account: str, seq: int, limit: int) -> Any:
        """
        Up to C{limit} records with a seq above C{seq}, in seq order.
        """

    def page(account: str, after: str, limit: int) -> Any:
        """
        Up to C{limit} records (tombstones included) whose path sorts after
        C{after}, in path order.
        """

    def commit(account: str, record: FileRecord) -> Any:
        """
        Store C{record} under the account's next seq (the C{seq} of C{record}
        is ignored) and return the stored record.
        """

    def commit_many(
        account: str,
        records: Sequence[FileRecord],
        expected: Sequence[int | None] | None = None,
        kept: Sequence[bool] | None = None,
    ) -> Any:
        """
        Commit several records in one transaction, in order.

        @param expected: for each record, the seq its path's row had when
            the caller read it (C{None}: no row). A record whose path has
            moved on since (a commit by another server on the same index)
            is not committed: its place in the result holds a L{Moved}
            instead. No commit comes between this check and this one's.
        @param kept: for each record, whether the version it replaces has
            its file kept (C{None}: all have). One that has not (its bytes
            were overwritten or removed by hand, or are the new version's
            too) is forgotten with its blocks, not kept: the history never
            lists a version no restore can bring back, and no kept version
            gives up a block for one that does not hold it.
        """

    def restamp(account: str, stamps: Sequence[tuple[str, int]]) -> Any:
        """
        Record the ctime of each (path, ctime) of C{stamps}, for live files
        found unchanged in content: no new seq, no event.
        """

    def current_seq(account: str) -> Any:
        """
        The account's latest seq (0 if it has none).
        """

    def box_id(account: str) -> Any:
        """
        The id of the account's box: made of the index's own id (made with
        it, the same for every server of it, and carried along when it
        moves, by C{boxsync-admin migrate}) and the account. A client
        synced with another box (an empty one made where the box used to
        be, another account's) is told by it.
        """

    def set_recipe(account: str, seq: int, recipe: Recipe) -> Any:
        """
        Record the blocks of version C{seq} (live or kept).
        """

    def recipe(account: str, seq: int) -> Any:
        """
        The L{Recipe} of version C{seq}, or C{None} if its blocks are not
        recorded.
        """

    def find_blocks(account: str, hashes: Sequence[str], kept_first: bool = False) -> Any:
        """
        A C{dict} from each of C{hashes} that some live file or kept version
        of the account holds to a L{BlockSource} of it: a live file's if
        there is one, or with C{kept_first} a kept version's if there is
        one.
        """

    def find_kept(account: str, sha256: str, size: int) -> Any:
        """
        The seq of the newest kept version with the content C{sha256} and
        C{size}, or C{None}.
        """

    def versions(account: str, path: str) -> Any:
        """
        The kept versions of C{path}, newest first, as L{VersionRecord}s.
        """

    def version(account: str, seq: int) -> Any:
        """
        Version C{seq} of any path, live (a L{FileRecord}) or kept (a
        L{VersionRecord}), or C{None}.
        """

    def trash(account: str, under: str, limit: int) -> Any:
        """
        The files deleted under the folder C{under} ("" for all) and not
        back since, newest deletion first, at most C{limit}: for each, the
        L{VersionRecord} of its last version (its C{ended_seq} is the
        deletion's).
        """

    def trash_json(account: str, under: str, limit: int, before: int | None = None) -> Any:
        """
        The same files as L{trash} (with C{before}, only those deleted by a
        commit before that seq), as a L{TrashPage} whose rows are, for
        each, C{[path, seq, committed_ns, size, sha256, origin, ended_seq,
        ended_ns]} of its last version (made by the database where it can:
        the quick way to list 100,000).
        """

    def at(account: str, under: str, when_ns: int) -> Any:
        """
        The versions (L{FileRecord}s or L{VersionRecord}s) the paths under
        the folder C{under} had at C{when_ns}, in path order.
        """

    def shared_blocks(account: str) -> Any:
        """
        The blocks a kept version's file holds that a kept version with a
        higher seq holds too: C{(seq, offset, size)} each.
        """

    def holes(account: str, seq: int, only_in: Sequence[int] = ()) -> Any:
        """
        The blocks of kept version C{seq} its file does not hold, as
        C{(offset, Block)} pairs; with C{only_in}, only those that no kept
        version but those C{only_in} holds.
        """

    def orphans(account: str, going: Sequence[int]) -> Any:
        """
        The kept versions, other than C{going}, with holes whose blocks only
        versions C{going} hold.
        """

    def set_held(account: str, seq: int, offsets: Sequence[int], held: bool) -> Any:
        """
        Record whether the file of kept version C{seq} holds its blocks at
        C{offsets}.
        """

    def kept_versions(account: str) -> Any:
        """
        Every kept version of the account, as L{VersionRecord}s, oldest
        ending first.
        """

    def kept_blocks(account: str) -> Any:
        """
        The blocks of the account's kept versions (those their recipes
        list), as a C{dict} from the seq of each version with blocks to
        its C{(sha256, size)} pairs in order.
        """

    def forget_versions(account: str, seqs: Sequence[int]) -> Any:
        """
        Forget the kept versions C{seqs} (and their blocks); return those
        it had, for their files to be removed.
        """

    def stats(account: str) -> Any:
        """
        A L{Stats} of the account's live files (not its folders).
        """


_SCHEMA: list[list[str]] = [
    # version 1
    [
        """CREATE TABLE files (
            account TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            mtime_ns INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            origin TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (account, path)
        )""",
        "CREATE INDEX files_by_seq ON files (account, seq)",
        """CREATE TABLE accounts (
            account TEXT PRIMARY KEY,
            seq INTEGER NOT NULL
        )""",
    ],
    # version 2: the box file's ctime (0 for rows from before: the next
    # adoption hashes those files once and records it).
    ["ALTER TABLE files ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0"],
    # version 3: the versions overwritten or deleted since, kept; and the
    # blocks of versions, live or kept, where they are known.
    [
        """CREATE TABLE versions (
            account TEXT NOT NULL,
            seq INTEGER NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            mtime_ns INTEGER NOT NULL,
            origin TEXT NOT NULL,
            ended_seq INTEGER NOT NULL,
            ended_ns INTEGER NOT NULL,
            PRIMARY KEY (account, seq)
        )""",
        "CREATE INDEX versions_by_path ON versions (account, path, seq)",
        "CREATE INDEX versions_by_end ON versions (account, ended_ns)",
        """CREATE TABLE blocks (
            account TEXT NOT NULL,
            seq INTEGER NOT NULL,
            n INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            offset INTEGER NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (account, seq, n)
        )""",
        "CREATE INDEX blocks_by_hash ON blocks (account, sha256)",
        "CREATE TABLE recipes (account TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (account, seq))",
        # A file of one block (up to BLOCK_MIN bytes) is found by its own
        # sha256, with no row in blocks.
        "CREATE INDEX files_by_sha256 ON files (account, sha256)",
        "CREATE INDEX versions_by_sha256 ON versions (account, sha256)",
    ],
    # version 4: when each version was committed (0 for those from before).
    [
        "ALTER TABLE files ADD COLUMN committed_ns INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE versions ADD COLUMN committed_ns INTEGER NOT NULL DEFAULT 0",
    ],
    # version 5: the executable bit (rows from before were written 0644).
    [
        "ALTER TABLE files ADD COLUMN executable INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE versions ADD COLUMN executable INTEGER NOT NULL DEFAULT 0",
    ],
    # version 6: folders synced as folders of their own.
    ["ALTER TABLE files ADD COLUMN folder INTEGER NOT NULL DEFAULT 0"],
    # version 7: whether a kept version's file holds each of its blocks
    # (0: a hole punched there, as a newer version holds the same block).
    ["ALTER TABLE blocks ADD COLUMN held INTEGER NOT NULL DEFAULT 1"],
    # version 8: the box's id, made once (see IIndex.box_id).
    [
        "CREATE TABLE box_identity (id TEXT NOT NULL)",
        "INSERT INTO box_identity (id) VALUES (lower(hex(randomblob(16))))",
    ],
]

_COLUMNS = "path, size, sha256, mtime_ns, seq, deleted, origin, ctime_ns, executable, folder, committed_ns"


def _record(row: tuple[Any, ...]) -> FileRecord:
    path, size, sha256, mtime_ns, seq, deleted, origin, ctime_ns, executable, folder, committed_ns = row
    return FileRecord(
        path, size, sha256, mtime_ns, seq, bool(deleted), origin, ctime_ns, bool(executable), bool(folder),
        committed_ns,
    )


def _full(e: sqlite3.Error) -> BaseException:
    """
    C{e}, as a L{DiskFull} if SQLite says its disk is full.
    """
    if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return DiskFull(errno.ENOSPC, "no space left for the index")
    return e


def _transaction(db: sqlite3.Connection, work: Callable[[], _T]) -> _T:
    """
    Run C{work} in one write transaction: all of it is committed, or (on any
    failure, the C{COMMIT} itself included) none of it.

    @raise DiskFull: if the disk is full.
    """
    try:
        with transaction(db):
            result = work()
    except sqlite3.Error as e:
        if (full := _full(e)) is not e:
            raise full from e
        raise
    return result


def open_database(path: Path) -> sqlite3.Connection:
    """
    Open (creating or upgrading) the index database at C{path}.

    @raise DamagedDatabase: if it is no database, or a damaged one.
    """
    # Another process (a second server, boxsync-admin) may be opening or
    # upgrading it at the same moment: wait for its lock, as long as it takes
    # on a busy machine, rather than fail.
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
    try:
        with naming_damage(path):
            _open(db)
    except DamagedDatabase as e:
        db.close()
        raise DamagedDatabase(
            f"{e} (restore it from a backup; moved away, the box's files are indexed anew, without their history)"
        ) from e
    except BaseException:
        db.close()
        raise
    return db


def _open(db: sqlite3.Connection) -> None:
    use_wal(db)
    db.execute("PRAGMA synchronous=NORMAL")
    (version,) = db.execute("PRAGMA user_version").fetchone()
    for number, steps in enumerate(_SCHEMA[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        # Unless another connection took this step meanwhile.
        if db.execute("PRAGMA user_version").fetchone()[0] < number:
            for statement in steps:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={number}")
        db.execute("COMMIT")


class Database(Protocol):
    """
    The part of a DB-API connection the queries use: SQLite's, or
    PostgreSQL's (L{boxsync.server.pgindex}) behind a thin adapter. The SQL
    is written with C{?} placeholders, in what both dialects understand.
    """

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...


class SQLIndex:
    """
    L{IIndex} as SQL queries, for any L{Database}: a subclass runs them,
    off the reactor thread, with L{_run} (a read) and L{_write} (all of it
    in one transaction, or none of it).
    """

    #: Whether the database is SQLite, whose planner some queries steer.
    _sqlite: ClassVar[bool] = False
    #: The box's id, once read.
    _box_id: str | None = None

    def _run(self, fn: Callable[[Database], _T]) -> Any:
        raise NotImplementedError()

    def _write(self, fn: Callable[[Database], _T]) -> Any:
        raise NotImplementedError()

    def get(self, account: str, path: str) -> Any:
        def q(db: Database) -> FileRecord | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE account=? AND path=?",
                (account, path),
            ).fetchone()
            return None if row is None else _record(row)

        return self._run(q)

    def get_many(self, account: str, paths: Sequence[str]) -> Any:
        return self._run(lambda db: _get_many(db, account, paths))

    def _select(self, condition: str, order: str, *args: object) -> Any:
        sql = f"SELECT {_COLUMNS} FROM files WHERE account=? AND {condition} ORDER BY {order} LIMIT ?"
        return self._run(lambda db: [_record(row) for row in db.execute(sql, args)])

    def since(self, account: str, seq: int, limit: int) -> Any:
        return self._select("seq>?", "seq", account, seq, limit)

    def page(self, account: str, after: str, limit: int) -> Any:
        return self._select("path>?", "path", account, after, limit)

    def commit(self, account: str, record: FileRecord) -> Any:
        d = self.commit_many(account, [record])
        d.addCallback(lambda records: records[0])
        return d

    def commit_many(
        self,
        account: str,
        records: Sequence[FileRecord],
        expected: Sequence[int | None] | None = None,
        kept: Sequence[bool] | None = None,
    ) -> Any:
        return self._write(lambda db: _commit_all(db, account, records, expected, kept))

    def restamp(self, account: str, stamps: Sequence[tuple[str, int]]) -> Any:
        def work(db: Database) -> None:
            db.executemany(
                "UPDATE files SET ctime_ns=? WHERE account=? AND path=? AND deleted=0",
                [(ctime_ns, account, path) for path, ctime_ns in stamps],
            )

        return self._write(work)

    def current_seq(self, account: str) -> Any:
        return self._run(lambda db: _current_seq(db, account))

    async def box_id(self, account: str) -> str:
        if self._box_id is None:
            rows = await self._run(lambda db: db.execute("SELECT id FROM box_identity").fetchall())
            self._box_id = str(rows[0][0])
        return hashlib.sha256(f"{self._box_id}/{account}".encode()).hexdigest()[:32]

    def set_recipe(self, account: str, seq: int, recipe: Recipe) -> Any:
        def work(db: Database) -> None:
            db.execute("DELETE FROM blocks WHERE account=? AND seq=?", (account, seq))
            db.executemany(
                'INSERT INTO blocks (account, seq, n, sha256, "offset", size) VALUES (?, ?, ?, ?, ?, ?)',
                [
                    (account, seq, n, block.sha256, offset, block.size)
                    for n, (offset, block) in enumerate(recipe.placed())
                ],
            )
            db.execute("INSERT INTO recipes (account, seq) VALUES (?, ?) ON CONFLICT DO NOTHING", (account, seq))

        return self._write(work)

    def recipe(self, account: str, seq: int) -> Any:
        def q(db: Database) -> Recipe | None:
            whole = db.execute(
                "SELECT sha256, size FROM files WHERE account=? AND seq=? AND deleted=0 AND folder=0 UNION ALL "
                "SELECT sha256, size FROM versions WHERE account=? AND seq=?",
                (account, seq, account, seq),
            ).fetchone()
            if whole is None:
                return None
            sha256, size = whole
            if size <= BLOCK_MIN:
                return Recipe(sha256, size, (Block(sha256, size),) if size else ())
            if db.execute("SELECT 1 FROM recipes WHERE account=? AND seq=?", (account, seq)).fetchone() is None:
                return None
            blocks = tuple(
                Block(block, block_size)
                for block, block_size in db.execute(
                    "SELECT sha256, size FROM blocks WHERE account=? AND seq=? ORDER BY n", (account, seq)
                )
            )
            return Recipe(sha256, size, blocks)

        return self._run(q)

    def find_blocks(self, account: str, hashes: Sequence[str], kept_first: bool = False) -> Any:
        def q(db: Database) -> dict[str, BlockSource]:
            found: dict[str, BlockSource] = {}
            for chunk, marks in _in_chunks(hashes, 250):
                # Live files first (unless kept_first): a kept version is
                # read only if no live file has the block.
                live = (
                    "SELECT b.sha256, b.size, b.seq, b.offset, f.path FROM blocks b "
                    "JOIN files f ON f.account=b.account AND f.seq=b.seq AND f.deleted=0 "
                    f"WHERE b.account=? AND b.sha256 IN ({marks}) "
                    "UNION ALL SELECT sha256, size, seq, 0, path FROM files "
                    f"WHERE account=? AND deleted=0 AND size BETWEEN 1 AND ? AND sha256 IN ({marks})"
                )
                kept = (
                    "SELECT b.sha256, b.size, b.seq, b.offset, NULL FROM blocks b "
                    "JOIN versions v ON v.account=b.account AND v.seq=b.seq "
                    f"WHERE b.account=? AND b.held=1 AND b.sha256 IN ({marks}) "
                    "UNION ALL SELECT sha256, size, seq, 0, NULL FROM versions "
                    f"WHERE account=? AND size BETWEEN 1 AND ? AND sha256 IN ({marks})"
                )
                first, then = (kept, live) if kept_first else (live, kept)
                for sha256, size, seq, offset, path in db.execute(
                    f"{first} UNION ALL {then}",
                    [account, *chunk, account, BLOCK_MIN, *chunk] * 2,
                ):
                    if sha256 not in found:
                        found[sha256] = BlockSource(Block(sha256, size), seq, offset, path)
            return found

        return self._run(q)

    def find_kept(self, account: str, sha256: str, size: int) -> Any:
        def q(db: Database) -> int | None:
            row = db.execute(
                "SELECT MAX(seq) FROM versions WHERE account=? AND sha256=? AND size=?", (account, sha256, size)
            ).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return self._run(q)

    def versions(self, account: str, path: str) -> Any:
        def q(db: Database) -> list[VersionRecord]:
            return [
                VersionRecord(*row)
                for row in db.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM versions WHERE account=? AND path=? ORDER BY seq DESC",
                    (account, path),
                )
            ]

        return self._run(q)

    def version(self, account: str, seq: int) -> Any:
        def q(db: Database) -> FileRecord | VersionRecord | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE account=? AND seq=? AND deleted=0 AND folder=0", (account, seq)
            ).fetchone()
            if row is not None:
                return _record(row)
            row = db.execute(f"SELECT {_VERSION_COLUMNS} FROM versions WHERE account=? AND seq=?", (account, seq)).fetchone()
            return None if row is None else VersionRecord(*row)

        return self._run(q)

    def trash(self, account: str, under: str, limit: int) -> Any:
        def q(db: Database) -> list[VersionRecord]:
            columns = ", ".join("v." + c.strip() for c in _VERSION_COLUMNS.split(","))
            query = _trash_query(columns, account, under, limit, self._sqlite)
            return [VersionRecord(*row) for row in db.execute(*query)]

        return self._run(q)

    def trash_json(self, account: str, under: str, limit: int, before: int | None = None) -> Any:
        def q(db: Database) -> TrashPage:
            query = _trash_query(_TRASH_ROW, account, under, limit, self._sqlite, before)
            rows = [list(row) for row in db.execute(*query)]
            return TrashPage(json.dumps(rows), len(rows), rows[-1][6] if rows else None)

        return self._run(q)

    def at(self, account: str, under: str, when_ns: int) -> Any:
        def q(db: Database) -> list[FileRecord | VersionRecord]:
            low, high = _folder_range(under)
            found: list[FileRecord | VersionRecord] = [
                VersionRecord(*row)
                for row in db.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM versions WHERE account=? AND path>=? AND path<? "
                    "AND committed_ns<=? AND ended_ns>?",
                    (account, low, high, when_ns, when_ns),
                )
            ]
            found += [
                _record(row)
                for row in db.execute(
                    f"SELECT {_COLUMNS} FROM files WHERE account=? AND path>=? AND path<? "
                    "AND deleted=0 AND folder=0 AND committed_ns<=?",
                    (account, low, high, when_ns),
                )
            ]
            return sorted(found, key=lambda version: version.path)

        return self._run(q)

    def shared_blocks(self, account: str) -> Any:
        def q(db: Database) -> list[tuple[int, int, int]]:
            return [
                (seq, offset, size)
                for seq, offset, size in db.execute(
                    f"SELECT b.seq, b.offset, b.size FROM {_kept_blocks('b')} WHERE b.account=? AND b.held=1 "
                    f"AND EXISTS (SELECT 1 FROM {_kept_blocks('c')} "
                    "WHERE c.account=b.account AND c.sha256=b.sha256 AND c.held=1 AND c.seq>b.seq) "
                    "ORDER BY b.seq, b.offset",
                    (account,),
                )
            ]

        return self._run(q)

    def holes(self, account: str, seq: int, only_in: Sequence[int] = ()) -> Any:
        def q(db: Database) -> list[tuple[int, Block]]:
            # With only_in: none held by a kept version outside it.
            outside = (
                f" AND NOT EXISTS (SELECT 1 FROM {_kept_blocks('c')} WHERE c.account=b.account "
                f"AND c.sha256=b.sha256 AND c.held=1 AND c.seq NOT IN ({','.join('?' * len(only_in))}))"
                if only_in
                else ""
            )
            return [
                (offset, Block(sha256, size))
                for offset, sha256, size in db.execute(
                    "SELECT b.offset, b.sha256, b.size FROM blocks b WHERE b.account=? AND b.seq=? AND b.held=0"
                    f"{outside} ORDER BY b.n",
                    (account, seq, *only_in),
                )
            ]

        return self._run(q)

    def orphans(self, account: str, going: Sequence[int]) -> Any:
        def q(db: Database) -> list[int]:
            marks = ",".join("?" * len(going))
            return [
                seq
                for (seq,) in db.execute(
                    f"SELECT DISTINCT b.seq FROM {_kept_blocks('b')} WHERE b.account=? AND b.held=0 "
                    f"AND b.seq NOT IN ({marks}) AND b.sha256 IN (SELECT c.sha256 FROM blocks c "
                    f"WHERE c.account=b.account AND c.held=1 AND c.seq IN ({marks}))",
                    (account, *going, *going),
                )
            ]

        return self._run(q) if going else succeed([])

    def set_held(self, account: str, seq: int, offsets: Sequence[int], held: bool) -> Any:
        def work(db: Database) -> None:
            db.executemany(
                'UPDATE blocks SET held=? WHERE account=? AND seq=? AND "offset"=?',
                [(int(held), account, seq, offset) for offset in offsets],
            )

        return self._write(work)

    def kept_versions(self, account: str) -> Any:
        def q(db: Database) -> list[VersionRecord]:
            return [
                VersionRecord(*row)
                for row in db.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM versions WHERE account=? ORDER BY ended_ns, seq", (account,)
                )
            ]

        return self._run(q)

    def kept_blocks(self, account: str) -> Any:
        def q(db: Database) -> dict[int, list[tuple[str, int]]]:
            found: dict[int, list[tuple[str, int]]] = {}
            for seq, sha256, size in db.execute(
                f"SELECT b.seq, b.sha256, b.size FROM {_kept_blocks('b')} WHERE b.account=? ORDER BY b.seq, b.n",
                (account,),
            ):
                found.setdefault(seq, []).append((sha256, size))
            return found

        return self._run(q)

    def forget_versions(self, account: str, seqs: Sequence[int]) -> Any:
        def work(db: Database) -> list[VersionRecord]:
            old = []
            for seq in seqs:
                row = db.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM versions WHERE account=? AND seq=?", (account, seq)
                ).fetchone()
                if row is None:
                    continue
                old.append(VersionRecord(*row))
                db.execute("DELETE FROM versions WHERE account=? AND seq=?", (account, seq))
                _forget_blocks(db, account, seq)
            return old

        return self._write(work)

    def stats(self, account: str) -> Any:
        def q(db: Database) -> Stats:
            files, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files "
                "WHERE account=? AND deleted=0 AND folder=0",
                (account,),
            ).fetchone()
            return Stats(files=int(files), bytes=int(size), seq=_current_seq(db, account))

        return self._run(q)


def _trash_query(
    columns: str, account: str, under: str, limit: int, sqlite: bool = False, before: int | None = None
) -> tuple[str, tuple[Any, ...]]:
    """
    The query of C{columns} of the last versions (C{v}) of the files
    (C{f}) deleted under C{under} (by a commit before the seq C{before}, if
    given), newest deletion first, at most C{limit}.

    @param sqlite: whether to steer SQLite's planner (below).
    """
    low, high = _folder_range(under)
    # Of a folder, the versions below it, then their files; of the whole
    # box, the files newest first (the first LIMIT deleted are all it
    # reads), each with its version: SQLite would walk every version first.
    join, within = ("CROSS JOIN", "+f.path") if sqlite and not under else ("JOIN", "f.path")
    return (
        f"SELECT {columns} FROM files f {join} versions v ON v.account=f.account AND v.path=f.path "
        f"AND v.ended_seq=f.seq WHERE f.account=? AND f.deleted=1 AND {within}>=? AND {within}<? AND f.seq<? "
        "ORDER BY f.seq DESC LIMIT ?",
        (account, low, high, MAX_COUNT if before is None else before, limit),
    )


#: The columns of a row of L{IIndex.trash_json}.
_TRASH_ROW = "v.path, v.seq, v.committed_ns, v.size, v.sha256, v.origin, v.ended_seq, v.ended_ns"


@implementer(IIndex)
@define
class SQLiteIndex(SQLIndex):
    """
    L{IIndex} on one SQLite file, queried from one thread of its own.

    Call L{start} before use and L{stop} when done (L{IndexService} does).
    """

    reactor: IReactorFromThreads
    path: Path
    _pool: ThreadPool = field(factory=lambda: ThreadPool(1, 1, "boxsync-index"))
    _db: sqlite3.Connection | None = None
    _sqlite: ClassVar[bool] = True

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _run(self, fn: Callable[[Database], _T]) -> Any:
        if not self._pool.started:
            return fail(RuntimeError("the index is not running"))

        def work() -> _T:
            if self._db is None:
                self._db = open_database(self.path)
            return fn(self._db)

        return deferToThreadPool(self.reactor, self._pool, work)

    def _write(self, fn: Callable[[Database], _T]) -> Any:
        return self._run(lambda db: _transaction(cast(sqlite3.Connection, db), lambda: fn(db)))

    def trash_json(self, account: str, under: str, limit: int, before: int | None = None) -> Any:
        def q(db: Database) -> TrashPage:
            sql, args = _trash_query(_TRASH_ROW, account, under, limit, True, before)
            # Made by SQLite, not row by row in Python; the rows come out
            # of the subquery in its order, the last deleted first.
            text, count, last = db.execute(
                "SELECT json_group_array(json_array(path, seq, committed_ns, size, sha256, origin, ended_seq, "
                f"ended_ns)), count(*), min(ended_seq) FROM ({sql})",
                args,
            ).fetchone()
            return TrashPage(str(text), count, last)

        return self._run(q)


def _folder_range(under: str) -> tuple[str, str]:
    """
    The range of paths below the folder C{under} ("" for every path): from
    C{under/} up to C{under0} ("0" follows "/").
    """
    if not under:
        return "", "\U0010ffff"
    return under + "/", under + "0"


def _get_many(db: Database, account: str, paths: Sequence[str]) -> dict[str, FileRecord]:
    found: dict[str, FileRecord] = {}
    for chunk, marks in _in_chunks(paths, 500):
        for row in db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE account=? AND path IN ({marks})",
            [account, *chunk],
        ):
            found[row[0]] = _record(row)
    return found


def _in_chunks(values: Sequence[str], size: int) -> Iterator[tuple[list[str], str]]:
    """
    C{values}, C{size} at a time, each run with the placeholders of an
    C{IN (...)} that lists it.
    """
    for chunk in batched(values, size):
        yield chunk, ",".join("?" * len(chunk))


def _current_seq(db: Database, account: str) -> int:
    row = db.execute("SELECT seq FROM accounts WHERE account=?", (account,)).fetchone()
    return 0 if row is None else int(row[0])


def _kept_blocks(alias: str) -> str:
    """
    The blocks of kept versions, as C{alias}, to select from.
    """
    return f"blocks {alias} JOIN versions {alias}v ON {alias}v.account={alias}.account AND {alias}v.seq={alias}.seq"


_VERSION_COLUMNS = "path, size, sha256, mtime_ns, seq, origin, ended_seq, ended_ns, committed_ns, executable"


def _forget_blocks(db: Database, account: str, seq: int) -> None:
    db.execute("DELETE FROM blocks WHERE account=? AND seq=?", (account, seq))
    db.execute("DELETE FROM recipes WHERE account=? AND seq=?", (account, seq))


def _keep_version(db: Database, account: str, path: str, ended_seq: int, now: int, kept: bool) -> None:
    """
    Keep the live version of C{path}, if any, as overwritten or deleted by
    the commit C{ended_seq} at C{now}; or, unless its file is C{kept},
    forget it and its blocks.
    """
    if not kept:
        row = db.execute(
            "SELECT seq FROM files WHERE account=? AND path=? AND deleted=0 AND folder=0", (account, path)
        ).fetchone()
        if row is not None:
            _forget_blocks(db, account, int(row[0]))
        return
    db.execute(
        "INSERT INTO versions "
        "(account, seq, path, size, sha256, mtime_ns, origin, ended_seq, ended_ns, committed_ns, executable) "
        "SELECT account, seq, path, size, sha256, mtime_ns, origin, ?, ?, committed_ns, executable FROM files "
        "WHERE account=? AND path=? AND deleted=0 AND folder=0 ON CONFLICT DO NOTHING",
        (ended_seq, now, account, path),
    )


def _commit_all(
    db: Database,
    account: str,
    records: Sequence[FileRecord],
    expected: Sequence[int | None] | None,
    kept: Sequence[bool] | None,
) -> list[FileRecord | Moved]:
    # The account's row is locked first, until the transaction ends: a
    # commit elsewhere (another server on the same PostgreSQL) waits for
    # this one, then counts on from its seq and sees its rows.
    (seq,) = db.execute(
        "INSERT INTO accounts (account, seq) VALUES (?, 0) "
        "ON CONFLICT (account) DO UPDATE SET seq=accounts.seq RETURNING seq",
        (account,),
    ).fetchone()
    seq = int(seq)
    rows = {} if expected is None else _get_many(db, account, [record.path for record in records])
    now = time.time_ns()
    stored: list[FileRecord | Moved] = []
    for n, record in enumerate(records):
        if expected is not None:
            row = rows.get(record.path)
            if (None if row is None else row.seq) != expected[n]:
                stored.append(Moved(record.path, row))
                continue
        seq += 1
        _keep_version(db, account, record.path, seq, now, kept is None or kept[n])
        db.execute(
            f"INSERT INTO files (account, {_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (account, path) DO UPDATE SET size=excluded.size, "
            "sha256=excluded.sha256, mtime_ns=excluded.mtime_ns, seq=excluded.seq, "
            "deleted=excluded.deleted, origin=excluded.origin, ctime_ns=excluded.ctime_ns, "
            "executable=excluded.executable, folder=excluded.folder, committed_ns=excluded.committed_ns",
            (
                account,
                record.path,
                record.size,
                record.sha256,
                record.mtime_ns,
                seq,
                int(record.deleted),
                record.origin,
                record.ctime_ns,
                int(record.executable),
                int(record.folder),
                now,
            ),
        )
        stored.append(evolve(record, seq=seq, committed_ns=now))
    db.execute("UPDATE accounts SET seq=? WHERE account=?", (seq, account))
    return stored
