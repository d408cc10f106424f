"""
Who is calling: the C{Authorization} header turned into an account.
"""

from __future__ import annotations

import hmac
from typing import Callable, Container

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from .tokens import InvalidToken, verify

__all__ = ["Principal", "IAuthenticator", "ApiKeyAuth", "TokenAuth", "Unauthorized", "Forbidden"]

DEFAULT_ACCOUNT = "default"


class Unauthorized(Exception):
    """
    No credentials (HTTP 401).
    """


class Forbidden(Exception):
    """
    Credentials that do not open anything (HTTP 403).
    """


#: What every token that opens nothing gets, whatever the reason: a wrong
#: signature, an expired or revoked token, an unknown account.
TOKEN_REFUSED = "the token is not valid"


@frozen
class Principal:
    """
    @ivar token: the id of the token that proved it (C{""} with a shared key).
    """

    account: str
    client: str = ""
    token: str = ""


class IAuthenticator(Interface):
    def authenticate(authorization: bytes | None) -> Principal:
        """
        The principal that C{authorization} (the raw header value) proves.

        @raise Unauthorized: if it is missing.
        @raise Forbidden: if it proves nothing.
        """


def _required(authorization: bytes | None) -> bytes:
    if not authorization:
        raise Unauthorized("an Authorization header is required")
    return bearer(authorization)


def bearer(authorization: bytes) -> bytes:
    """
    The credential in an C{Authorization} value: after C{Bearer }, or the
    whole raw value (as the original clients send it).
    """
    scheme, _, rest = authorization.strip().partition(b" ")
    if scheme.lower() == b"bearer" and rest:
        return rest.strip()
    return authorization.strip()


@implementer(IAuthenticator)
@frozen
class ApiKeyAuth:
    """
    One shared key for one account; C{key=None} lets everyone in.
    """

    key: str | None
    account: str = DEFAULT_ACCOUNT

    def authenticate(self, authorization: bytes | None) -> Principal:
        if self.key is None:
            return Principal(self.account)
        if not hmac.compare_digest(_required(authorization), self.key.encode("utf-8")):
            raise Forbidden("the key is not valid")
        return Principal(self.account)


@implementer(IAuthenticator)
@frozen
class TokenAuth:
    """
    Signed tokens (see L{boxsync.server.tokens}), each for one account.

    @ivar revoked: the ids of the revoked tokens, kept up to date by the
        server.
    @ivar has_account: whether an account exists (and may be served).
    """

    secret: bytes
    clock: IReactorTime
    revoked: Container[str]
    has_account: Callable[[str], bool]

    def authenticate(self, authorization: bytes | None) -> Principal:
        token = _required(authorization)
        try:
            claims = verify(self.secret, token, self.clock.seconds())
        except InvalidToken:
            raise Forbidden(TOKEN_REFUSED) from None
        if claims.token_id in self.revoked or not self.has_account(claims.account):
            raise Forbidden(TOKEN_REFUSED)
        return Principal(claims.account, claims.client, claims.token_id)
