"""
Signed client tokens: the names they carry, the server secret that signs
them, and how they are made and checked.

A token is a JWT signed with HS256 and the secret in the box's hidden folder.
Its claims: C{acct} the account, C{sub} the client, C{jti} the token's id
(what the registry lists and revokes), C{iat} when it was issued and, if it
expires, C{exp}. Nothing but HS256 with that secret is accepted.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any

import jwt
from attrs import frozen

__all__ = [
    "BadName",
    "InvalidToken",
    "SecretError",
    "TokenClaims",
    "check_account",
    "check_client",
    "load_secret",
    "mint",
    "new_token_id",
    "parse_duration",
    "secret_path",
    "verify",
]

#: The only signing algorithm: a token that names another is refused.
ALGORITHM = "HS256"

#: The longest token read at all; a longer one is refused unparsed.
MAX_TOKEN_BYTES = 4096

#: The file, in the box's hidden folder, that holds the secret.
SECRET_FILE = "secret"

_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_CLIENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadName(ValueError):
    """
    An account or client name that does not follow the rules.
    """


class InvalidToken(Exception):
    """
    A token that proves nothing, whatever the reason (the reason is kept
    only for tests and never reaches a client).
    """


class SecretError(Exception):
    """
    The secret file cannot be used (unsafe mode, not a regular file, bad
    content).
    """


def _checked(name: str, pattern: re.Pattern[str], what: str, rules: str) -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise BadName(f"{name!r} is not a valid {what}: use {rules}, starting with a letter or a digit")
    return name


def check_account(name: str) -> str:
    """
    C{name}, if it is a valid account name: 1 to 63 lowercase letters,
    digits, C{-} and C{_}, starting with a letter or a digit.

    @raise BadName: if it is not.
    """
    return _checked(name, _ACCOUNT, "account name", "1 to 63 lowercase letters, digits, '-' and '_'")


def check_client(name: str) -> str:
    """
    C{name}, if it is a valid client id: 1 to 128 letters, digits, C{.},
    C{_}, C{@} and C{-}, starting with a letter or a digit.

    @raise BadName: if it is not.
    """
    return _checked(name, _CLIENT, "client id", "1 to 128 letters, digits, '.', '_', '@' and '-'")


def parse_duration(text: str) -> int:
    """
    The seconds in C{text}: a whole number and a unit, C{s}, C{m}, C{h},
    C{d} or C{w} (C{30m}, C{12h}, C{90d}).

    @raise ValueError: if C{text} is not such a duration or is zero.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"{text!r} is not a duration: give a positive whole number and a unit, "
            "s, m, h, d or w (e.g. 30m, 12h, 90d)"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def new_token_id() -> str:
    return secrets.token_hex(8)


@frozen
class TokenClaims:
    """
    What a valid token says.

    @ivar issued: when it was made, in whole seconds since the epoch.
    @ivar expires: when it stops working, or C{None} for never.
    """

    token_id: str
    account: str
    client: str
    issued: int
    expires: int | None = None


def mint(secret: bytes, claims: TokenClaims) -> str:
    """
    The signed token of C{claims}.
    """
    payload: dict[str, Any] = {
        "acct": claims.account,
        "sub": claims.client,
        "jti": claims.token_id,
        "iat": claims.issued,
    }
    if claims.expires is not None:
        payload["exp"] = claims.expires
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def verify(secret: bytes, token: bytes | str, now: float) -> TokenClaims:
    """
    The claims of C{token}, if it is signed with C{secret} (HS256 and
    nothing else), well formed and not expired at C{now}.

    @raise InvalidToken: otherwise.
    """
    if isinstance(token, str):
        token = token.encode("utf-8", "replace")
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("too long")
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            # Times are checked below, against the injected clock.
            options={"require": ["acct", "sub", "jti", "iat"], "verify_exp": False, "verify_iat": False},
        )
    except (jwt.PyJWTError, ValueError, TypeError) as e:
        raise InvalidToken(type(e).__name__) from None
    account, client, token_id = payload["acct"], payload["sub"], payload["jti"]
    issued, expires = payload["iat"], payload.get("exp")
    if not (isinstance(token_id, str) and _TOKEN_ID.fullmatch(token_id)):
        raise InvalidToken("bad jti")
    try:
        check_account(account)
        check_client(client)
    except BadName:
        raise InvalidToken("bad names") from None
    if not _whole(issued) or not (expires is None or _whole(expires)):
        raise InvalidToken("bad times")
    if expires is not None and expires <= now:
        raise InvalidToken("expired")
    return TokenClaims(token_id, account, client, issued, expires)


def secret_path(hidden: Path) -> Path:
    """
    The secret file in the hidden folder C{hidden}.
    """
    return hidden / SECRET_FILE


def _read_secret(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SecretError(f"{path} is a symbolic link: it must be a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"{path} is not a regular file")
        if info.st_mode & 0o077:
            raise SecretError(
                f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"make it private with: chmod 600 {path}"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        secret = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise SecretError(f"{path} does not hold a secret (hex digits expected)") from None
    if len(secret) < 32:
        raise SecretError(f"{path} holds a secret of {len(secret)} bytes: at least 32 are needed")
    return secret


def _create_secret(path: Path) -> None:
    """
    Write a new random secret to C{path}, mode 0600, unless someone else
    (another process) got there first.
    """
    temporary = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # A link fails if the secret exists: whoever made it first wins,
        # and nobody ever reads a half-written one.
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def load_secret(hidden: Path, create: bool = False) -> bytes:
    """
    The secret kept in the hidden folder C{hidden}, made (mode 0600) if
    there is none yet and C{create} is set.

    @raise SecretError: if the file is not private to its owner, or not a
        secret; or if it is missing and C{create} is not set.
    """
    path = secret_path(hidden)
    if not os.path.lexists(path):
        if not create:
            raise SecretError(f"{path} does not exist")
        _create_secret(path)
    return _read_secret(path)
