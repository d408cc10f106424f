"""
Two real server processes serving one box, on one index in a real
PostgreSQL, with real clients each on its own server, over 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.admin import run
from boxsync.testing import Client, Server, wait_until
from tests.faults import get, put, two_clients_converge
from tests.postgres import PostgreSQL


@pytest.fixture
def pair(tmp_path: Path, postgres: PostgreSQL) -> Iterator[tuple[Server, Server]]:
    """
    Two servers of the box C{tmp_path/box}, on one new database.
    """
    url = postgres.new_database()
    one = Server(tmp_path / "box", options=["--index", url]).start()
    two = Server(tmp_path / "box", options=["--index", url])
    try:
        two.start()
        yield one, two
    finally:
        two.kill()
        one.kill()


def test_clients_on_two_servers_converge_live(tmp_path: Path, pair: tuple[Server, Server]) -> None:
    one, two = pair
    assert two.process is not None and "serving the box beside other servers" in two.process.output()
    two_clients_converge(Client(one, tmp_path / "a", "a"), Client(two, tmp_path / "b", "b"), one.box)


def _panel(server: Server) -> dict[str, tuple[int, float]]:
    """
    The clients panel of the web page, as C{server} answers it: each
    client's open streams and when it was last connected.
    """
    request = urllib.request.Request(server.url + "/web/clients", headers={"Authorization": f"Bearer {server.key}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return {c["client"]: (c["streams"], c["last_seen"]) for c in json.load(answer)["clients"]}


def test_the_clients_panel_of_any_server_shows_the_clients_of_all(tmp_path: Path, pair: tuple[Server, Server]) -> None:
    """
    A client connected to one server is in the web page's clients panel
    on the other, connected, then, once it stopped, last seen.
    """
    one, two = pair
    client = Client(two, tmp_path / "b", "far").start()
    try:
        wait_until(lambda: _panel(one).get("far", (0, 0))[0] == 1, timeout=20, what="the client on the other server")
    finally:
        client.stop()
    wait_until(lambda: _panel(one).get("far", (1, 0))[0] == 0, timeout=20, what="the client gone")
    streams, last_seen = _panel(one)["far"]
    assert 0 < time.time() - last_seen < 60


def test_one_of_two_commits_of_a_path_from_one_base_wins(pair: tuple[Server, Server]) -> None:
    """
    The same path from the same base through both servers at once: exactly
    one is committed, the other refused as a stale base, and the box holds
    the one committed.
    """
    one, two = pair
    paths = [f"race-{n}.txt" for n in range(20)]

    def race(path: str) -> list[tuple[int, bytes]]:
        bodies = [f"{path} through {name}".encode() * 100 for name in ("one", "two")]
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda sb: put(sb[0], path, sb[1], base=0), zip((one, two), bodies)))
        return [(status, body) for (status, _), body in zip(answers, bodies)]

    for path in paths:
        outcome = race(path)
        statuses = sorted(status for status, _ in outcome)
        assert statuses[0] in (200, 201) and statuses[1] == 412, (path, statuses)
        (won,) = [body for status, body in outcome if status != 412]
        for server in (one, two):
            status, headers, body = get(server, path)
            assert status == 200 and body == won
            assert headers["ETag"].strip('"') == hashlib.sha256(won).hexdigest()
        assert (one.box / path).read_bytes() == won


def admin(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run(list(argv), out, err)
    return status, out.getvalue(), err.getvalue()


def test_tokens_in_postgresql_are_revoked_on_every_server(tmp_path: Path, postgres: PostgreSQL) -> None:
    """
    Served with tokens on an index in PostgreSQL, the token registry is
    there too: a token minted and revoked by C{boxsync-admin --index} from
    anywhere works, then is refused, on every server.
    """
    url = postgres.new_database()
    box = tmp_path / "box"
    status, token, err = admin("token", "--box", str(box), "--index", url, "--account", "alice", "--client", "laptop")
    assert status == 0, err
    servers = [Server(box, key=token.strip(), options=["--tokens", "--index", url]) for _ in range(2)]
    try:
        for server in servers:
            server.start()
            assert put(server, f"from-{server.port}.txt", b"hello")[0] == 201
            assert get(server, "from-x.txt")[0] == 404
        assert not (box / ".boxsync" / "tokens.sqlite").exists()
        # A command that does not say where the index is is told.
        status, out, err = admin("tokens", "--box", str(box))
        assert (status, out) == (1, "") and "--index" in err
        status, out, err = admin("tokens", "--box", str(box), "--index", url)
        assert status == 0 and out.splitlines()[1].split()[1:3] == ["alice", "laptop"]
        status, out, err = admin("revoke", "--box", str(box), "--index", url, "--account", "alice", "--client", "laptop")
        assert status == 0, err
        for server in servers:
            wait_until(lambda: get(server, "from-x.txt")[0] == 403, timeout=10, what=f"server {server.port} to refuse")
    finally:
        for server in servers:
            server.kill()


def _listing(server: Server) -> list[tuple[str, int, str]]:
    request = urllib.request.Request(server.url + "/files", headers={"Authorization": f"Bearer {server.key}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return sorted((r["path"], r["seq"], r["sha256"]) for r in json.load(answer))


def test_an_embedded_box_moves_to_postgresql_and_back(tmp_path: Path, postgres: PostgreSQL) -> None:
    """
    C{boxsync-admin migrate}: a box served embedded, with a file overwritten
    (a version kept), moves into PostgreSQL and back; served from either,
    it lists the same files at the same seqs, keeps the same history, its
    seqs go on from where they were, and a client synced before sees the
    same box (it does not start over). A move is refused, with nothing
    written, while a server runs, into a database that holds an index, and
    for a box with a file changed by hand since it was served.
    """
    box = tmp_path / "box"
    url, other = postgres.new_database(), postgres.new_database()
    server = Server(box).start()
    try:
        for path, data in (("a.txt", b"one"), ("docs/b.txt", b"two"), ("a.txt", b"three")):
            assert put(server, path, data)[0] == 201
        before = _listing(server)
        (tmp_path / "c").mkdir()
        Client(server, tmp_path / "c", "c").once()
        status, _, err = admin("migrate", "--box", str(box), "--to", url)
        assert status == 1 and "is being served" in err and len(err.splitlines()) == 1
    finally:
        server.stop()
    _, history, _ = admin("history", "--box", str(box))

    stamp = (box / "docs/b.txt").stat()
    (box / "docs/b.txt").write_bytes(b"changed by hand")
    status, _, err = admin("migrate", "--box", str(box), "--to", other)
    assert status == 1 and "'docs/b.txt'" in err and len(err.splitlines()) == 1
    # Put back as it was (its mtime too: else the server takes it for an edit).
    (box / "docs/b.txt").write_bytes(b"two")
    os.utime(box / "docs/b.txt", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    status, out, err = admin("migrate", "--box", str(box), "--to", url)
    assert status == 0, err
    assert "checked 2 files" in out and "1 versions" in out
    status, _, err = admin("migrate", "--box", str(box), "--to", url)
    assert status == 1 and "in PostgreSQL already" in err
    assert admin("history", "--box", str(box), "--index", url)[1] == history
    server = Server(box, options=["--index", url]).start()
    try:
        assert _listing(server) == before
        assert "is not the one" not in Client(server, tmp_path / "c", "c").once().stderr
        assert put(server, "c.txt", b"four")[0] == 201
        assert max(seq for _, seq, _ in _listing(server)) == max(seq for _, seq, _ in before) + 1
        moved = _listing(server)
    finally:
        server.stop()

    status, out, err = admin("migrate", "--box", str(box), "--from", url)
    assert status == 0, err
    assert "checked 3 files" in out
    server = Server(box).start()
    try:
        assert _listing(server) == moved
        assert "is not the one" not in Client(server, tmp_path / "c", "c").once().stderr
    finally:
        server.stop()
    assert admin("history", "--box", str(box))[1] == history
    # Back in the box, a database that holds an index is refused.
    status, _, err = admin("migrate", "--box", str(box), "--to", url)
    assert status == 1 and "already holds an index" in err


def test_a_box_with_tokens_moves_with_its_registry(tmp_path: Path, postgres: PostgreSQL) -> None:
    """
    Served with tokens, the token registry moves too: the same token opens
    the same account from PostgreSQL and, moved back, from the box; one
    revoked before the move stays revoked.
    """
    box, url = tmp_path / "box", postgres.new_database()
    minted = []
    for client in ("laptop", "phone"):
        status, token, err = admin("token", "--box", str(box), "--account", "alice", "--client", client)
        assert status == 0, err
        minted.append(token.strip())
    status, _, err = admin("revoke", "--box", str(box), "--account", "alice", "--client", "phone")
    assert status == 0, err
    server = Server(box, key=minted[0], options=["--tokens"]).start()
    try:
        assert put(server, "a.txt", b"alice's")[0] == 201
    finally:
        server.stop()
    for argv, options in ((["--to", url], ["--index", url]), (["--from", url], [])):
        status, out, err = admin("migrate", "--box", str(box), *argv)
        assert status == 0, err
        assert "2 tokens" in out
        for key, status in ((minted[0], 200), (minted[1], 403)):
            server = Server(box, key=key, options=["--tokens", *options]).start()
            try:
                assert get(server, "a.txt")[0] == status
            finally:
                server.stop()
