"""
The contract of the token registry on both implementations: the box's
SQLite file and the table in PostgreSQL (a real PostgreSQL, a new database
for each test), each opened twice as a command and a server would.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable, Iterator

import pytest

from boxsync.server.index import IndexUnavailable
from boxsync.server.registry import REGISTRY_FILE, Registry, TokenRecord, TokenRegistry
from boxsync.server.service import open_registry

Opener = Callable[[], Registry]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """
    Opens the registry: each call another connection to the same one, all
    closed as the test ends.
    """
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres").new_database()
    opened: list[Registry] = []

    def open_one() -> Registry:
        registry = open_registry(url, tmp_path)
        opened.append(registry)
        return registry

    try:
        yield open_one
    finally:
        for registry in opened:
            registry.close()


def token(n: int, account: str = "alice", client: str = "laptop", **more: int | None) -> TokenRecord:
    return TokenRecord(f"t{n:03d}", account, client, 1_000 + n, **more)  # type: ignore[arg-type]


def test_tokens_come_back_as_they_were_added(opener: Opener) -> None:
    registry = opener()
    added = [token(2), token(1, expires=2_000), token(3, "bob", "phone")]
    for record in added:
        registry.add(record)
    assert registry.get("t001") == added[1]
    assert registry.get("nope") is None
    # In the order they were issued; of one account.
    assert registry.tokens() == [added[1], added[0], added[2]]
    assert registry.tokens("alice") == [added[1], added[0]]
    assert registry.accounts() == {"alice", "bob"}
    assert registry.revoked() == set()


def test_a_token_is_revoked_once(opener: Opener) -> None:
    registry = opener()
    registry.add(token(1))
    registry.add(token(2))
    assert registry.revoke("t001", 5_000) is True
    assert registry.revoke("t001", 6_000) is False
    assert registry.revoke("nope", 6_000) is False
    assert registry.get("t001") == token(1, revoked=5_000)
    assert registry.revoked() == {"t001"}
    # A revoked token's account is still an account.
    assert registry.accounts() == {"alice"}


def test_the_version_moves_with_a_change_made_elsewhere(opener: Opener) -> None:
    """
    A server polls its registry's version: a token added or revoked by a
    command (another connection) moves it; a revocation that changes
    nothing does not.
    """
    server, command = opener(), opener()
    server.add(token(1))
    before = server.version()
    assert server.version() == before
    command.add(token(2))
    added = server.version()
    assert added != before
    command.revoke("t002", 7_000)
    revoked = server.version()
    assert revoked != added and server.revoked() == {"t002"}
    command.revoke("t002", 8_000)
    assert server.version() == revoked


def test_a_registry_in_postgresql_takes_in_the_box_s_own(tmp_path: Path, postgres: object) -> None:
    """
    A box served before its index moved to PostgreSQL has its tokens in its
    SQLite file: they are copied in, and a revocation made there later is
    too, without undoing one made in PostgreSQL.
    """
    own = TokenRegistry(tmp_path / REGISTRY_FILE)
    url = postgres.new_database()  # type: ignore[attr-defined]
    try:
        own.add(token(1))
        own.add(token(2, revoked=3_000))
        own.add(token(3))
        registry = open_registry(url, tmp_path)
        try:
            assert registry.tokens() == own.tokens()
            registry.revoke("t001", 4_000)
            own.revoke("t003", 5_000)
            own.revoke("t001", 6_000)
        finally:
            registry.close()
        again = open_registry(url, tmp_path)
        try:
            assert [r.revoked for r in again.tokens()] == [4_000, 3_000, 5_000]
            version = again.version()
        finally:
            again.close()
        third = open_registry(url, tmp_path)
        try:
            # Nothing new: nothing copied, nothing counted.
            assert third.version() == version
        finally:
            third.close()
    finally:
        own.close()


def test_a_registry_out_of_reach_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as listening:
        # A port nothing answers on: held, not listened on.
        listening.bind(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        registry = open_registry(f"postgresql://boxsync@127.0.0.1:{port}/boxsync", tmp_path, timeout=1)
        with pytest.raises(IndexUnavailable) as raised:
            registry.tokens()
    assert "\n" not in str(raised.value) and f"127.0.0.1:{port}/boxsync" in str(raised.value)


def test_a_registry_in_postgresql_comes_back_after_a_restart(tmp_path: Path, postgres: object) -> None:
    registry = open_registry(postgres.new_database(), tmp_path)  # type: ignore[attr-defined]
    try:
        registry.add(token(1))
        postgres.restart()  # type: ignore[attr-defined]
        # The call that finds the connection gone says so; the next makes another.
        try:
            found = registry.tokens()
        except IndexUnavailable:
            found = registry.tokens()
        assert found == [token(1)]
    finally:
        registry.close()


def test_a_link_is_used_once_on_any_connection(opener: Opener) -> None:
    """
    The use of a one-time link is seen by every server of the registry; it
    is forgotten once past the time it is kept until.
    """
    one, two = opener(), opener()
    assert one.use_once("link1", 2_000, 1_000) is True
    assert two.use_once("link1", 2_100, 1_100) is False
    assert one.use_once("link1", 2_200, 1_200) is False
    assert two.use_once("link2", 2_000, 1_300) is True
    # Past 2,000, link1's use is forgotten (the link itself no longer works).
    assert one.use_once("link1", 3_500, 2_001) is True


def test_a_sign_out_is_seen_on_any_connection_until_the_session_would_end(opener: Opener) -> None:
    """
    A web session signed out through one server is among the ended
    sessions every other server reads, and moves the version they poll,
    until the time the session would have ended anyway.
    """
    server, other = opener(), opener()
    before = server.version()
    other.end_session("s1", 2_000, 1_000)
    other.end_session("s2", 3_000, 1_000)
    assert server.version() != before
    assert server.ended_sessions(1_500) == {"s1", "s2"}
    assert server.ended_sessions(2_500) == {"s2"}
    # Signing out twice is no error; s1, past its end, is forgotten.
    other.end_session("s2", 3_000, 2_500)
    assert server.ended_sessions(0) == {"s2"}


def test_each_server_s_report_of_its_clients_is_read_on_any_connection(opener: Opener) -> None:
    """
    A server reports, by account, the clients it serves: another connection
    reads every server's latest report of an account with the time each
    server last reported; an empty report takes the account's line out, and
    a server silent since the time given is forgotten. In PostgreSQL (where
    servers report: they may have others beside them) reports are not
    changes of the tokens, which the servers would read again.
    """
    one, two = opener(), opener()
    before = two.version()
    one.report_clients("s1", 100.0, {"alice": '["laptop"]', "bob": '["phone"]'}, 0.0)
    two.report_clients("s2", 101.0, {"alice": '["desktop"]'}, 0.0)
    assert two.version() == before or isinstance(two, TokenRegistry)
    assert one.clients_seen("alice") == [("s1", 100.0, '["laptop"]'), ("s2", 101.0, '["desktop"]')]
    assert two.clients_seen("bob") == [("s1", 100.0, '["phone"]')]
    assert two.clients_seen("carol") == []
    # s1 reports again: bob has no client there any more; alice's line stays.
    one.report_clients("s1", 102.0, {"bob": ""}, 0.0)
    assert two.clients_seen("bob") == []
    assert two.clients_seen("alice") == [("s1", 102.0, '["laptop"]'), ("s2", 101.0, '["desktop"]')]
    # s2 falls silent; s1's report forgets every server silent since before 101.5.
    one.report_clients("s1", 200.0, {}, 101.5)
    assert two.clients_seen("alice") == [("s1", 200.0, '["laptop"]')]
