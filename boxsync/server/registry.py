"""
The token registry: every token ever minted (never its value), for which
account and client, and whether it was revoked.

It is one SQLite file in the box's hidden folder (L{TokenRegistry}), or,
for servers whose index is in PostgreSQL, a table there
(L{boxsync.server.pgregistry}): written by C{boxsync-admin} and read by
the running servers, which poll its L{Registry.version} to notice another
process's commits. The queries (L{SQLRegistry}) are the same for both. The
calls block: a server makes them from a thread of its own.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

from attrs import frozen

from ..sqlite import naming_damage, transaction
from .index import Database

__all__ = ["REGISTRY_FILE", "Registry", "SQLRegistry", "TokenRecord", "TokenRegistry"]

#: The registry's file in the box's hidden folder.
REGISTRY_FILE = "tokens.sqlite"

_SCHEMA: list[list[str]] = [
    # version 1
    [
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            client TEXT NOT NULL,
            issued INTEGER NOT NULL,
            expires INTEGER,
            revoked INTEGER
        )""",
        "CREATE INDEX tokens_by_account ON tokens (account)",
    ],
    # version 2: the one-time sign-in links used, until they expire
    ["CREATE TABLE used_links (id TEXT PRIMARY KEY, until INTEGER NOT NULL)"],
    # version 3: the web sessions signed out before their time, until they end
    ["CREATE TABLE ended_sessions (id TEXT PRIMARY KEY, until INTEGER NOT NULL)"],
    # version 4: the clients each server serves, for the clients panel
    [
        "CREATE TABLE server_reports (server TEXT PRIMARY KEY, reported REAL NOT NULL)",
        """CREATE TABLE clients_seen (
            server TEXT NOT NULL,
            account TEXT NOT NULL,
            clients TEXT NOT NULL,
            PRIMARY KEY (account, server)
        )""",
    ],
]

_COLUMNS = "id, account, client, issued, expires, revoked"


@frozen
class TokenRecord:
    """
    One minted token. Times are whole seconds since the epoch.

    @ivar revoked: when it was revoked, or C{None}.
    """

    token_id: str
    account: str
    client: str
    issued: int
    expires: int | None = None
    revoked: int | None = None

    def status(self, now: float) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= now:
            return "expired"
        return "valid"


