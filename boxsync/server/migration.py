"""
Moving a box's index between its embedded SQLite files and PostgreSQL
(C{boxsync-admin migrate}), with the server stopped.

Both hold the same tables (files, versions, blocks, recipes, accounts; and
the token registry's tokens, used links and ended sessions), so a move is a
copy of every row, in one transaction on each side, into a place that has
none yet: an empty PostgreSQL database, or a box without SQLite files of
its own. Before anything is written, every live file of the box is hashed
and checked against the index (a file changed by hand while no server
watched must be adopted by a server first); after, the rows are counted
on both sides. The files stay where they are: the box folder, which the
servers of a PostgreSQL index share.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from attrs import frozen

from ..errors import first_line
from ..fs import hash_file
from ..paths import HIDDEN_DIR
from ..sqlite import transaction
from .beneath import open_regular_fd
from .index import open_database
from .registry import REGISTRY_FILE, TokenRegistry

__all__ = ["IDENTITY_TABLES", "INDEX_TABLES", "REGISTRY_TABLES", "MigrationError", "Moved", "to_postgresql", "to_sqlite"]

#: The embedded index's file in the box's hidden folder.
INDEX_SQLITE = "index.sqlite"

#: Each table of the index, with its columns.
INDEX_TABLES: dict[str, Sequence[str]] = {
    "accounts": ("account", "seq"),
    "files": (
        "account", "path", "size", "sha256", "mtime_ns", "seq", "deleted", "origin", "ctime_ns",
        "committed_ns", "executable", "folder",
    ),
    "versions": (
        "account", "seq", "path", "size", "sha256", "mtime_ns", "origin", "ended_seq", "ended_ns",
        "committed_ns", "executable",
    ),
    "blocks": ("account", "seq", "n", "sha256", "offset", "size", "held"),
    "recipes": ("account", "seq"),
}
#: The box's id: each index is made with one of its own, replaced by the
#: one moved in, so that its clients see the same box.
IDENTITY_TABLES: dict[str, Sequence[str]] = {"box_identity": ("id",)}
#: Each table of the token registry, with its columns.
REGISTRY_TABLES: dict[str, Sequence[str]] = {
    "tokens": ("id", "account", "client", "issued", "expires", "revoked"),
    "used_links": ("id", "until"),
    "ended_sessions": ("id", "until"),
}

#: How many rows are read and written at a time.
_BATCH = 5000


class MigrationError(Exception):
    """
    The move cannot be made; the message is one line, and nothing was
    written.
    """


@frozen
class Moved:
    """
    What a move copied: the rows of each table, and the files checked.
    """

    rows: dict[str, int]
    files: int


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


def _rows(db: Any, table: str, columns: Sequence[str]) -> Iterator[Sequence[Any]]:
    cursor = db.execute(f"SELECT {_names(columns)} FROM {table}")
    while True:
        rows = cursor.fetchmany(_BATCH)
        if not rows:
            return
        yield from rows


def _count(db: Any, table: str) -> int:
    (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    return int(count)


def _copy(source: Any, sink: Any, tables: dict[str, Sequence[str]], placeholder: str) -> dict[str, int]:
    """
    Copy every row of C{tables} from C{source} into C{sink} (in the
    transaction C{sink} is in); return how many of each.
    """
    copied: dict[str, int] = {}
    for table, columns in tables.items():
        insert = f"INSERT INTO {table} ({_names(columns)}) VALUES ({', '.join(placeholder for _ in columns)})"
        batch: list[Sequence[Any]] = []
        count = 0
        for row in _rows(source, table, columns):
            batch.append(tuple(row))
            if len(batch) == _BATCH:
                _insert(sink, insert, batch)
                count += len(batch)
                batch = []
        if batch:
            _insert(sink, insert, batch)
            count += len(batch)
        copied[table] = count
    return copied


def _replace(source: Any, sink: Any, tables: dict[str, Sequence[str]], placeholder: str) -> dict[str, int]:
    """
    Replace the rows of C{tables} in C{sink} with those of C{source}.
    """
    for table in tables:
        sink.execute(f"DELETE FROM {table}")
    return _copy(source, sink, tables, placeholder)


def _insert(sink: Any, insert: str, rows: list[Sequence[Any]]) -> None:
    if isinstance(sink, sqlite3.Connection):
        sink.executemany(insert, rows)
    else:
        with sink.cursor() as cursor:
            cursor.executemany(insert, rows)


def _check_counts(source: Any, sink: Any, copied: dict[str, int], where: str) -> None:
    for table, count in copied.items():
        if _count(source, table) != count or _count(sink, table) != count:
            raise MigrationError(f"the {table} rows copied to {where} do not add up: nothing was moved")


def _sha256(root: Path, path: str) -> str | None:
    """
    The sha256 of the regular file at C{path} below C{root}, as a server
    reads it (no link followed), or C{None} if there is none.
    """
    opened = open_regular_fd(root, path)
    if opened is None:
        return None
    sha256, _ = hash_file(opened[0])
    return sha256


def check_files(box: Path, db: Any, folder_of: Callable[[str], Path]) -> int:
    """
    Hash every live file the index C{db} lists and compare it with its
    row; return how many were checked.

    @param folder_of: the folder of an account's files.
    @raise MigrationError: at the first that differs or is missing.
    """
    checked = 0
    rows = db.execute("SELECT account, path, sha256 FROM files WHERE deleted=0 AND folder=0 ORDER BY account, path")
    for account, path, sha256 in rows.fetchall():
        found = _sha256(folder_of(account), path)
        if found != sha256:
            what = "is missing" if found is None else "is not the version the index has"
            raise MigrationError(
                f"{path!r} of account {account!r} {what}: start the server on the box once "
                "(it adopts what changed), stop it, and migrate again"
            )
        checked += 1
    return checked


def _pg(url: str) -> Any:
    from .pgindex import migrate

    try:
        import psycopg
    except ImportError:
        raise MigrationError("PostgreSQL needs psycopg: pip install 'boxsync[cluster]'") from None
    try:
        connection = psycopg.connect(url, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise MigrationError(f"cannot reach PostgreSQL: {first_line(e, 'no answer')}") from None
    migrate(connection)
    return connection


def _empty(db: Any, tables: Sequence[str], where: str) -> None:
    for table in tables:
        if _count(db, table):
            raise MigrationError(f"{where} already holds an index ({table} has rows): give an empty one")


def _sqlite_files(hidden: Path) -> tuple[Path, Path]:
    return hidden / INDEX_SQLITE, hidden / REGISTRY_FILE


def check_embedded(box: Path) -> None:
    """
    Make sure C{box} has an embedded index to move.

    @raise MigrationError: if it has none (it was never served).
    """
    if not (box / HIDDEN_DIR / INDEX_SQLITE).exists():
        raise MigrationError(f"{box} has no embedded index to move: was it ever served?")


def to_postgresql(box: Path, url: str, folder_of: Callable[[str], Path]) -> Moved:
    """
    Copy the embedded index and registry of C{box} into the empty
    PostgreSQL database at C{url}; the SQLite files are then renamed aside
    (C{.migrated}), so that nothing reads them by mistake.
    """
    index_file, registry_file = _sqlite_files(box / HIDDEN_DIR)
    check_embedded(box)
    if registry_file.exists():
        TokenRegistry(registry_file).close()  # brought up to date
    with closing(open_database(index_file)) as source, closing(_pg(url)) as sink:
        files = check_files(box, source, folder_of)
        with sink.transaction():
            _empty(sink, [*INDEX_TABLES, "tokens"], "the PostgreSQL database")
            rows = _copy(source, sink, INDEX_TABLES, "%s")
            rows.update(_replace(source, sink, IDENTITY_TABLES, "%s"))
            if registry_file.exists():
                with closing(sqlite3.connect(str(registry_file))) as registry:
                    rows.update(_copy(registry, sink, REGISTRY_TABLES, "%s"))
                    _check_counts(registry, sink, {t: rows[t] for t in REGISTRY_TABLES}, "PostgreSQL")
                sink.execute("UPDATE token_changes SET changes = changes + 1")
            _check_counts(source, sink, {t: rows[t] for t in [*INDEX_TABLES, *IDENTITY_TABLES]}, "PostgreSQL")
    for path in (index_file, registry_file):
        if path.exists():
            path.rename(path.with_name(path.name + ".migrated"))
    return Moved(rows, files)


def to_sqlite(box: Path, url: str, folder_of: Callable[[str], Path]) -> Moved:
    """
    Copy the index and registry in the PostgreSQL database at C{url} into
    new SQLite files in C{box} (which must have none); the database is left
    as it was.
    """
    index_file, registry_file = _sqlite_files(box / HIDDEN_DIR)
    for path in (index_file, registry_file):
        if path.exists():
            raise MigrationError(f"{path} exists: the box has an embedded index already")
    made: list[Path] = []
    try:
        with closing(_pg(url)) as source:
            files = check_files(box, source, folder_of)
            with source.transaction():
                with closing(open_database(index_file)) as sink:
                    made.append(index_file)
                    with transaction(sink):
                        rows = _copy(source, sink, INDEX_TABLES, "?")
                        rows.update(_replace(source, sink, IDENTITY_TABLES, "?"))
                    _check_counts(source, sink, rows, str(index_file))
                if _count(source, "tokens"):
                    TokenRegistry(registry_file).close()
                    made.append(registry_file)
                    with closing(sqlite3.connect(str(registry_file), isolation_level=None)) as sink:
                        with transaction(sink):
                            copied = _copy(source, sink, REGISTRY_TABLES, "?")
                        _check_counts(source, sink, copied, str(registry_file))
                    rows.update(copied)
    except BaseException:
        for path in made:
            for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                leftover.unlink(missing_ok=True)
        raise
    return Moved(rows, files)
