"""
The index on PostgreSQL: L{PostgresIndex}, the L{IIndex} several servers can
share (C{twistd boxsync --index postgresql://...}), with the same queries as
the embedded SQLite index (L{SQLIndex}) on one schema for every account.

Its queries run in a few threads of its own, each on a connection from a
C{psycopg_pool.ConnectionPool}: psycopg's async API needs an asyncio event
loop, and the server runs on whichever reactor C{twistd} gives it (epoll by
default); the queries are short and their threads wait on the network, not
on the CPU, so as many threads as the pool has connections cost little, and
the two implementations then share every query and how they are run
(L{deferToThreadPool} with the injected reactor).

The schema is the SQL files of C{migrations/pg}, applied in order at the
first query, each once (L{migrate}).
"""

from __future__ import annotations

import errno
import threading
from functools import lru_cache
from importlib.resources import files
from typing import Any, Callable, Iterable, TypeVar

import psycopg
from attrs import define, field
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout
from twisted.internet.defer import fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from .index import Database, IIndex, IndexUnavailable, SQLIndex
from .staging import DiskFull

__all__ = [
    "BadIndexURL",
    "CONNECT_TIMEOUT",
    "NotUTF8",
    "PostgresIndex",
    "PsycopgDatabase",
    "SchemaTooNew",
    "check_url",
    "migrate",
    "migrations",
    "where",
]

_T = TypeVar("_T")

#: The key of the advisory lock the schema is changed under: servers that
#: start at once take turns, and all but the first find nothing to do.
MIGRATION_LOCK = 0x626F78737963  # "boxsyc" in ASCII

#: How many connections (and threads) one server uses at most.
CONNECTIONS = 4

#: How long a query waits for a connection before it fails, in seconds.
CONNECT_TIMEOUT = 30.0


class BadIndexURL(ValueError):
    """
    An C{--index} that is not a PostgreSQL connection URL.
    """


def check_url(url: str) -> str:
    """
    C{url} if it is a PostgreSQL connection URL; credentials it lacks come
    from the C{PG*} environment variables and C{~/.pgpass}, as for C{psql}.

    @raise BadIndexURL: if it is not one.
    """
    # (The URL itself is not repeated: it may hold a password.)
    if not url.startswith(("postgresql://", "postgres://")):
        raise BadIndexURL("not a postgresql:// URL")
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise BadIndexURL(str(e).strip()) from None
    return url


def where(url: str) -> str:
    """
    The database C{url} names, as C{host:port/database} with what it gives
    of them (no user, no password), to say in the log.
    """
    parts = conninfo_to_dict(url)
    host = f"{parts.get('host', '')}:{parts['port']}" if "port" in parts else str(parts.get("host", ""))
    return f"{host}/{parts.get('dbname', '')}"


def migrations() -> list[tuple[int, str, str]]:
    """
    The schema's steps: (number, file name, SQL) for each file of
    C{migrations/pg}, in order.
    """
    found = []
    for entry in (files("boxsync.server") / "migrations" / "pg").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text("utf-8")))
    return sorted(found)


class SchemaTooNew(IndexUnavailable):
    """
    The index was made by a newer boxsync than this one.
    """


class NotUTF8(IndexUnavailable):
    """
    A database whose text is not UTF-8 cannot hold every path.
    """


def migrate(connection: psycopg.Connection[Any]) -> int:
    """
    Bring the schema up to date in one transaction, under an advisory lock:
    servers starting at once apply each step once, and a step that fails
    leaves no trace.

    @return: the schema's version.
    @raise SchemaTooNew: if the database has steps this boxsync does not know.
    @raise NotUTF8: if the database's encoding is not UTF-8.
    """
    steps = migrations()
    with connection.transaction():
        encoding = connection.execute("SHOW server_encoding").fetchone()
        if encoding is None or encoding[0] != "UTF8":
            raise NotUTF8(
                f"the index's database is in {encoding and encoding[0]}, not UTF8: "
                "make it with createdb --encoding UTF8"
            )
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        latest = steps[-1][0] if steps else 0
        if version > latest:
            raise SchemaTooNew(
                f"the index's schema is version {version}, newer than this boxsync knows ({latest}): "
                "upgrade boxsync"
            )
        for number, name, sql in steps:
            if number > version:
                connection.execute(sql.encode("utf-8"))
                connection.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (number, name))
                version = number
    return version


@lru_cache(maxsize=None)
def _dialect(sql: str) -> str:
    """
    The SQL of L{SQLIndex}, with psycopg's placeholders.
    """
    return sql.replace("%", "%%").replace("?", "%s")


@define
class PsycopgDatabase:
    """
    A psycopg connection as the L{Database} the queries expect.
    """

    connection: psycopg.Connection[Any]

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.connection.execute(_dialect(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        with self.connection.cursor() as cursor:
            cursor.executemany(_dialect(sql), list(parameters))


@implementer(IIndex)
@define
class PostgresIndex(SQLIndex):
    """
    L{IIndex} in the PostgreSQL database at C{url}, every call one
    transaction.

    Call L{start} before use and L{stop} when done (the server's service
    tree does).
    """

    reactor: IReactorFromThreads
    url: str
    connections: int = CONNECTIONS
    timeout: float = CONNECT_TIMEOUT
    _threads: ThreadPool = field(init=False)
    _pool: ConnectionPool | None = None
    _migrated: bool = False
    _migrating: threading.Lock = field(factory=threading.Lock)
    log = Logger()

    def __attrs_post_init__(self) -> None:
        self._threads = ThreadPool(1, self.connections, "boxsync-pgindex")

    def start(self) -> None:
        self._threads.start()
        self._pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=self.connections,
            timeout=self.timeout,
            # A connection that died with its server (a restart) is
            # replaced before a query gets it.
            check=ConnectionPool.check_connection,
            name="boxsync-index",
            open=False,
        )
        self._pool.open(wait=False)
        self.log.info("index in PostgreSQL at {where}", where=where(self.url))

    def stop(self) -> None:
        self._threads.stop()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _run(self, fn: Callable[[Database], _T]) -> Any:
        pool = self._pool
        if pool is None:
            return fail(RuntimeError("the index is not running"))

        def work() -> _T:
            connection: psycopg.Connection[Any] | None = None
            try:
                with pool.connection() as connection:
                    self._migrate(connection)
                    return fn(PsycopgDatabase(connection))
            except psycopg.errors.DiskFull as e:
                raise DiskFull(errno.ENOSPC, "no space left for the index") from e
            except PoolTimeout as e:
                raise IndexUnavailable(
                    f"cannot reach the index in PostgreSQL at {where(self.url)} within {self.timeout:g} s"
                ) from e
            except psycopg.OperationalError as e:
                if connection is None or not connection.broken:
                    raise
                # PostgreSQL went away during the call or its commit (a
                # restart): the client asks again; the pool replaces the
                # connection.
                raise IndexUnavailable(
                    f"lost the connection to the index in PostgreSQL at {where(self.url)}"
                ) from e

        return deferToThreadPool(self.reactor, self._threads, work)

    # Each call is a transaction of its own already.
    _write = _run

    def _migrate(self, connection: psycopg.Connection[Any]) -> None:
        """
        Bring the schema up to date, once, before the first query.
        """
        if self._migrated:
            return
        with self._migrating:
            if not self._migrated:
                migrate(connection)
                self._migrated = True
