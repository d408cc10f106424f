"""
The client's memory of the last sync: for each path, its I{base}.

The base of a file is what it was when it was last identical to a server
version: that version's seq, its sha256, and the size, mtime and inode the
local file had then (so an unchanged file is recognised without reading it).
With the bases and the cursor (the highest seq applied completely) the client
tells, after any time offline, what it changed, what it deleted and what it
missed.

The state lives in C{<folder>/.boxsync/state.sqlite}. The API is synchronous
and small: run it on the reactor thread for a few rows, in a thread for many;
a lock makes each call safe from any one thread at a time.

Given a way to run a function later (C{later}, e.g. on the reactor's next
turn), the bases put and forgotten one by one are written together: a burst
of small files then costs one transaction, not one each. Until written they
are what L{LocalState.get} answers, and they are written before the cursor
and before any query of many bases. A crash loses only bases, never files:
a file without its base is hashed again and found identical to the server's.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from attrs import define, field, frozen
from twisted.logger import Logger

from ..paths import CLIENT_STATE_FILE, HIDDEN_DIR
from ..sqlite import DamagedDatabase, naming_damage, transaction, use_wal
from ..wire import Held

__all__ = [
    "Base", "LocalState", "LostByBox", "SHARED_PROBES", "STATE_FILE", "RECENT", "Stamps", "UNKNOWN_CTIME",
    "box_of", "folder_base", "same_box", "state_file",
]

#: How many paths' bases are remembered after they are read or written: a
#: burst (a tree moved into the folder, a batch of events) asks for each of
#: its paths' bases once as it is reported and again as its job runs.
RECENT = 16384

#: The ctime of a base whose stamps are not to be trusted: no file has it.
UNKNOWN_CTIME = -1

#: The database, below the folder's hidden folder.
STATE_FILE = CLIENT_STATE_FILE


def state_file(root: Path) -> Path:
    """
    The state database of the synced folder C{root}.
    """
    return root / HIDDEN_DIR / STATE_FILE

_CURSOR = "cursor"
_CLIENT_ID = "client_id"
_RULES = "ignore_rules"
_BOX = "box"
_HIGHEST = "highest_seq"
#: The file base with the highest seq ever recorded: "seq sha256 path".
_WITNESS = "witness"

# SQLite integers are signed 64-bit; an inode number may use all 64 bits.
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


class Base(NamedTuple):
    """
    What the local file at C{path} was when it was last identical to the
    server's version C{seq}.

    A named tuple, not an attrs class: a restart reads every base, and
    100,000 of them are made from the database's rows in a third of the
    time.

    @ivar ctime_ns: the file's ctime then, which no tool can set back (an
        edit whose mtime is put back still moves it); L{UNKNOWN_CTIME} if
        it is not known or could not be trusted (see
        L{boxsync.client.scanner.RACY_NS}): the file is then read at its
        next look, whatever its other stamps say.
    @ivar executable: whether the file (and that version) was executable.
    @ivar folder: whether this is the base of a folder synced as a folder of
        its own (see L{folder_base}), not of a file.
    """

    path: str
    sha256: str
    size: int
    mtime_ns: int
    inode: int
    seq: int
    ctime_ns: int = UNKNOWN_CTIME
    executable: bool = False
    folder: bool = False


@frozen
class Stamps:
    """
    What the bases say of a whole folder, in the form a scan compares with
    what it finds at once (a set, in C), without making a L{Base} of each.

    @ivar files: each file base's C{(path, size, mtime_ns, inode, ctime_ns,
        executable)}, as L{boxsync.client.scanner.stat_key} gives a file's
        stamps after its path (executable as 1 or 0, equal to C{True} and
        C{False}).
    @ivar folders: the seq of each folder's base of its own, by path.
    """

    files: set[tuple[str, int, int, int, int, int]]
    folders: dict[str, int]


def folder_base(path: str, seq: int) -> Base:
    """
    The base of the folder C{path}, in sync with the server's version
    C{seq}: a folder has no bytes and no stamps, only a life.
    """
    return Base(path, "", 0, 0, 0, seq, UNKNOWN_CTIME, folder=True)


@frozen
class _Upgrade:
    """
    One step of the schema: the statements that bring version C{n - 1} to
    version C{n}.
    """

    statements: tuple[str, ...]

    def run(self, db: sqlite3.Connection, version: int) -> None:
        for statement in self.statements:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")


#: The schema, as the ordered steps from an empty database; C{user_version}
#: counts the steps a database has had. Append steps; never edit one.
_UPGRADES: list[_Upgrade] = [
    _Upgrade(
        (
            """CREATE TABLE bases (
                path TEXT PRIMARY KEY,
                sha256 TEXT NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                inode INTEGER NOT NULL,
                seq INTEGER NOT NULL
            ) WITHOUT ROWID""",
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
    ),
    # The ctime joins the stamps: a base recorded before it is read once
    # more at its next look.
    _Upgrade(("ALTER TABLE bases ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT -1",)),
    # The executable bit joins the base: a file recorded before was synced
    # as not executable, so one that is goes up as that change.
    _Upgrade(("ALTER TABLE bases ADD COLUMN executable INTEGER NOT NULL DEFAULT 0",)),
    # Folders synced as folders of their own have bases too.
    _Upgrade(("ALTER TABLE bases ADD COLUMN folder INTEGER NOT NULL DEFAULT 0",)),
    # Files are found by their content: where the blocks of a download may
    # be found here already.
    _Upgrade(("CREATE INDEX bases_by_sha256 ON bases (sha256)",)),
    # A file renamed here is found by its inode: what it was, unread.
    _Upgrade(("CREATE INDEX bases_by_inode ON bases (inode)",)),
    # The box's files a default rule keeps from coming here: no scan finds
    # them, and the box tells them once.
    _Upgrade(
        (
            """CREATE TABLE left_in_box (
                path TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                reason TEXT NOT NULL
            ) WITHOUT ROWID""",
        )
    ),
    # What a box restored from a backup lost of this folder's versions (and
    # the versions it may still share with it).
    _Upgrade(
        (
            """CREATE TABLE lost_by_box (
                path TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                sha256 TEXT NOT NULL,
                lost INTEGER NOT NULL
            ) WITHOUT ROWID""",
        )
    ),
]

#: How many of the bases a box gone back may still share are kept, to be
#: asked for (L{LocalState.lost_by_box}).
SHARED_PROBES = 8


class LostByBox(NamedTuple):
    """
    What a box gone back to an earlier state (restored from a backup) lost
    of this folder's versions.

    @ivar lost: the files whose bases were past the box's last change.
    @ivar maybe_shared: the other file bases of highest seq, newest first,
        as C{(path, seq, sha256)}: a box version the box and this folder
        are found to share tells that every box version up to its seq is
        from before the box went back.
    """

    lost: frozenset[str]
    maybe_shared: list[tuple[str, int, str]]


def _to_sql(inode: int) -> int:
    return inode - _U64 if inode > _I64_MAX else inode


def _from_sql(inode: int) -> int:
    return inode + _U64 if inode < 0 else inode


#: A L{Base} of its fields, made in C (a named tuple's own constructor is
#: Python code).
_new_base = functools.partial(tuple.__new__, Base)


def _base(row: tuple[Any, ...]) -> Base:
    path, sha256, size, mtime_ns, inode, seq, ctime_ns, executable, folder = row
    return _new_base(
        (path, sha256, size, mtime_ns, _from_sql(inode), seq, ctime_ns, executable == 1, folder == 1)
    )


def _row(base: Base) -> tuple[Any, ...]:
    return (
        base.path,
        base.sha256,
        base.size,
        base.mtime_ns,
        _to_sql(base.inode),
        base.seq,
        base.ctime_ns,
        int(base.executable),
        int(base.folder),
    )


_COLUMNS = "path, sha256, size, mtime_ns, inode, seq, ctime_ns, executable, folder"
_SELECT = f"SELECT {_COLUMNS} FROM bases"


def _write(db: sqlite3.Connection, changes: dict[str, Base | None]) -> None:
    """
    Record each path's new base, or (C{None}) drop its base, and the
    highest seq of a base ever recorded (L{LocalState.highest_seq}).
    """
    bases = [base for base in changes.values() if base is not None]
    db.executemany(
        f"INSERT OR REPLACE INTO bases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [_row(base) for base in bases],
    )
    if bases:
        seq = max(base.seq for base in bases)
        db.execute(
            "UPDATE meta SET value = ? WHERE key = ? AND CAST(value AS INTEGER) < ?", (str(seq), _HIGHEST, seq)
        )
        files = [base for base in bases if not base.folder and base.seq > 0]
        if files:
            top = max(files, key=attrgetter("seq"))
            row = db.execute("SELECT value FROM meta WHERE key = ?", (_WITNESS,)).fetchone()
            if row is None or int(row[0].split(" ", 1)[0]) < top.seq:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", (_WITNESS, f"{top.seq} {top.sha256} {top.path}")
                )
    db.executemany(
        "DELETE FROM bases WHERE path = ?",
        [(path,) for path, base in changes.items() if base is None],
    )


def box_of(root: Path) -> str | None:
    """
    The id of the box the synced folder C{root} was last synced with, read
    from its state without changing it (another client's may be running);
    C{None} if it is not known or cannot be read.
    """
    try:
        db = sqlite3.connect(f"{state_file(root).as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        rows = db.execute("SELECT value FROM meta WHERE key = ?", (_BOX,)).fetchall()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return str(rows[0][0]) if rows else None


def same_box(root: Path, inner: str | Path) -> bool:
    """
    Whether the folder C{inner}, inside the synced folder C{root}, is
    synced on its own with the box C{root} is synced with.
    """
    box = box_of(root)
    return box is not None and box == box_of(Path(inner))


def _connect(path: Path) -> sqlite3.Connection:
    """
    Open the database at C{path}, bringing its schema up to date.

    @raise RuntimeError: if the database was written by a newer boxsync.
    @raise DamagedDatabase: if it cannot be read.
    """
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    try:
        use_wal(db)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("BEGIN IMMEDIATE")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > len(_UPGRADES):
            raise RuntimeError(
                f"{path} has schema version {version}; this boxsync knows "
                f"up to {len(_UPGRADES)}"
            )
        for number, upgrade in enumerate(_UPGRADES[version:], start=version + 1):
            upgrade.run(db, number)
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


@define
class LocalState:
    """
    The bases and metadata of one synced folder.

    @ivar root: the synced folder.
    @ivar later: runs a function a little later (C{None}: every put and
        forget is written at once).
    """

    root: Path
    _db: sqlite3.Connection
    later: Callable[[Callable[[], None]], object] | None = None
    log = Logger()
    _lock: threading.Lock = field(factory=threading.Lock)
    # The bases (or their absence) of the paths read or written last: the
    # jobs of one file ask for its base several times in a row.
    _recent: OrderedDict[str, Base | None] = field(factory=OrderedDict)
    # Bases put (or, as None, forgotten) and not written yet.
    _unwritten: dict[str, Base | None] = field(factory=dict)
    _flush_due: bool = False

    @classmethod
    def open(cls, root: Path) -> LocalState:
        """
        Open the state of the folder C{root}, creating its hidden folder and
        database if needed.
        """
        path = state_file(root)
        path.parent.mkdir(exist_ok=True)
        with naming_damage(path):
            return cls(root=root, db=_connect(path))

    @classmethod
    def open_or_anew(cls, root: Path) -> LocalState:
        """
        L{open} the state of C{root}; if it is damaged, keep it aside and
        begin anew, as at a first sync. That is safe: with no bases, every
        file here is compared with the box, nothing is deleted, and a file
        that differs is kept both ways (a conflict copy). What is lost is
        only what the bases knew: a file deleted here since the last sync
        comes back.
        """
        try:
            return cls.open(root)
        except DamagedDatabase as e:
            path = state_file(root)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside = path.with_name(f"{path.name}.damaged-{stamp}")
            n = 1
            while os.path.lexists(aside):
                n += 1
                aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.rename(f"{path}{suffix}", f"{aside}{suffix}")
                except FileNotFoundError:
                    pass
            cls.log.warn(
                "{error}; kept as {aside}, and this folder is compared with the box anew: "
                "nothing is deleted, a file that differs is kept both ways",
                error=str(e),
                aside=str(aside),
            )
            return cls.open(root)

    @contextmanager
    def _transaction(self, recent: Iterable[tuple[str, Base | None]] = ()) -> Iterator[sqlite3.Connection]:
        """
        A transaction, after the bases not written yet; once it is
        committed, and before anyone else reads, C{recent} (path, base)
        become the remembered bases of their paths.
        """
        with self._lock:
            self._write_unwritten()
            with self._locked_transaction(recent) as db:
                yield db

    @contextmanager
    def _locked_transaction(self, recent: Iterable[tuple[str, Base | None]]) -> Iterator[sqlite3.Connection]:
        # The lock must be held.
        with transaction(self._db) as db:
            yield db
        for path, base in recent:
            self._remember(path, base)

    def _write_unwritten(self) -> None:
        """
        Write the bases put and forgotten since the last write, in one
        transaction; if that fails they stay unwritten. The lock must be
        held.
        """
        if not self._unwritten:
            return
        changes = self._unwritten
        with self._locked_transaction(changes.items()) as db:
            _write(db, changes)
        self._unwritten = {}

    def _remember(self, path: str, base: Base | None) -> None:
        """
        Keep C{base} as what C{path} has, forgetting the oldest past
        L{RECENT}. The lock must be held.
        """
        self._recent[path] = base
        self._recent.move_to_end(path)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            self._write_unwritten()
            return self._db.execute(sql, args).fetchall()

    def get(self, path: str) -> Base | None:
        """
        The base of C{path}, or C{None} if it has none.
        """
        with self._lock:
            if path in self._unwritten:
                return self._unwritten[path]
            if path in self._recent:
                self._recent.move_to_end(path)
                return self._recent[path]
            rows = self._db.execute(_SELECT + " WHERE path = ?", (path,)).fetchall()
            base = _base(rows[0]) if rows else None
            self._remember(path, base)
            return base

    def all(self) -> dict[str, Base]:
        """
        Every base, by path.
        """
        return {row[0]: _base(row) for row in self._query(_SELECT)}

    def stamps(self) -> Stamps:
        """
        The L{Stamps} of every base: a third of the time of L{all}.
        """
        stamps = "SELECT path, size, mtime_ns, inode, ctime_ns, executable FROM bases WHERE folder = 0"
        with self._lock:
            self._write_unwritten()
            # One pass over the table ("+" keeps the index by inode out of
            # it), then the few inodes stored negative, by that index.
            files = set(self._db.execute(stamps + " AND +inode >= 0"))
            files.update((p, s, m, _from_sql(i), c, x) for p, s, m, i, c, x in self._db.execute(stamps + " AND inode < 0"))
            folders = dict(self._db.execute("SELECT path, seq FROM bases WHERE folder = 1"))
        return Stamps(files, folders)

    def under(self, path: str) -> list[Base]:
        """
        The bases of C{path} and of every path below it (for C{path} a
        directory), in path order.
        """
        # Every path below "a" sorts between "a/" and "a0" ("0" follows "/").
        rows = self._query(
            _SELECT + " WHERE path = ? OR (path > ? AND path < ?) ORDER BY path",
            path,
            path + "/",
            path + "0",
        )
        return [_base(row) for row in rows]

    def with_sha256(self, sha256: str, limit: int = 8) -> list[Base]:
        """
        Up to C{limit} bases whose content has the sha256 C{sha256}.
        """
        return self._where("sha256", sha256, sha256, limit)

    def with_inode(self, inode: int, limit: int = 8) -> list[Base]:
        """
        Up to C{limit} bases recorded for a file with the inode C{inode}.
        """
        return self._where("inode", _to_sql(inode), inode, limit)

    def _where(self, column: str, value: object, same: object, limit: int) -> list[Base]:
        """
        Up to C{limit} bases whose C{column} is C{value} (the attribute of
        the same name is C{same}): the unwritten ones that match, then the
        written ones of the other paths. Asked for each download (and each
        new file), this writes nothing and copies nothing: the bases put
        since the last write stay batched.
        """
        attribute = attrgetter(column)
        with self._lock:
            unwritten = self._unwritten
            found = [base for base in unwritten.values() if base is not None and attribute(base) == same]
            if len(found) < limit:
                rows = self._db.execute(
                    _SELECT + f" WHERE {column} = ? LIMIT ?", (value, limit + len(unwritten))
                ).fetchall()
                found += [base for base in map(_base, rows) if base.path not in unwritten]
        return found[:limit]

    def __len__(self) -> int:
        return int(self._query("SELECT count(*) FROM bases")[0][0])

    def highest_seq(self) -> int:
        """
        The latest seq this folder knows of the box: its cursor, or a base
        recorded since (0 before the first sync).
        """
        with self._transaction() as db:
            rows = db.execute("SELECT value FROM meta WHERE key = ?", (_HIGHEST,)).fetchall()
            if rows:
                highest = int(rows[0][0])
            else:
                # Not kept yet (a new state, or one from before it was):
                # found once, then kept as bases are written.
                (found,) = db.execute("SELECT max(seq) FROM bases").fetchone()
                highest = int(found or 0)
                db.execute("INSERT INTO meta VALUES (?, ?)", (_HIGHEST, str(highest)))
        return max(self.cursor, highest)

    def witness(self) -> Held | None:
        """
        The version with the highest seq this folder ever had in sync (a
        file's; C{None} before the first): the box's commit of that seq
        must be that version, or the box is not the one this folder saw.
        """
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (_WITNESS,)).fetchone()
        if row is None:
            return None
        seq, sha256, path = row[0].split(" ", 2)
        return Held(int(seq), path, sha256)

    def put(self, base: Base) -> None:
        """
        Record C{base}, replacing any base of its path (soon, given
        C{later}).
        """
        if not self._soon(base.path, base):
            self.put_many([base])

    def put_many(self, bases: Iterable[Base]) -> None:
        """
        Record several bases in one transaction.
        """
        changes: dict[str, Base | None] = {base.path: base for base in bases}
        with self._transaction(changes.items()) as db:
            _write(db, changes)

    def forget(self, path: str) -> None:
        """
        Drop the base of C{path}, if any (soon, given C{later}).
        """
        if not self._soon(path, None):
            self.forget_many([path])

    def _soon(self, path: str, base: Base | None) -> bool:
        """
        Keep C{base} (C{None}: no base) as what C{path} has, to be written
        with the others of this moment.

        @return: whether it will be; C{False} if there is no C{later}.
        """
        if self.later is None:
            return False
        with self._lock:
            self._unwritten[path] = base
            schedule, self._flush_due = not self._flush_due, True
        if schedule:
            self.later(self._flush_later)
        return True

    def _flush_later(self) -> None:
        self._flush_due = False
        try:
            self.flush()
        except Exception:
            # Kept unwritten (and still what get answers): tried again with
            # the next ones, and before the cursor moves.
            self.log.failure("cannot record the state of {root}", root=str(self.root))

    def flush(self) -> None:
        """
        Write the bases put and forgotten since the last write, in one
        transaction.
        """
        with self._lock:
            self._write_unwritten()

    def forget_many(self, paths: Iterable[str]) -> None:
        """
        Drop the bases of several paths in one transaction.
        """
        changes: dict[str, Base | None] = dict.fromkeys(paths)
        with self._transaction(changes.items()) as db:
            _write(db, changes)

    def _get_meta(self, key: str) -> str | None:
        with self._lock:
            rows = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchall()
        return rows[0][0] if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        # In a transaction after the bases': the cursor is never ahead.
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def cursor(self) -> int:
        """
        The highest seq applied completely (0 before the first sync).
        """
        value = self._get_meta(_CURSOR)
        return 0 if value is None else int(value)

    @cursor.setter
    def cursor(self, seq: int) -> None:
        self._set_meta(_CURSOR, str(int(seq)))

    @property
    def client_id(self) -> str | None:
        """
        The name this client goes by on the server, once chosen.
        """
        return self._get_meta(_CLIENT_ID)

    @client_id.setter
    def client_id(self, name: str) -> None:
        self._set_meta(_CLIENT_ID, name)

    @property
    def rules(self) -> str | None:
        """
        The fingerprint of the ignore rules the cursor was reached with
        (C{None} before the first sync).
        """
        return self._get_meta(_RULES)

    @rules.setter
    def rules(self, fingerprint: str) -> None:
        self._set_meta(_RULES, fingerprint)

    @property
    def box(self) -> str | None:
        """
        The id of the box the bases and the cursor are of (C{None}: not
        known, before the first sync or from an older client).
        """
        return self._get_meta(_BOX)

    @box.setter
    def box(self, box: str) -> None:
        self._set_meta(_BOX, box)

    def left_in_box(self) -> dict[str, tuple[int, str]]:
        """
        The box's paths not brought here (see L{boxsync.client.passedover}),
        each with the seq of the version left in the box and why.
        """
        return {path: (seq, reason) for path, seq, reason in self._query("SELECT * FROM left_in_box")}

    def leave_in_box(self, path: str, seq: int, reason: str) -> None:
        """
        Remember that the box's version C{seq} of C{path} is not brought
        here, for C{reason}.
        """
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO left_in_box VALUES (?, ?, ?)", (path, seq, reason))

    def brought_from_box(self, path: str | None = None) -> None:
        """
        Forget that C{path} (C{None}: every path) is left in the box.
        """
        with self._transaction() as db:
            if path is None:
                db.execute("DELETE FROM left_in_box")
            else:
                db.execute("DELETE FROM left_in_box WHERE path = ?", (path,))

    def start_over(self, box: str | None, went_back_to: int | None = None) -> None:
        """
        Forget every base and the cursor, in one transaction that records
        C{box} as the box from now on (C{None}: not known): no file here
        was synced with it.

        @param went_back_to: if the box is this folder's, gone back to an
            earlier state (restored from a backup) whose last change is
            this seq: the files whose bases are past it are remembered as
            lost by the box, and the bases of highest seq up to it as those
            it may still share (L{lost_by_box}).
        """
        with self._lock:
            unwritten, self._unwritten = self._unwritten, {}
            self._recent.clear()
            with transaction(self._db) as db:
                db.execute("DELETE FROM lost_by_box")
                if went_back_to is not None:
                    _write(db, unwritten)
                    db.execute(
                        "INSERT INTO lost_by_box SELECT path, seq, sha256, 1 FROM bases WHERE seq > ? AND folder = 0",
                        (went_back_to,),
                    )
                    db.execute(
                        "INSERT INTO lost_by_box SELECT path, seq, sha256, 0 FROM bases"
                        " WHERE seq BETWEEN 1 AND ? AND folder = 0 ORDER BY seq DESC LIMIT ?",
                        (went_back_to, SHARED_PROBES),
                    )
                db.execute("DELETE FROM bases")
                db.execute("DELETE FROM left_in_box")
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_CURSOR, "0"))
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_HIGHEST, "0"))
                db.execute("DELETE FROM meta WHERE key IN (?, ?)", (_BOX, _WITNESS))
                if box is not None:
                    db.execute("INSERT INTO meta VALUES (?, ?)", (_BOX, box))

    def lost_by_box(self) -> LostByBox:
        """
        What the box lost of this folder's versions when it went back to an
        earlier state (see L{start_over}).
        """
        rows = self._query("SELECT path, seq, sha256, lost FROM lost_by_box ORDER BY seq DESC")
        return LostByBox(
            frozenset(path for path, _, _, lost in rows if lost),
            [(path, seq, sha256) for path, seq, sha256, lost in rows if not lost],
        )

    def forget_lost_by_box(self) -> None:
        """
        Forget which files the box lost: this folder is in sync with it.
        """
        with self._transaction() as db:
            db.execute("DELETE FROM lost_by_box")

    def close(self) -> None:
        """
        Close the database, writing what is left first. The state must not
        be used afterwards.
        """
        self.flush()
        with self._lock:
            self._db.close()
