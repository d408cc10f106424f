"""
Tests for L{boxsync.client.state}.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boxsync.client.state import (
    RECENT,
    STATE_FILE,
    UNKNOWN_CTIME,
    Base,
    SHARED_PROBES,
    LocalState,
    _UPGRADES,
    folder_base,
)
from boxsync.sqlite import DamagedDatabase
from boxsync.wire import Held


@pytest.fixture
def state(tmp_path: Path) -> Iterator[LocalState]:
    opened = LocalState.open(tmp_path)
    yield opened
    opened.close()


def base(path: str, seq: int = 1, sha: str = "a") -> Base:
    return Base(path, sha * 64, 10, 1_700_000_000_000_000_000, 1234, seq)


def test_open_creates_hidden_folder(tmp_path: Path) -> None:
    state = LocalState.open(tmp_path)
    state.close()
    db_path = tmp_path / ".boxsync" / STATE_FILE
    assert db_path.is_file()
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (len(_UPGRADES),)
    finally:
        db.close()


def test_empty(state: LocalState) -> None:
    assert state.get("a") is None
    assert state.all() == {}
    assert len(state) == 0
    assert state.cursor == 0
    assert state.client_id is None


def test_put_get_replace(state: LocalState) -> None:
    state.put(base("a", 1))
    state.put(base("b/c", 2))
    assert state.get("a") == base("a", 1)
    state.put(base("a", 5, "b"))
    assert state.get("a") == base("a", 5, "b")
    assert state.all() == {"a": base("a", 5, "b"), "b/c": base("b/c", 2)}


def test_put_many_is_one_transaction(state: LocalState) -> None:
    """
    If writing several bases fails part way, none is written.
    """

    def bases() -> Iterator[Base]:
        yield base("a")
        yield base("b")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        state.put_many(bases())
    assert state.all() == {}
    state.put_many(base(f"f{i}", i) for i in range(1000))
    assert len(state) == 1000


def test_forget(state: LocalState) -> None:
    state.put_many([base("a"), base("b"), base("c"), base("d")])
    state.forget("a")
    state.forget("nothing")
    state.forget_many(["b", "c"])
    assert list(state.all()) == ["d"]


def test_under(state: LocalState) -> None:
    """
    L{LocalState.under} finds a path and everything below it, and nothing
    that only starts with the same characters.
    """
    paths = ["a", "a/b", "a/b/c", "a.b", "a0", "ab", "a-", "b/a"]
    state.put_many(base(p) for p in paths)
    assert [b.path for b in state.under("a")] == ["a", "a/b", "a/b/c"]
    assert [b.path for b in state.under("a/b")] == ["a/b", "a/b/c"]
    assert state.under("c") == []


def test_meta_persists(tmp_path: Path) -> None:
    state = LocalState.open(tmp_path)
    state.cursor = 41
    state.client_id = "laptop"
    state.put(base("x"))
    state.close()
    state = LocalState.open(tmp_path)
    try:
        assert state.cursor == 41
        assert state.client_id == "laptop"
        assert state.get("x") == base("x")
    finally:
        state.close()


def state_from_before(root: Path, version: int, row: tuple[Any, ...]) -> LocalState:
    """
    The state of C{root} as a boxsync of schema C{version} left it, with the
    one base C{row}, opened (so brought up to date) now.
    """
    folder = root / ".boxsync"
    folder.mkdir()
    db = sqlite3.connect(folder / STATE_FILE)
    for number, upgrade in enumerate(_UPGRADES[:version], start=1):
        upgrade.run(db, number)
    db.execute(f"INSERT INTO bases VALUES ({', '.join('?' * len(row))})", row)
    db.commit()
    db.close()
    return LocalState.open(root)


def test_bases_from_before_ctimes_are_read_again(tmp_path: Path) -> None:
    """
    A state written before bases kept the ctime upgrades in place: its
    bases come back with the ctime unknown, so each file is read once more.
    """
    state = state_from_before(tmp_path, 1, ("x", "a" * 64, 10, 5, 7, 3))
    try:
        assert state.get("x") == Base("x", "a" * 64, 10, 5, 7, 3, UNKNOWN_CTIME)
    finally:
        state.close()


def test_bases_from_before_modes_were_kept_are_not_executable(tmp_path: Path) -> None:
    """
    A base recorded before the executable bit was synced is of a version
    that was not executable (what the box held): a file here that is gets
    sent up as that change.
    """
    state = state_from_before(tmp_path, 2, ("x", "a" * 64, 10, 5, 7, 3, 11))
    try:
        assert state.get("x") == Base("x", "a" * 64, 10, 5, 7, 3, 11, executable=False)
    finally:
        state.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    LocalState.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / ".boxsync" / STATE_FILE)
    db.execute(f"PRAGMA user_version = {len(_UPGRADES) + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="schema version"):
        LocalState.open(tmp_path)


@pytest.mark.parametrize("damage", ["header", "garbage"])
def test_a_damaged_state_is_kept_aside_and_begun_anew(tmp_path: Path, damage: str) -> None:
    """
    A state file that is not a database, or whose header is damaged, is
    not opened: L{LocalState.open} says so, L{LocalState.open_or_anew}
    keeps it aside, twice in a second without writing over
    the first, and begins anew. A newer boxsync's state is not damaged: it
    is refused, never set aside.
    """
    hidden = tmp_path / ".boxsync"
    kept: list[bytes] = []
    for _ in range(2):
        state = LocalState.open(tmp_path)
        state.put(base("a"))
        state.cursor = 9
        state.close()
        data = bytearray((hidden / STATE_FILE).read_bytes())
        data[:100] = b"\xff" * 100 if damage == "header" else b"not a database " * 6 + b"!" * 10
        (hidden / STATE_FILE).write_bytes(bytes(data))
        kept.append(bytes(data))
        with pytest.raises(DamagedDatabase, match="is damaged"):
            LocalState.open(tmp_path)
        state = LocalState.open_or_anew(tmp_path)
        assert (state.get("a"), state.cursor, len(state)) == (None, 0, 0)
        state.close()
    aside = [p for p in hidden.iterdir() if ".damaged-" in p.name]
    assert sorted(p.read_bytes() for p in aside) == sorted(kept)
    db = sqlite3.connect(hidden / STATE_FILE)
    db.execute(f"PRAGMA user_version = {len(_UPGRADES) + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="schema version"):
        LocalState.open_or_anew(tmp_path)


def test_other_thread(state: LocalState) -> None:
    """
    The state may be used from another thread than the one that opened it.
    """
    errors: list[BaseException] = []

    def work() -> None:
        try:
            state.put_many(base(f"t{i}") for i in range(10))
            state.cursor = 7
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    assert errors == []
    assert len(state) == 10
    assert state.cursor == 7


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalState]:
    opened = LocalState.open(tmp_path_factory.mktemp("state"))
    yield opened
    opened.close()


@given(
    record=st.builds(
        Base,
        path=st.text(min_size=1, max_size=50),
        sha256=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        size=st.integers(0, 2**63 - 1),
        mtime_ns=st.integers(0, 2**63 - 1),
        inode=st.integers(0, 2**64 - 1),
        seq=st.integers(0, 2**63 - 1),
        ctime_ns=st.one_of(st.just(UNKNOWN_CTIME), st.integers(0, 2**63 - 1)),
        executable=st.booleans(),
        folder=st.booleans(),
    )
)
def test_round_trip(shared_state: LocalState, record: Base) -> None:
    """
    Every base comes back as it was stored, inode numbers over 2**63
    included.
    """
    shared_state.put(record)
    try:
        assert shared_state.get(record.path) == record
        assert shared_state.all() == {record.path: record}
    finally:
        shared_state.forget(record.path)


def test_remembered_bases_follow_every_write(state: LocalState) -> None:
    """
    The bases kept in memory are always what the database holds: after a
    put, a forget, a failed write, and past the number remembered.
    """
    assert state.get("a") is None
    state.put(base("a", 1))
    assert state.get("a") == base("a", 1)
    state.forget("a")
    assert state.get("a") is None
    state.put(base("b", 1))
    assert state.get("b") == base("b", 1)
    with pytest.raises(sqlite3.Error):
        state.put_many([base("b", 2), Base("c", [1], 1, 1, 1, 1)])  # type: ignore[arg-type]
    assert state.get("b") == base("b", 1) and state.get("c") is None
    state.put_many(base(f"f{i}", i) for i in range(RECENT + 10))
    assert state.get("f0") == base("f0", 0) and state.get(f"f{RECENT + 9}") == base(f"f{RECENT + 9}", RECENT + 9)
    reopened = LocalState.open(state.root)
    assert reopened.get("b") == base("b", 1) and reopened.get("f0") == base("f0", 0)
    reopened.close()


def _on_disk(root: Path) -> dict[str, int]:
    db = sqlite3.connect(root / ".boxsync" / STATE_FILE)
    try:
        return dict(db.execute("SELECT path, seq FROM bases"))
    finally:
        db.close()


def test_puts_and_forgets_given_later_are_written_together(tmp_path: Path) -> None:
    due: list[object] = []
    state = LocalState.open(tmp_path)
    state.put_many([base("old", 1), base("kept", 1)])
    state.later = due.append
    try:
        state.put(base("a", 2))
        state.put(base("a", 3))
        state.forget("old")
        state.put(base("b", 4))
        state.forget("b")
        # One write is due; until it runs, get answers what was recorded.
        assert len(due) == 1
        assert state.get("a") == base("a", 3) and state.get("old") is None and state.get("b") is None
        assert _on_disk(tmp_path) == {"old": 1, "kept": 1}
        due.pop()()  # type: ignore[operator]
        assert _on_disk(tmp_path) == {"a": 3, "kept": 1}
        # A query of many bases, the cursor and closing write them first.
        state.put(base("c", 5))
        assert [b.path for b in state.under("c")] == ["c"]
        state.put(base("d", 6))
        state.cursor = 6
        assert _on_disk(tmp_path) == {"a": 3, "kept": 1, "c": 5, "d": 6}
        state.put(base("e", 7))
        # The write due since "c" writes "e" too.
        assert len(due) == 1
        due.pop()()  # type: ignore[operator]
        assert _on_disk(tmp_path)["e"] == 7
        state.forget("e")
    finally:
        state.close()
    assert "e" not in _on_disk(tmp_path)


def test_bases_by_content_or_inode_count_the_unwritten_and_write_nothing(tmp_path: Path) -> None:
    """
    Which files have a content (asked for each download) or an inode: the
    bases put and forgotten but not written yet count, over what is
    written, and nothing is written to answer.
    """
    due: list[object] = []
    state = LocalState.open(tmp_path)
    written = [base("same", 1, "a"), base("changed", 1, "a"), base("gone", 1, "a"), base("other", 1, "b")]
    state.put_many(written)
    state.later = due.append
    try:
        state.put(base("new", 2, "a"))
        state.put(base("changed", 2, "c"))
        state.forget("gone")
        assert sorted(b.path for b in state.with_sha256("a" * 64)) == ["new", "same"]
        assert [b.path for b in state.with_sha256("c" * 64)] == ["changed"]
        assert [b.path for b in state.with_sha256("b" * 64)] == ["other"]
        assert len(state.with_sha256("a" * 64, limit=1)) == 1
        # Every base here has the same inode.
        assert sorted(b.path for b in state.with_inode(1234)) == ["changed", "new", "other", "same"]
        assert _on_disk(tmp_path) == {b.path: 1 for b in written}
    finally:
        state.close()
    assert _on_disk(tmp_path) == {"same": 1, "changed": 2, "other": 1, "new": 2}


def test_a_failed_later_write_is_kept_and_tried_again(tmp_path: Path) -> None:
    due: list[object] = []
    state = LocalState.open(tmp_path)
    state.later = due.append
    refuse = sqlite3.connect(tmp_path / ".boxsync" / STATE_FILE)
    refuse.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON bases WHEN NEW.path = 'bad'"
        " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
    )
    refuse.commit()
    try:
        state.put(base("good", 1))
        state.put(base("bad", 2))
        due.pop()()  # type: ignore[operator]  # logged, not raised
        assert _on_disk(tmp_path) == {}
        assert state.get("good") == base("good", 1)
        with pytest.raises(sqlite3.IntegrityError):
            state.cursor = 2
        assert state.cursor == 0
        # The next put schedules another try; it succeeds once it can.
        state.put(base("more", 3))
        assert len(due) == 1
        refuse.execute("DROP TRIGGER refuse")
        refuse.commit()
        due.pop()()  # type: ignore[operator]
        assert _on_disk(tmp_path) == {"good": 1, "bad": 2, "more": 3}
    finally:
        refuse.close()
        state.close()


def test_stamps(state: LocalState) -> None:
    """
    The stamps of every file base, an inode over 2**63 as the file system
    gives it, and the seq of every folder's base.
    """
    huge = Base("huge", "b" * 64, 3, 5, (1 << 64) - 7, 2, 11, True)
    state.put_many([base("x"), huge, folder_base("dir", 8)])
    stamps = state.stamps()
    x = base("x")
    assert stamps.files == {
        (x.path, x.size, x.mtime_ns, x.inode, x.ctime_ns, 0),
        ("huge", 3, 5, (1 << 64) - 7, 11, 1),
    }
    assert ("huge", 3, 5, (1 << 64) - 7, 11, True) in stamps.files
    assert stamps.folders == {"dir": 8}


def test_the_witness_is_the_file_base_with_the_highest_seq_ever_recorded(tmp_path: Path) -> None:
    state = LocalState.open(tmp_path)
    assert state.witness() is None
    state.put_many([base("a", 3), base("b c", 9, "b"), folder_base("docs", 12)])
    # A folder's base names no version.
    assert state.witness() == Held(9, "b c", "b" * 64)
    state.put_many([base("d", 5, "d")])
    assert state.witness() == Held(9, "b c", "b" * 64)
    # Gone since, it still names the highest seq this folder had.
    state.forget("b c")
    assert state.witness() == Held(9, "b c", "b" * 64)
    state.later = lambda write: None  # a put kept unwritten
    state.put(base("e", 10, "e"))
    assert state.witness() == Held(10, "e", "e" * 64)
    state.start_over("another")
    assert state.witness() is None
    state.later = None
    state.put_many([base("f", 2, "f")])
    state.close()
    reopened = LocalState.open(tmp_path)
    try:
        assert reopened.witness() == Held(2, "f", "f" * 64)
    finally:
        reopened.close()


def test_starting_over_with_another_box_forgets_every_base_at_once(tmp_path: Path) -> None:
    state = LocalState.open(tmp_path)
    assert state.box is None and state.highest_seq() == 0
    state.box = "one"
    state.put_many([base("a", 3), base("b", 9), folder_base("docs", 4)])
    state.cursor = 5
    # A base recorded past the cursor counts: its commit was answered; and
    # one that is gone since, too.
    assert state.highest_seq() == 9
    state.forget("b")
    assert state.highest_seq() == 9
    state.later = lambda write: None  # a put kept unwritten
    state.put(base("c", 11))
    assert state.highest_seq() == 11
    state.start_over("two")
    assert (state.box, state.cursor, state.highest_seq(), state.all(), state.get("a")) == ("two", 0, 0, {}, None)
    state.put_many([base("d", 2)])
    assert state.highest_seq() == 2
    state.later = None
    state.close()
    reopened = LocalState.open(tmp_path)
    try:
        assert (reopened.box, reopened.cursor, len(reopened), reopened.highest_seq()) == ("two", 0, 1, 2)
        # A server that does not tell its box leaves it not known.
        reopened.start_over(None)
        assert reopened.box is None
    finally:
        reopened.close()


def test_a_box_gone_back_remembers_what_it_lost_and_what_it_may_share(state: LocalState) -> None:
    """
    Started over for a box gone back to seq 20: the file bases past it
    (one still unwritten) are lost by the box, the bases of highest seq up
    to it, newest first and at most L{SHARED_PROBES}, may be shared; a
    folder is neither. Until forgotten, or the next start over.
    """
    state.put_many([base(f"old{n}", n) for n in range(1, 20)] + [base("lost", 25, "b"), folder_base("dir", 30)])
    state.later = lambda write: None
    state.put(base("unwritten", 21, "c"))
    state.start_over("box", went_back_to=20)
    state.later = None
    known = state.lost_by_box()
    assert known.lost == {"lost", "unwritten"}
    assert known.maybe_shared == [(f"old{n}", n, "a" * 64) for n in range(19, 19 - SHARED_PROBES, -1)]
    assert len(state) == 0 and state.cursor == 0
    state.forget_lost_by_box()
    assert state.lost_by_box() == (frozenset(), [])
    state.put(base("x", 5))
    state.start_over("box", went_back_to=1)
    assert state.lost_by_box().lost == {"x"}
    state.start_over("another")
    assert not state.lost_by_box().lost
