"""
The token registry in PostgreSQL, for the servers of an index there: the
same queries as the box's SQLite file (L{SQLRegistry}), on one psycopg
connection, in the schema the index's migrations make. Every change also
counts up C{token_changes}, the L{PostgresRegistry.version} the servers
poll: a token revoked from any machine is refused, and its streams ended,
on every server at its next poll.

A connection lost (PostgreSQL restarted) is made again at the next call;
one that cannot be made is L{IndexUnavailable}, said in one line.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import psycopg

from ..errors import first_line
from .index import Database, IndexUnavailable
from .pgindex import CONNECT_TIMEOUT, PsycopgDatabase, migrate, where
from .registry import SQLRegistry, TokenRegistry

__all__ = ["PostgresRegistry"]


class PostgresRegistry(SQLRegistry):
    """
    The registry in the PostgreSQL database at C{url}.

    @param timeout: how long making the connection may take, in seconds.
    """

    def __init__(self, url: str, timeout: float = CONNECT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._connection: psycopg.Connection[Any] | None = None

    def _connected(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            try:
                connection = psycopg.connect(self.url, connect_timeout=max(1, round(self.timeout)))
            except psycopg.OperationalError as e:
                raise IndexUnavailable(
                    f"cannot reach the token registry in PostgreSQL at {where(self.url)}: {first_line(e)}"
                ) from None
            try:
                migrate(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    @contextmanager
    def _transaction(self) -> Iterator[Database]:
        connection = self._connected()
        try:
            with connection.transaction():
                yield PsycopgDatabase(connection)
        except psycopg.OperationalError as e:
            # The connection is gone (a restart): the next call makes another.
            connection.close()
            self._connection = None
            raise IndexUnavailable(
                f"lost the token registry in PostgreSQL at {where(self.url)}: {first_line(e)}"
            ) from None

    def _changed(self, db: Database) -> None:
        db.execute("UPDATE token_changes SET changes = changes + 1")

    def version(self) -> int:
        """
        The count of changes made to the registry, by any server or command.
        """
        with self._transaction() as db:
            (changes,) = db.execute("SELECT changes FROM token_changes").fetchone()
        return int(changes)

    def take_in(self, other: TokenRegistry) -> int:
        """
        Copy in the tokens of C{other} (the box's SQLite registry, from
        before the index was in PostgreSQL) that are not here yet, and the
        revocations of those that are; return how many changed.
        """
        records = other.tokens()
        changed = 0
        with self._transaction() as db:
            for r in records:
                cursor = db.execute(
                    "INSERT INTO tokens (id, account, client, issued, expires, revoked) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET revoked = excluded.revoked "
                    "WHERE tokens.revoked IS NULL AND excluded.revoked IS NOT NULL",
                    (r.token_id, r.account, r.client, r.issued, r.expires, r.revoked),
                )
                changed += cursor.rowcount
            if changed:
                self._changed(db)
        return changed

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
