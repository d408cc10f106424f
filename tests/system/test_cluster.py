"""
Two real server processes serving one box, on one index in a real
PostgreSQL, with real clients each on its own server, over 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
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
