"""
SQLite as boxsync uses it: connections in autocommit mode
(C{isolation_level=None}), each change made in an explicit transaction.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["DamagedDatabase", "naming_damage", "transaction", "use_wal"]


class DamagedDatabase(OSError):
    """
    A database file SQLite cannot read: not a database, or a damaged one.
    """


@contextmanager
def naming_damage(path: Path) -> Iterator[None]:
    """
    Turn the error of SQLite finding the file at C{path} no database, or a
    damaged one, into a L{DamagedDatabase} that names it. Any other error
    (the disk, a lock, the permissions) goes on as it is.
    """
    try:
        yield
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorcode", None) not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise
        raise DamagedDatabase(f"{path} is damaged: {e}") from e


@contextmanager
def transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
    """
    One transaction on C{db}, opened with C{begin} (C{BEGIN IMMEDIATE}: the
    database's write lock at once): all of it committed as the block ends,
    or none of it if anything fails, the C{COMMIT} itself included.
    """
    db.execute(begin)
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def use_wal(db: sqlite3.Connection, timeout: float = 30.0) -> None:
    """
    Put the database of C{db} in write-ahead-log mode (readers and one
    writer at once), unless it is already: asking again takes a lock that
    SQLite does not wait for, and fails at once while another connection
    writes. A database still being made by another connection (whose
    first write may hold that lock) is asked again until C{timeout}.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
