"""
SQLite as boxsync uses it: connections in autocommit mode
(C{isolation_level=None}), each change made in an explicit transaction.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator

__all__ = ["transaction"]


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
