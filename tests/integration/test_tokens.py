"""
Signed tokens, piece by piece: names, durations, the secret file, minting and
verifying (and every way a token is refused), the token authenticator, the
registry, the hub's per-token stream limit and the server options of token
mode.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from boxsync.sqlite import DamagedDatabase
from hypothesis import given, strategies as st
from twisted.internet.task import Clock
from twisted.python.usage import UsageError

from boxsync.server.auth import TOKEN_REFUSED, Forbidden, Principal, TokenAuth, Unauthorized
from boxsync.server.hub import Hub, TooManyStreams
from boxsync.server.registry import TokenRecord, TokenRegistry
from boxsync.server.service import ServerConfig
from boxsync.server.tokens import (
    MAX_TOKEN_BYTES,
    BadName,
    InvalidToken,
    SecretError,
    TokenClaims,
    check_account,
    check_client,
    load_secret,
    mint,
    new_token_id,
    parse_duration,
    secret_path,
    verify,
)
from tests.integration.test_tap import clean_environment, parse  # noqa: F401 (an autouse fixture)

SECRET = b"s" * 32
NOW = 1_800_000_000
CLAIMS = TokenClaims("0123456789abcdef", "alice", "laptop", NOW - 10, NOW + 3600)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), signature])


def payload_of(claims: TokenClaims = CLAIMS, **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "acct": claims.account,
        "sub": claims.client,
        "jti": claims.token_id,
        "iat": claims.issued,
        "exp": claims.expires,
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


# Names and durations


@pytest.mark.parametrize("name", ["a", "alice", "team-2", "x_y", "0", "a" * 63])
def test_good_account_names(name: str) -> None:
    assert check_account(name) == name


@pytest.mark.parametrize(
    "name", ["", "Alice", "-a", "_a", ".boxsync", "a/b", "..", "a b", "a" * 64, "é", "a\n"]
)
def test_bad_account_names(name: str) -> None:
    with pytest.raises(BadName, match="not a valid account name"):
        check_account(name)


@given(st.text(max_size=70))
def test_an_account_name_is_never_a_path(name: str) -> None:
    try:
        check_account(name)
    except BadName:
        return
    assert "/" not in name and not name.startswith(".") and name == name.lower()


@pytest.mark.parametrize("name", ["laptop", "Phone.2", "me@home", "a-b_c"])
def test_good_client_ids(name: str) -> None:
    assert check_client(name) == name


@pytest.mark.parametrize("name", ["", ".x", "a b", "a/b", "x" * 129, "tab\t"])
def test_bad_client_ids(name: str) -> None:
    with pytest.raises(BadName, match="not a valid client id"):
        check_client(name)


@pytest.mark.parametrize(
    "text, seconds", [("30s", 30), ("30m", 1800), ("12h", 43200), ("90d", 90 * 86400), ("2W", 14 * 86400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "d", "0d", "-1d", "1.5h", "3y", "1d2h", "99999999999d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


# The secret


def test_the_secret_is_made_private_and_kept(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="does not exist"):
        load_secret(tmp_path)
    secret = load_secret(tmp_path, create=True)
    assert len(secret) == 32
    assert stat.S_IMODE(secret_path(tmp_path).stat().st_mode) == 0o600
    assert load_secret(tmp_path) == secret == load_secret(tmp_path, create=True)
    # Nothing is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_a_secret_others_can_read_is_refused(tmp_path: Path) -> None:
    load_secret(tmp_path, create=True)
    secret_path(tmp_path).chmod(0o640)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret(tmp_path, create=True)


def test_a_linked_secret_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    load_secret(elsewhere, create=True)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    secret_path(hidden).symlink_to(secret_path(elsewhere))
    with pytest.raises(SecretError, match="symbolic link"):
        load_secret(hidden, create=True)


@pytest.mark.parametrize("content", [b"not hex\n", b"abcd\n", b"\xff\xfe"])
def test_a_secret_file_without_a_secret_is_refused(tmp_path: Path, content: bytes) -> None:
    path = secret_path(tmp_path)
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(SecretError):
        load_secret(tmp_path)


def test_a_folder_in_place_of_the_secret_is_refused(tmp_path: Path) -> None:
    secret_path(tmp_path).mkdir(mode=0o700)
    with pytest.raises(SecretError, match="not a regular file"):
        load_secret(tmp_path)


# Minting and verifying


def test_a_minted_token_verifies() -> None:
    token = mint(SECRET, CLAIMS)
    assert verify(SECRET, token, NOW) == CLAIMS
    assert verify(SECRET, token.encode(), NOW) == CLAIMS
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    forever = TokenClaims(new_token_id(), "bob", "phone", NOW)
    assert verify(SECRET, mint(SECRET, forever), NOW + 10**9) == forever


def test_an_expired_token_is_refused() -> None:
    token = mint(SECRET, CLAIMS)
    assert CLAIMS.expires is not None
    verify(SECRET, token, CLAIMS.expires - 1)
    with pytest.raises(InvalidToken, match="expired"):
        verify(SECRET, token, CLAIMS.expires)


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = mint(SECRET, CLAIMS).split(".")
    payload = b64(json.dumps(payload_of(acct="bob")).encode())
    with pytest.raises(InvalidToken):
        verify(SECRET, f"{header}.{payload}.{signature}", NOW)


def test_a_tampered_signature_is_refused() -> None:
    token = mint(SECRET, CLAIMS)
    last = "A" if token[-2] != "A" else "B"
    with pytest.raises(InvalidToken):
        verify(SECRET, token[:-2] + last + token[-1], NOW)


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(InvalidToken):
        verify(SECRET, mint(b"t" * 32, CLAIMS), NOW)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(alg: str) -> None:
    with pytest.raises(InvalidToken):
        verify(SECRET, forged({"alg": alg, "typ": "JWT"}, payload_of()), NOW)
    with pytest.raises(InvalidToken):
        verify(SECRET, forged({"alg": alg}, payload_of(), "x"), NOW)


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_algorithms_are_refused(alg: str) -> None:
    long_secret = SECRET * 2
    token = jwt.encode(payload_of(), long_secret, algorithm=alg)
    with pytest.raises(InvalidToken):
        verify(long_secret, token, NOW)


@pytest.mark.parametrize("claim", ["acct", "sub", "jti", "iat"])
def test_a_missing_claim_is_refused(claim: str) -> None:
    payload = payload_of()
    del payload[claim]
    with pytest.raises(InvalidToken):
        verify(SECRET, jwt.encode(payload, SECRET, algorithm="HS256"), NOW)


@pytest.mark.parametrize(
    "changes",
    [
        {"acct": "../bob"},
        {"acct": 7},
        {"acct": ".boxsync"},
        {"sub": ""},
        {"sub": ["x"]},
        {"jti": 12},
        {"jti": "XYZ"},
        {"iat": "yesterday"},
        {"iat": True},
        {"iat": -5},
        {"exp": "never"},
        {"exp": 1.5e9},
    ],
)
def test_bad_claims_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        verify(SECRET, jwt.encode(payload_of(**changes), SECRET, algorithm="HS256"), NOW)


@pytest.mark.parametrize(
    "token",
    ["", "x", "a.b.c", "...", "e30.e30.", "\u00e9.\u00e9.\u00e9", "x" * (MAX_TOKEN_BYTES + 1)],
)
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        verify(SECRET, token, NOW)


def test_an_oversized_token_is_refused_unread() -> None:
    padded = jwt.encode(payload_of(pad="x" * MAX_TOKEN_BYTES), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="too long"):
        verify(SECRET, padded, NOW)


@given(st.binary(max_size=300))
def test_no_input_gets_through_or_crashes(data: bytes) -> None:
    with pytest.raises(InvalidToken):
        verify(SECRET, data, NOW)


# The authenticator


def authenticator(revoked: set[str] | None = None, accounts: tuple[str, ...] = ("alice",)) -> TokenAuth:
    clock = Clock()
    clock.advance(NOW)
    return TokenAuth(SECRET, clock, set() if revoked is None else revoked, lambda a: a in accounts)


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


def test_a_valid_token_proves_its_account_client_and_id() -> None:
    principal = authenticator().authenticate(bearer(mint(SECRET, CLAIMS)))
    assert principal == Principal("alice", "laptop", CLAIMS.token_id)


def test_no_header_is_unauthorized() -> None:
    for header in (None, b""):
        with pytest.raises(Unauthorized):
            authenticator().authenticate(header)


def test_every_refusal_looks_the_same() -> None:
    revoked_claims = TokenClaims(new_token_id(), "alice", "old", NOW - 10)
    refused = {
        "tampered": forged({"alg": "HS256"}, payload_of(acct="bob"), mint(SECRET, CLAIMS).split(".")[2]),
        "expired": mint(SECRET, TokenClaims(new_token_id(), "alice", "x", NOW - 100, NOW - 1)),
        "alg none": forged({"alg": "none"}, payload_of()),
        "wrong secret": mint(b"w" * 32, CLAIMS),
        "unknown account": mint(SECRET, TokenClaims(new_token_id(), "zed", "x", NOW - 10)),
        "revoked": mint(SECRET, revoked_claims),
        "garbage": "garbage",
    }
    auth = authenticator(revoked={revoked_claims.token_id})
    messages = set()
    for why, token in refused.items():
        with pytest.raises(Forbidden) as caught:
            auth.authenticate(bearer(token))
        # Nothing of why is chained to what is raised.
        error = caught.value
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), why
        messages.add(str(caught.value))
    assert messages == {TOKEN_REFUSED}


def test_revocation_is_seen_at_once() -> None:
    revoked: set[str] = set()
    auth = authenticator(revoked)
    header = bearer(mint(SECRET, CLAIMS))
    auth.authenticate(header)
    revoked.add(CLAIMS.token_id)
    with pytest.raises(Forbidden):
        auth.authenticate(header)


# The registry


def record(account: str = "alice", client: str = "laptop", issued: int = NOW, **kw: Any) -> TokenRecord:
    return TokenRecord(new_token_id(), account, client, issued, **kw)


def test_the_registry_keeps_tokens(tmp_path: Path) -> None:
    registry = TokenRegistry(tmp_path / "tokens.sqlite")
    first, second, third = record(), record("bob", issued=NOW + 1), record(issued=NOW + 2, expires=NOW + 5)
    for each in (first, second, third):
        registry.add(each)
    assert registry.tokens() == [first, second, third]
    assert registry.tokens("alice") == [first, third]
    assert registry.tokens("carol") == []
    assert registry.accounts() == {"alice", "bob"}
    assert registry.get(first.token_id) == first and registry.get("nope") is None
    assert registry.revoked() == set()
    assert registry.revoke(first.token_id, NOW + 3)
    assert not registry.revoke(first.token_id, NOW + 4)
    assert not registry.revoke("nope", NOW + 4)
    assert registry.revoked() == {first.token_id}
    assert registry.get(first.token_id) == TokenRecord(first.token_id, "alice", "laptop", NOW, None, NOW + 3)
    assert [r.status(NOW + 10) for r in registry.tokens()] == ["revoked", "valid", "expired"]
    with pytest.raises(sqlite3.IntegrityError):
        registry.add(first)
    registry.close()
    # Opened again (the schema is not made twice), it has the same rows.
    again = TokenRegistry(tmp_path / "tokens.sqlite")
    assert len(again.tokens()) == 3
    again.close()


def test_the_registry_version_changes_with_other_writers(tmp_path: Path) -> None:
    reader = TokenRegistry(tmp_path / "tokens.sqlite")
    writer = TokenRegistry(tmp_path / "tokens.sqlite")
    before = reader.version()
    assert reader.version() == before
    one = record()
    writer.add(one)
    after_add = reader.version()
    assert after_add != before
    writer.revoke(one.token_id, NOW)
    assert reader.version() != after_add
    assert reader.revoked() == {one.token_id}
    reader.close()
    writer.close()


def test_a_registry_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.sqlite"
    path.write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(DamagedDatabase, match=f"^{path} is damaged: "):
        TokenRegistry(path)


# The hub's limit


class Listener:
    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.client = ""
        self.sent: list[Any] = []
        self.disconnected = 0

    def send(self, event: Any) -> None:
        self.sent.append(event)

    def keepalive(self) -> None:
        pass

    def disconnect(self) -> None:
        self.disconnected += 1


def test_the_hub_caps_streams_per_token() -> None:
    hub = Hub(Clock(), max_streams_per_token=2)
    removers = [hub.add("alice", Listener(f"s{i}"), "t1") for i in range(2)]
    with pytest.raises(TooManyStreams, match="2 open event streams"):
        hub.add("alice", Listener("s2"), "t1")
    # Other tokens and streams without a token are not held back by it.
    hub.add("alice", Listener("s3"), "t2")
    for i in range(5):
        hub.add("alice", Listener(f"k{i}"))
    assert hub.count() == 8
    removers[0]()
    removers[0]()
    hub.add("alice", Listener("s4"), "t1")
    assert hub.count() == 8


def test_the_hub_disconnects_the_streams_of_revoked_tokens() -> None:
    hub = Hub(Clock())
    a, b, c = Listener("a"), Listener("b"), Listener("c")
    hub.add("alice", a, "t1")
    hub.add("alice", b, "t1")
    hub.add("alice", c, "t2")
    assert hub.disconnect({"t1", "unknown"}) == 2
    assert (a.disconnected, b.disconnected, c.disconnected) == (1, 1, 0)


def test_a_failing_disconnect_does_not_stop_the_others() -> None:
    hub = Hub(Clock())
    broken, fine = Listener("a"), Listener("b")

    def fail() -> None:
        raise RuntimeError("boom")

    broken.disconnect = fail  # type: ignore[method-assign]
    hub.add("alice", broken, "t1")
    hub.add("alice", fine, "t1")
    assert hub.disconnect(["t1"]) == 2
    assert fine.disconnected == 1


# Server options


def test_token_mode_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = parse("--tokens", "--box", str(tmp_path / "box"))
    assert options["tokens"] and options["max-streams-per-token"] == 8
    assert parse("--tokens", "--max-streams-per-token", "3")["max-streams-per-token"] == 3
    monkeypatch.setenv("BOXSYNC_TOKENS", "yes")
    assert parse()["tokens"]


@pytest.mark.parametrize("other", [["--api-key", "k"], ["--insecure-no-auth"]])
def test_token_mode_goes_with_no_other_authentication(other: list[str]) -> None:
    with pytest.raises(UsageError, match="cannot be combined"):
        parse("--tokens", *other)


def test_a_key_in_the_environment_does_not_go_with_token_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "k")
    with pytest.raises(UsageError, match="cannot be combined"):
        parse("--tokens")


def test_token_mode_refuses_a_secret_others_can_read(tmp_path: Path) -> None:
    hidden = tmp_path / "box" / ".boxsync"
    hidden.mkdir(parents=True)
    load_secret(hidden, create=True)
    parse("--tokens", "--box", str(tmp_path / "box"))
    os.chmod(secret_path(hidden), 0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        parse("--tokens", "--box", str(tmp_path / "box"))


def test_no_authentication_at_all_names_token_mode() -> None:
    with pytest.raises(UsageError, match="--tokens"):
        parse()


def test_a_config_is_either_keyed_or_token_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ServerConfig(tmp_path, [])
    with pytest.raises(ValueError):
        ServerConfig(tmp_path, [], authenticator(), tokens=True)
    assert ServerConfig(tmp_path, [], tokens=True).auth is None
