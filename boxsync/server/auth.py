"""
Who is calling: the C{Authorization} header turned into an account.
"""

from __future__ import annotations

import hmac

from attrs import frozen
from zope.interface import Interface, implementer

__all__ = ["Principal", "IAuthenticator", "ApiKeyAuth", "Unauthorized", "Forbidden"]

DEFAULT_ACCOUNT = "default"


class Unauthorized(Exception):
    """
    No credentials (HTTP 401).
    """


class Forbidden(Exception):
    """
    Credentials that do not open anything (HTTP 403).
    """


@frozen
class Principal:
    account: str
    client: str = ""


class IAuthenticator(Interface):
    def authenticate(authorization: bytes | None) -> Principal:
        """
        The principal that C{authorization} (the raw header value) proves.

        @raise Unauthorized: if it is missing.
        @raise Forbidden: if it proves nothing.
        """


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
        if not authorization:
            raise Unauthorized("an Authorization header is required")
        if not hmac.compare_digest(bearer(authorization), self.key.encode("utf-8")):
            raise Forbidden("the key is not valid")
        return Principal(self.account)
