"""
Token mode on a real server on a loopback port: each account has its own box,
and nothing of one is visible to another; refused tokens all look alike; a
token's streams are capped; revoking a token with the real ``boxsync-admin``
ends its open streams.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import pytest_twisted
from attrs import define, field
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from boxsync.admin import mint_token
from boxsync.wire import BatchFile, Delete, Download, FileEntry, Manifest, encode_part, parse_parts
from boxsync.server.auth import TOKEN_REFUSED
from boxsync.server.service import BoxsyncService, ServerConfig
from boxsync.server.tokens import TokenClaims, load_secret, mint, new_token_id
from boxsync.testing import DEADLINE, Process, free_port, wait_until
from tests.helpers import (
    Folder,
    RunningServer,
    StreamReader,
    json_of,
    open_stream,
    put,
    sha,
    timed,
)

#: The bound on how long a revocation may take to end a stream.
REVOKE_SECONDS = 5.0


@define
class TokenServer:
    """
    A token-mode server in this process, and a token per (account, client).
    """

    reactor: Any
    box: Path
    tokens: dict[str, str] = field(factory=dict)
    ids: dict[str, str] = field(factory=dict)
    service: BoxsyncService | None = None
    options: dict[str, Any] = field(factory=dict)

    def mint(self, account: str, client: str, expires_in: int | None = None) -> str:
        token, record = mint_token(self.box, account, client, expires_in, int(time.time()))
        self.tokens[client] = token
        self.ids[client] = record.token_id
        return token

    async def start(self) -> None:
        config = ServerConfig(
            self.box, ["tcp:0:interface=127.0.0.1"], tokens=True, status_seconds=0, **self.options
        )
        self.service = BoxsyncService(self.reactor, config)
        self.service.startService()
        await timed(self.service.ready, self.reactor)

    async def stop(self) -> None:
        if self.service is not None:
            service, self.service = self.service, None
            await service.stopService()

    def as_(self, client: str) -> RunningServer:
        """
        The server as the client C{client} sees it (with its token).
        """
        return self.with_token(self.tokens[client])

    def with_token(self, token: str) -> RunningServer:
        assert self.service is not None
        return RunningServer(self.reactor, self.box, token, port=self.service.ports[0].getHost().port)

    def hub_count(self) -> int:
        assert self.service is not None
        return self.service.hub.count()


@pytest_twisted.async_yield_fixture
async def accounts(tmp_path: Path, reactor: Any) -> AsyncIterator[TokenServer]:
    box = tmp_path / "box"
    box.mkdir()
    server = TokenServer(reactor, box, options={"max_streams_per_token": 3})
    server.mint("alice", "laptop")
    server.mint("alice", "phone")
    server.mint("bob", "desk")
    server.mint("carol", "tablet")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


#: A batch upload of one file, C{new.txt}.
BATCH_OF_NEW = b"".join(
    encode_part(BatchFile("new.txt", 1, hashlib.sha256(b"x").hexdigest(), 1, 0).to_json(), b"x")
)


async def wait_for(reactor: Any, condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = reactor.seconds() + seconds
    while not condition():
        assert reactor.seconds() < deadline, f"timed out after {seconds} s"
        await deferLater(reactor, 0.02, lambda: None)


async def listed(http: Any, server: RunningServer) -> list[str]:
    response = await timed(http.get(f"{server.url}/files", headers=server.headers()), server.reactor)
    assert response.code == 200
    return [entry["path"] for entry in await json_of(response)]


@pytest_twisted.ensureDeferred
async def test_each_account_sees_only_its_own_files(accounts: TokenServer, http: Any) -> None:
    alice, phone, bob, carol = (accounts.as_(c) for c in ("laptop", "phone", "desk", "tablet"))
    a = await json_of(await put(http, alice, "a.txt", b"alice's", base=0))
    b = await json_of(await put(http, bob, "b.txt", b"bob's", base=0))
    # Each account counts its own seq.
    assert a["seq"] == b["seq"] == 1
    assert (accounts.box / "alice" / "a.txt").read_bytes() == b"alice's"
    assert (accounts.box / "bob" / "b.txt").read_bytes() == b"bob's"
    # List: only one's own; both of alice's clients see the same box.
    assert await listed(http, alice) == ["a.txt"] == await listed(http, phone)
    assert await listed(http, bob) == ["b.txt"]
    assert await listed(http, carol) == []
    # Read: another account's file is not there, with the very answer of a
    # file that exists nowhere.
    as_alice = await http.get(alice.file_url("b.txt"), headers=alice.headers())
    as_carol = await http.get(carol.file_url("b.txt"), headers=carol.headers())
    assert as_alice.code == as_carol.code == 404
    assert await as_alice.content() == await as_carol.content()
    assert (await http.head(alice.file_url("b.txt"), headers=alice.headers())).code == 404
    # Delete: nothing of bob's to delete, and he is told just what carol,
    # with an empty box, is told.
    answers = []
    for who in (bob, carol):
        for base in ("1", "0"):
            response = await http.delete(who.file_url("a.txt"), headers=who.headers(X_Boxsync_Base=base))
            answers.append((response.code, await response.content()))
    assert answers[:2] == answers[2:] and [code for code, _ in answers[:2]] == [412, 404]
    # Write: the same path in two accounts is two files.
    mine = await json_of(await put(http, alice, "b.txt", b"alice's b", base=0))
    assert mine["seq"] == 2
    assert (accounts.box / "bob" / "b.txt").read_bytes() == b"bob's"
    response = await http.get(bob.file_url("b.txt"), headers=bob.headers())
    assert await response.content() == b"bob's"
    # A stale base in one account says nothing of the other's seq.
    response = await put(http, bob, "b.txt", b"x", base=2)
    assert response.code == 412 and (await json_of(response))["seq"] == 1
    response = await http.delete(alice.file_url("a.txt"), headers=alice.headers(X_Boxsync_Base="1"))
    assert response.code == 200
    await response.content()
    assert await listed(http, alice) == ["b.txt"] and await listed(http, bob) == ["b.txt"]
    assert sorted(p.name for p in accounts.box.iterdir()) == [".boxsync", "alice", "bob", "carol"]


@pytest_twisted.ensureDeferred
async def test_batches_stay_in_their_account(accounts: TokenServer, http: Any) -> None:
    """
    A batch upload lands in the token's account, and a batch download finds
    only that account's files.
    """
    alice, bob = accounts.as_("laptop"), accounts.as_("desk")
    response = await http.post(f"{alice.url}/batch/upload", data=BATCH_OF_NEW, headers=alice.headers())
    assert response.code == 200 and (await json_of(response))["results"][0]["status"] == 201
    assert (accounts.box / "alice" / "new.txt").read_bytes() == b"x"
    assert not (accounts.box / "bob" / "new.txt").exists()
    answers = {}
    for who in (alice, bob):
        response = await http.post(f"{who.url}/batch/download", data=b'{"paths": ["new.txt"]}', headers=who.headers())
        assert response.code == 200
        answers[who.key] = parse_parts(await response.content())
    assert answers[alice.key][0][1] == b"x" and answers[alice.key][0][0]["status"] == 200
    assert answers[bob.key][0][0]["status"] == 404 and answers[bob.key][0][1] == b""


@pytest_twisted.ensureDeferred
async def test_events_stay_in_their_account(accounts: TokenServer, http: Any) -> None:
    alice, bob = accounts.as_("laptop"), accounts.as_("desk")
    await put(http, alice, "old.txt", b"old", base=0)
    listening = await open_stream(http, bob, Manifest(client="desk"))
    try:
        events = await listening.ready()
        # Bob's plan has nothing of alice's.
        assert [e.name for e in events] == ["hello", "ready"]
        await put(http, alice, "secret.txt", b"alice only", base=0)
        await http.delete(alice.file_url("old.txt"), headers=alice.headers(X_Boxsync_Base="1"))
        record = await json_of(await put(http, bob, "mine.txt", b"bob", base=0))
        events = await listening.wait(lambda es: isinstance(es[-1], Download))
        # Bob heard his own account's commit (from another connection), and
        # nothing of alice's, which came before it.
        assert events[2:] == [Download("mine.txt", sha(b"bob"), 3, record["mtime_ns"], 1)]
        assert not any(isinstance(e, Delete) for e in events)
    finally:
        listening.close()


@pytest_twisted.ensureDeferred
async def test_a_plan_is_made_from_the_account_of_the_token(accounts: TokenServer, http: Any) -> None:
    alice, bob = accounts.as_("laptop"), accounts.as_("desk")
    await put(http, alice, "shared-name.txt", b"alice", base=0)
    await put(http, bob, "shared-name.txt", b"bob", base=0)
    manifest = Manifest(client="desk", files=[FileEntry("shared-name.txt", sha(b"bob"), 3, 0, base=0, changed=True)])
    stream = await open_stream(http, bob, manifest)
    try:
        events = await stream.ready()
        assert [(e.name, getattr(e, "path", None)) for e in events[1:-1]] == [("insync", "shared-name.txt")]
    finally:
        stream.close()


def refused_tokens(accounts: TokenServer) -> dict[str, str]:
    secret = load_secret(accounts.box / ".boxsync")
    now = int(time.time())
    good = accounts.tokens["laptop"]
    header, payload, signature = good.split(".")
    bob_payload = accounts.tokens["desk"].split(".")[1]
    return {
        "tampered": f"{header}.{bob_payload}.{signature}",
        "bad signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "expired": mint(secret, TokenClaims(new_token_id(), "alice", "x", now - 100, now - 50)),
        "alg none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + payload + ".",
        "wrong secret": mint(b"w" * 32, TokenClaims(new_token_id(), "alice", "x", now)),
        "unknown account": mint(secret, TokenClaims(new_token_id(), "zed", "x", now)),
        "the api key": "test-key-0123456789",
    }


@pytest_twisted.ensureDeferred
async def test_refused_tokens_all_get_the_same_answer(accounts: TokenServer, http: Any) -> None:
    alice = accounts.as_("laptop")
    await put(http, alice, "a.txt", b"a", base=0)
    answers = set()
    for why, token in refused_tokens(accounts).items():
        server = accounts.with_token(token)
        requests = [
            http.get(f"{server.url}/files", headers=server.headers()),
            http.get(server.file_url("a.txt"), headers=server.headers()),
            http.put(server.file_url("new.txt"), data=b"x" * 100_000, headers=server.headers()),
            http.delete(server.file_url("a.txt"), headers=server.headers(X_Boxsync_Base="1")),
            http.post(f"{server.url}/sync", data=b"{}", headers=server.headers(Accept="text/event-stream")),
            http.post(f"{server.url}/upload", data=b"x", headers=server.headers(File_Path="new.txt")),
            http.post(f"{server.url}/batch/upload", data=BATCH_OF_NEW, headers=server.headers()),
            http.post(f"{server.url}/batch/download", data=b'{"paths": ["a.txt"]}', headers=server.headers()),
        ]
        for request in requests:
            response = await timed(request, accounts.reactor)
            answers.add((response.code, await response.content()))
        assert answers == {(403, json.dumps({"error": TOKEN_REFUSED}).encode() + b"\n")}, why
    # Nothing was written anywhere, nor staged and left behind.
    assert await listed(http, alice) == ["a.txt"]
    assert [p.name for p in accounts.box.rglob("new.txt")] == []
    assert list((accounts.box / ".boxsync" / "staging").iterdir()) == []
    assert not (accounts.box / "zed").exists()
    response = await http.get(f"{alice.url}/files")
    assert response.code == 401
    await response.content()


@pytest_twisted.ensureDeferred
async def test_streams_per_token_are_capped(accounts: TokenServer, http: Any) -> None:
    laptop, phone = accounts.as_("laptop"), accounts.as_("phone")
    streams = [await open_stream(http, laptop, Manifest(client="laptop")) for _ in range(3)]
    extra: StreamReader | None = None
    try:
        for stream in streams:
            await stream.ready()
        response = await http.post(
            f"{laptop.url}/sync", data=b"{}", headers=laptop.headers(Accept="text/event-stream")
        )
        assert response.code == 429
        assert response.headers.getRawHeaders("Content-Type") == ["application/json"]
        assert "3 open event streams" in (await json_of(response))["error"]
        # Another token of the same account is not held back.
        extra = await open_stream(http, phone, Manifest(client="phone"))
        await extra.ready()
        # Once one stream ends, the token may open another.
        streams.pop().close()
        await wait_for(accounts.reactor, lambda: accounts.hub_count() == 3)
        streams.append(await open_stream(http, laptop, Manifest(client="laptop")))
        await streams[-1].ready()
    finally:
        for stream in streams + ([extra] if extra else []):
            stream.close()


async def admin(*argv: str) -> subprocess.CompletedProcess[str]:
    """
    Run the real C{boxsync-admin} (in a thread: the reactor goes on).
    """
    return await deferToThread(
        subprocess.run,
        [sys.executable, "-m", "boxsync.admin", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest_twisted.ensureDeferred
async def test_revoking_a_token_ends_its_open_streams(accounts: TokenServer, http: Any) -> None:
    laptop, phone = accounts.as_("laptop"), accounts.as_("phone")
    revoked = [await open_stream(http, laptop, Manifest(client="laptop")) for _ in range(2)]
    kept = await open_stream(http, phone, Manifest(client="phone"))
    for stream in revoked + [kept]:
        await stream.ready()
    try:
        done = await admin("revoke", "--box", str(accounts.box), accounts.ids["laptop"])
        assert done.returncode == 0, done.stderr
        started = accounts.reactor.seconds()
        for stream in revoked:
            await timed(stream.done, accounts.reactor, REVOKE_SECONDS)
        took = accounts.reactor.seconds() - started
        assert took < REVOKE_SECONDS
        assert not kept.done.called
        # The token opens nothing any more...
        response = await http.get(f"{laptop.url}/files", headers=laptop.headers())
        assert response.code == 403 and (await json_of(response))["error"] == TOKEN_REFUSED
        response = await put(http, laptop, "late.txt", b"late", base=0)
        assert response.code == 403
        await response.content()
        # ...and the account's other token goes on, its stream too.
        await put(http, phone, "after.txt", b"after", base=0)
        assert await listed(http, phone) == ["after.txt"]
        events = await kept.wait(lambda es: isinstance(es[-1], Download))
        assert events[-1].path == "after.txt" and not kept.done.called
        await wait_for(accounts.reactor, lambda: accounts.hub_count() == 1)
    finally:
        for stream in revoked + [kept]:
            stream.close()


@pytest_twisted.ensureDeferred
async def test_an_account_minted_while_running_is_served_at_once(accounts: TokenServer, http: Any) -> None:
    # Minted by the real command, and used before the server's next poll.
    minted = await admin("token", "--box", str(accounts.box), "--account", "dave", "--client", "pc")
    assert minted.returncode == 0, minted.stderr
    dave = accounts.with_token(minted.stdout.strip())
    assert await listed(http, dave) == []
    record = await json_of(await put(http, dave, "d.txt", b"dave", base=0))
    assert record["seq"] == 1
    assert (accounts.box / "dave" / "d.txt").read_bytes() == b"dave"
    assert accounts.service is not None and accounts.service.accounts is not None
    # The poll finds it too, and opens it only once.
    names = accounts.service.accounts.names
    await wait_for(accounts.reactor, lambda: "dave" in names())
    assert names() == ["alice", "bob", "carol", "dave"]
    # An account minted with no request in between is picked up by the poll.
    second = await admin("token", "--box", str(accounts.box), "--account", "erin", "--client", "pc")
    assert second.returncode == 0
    await wait_for(accounts.reactor, lambda: "erin" in names())


@pytest_twisted.ensureDeferred
async def test_files_put_in_by_hand_are_adopted_into_their_account(tmp_path: Path, reactor: Any, http: Any) -> None:
    box = tmp_path / "box"
    box.mkdir()
    server = TokenServer(reactor, box)
    server.mint("alice", "laptop")
    server.mint("bob", "desk")
    (box / "alice" / "dir").mkdir()
    (box / "alice" / "dir" / "by-hand.txt").write_bytes(b"hand")
    (box / "bob" / "bobs.txt").write_bytes(b"bob")
    # Not an account: no token was ever minted for it.
    (box / "stray").mkdir()
    (box / "stray" / "x.txt").write_bytes(b"x")
    await server.start()
    try:
        assert await listed(http, server.as_("laptop")) == ["dir/by-hand.txt"]
        assert await listed(http, server.as_("desk")) == ["bobs.txt"]
        await put(http, server.as_("desk"), "more.txt", b"more", base=0)
        await server.stop()
        await server.start()
        record = await json_of(await put(http, server.as_("desk"), "third.txt", b"3", base=0))
        assert record["seq"] == 3
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_client_syncs_its_account(accounts: TokenServer, reactor: Any, http: Any, tmp_path: Path) -> None:
    bob = accounts.as_("desk")
    await put(http, bob, "bobs.txt", b"bob's", base=0)
    folder = Folder(reactor, accounts.as_("laptop"), tmp_path / "laptop", "laptop")
    try:
        (folder.root / "notes.txt").write_bytes(b"alice's notes")
        await folder.sync()
        assert sorted(p.name for p in folder.root.iterdir() if p.name != ".boxsync") == ["notes.txt"]
        assert (accounts.box / "alice" / "notes.txt").read_bytes() == b"alice's notes"
        assert await listed(http, bob) == ["bobs.txt"]
    finally:
        await folder.close()


@pytest_twisted.ensureDeferred
async def test_legacy_uploads_land_in_the_account(accounts: TokenServer, http: Any) -> None:
    alice, bob = accounts.as_("laptop"), accounts.as_("desk")
    response = await http.post(f"{alice.url}/upload", data=b"legacy", headers=alice.headers(File_Path="old.txt"))
    assert response.code == 200
    await response.content()
    assert (accounts.box / "alice" / "old.txt").read_bytes() == b"legacy"
    response = await http.get(f"{bob.url}/download/old.txt", headers=bob.headers())
    assert response.code == 404
    await response.content()
    response = await http.get(f"{alice.url}/download/old.txt", headers=alice.headers())
    assert await response.content() == b"legacy"


def test_the_real_server_refuses_a_secret_others_can_read(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    mint_token(box, "alice", "laptop", None, int(time.time()))
    (box / ".boxsync" / "secret").chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "boxsync", "--tokens", "--box", str(box), "--listen", "tcp:0:interface=127.0.0.1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "chmod 600" in result.stdout + result.stderr


@pytest_twisted.ensureDeferred
async def test_an_account_folder_that_leads_out_is_not_served(tmp_path: Path, reactor: Any, http: Any) -> None:
    box, outside = tmp_path / "box", tmp_path / "outside"
    box.mkdir()
    outside.mkdir()
    server = TokenServer(reactor, box)
    server.mint("alice", "laptop")
    server.mint("bob", "desk")
    (box / "alice").rmdir()
    (box / "alice").symlink_to(outside)
    await server.start()
    try:
        alice = server.as_("laptop")
        response = await put(http, alice, "escape.txt", b"x", base=0)
        assert response.code == 403
        await response.content()
        response = await http.get(f"{alice.url}/files", headers=alice.headers())
        assert response.code == 403 and (await json_of(response))["error"] == TOKEN_REFUSED
        assert list(outside.iterdir()) == []
        # The other accounts are served as ever.
        assert await listed(http, server.as_("desk")) == []
        assert server.service is not None and server.service.accounts is not None
        assert server.service.accounts.names() == ["bob"]
        assert not server.service.accounts.has("../bob")
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_failing_poll_does_not_stop_revocation(
    accounts: TokenServer, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert accounts.service is not None
    directory = accounts.service.tokens
    failures = []

    def failing(self: Any, registry: Any) -> Any:
        failures.append(1)
        raise OSError("the disk is gone for a moment")

    monkeypatch.setattr(type(directory), "_read", failing)
    try:
        await wait_for(accounts.reactor, lambda: len(failures) >= 2)
    finally:
        monkeypatch.undo()
    done = await admin("revoke", "--box", str(accounts.box), accounts.ids["desk"])
    assert done.returncode == 0
    await wait_for(accounts.reactor, lambda: accounts.ids["desk"] in directory.revoked)
    response = await http.get(f"{accounts.as_('desk').url}/files", headers=accounts.as_("desk").headers())
    assert response.code == 403
    await response.content()


@pytest_twisted.ensureDeferred
async def test_the_status_line_counts_every_account(accounts: TokenServer, http: Any) -> None:
    from twisted.logger import globalLogPublisher

    await put(http, accounts.as_("laptop"), "a.txt", b"aa", base=0)
    await put(http, accounts.as_("desk"), "b.txt", b"bbb", base=0)
    lines: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(lines.append)
    try:
        assert accounts.service is not None
        await accounts.service._log_status()
    finally:
        globalLogPublisher.removeObserver(lines.append)
    (status,) = [line for line in lines if line.get("log_format", "").startswith("status:")]
    assert (status["files"], status["bytes"]) == (2, 5)


def test_the_real_server_in_token_mode(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    token, _ = mint_token(box, "alice", "laptop", None, int(time.time()))
    port = free_port()
    args = [
        sys.executable, "-m", "twisted", "--log-format=text", "boxsync", "--tokens",
        "--box", str(box), "--listen", f"tcp:{port}:interface=127.0.0.1", "--max-streams-per-token", "2",
    ]
    server = Process(args, tmp_path / "server.log").start()
    try:
        wait_until(lambda: _listening(server, port), what="the server to listen")

        def get(authorization: str) -> tuple[int, bytes]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/files", headers={"Authorization": authorization}
            )
            try:
                with urllib.request.urlopen(request, timeout=DEADLINE) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        assert get(f"Bearer {token}") == (200, b"[]\n")
        assert get("Bearer not-a-token")[0] == 403
        assert get(token[:-1])[0] == 403
    finally:
        server.stop()
    assert token not in server.output()


def _listening(server: Process, port: int) -> bool:
    if not server.running:
        raise AssertionError("server exited:\n" + server.output())
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