def _record(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(*row)


class Registry(Protocol):
    """
    The token registry, in SQLite or in PostgreSQL.
    """

    def close(self) -> None: ...

    def add(self, record: TokenRecord) -> None: ...

    def get(self, token_id: str) -> TokenRecord | None: ...

    def tokens(self, account: str | None = None) -> list[TokenRecord]: ...

    def revoke(self, token_id: str, when: int) -> bool: ...

    def revoked(self) -> set[str]: ...

    def accounts(self) -> set[str]: ...

    def version(self) -> int: ...

    def use_once(self, token_id: str, until: int, now: int) -> bool: ...

    def end_session(self, session_id: str, until: int, now: int) -> None: ...

    def ended_sessions(self, now: int) -> set[str]: ...

    def report_clients(self, server: str, now: float, clients: Mapping[str, str], forget: float) -> None: ...

    def clients_seen(self, account: str) -> list[tuple[str, float, str]]: ...


class SQLRegistry:
    """
    The registry's queries, for any L{Database}: a subclass runs each call
    in a transaction of its own (L{_transaction}) and says what a change
    must also write (L{_changed}).
    """

    @contextmanager
    def _transaction(self) -> Iterator[Database]:
        raise NotImplementedError()
        yield

    def _changed(self, db: Database) -> None:
        """
        Record, in the transaction of C{db}, that the registry changed.
        """

    def add(self, record: TokenRecord) -> None:
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (record.token_id, record.account, record.client, record.issued, record.expires, record.revoked),
            )
            self._changed(db)

    def get(self, token_id: str) -> TokenRecord | None:
        with self._transaction() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM tokens WHERE id=?", (token_id,)).fetchone()
        return None if row is None else _record(row)

    def tokens(self, account: str | None = None) -> list[TokenRecord]:
        """
        Every token (of C{account}, if given), in the order they were issued.
        """
        with self._transaction() as db:
            if account is None:
                rows = db.execute(f"SELECT {_COLUMNS} FROM tokens ORDER BY issued, id").fetchall()
            else:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM tokens WHERE account=? ORDER BY issued, id", (account,)
                ).fetchall()
        return [_record(row) for row in rows]

    def revoke(self, token_id: str, when: int) -> bool:
        """
        Revoke C{token_id} as of C{when}; return whether it was a token not
        revoked yet.
        """
        with self._transaction() as db:
            cursor = db.execute("UPDATE tokens SET revoked=? WHERE id=? AND revoked IS NULL", (when, token_id))
            done: bool = cursor.rowcount == 1
            if done:
                self._changed(db)
        return done

    def revoked(self) -> set[str]:
        with self._transaction() as db:
            return {row[0] for row in db.execute("SELECT id FROM tokens WHERE revoked IS NOT NULL").fetchall()}

    def accounts(self) -> set[str]:
        """
        Every account with a token, revoked or not: the accounts there are.
        """
        with self._transaction() as db:
            return {row[0] for row in db.execute("SELECT DISTINCT account FROM tokens").fetchall()}

    def use_once(self, token_id: str, until: int, now: int) -> bool:
        """
        Record the use of the one-time sign-in link C{token_id}, remembered
        until C{until}; return whether this is its first (every server of
        the registry asks it, so a link signs in once whichever it reaches).
        Uses remembered until before C{now} are forgotten: their links no
        longer work anyway.
        """
        with self._transaction() as db:
            db.execute("DELETE FROM used_links WHERE until < ?", (now,))
            cursor = db.execute(
                "INSERT INTO used_links (id, until) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (token_id, until)
            )
            first: bool = cursor.rowcount == 1
        return first


    def end_session(self, session_id: str, until: int, now: int) -> None:
        """
        Record that the web session C{session_id}, which would have lasted
        until C{until}, was signed out; sessions ended before C{now} are
        forgotten (their cookies no longer work anyway).
        """
        with self._transaction() as db:
            db.execute("DELETE FROM ended_sessions WHERE until < ?", (now,))
            db.execute(
                "INSERT INTO ended_sessions (id, until) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (session_id, until)
            )
            self._changed(db)

    def ended_sessions(self, now: int) -> set[str]:
        """
        The web sessions signed out that would still be going at C{now}.
        """
        with self._transaction() as db:
            return {row[0] for row in db.execute("SELECT id FROM ended_sessions WHERE until >= ?", (now,)).fetchall()}

    def report_clients(self, server: str, now: float, clients: Mapping[str, str], forget: float) -> None:
        """
        Record that the server C{server} is running at C{now}, and, for each
        account of C{clients}, its clients as it now sees them (an empty
        text: none any more). The reports of servers silent since before
        C{forget} are forgotten. Not a change of the registry: no server
        reads it again for this.
        """
        with self._transaction() as db:
            db.execute(
                "INSERT INTO server_reports (server, reported) VALUES (?, ?) "
                "ON CONFLICT (server) DO UPDATE SET reported = excluded.reported",
                (server, now),
            )
            for account, seen in clients.items():
                if seen:
                    db.execute(
                        "INSERT INTO clients_seen (server, account, clients) VALUES (?, ?, ?) "
                        "ON CONFLICT (account, server) DO UPDATE SET clients = excluded.clients",
                        (server, account, seen),
                    )
                else:
                    db.execute("DELETE FROM clients_seen WHERE server = ? AND account = ?", (server, account))
            gone = db.execute("SELECT server FROM server_reports WHERE reported < ?", (forget,)).fetchall()
            for (old,) in gone:
                db.execute("DELETE FROM clients_seen WHERE server = ?", (old,))
                db.execute("DELETE FROM server_reports WHERE server = ?", (old,))

    def clients_seen(self, account: str) -> list[tuple[str, float, str]]:
        """
        What each server last reported of the clients of C{account}: the
        server, when it last reported (of anything), and its text.
        """
        with self._transaction() as db:
            rows = db.execute(
                "SELECT c.server, s.reported, c.clients FROM clients_seen c "
                "JOIN server_reports s ON s.server = c.server WHERE c.account = ? ORDER BY c.server",
                (account,),
            ).fetchall()
        return [(str(server), float(reported), str(seen)) for server, reported, seen in rows]


class TokenRegistry(SQLRegistry):
    """
    The registry in the SQLite file C{path}, created or upgraded as it is
    opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
        try:
            with naming_damage(path):
                self._upgrade()
        except BaseException:
            self._db.close()
            raise

    def _upgrade(self) -> None:
        db = self._db
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version >= len(_SCHEMA):
            return
        with transaction(db):
            # Read again under the lock: another process may have upgraded.
            (version,) = db.execute("PRAGMA user_version").fetchone()
            for number, steps in enumerate(_SCHEMA[version:], start=version + 1):
                for statement in steps:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def _transaction(self) -> Iterator[Database]:
        with transaction(self._db, "BEGIN") as db:
            yield db

    def close(self) -> None:
        self._db.close()

    def version(self) -> int:
        """
        A number that changes whenever another connection has committed.
        """
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(version)
