"""
A real server process whose index is in a real PostgreSQL, with real client
processes, over 127.0.0.1.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.admin import run
from boxsync.server.auth import DEFAULT_ACCOUNT
from boxsync.testing import Client, Server, free_port, tree, wait_until
from tests.faults import converged
from tests.postgres import PostgreSQL


@pytest.fixture
def served(tmp_path: Path, postgres: PostgreSQL) -> Iterator[tuple[Server, str]]:
    """
    A server on a new database, and that database's URL.
    """
    url = postgres.new_database()
    running = Server(tmp_path / "box", options=["--index", url]).start()
    try:
        yield running, url
    finally:
        running.kill()


def test_two_clients_converge_through_an_index_in_postgresql(tmp_path: Path, served: tuple[Server, str]) -> None:
    import psycopg

    server, url = served
    a, b = Client(server, tmp_path / "a", "a"), Client(server, tmp_path / "b", "b")
    a.folder.mkdir()
    b.folder.mkdir()
    (b.folder / "from-b.txt").write_text("there before")
    a.start()
    b.start()
    try:
        steps = [
            (a, lambda f: (f / "notes.txt").write_text("created on a")),
            (b, lambda f: (f / "notes.txt").write_text("edited on b")),
            (a, lambda f: _nested(f / "deep/er/a.txt", "in a new folder")),
            (b, lambda f: (f / "deep/er/file.bin").write_bytes(bytes(range(256)) * 3000)),
            (a, lambda f: (f / "from-b.txt").unlink()),
        ]
        for who, change in steps:
            change(who.folder)
            wait_until(lambda: converged(a.folder, b.folder, server.box), what=f"sync after a step by {who.name}")
        assert (a.folder / "notes.txt").read_text() == "edited on b"
        assert not list(a.folder.glob("*.conflict-*")) and not list(b.folder.glob("*.conflict-*"))
    finally:
        assert a.stop() == 0 and b.stop() == 0
    # The index is the database's rows, not a file in the box.
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT path, deleted, folder FROM files WHERE account=%s ORDER BY path", (DEFAULT_ACCOUNT,)
        ).fetchall()
        (seq,) = connection.execute("SELECT seq FROM accounts WHERE account=%s", (DEFAULT_ACCOUNT,)).fetchone() or (0,)
    assert [path for path, deleted, folder in rows if not deleted and not folder] == sorted(tree(a.folder))
    assert ("from-b.txt", 1, 0) in rows
    assert seq >= len(rows)
    assert not list(server.box.rglob("index.sqlite"))
    # Started again on the same database, the server carries on where it
    # was: a client has nothing to do.
    server.stop()
    server.start()
    again = a.once()
    assert "uploaded" not in again.stderr and "downloaded" not in again.stderr
    assert converged(a.folder, b.folder, server.box)


def admin(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run(list(argv), out, err)
    return status, out.getvalue(), err.getvalue()


def _nested(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(text)


def test_boxsync_admin_shows_and_prunes_the_history_in_postgresql(tmp_path: Path, served: tuple[Server, str]) -> None:
    """
    C{boxsync-admin history} and C{prune} with C{--index} read and tidy the
    history of a box whose index is in PostgreSQL (prune with the server
    stopped, as for a box in SQLite).
    """
    server, url = served
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir()
    for text in ("first", "second, longer", "third"):
        (a.folder / "notes.txt").write_text(text)
        a.once()
    (a.folder / "notes.txt").unlink()
    a.once()
    box = str(server.box)
    status, out, err = admin("history", "--box", box, "--index", url)
    assert status == 0, err
    assert out.splitlines()[1].split()[:4] == [DEFAULT_ACCOUNT, "3", str(len("first") + len("second, longer") + len("third")), "B"]
    status, out, err = admin("prune", "--box", box, "--index", url, "--keep-versions", "0")
    assert status == 1 and "is being served" in err
    server.stop()
    status, out, err = admin("prune", "--box", box, "--index", url, "--keep-versions", "0")
    assert (status, out) == (0, "removed 3 versions and 0 unused blocks\n"), err
    status, out, err = admin("history", "--box", box, "--index", url)
    assert out.splitlines()[1].split() == [DEFAULT_ACCOUNT, "0", "0", "B", "-"]


def test_boxsync_admin_says_when_postgresql_cannot_be_reached(tmp_path: Path) -> None:
    (tmp_path / "box").mkdir()
    url = f"postgresql://boxsync@127.0.0.1:{free_port()}/boxsync?connect_timeout=2"
    status, out, err = admin("history", "--box", str(tmp_path / "box"), "--index", url)
    assert (status, out) == (1, "") and len(err.splitlines()) == 1 and err.startswith("boxsync-admin: error: ")
