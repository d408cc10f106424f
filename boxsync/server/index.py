"""
The index: one row per path and account — what the box holds (a file, or a
folder synced as one of its own), at which seq.

L{IIndex} is what the rest of the server uses; L{SQLiteIndex} is the embedded
implementation, on the standard library's SQLite, with every query run in one
dedicated thread so the reactor never waits on the disk.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from attrs import define, evolve, field, frozen
from twisted.internet.defer import fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from .staging import DiskFull

__all__ = ["FileRecord", "IIndex", "SQLiteIndex", "Stats"]

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

    def commit_many(account: str, records: Sequence[FileRecord]) -> Any:
        """
        Commit several records in one transaction, in order.
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
    # version 3: the executable bit (rows from before were written 0644).
    ["ALTER TABLE files ADD COLUMN executable INTEGER NOT NULL DEFAULT 0"],
    # version 4: folders synced as folders of their own.
    ["ALTER TABLE files ADD COLUMN folder INTEGER NOT NULL DEFAULT 0"],
]

_COLUMNS = "path, size, sha256, mtime_ns, seq, deleted, origin, ctime_ns, executable, folder"


def _record(row: tuple[Any, ...]) -> FileRecord:
    path, size, sha256, mtime_ns, seq, deleted, origin, ctime_ns, executable, folder = row
    return FileRecord(
        path, size, sha256, mtime_ns, seq, bool(deleted), origin, ctime_ns, bool(executable), bool(folder)
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
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        db.execute("COMMIT")
    except BaseException as e:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error) and (full := _full(e)) is not e:
            raise full from e
        raise
    return result


def open_database(path: Path) -> sqlite3.Connection:
    """
    Open (creating or upgrading) the index database at C{path}.
    """
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    (version,) = db.execute("PRAGMA user_version").fetchone()
    for number, steps in enumerate(_SCHEMA[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        for statement in steps:
            db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")
        db.execute("COMMIT")
    return db


@implementer(IIndex)
@define
class SQLiteIndex:
    """
    L{IIndex} on one SQLite file, queried from one thread of its own.

    Call L{start} before use and L{stop} when done (L{IndexService} does).
    """

    reactor: IReactorFromThreads
    path: Path
    _pool: ThreadPool = field(factory=lambda: ThreadPool(1, 1, "boxsync-index"))
    _db: sqlite3.Connection | None = None

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> Any:
        if not self._pool.started:
            return fail(RuntimeError("the index is not running"))

        def work() -> _T:
            if self._db is None:
                self._db = open_database(self.path)
            return fn(self._db)

        return deferToThreadPool(self.reactor, self._pool, work)

    def get(self, account: str, path: str) -> Any:
        def q(db: sqlite3.Connection) -> FileRecord | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE account=? AND path=?",
                (account, path),
            ).fetchone()
            return None if row is None else _record(row)

        return self._run(q)

    def get_many(self, account: str, paths: Sequence[str]) -> Any:
        def q(db: sqlite3.Connection) -> dict[str, FileRecord]:
            found: dict[str, FileRecord] = {}
            for start in range(0, len(paths), 500):
                chunk = list(paths[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                    f"SELECT {_COLUMNS} FROM files WHERE account=? AND path IN ({marks})",
                    [account, *chunk],
                ):
                    found[row[0]] = _record(row)
            return found

        return self._run(q)

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

    def commit_many(self, account: str, records: Sequence[FileRecord]) -> Any:
        def q(db: sqlite3.Connection) -> list[FileRecord]:
            return _transaction(db, lambda: list(_commit_all(db, account, records)))

        return self._run(q)

    def restamp(self, account: str, stamps: Sequence[tuple[str, int]]) -> Any:
        def q(db: sqlite3.Connection) -> None:
            _transaction(
                db,
                lambda: db.executemany(
                    "UPDATE files SET ctime_ns=? WHERE account=? AND path=? AND deleted=0",
                    [(ctime_ns, account, path) for path, ctime_ns in stamps],
                ),
            )

        return self._run(q)

    def current_seq(self, account: str) -> Any:
        return self._run(lambda db: _current_seq(db, account))

    def stats(self, account: str) -> Any:
        def q(db: sqlite3.Connection) -> Stats:
            files, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files "
                "WHERE account=? AND deleted=0 AND folder=0",
                (account,),
            ).fetchone()
            return Stats(files=files, bytes=size, seq=_current_seq(db, account))

        return self._run(q)


def _current_seq(db: sqlite3.Connection, account: str) -> int:
    row = db.execute("SELECT seq FROM accounts WHERE account=?", (account,)).fetchone()
    return 0 if row is None else int(row[0])


def _commit_all(
    db: sqlite3.Connection, account: str, records: Iterable[FileRecord]
) -> Iterable[FileRecord]:
    seq = _current_seq(db, account)
    for record in records:
        seq += 1
        db.execute(
            f"INSERT INTO files (account, {_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (account, path) DO UPDATE SET size=excluded.size, "
            "sha256=excluded.sha256, mtime_ns=excluded.mtime_ns, seq=excluded.seq, "
            "deleted=excluded.deleted, origin=excluded.origin, ctime_ns=excluded.ctime_ns, "
            "executable=excluded.executable, folder=excluded.folder",
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
            ),
        )
        yield evolve(record, seq=seq)
    db.execute(
        "INSERT INTO accounts (account, seq) VALUES (?, ?) "
        "ON CONFLICT (account) DO UPDATE SET seq=excluded.seq",
        (account, seq),
    )
