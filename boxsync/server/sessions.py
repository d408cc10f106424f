"""
Signing in to the web page: a token (or a one-time link made by
C{boxsync-admin web-link}) is turned into an C{HttpOnly},
C{SameSite=Strict} session cookie (C{Secure} over TLS), which
L{BoxsyncApp.principal <boxsync.server.app.BoxsyncApp.principal>} accepts
in place of an C{Authorization} header. A request that is not C{GET} or
C{HEAD} must also carry the session's CSRF token in L{CSRF_HEADER}; a
revoked token ends its sessions. Every answer to a session carries a strict
Content-Security-Policy.

A session is its cookie: who signed in, the token that proved it, a random
id and when it ends, signed with a key derived from the box's secret
(L{session_key}), so that every server of the box accepts it (behind a
load balancer a browser may reach any of them, and a restarted server
signs no one out) and none keeps it. What a server must remember is only
what ended a session before its time: a sign-out, recorded in the token
registry for every server to read (L{Sessions.end}), and a revoked token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any, Awaitable, Callable, Container, cast
from urllib.parse import urlsplit

import jwt
from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from ..wire import ProtocolError
from .auth import TOKEN_REFUSED, Forbidden, IAuthenticator, Principal, Unauthorized
from .http import header

__all__ = [
    "API_POLICY",
    "CSRF_HEADER",
    "LINK_CLIENT",
    "LINK_SECONDS",
    "PAGE_POLICY",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "SIGN_IN",
    "Session",
    "Sessions",
    "check_csrf",
    "session_key",
    "set_cookie",
    "json_request",
    "same_origin",
    "secure_headers",
]

#: What every page response may load: its own scripts, styles and images,
#: nothing inline, nothing from elsewhere, never in a frame.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: What any other answer to a session gets: nothing in it runs, even a file
#: named .html opened by mistake.
API_POLICY = "default-src 'none'; sandbox; frame-ancestors 'none'"

#: The cookie that holds a browser's session.
SESSION_COOKIE = "boxsync_session"
#: The header that carries a session's CSRF token on every request that is
#: not a GET or a HEAD.
CSRF_HEADER = "X-Boxsync-CSRF"
#: The client id of the tokens C{boxsync-admin web-link} makes: each signs in
#: once only.
LINK_CLIENT = "web-link"
#: How long a one-time sign-in link works.
LINK_SECONDS = 5 * 60
#: How long a session lasts (less if its token expires sooner).
SESSION_SECONDS = 12 * 3600
#: The longest session cookie read: a signed session is well under it.
_MAX_COOKIE = 1024
_ALGORITHM = "HS256"

def secure_headers(request: IRequest, policy: str) -> None:
    request.setHeader(b"Content-Security-Policy", policy.encode())
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"X-Frame-Options", b"DENY")
    request.setHeader(b"Cache-Control", b"no-store")



#: Where a browser signs in: the body of a C{POST} there is the credential,
#: read without one (see L{boxsync.server.uploads.UploadSite.public}).
SIGN_IN = "/web/session"


def _session_cookie(request: IRequest) -> str | None:
    """
    The session cookie in the request's C{Cookie} header, if any. Read from the
    header (not Twisted's parsed cookies): this runs, for uploads, before
    the request line is parsed.
    """
    for raw in request.requestHeaders.getRawHeaders(b"Cookie", []):
        try:
            cookie = SimpleCookie(raw.decode("latin-1"))
        except CookieError:
            continue
        morsel = cookie.get(SESSION_COOKIE)
        if morsel is not None and morsel.value:
            return morsel.value
    return None


def _token_expiry(token: str) -> int | None:
    """
    When a token that was just verified expires, if it says (a shared key
    is no JWT and never expires).
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    expires = claims.get("exp")
    return expires if isinstance(expires, int) else None


def session_key(secret: bytes) -> bytes:
    """
    The key that signs the web page's sessions, derived from the box's
    C{secret}: a session cookie is never a token, nor a token a session.
    """
    return hmac.new(secret, b"boxsync web session", hashlib.sha256).digest()


@frozen
class Session:
    """
    One signed-in browser.

    @ivar cookie: the value of its cookie, which is all of it, signed.
    @ivar session_id: what tells it from the other sessions of its token.
    @ivar csrf: what its state-changing requests carry in L{CSRF_HEADER}.
    @ivar expires: when it ends, in whole seconds since the epoch.
    """

    cookie: str
    session_id: str
    csrf: str
    principal: Principal
    expires: int


def _bearer(token: str) -> bytes:
    """
    The C{Authorization} header that carries C{token}.
    """
    return b"Bearer " + token.strip().encode("utf-8", "replace")


def _text(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 256


@define
class Sessions:
    """
    Signs browsers in, and reads their sessions back from their cookies.

    @ivar key: signs the cookies (L{session_key} of the box's secret, the
        same on every server of the box).
    @ivar auth: checks the token a browser signs in with.
    @ivar revoked: the ids of revoked tokens, kept up to date by the server:
        a session of a revoked token ends.
    @ivar first_use: where the uses of one-time links are recorded for
        every server to see (the token registry), if anywhere: called with
        a link's token id, until when to remember it and now, it says
        whether this is the link's first use. Without it, each server
        knows only the links used on it (L{_links}).
    @ivar ended: the ids of the sessions signed out before their time on
        any server, kept up to date by the server from the registry.
    @ivar end: records a sign-out there (the session's id, when it would
        have ended, and now), if anywhere.
    @ivar _links: the one-time links used so far, until they expire.
    @ivar _signed_out: the sessions signed out on this server, until they would
        have ended.
    """

    clock: IReactorTime
    auth: IAuthenticator
    key: bytes
    revoked: Container[str] = frozenset()
    first_use: Callable[[str, int, int], Awaitable[bool]] | None = None
    ended: Container[str] = frozenset()
    end: Callable[[str, int, int], Awaitable[None]] | None = None
    _links: dict[str, float] = field(factory=dict)
    _signed_out: dict[str, int] = field(factory=dict)
    log = Logger()

    async def open(self, token: str) -> Session:
        """
        L{sign_in}, a one-time link's use first recorded with L{first_use}.

        @raise Forbidden: as L{sign_in}, and if the link was used on
            another server.
        """
        if self.first_use is not None:
            principal = self.auth.authenticate(_bearer(token))
            if principal.client == LINK_CLIENT:
                now = int(self.clock.seconds())
                if not await self.first_use(principal.token, now + LINK_SECONDS, now):
                    raise Forbidden(TOKEN_REFUSED)
        return self.sign_in(token)

    def sign_in(self, token: str) -> Session:
        """
        A new session for the holder of C{token}.

        @raise Forbidden: if the token opens nothing, or is a one-time link
            used before.
        """
        principal = self.auth.authenticate(_bearer(token))
        now = self.clock.seconds()
        self._forget(now)
        expires = int(now) + SESSION_SECONDS
        if principal.client == LINK_CLIENT:
            if principal.token in self._links:
                raise Forbidden(TOKEN_REFUSED)
            self._links[principal.token] = now + LINK_SECONDS
        else:
            token_expires = _token_expiry(token)
            if token_expires is not None:
                expires = min(expires, token_expires)
        claims = {
            "sid": secrets.token_urlsafe(24),
            "acct": principal.account,
            "sub": principal.client,
            "jti": principal.token,
            "exp": expires,
        }
        session = self._session(jwt.encode(claims, self.key, algorithm=_ALGORITHM), claims)
        self.log.info(
            "{client} of {account} signed in to the web page",
            client=principal.client or "a browser",
            account=principal.account,
        )
        return session

    def _session(self, cookie: str, claims: dict[str, Any]) -> Session:
        csrf = hmac.new(self.key, b"csrf:" + claims["sid"].encode(), hashlib.sha256).digest()
        return Session(
            cookie,
            claims["sid"],
            base64.urlsafe_b64encode(csrf).decode().rstrip("="),
            Principal(claims["acct"], claims["sub"], claims["jti"]),
            claims["exp"],
        )

    def _forget(self, now: float) -> None:
        """
        Drop the used links and signed-out sessions that have expired.
        """
        for token_id, until in list(self._links.items()):
            if until <= now:
                del self._links[token_id]
        for session_id, expires in list(self._signed_out.items()):
            if expires <= now:
                del self._signed_out[session_id]

    async def sign_out(self, session: Session) -> None:
        """
        End C{session} here at once, and on every other server as it reads
        the registry.
        """
        now = int(self.clock.seconds())
        self._forget(now)
        self._signed_out[session.session_id] = session.expires
        if self.end is not None:
            await self.end(session.session_id, session.expires, now)

    def session(self, request: IRequest) -> Session | None:
        """
        The live session of C{request}'s cookie, if it has one.
        """
        return self._read(_session_cookie(request))

    def _read(self, cookie: str | None) -> Session | None:
        """
        The live session C{cookie} is, if it is one.
        """
        if cookie is None or len(cookie) > _MAX_COOKIE:
            return None
        try:
            claims = jwt.decode(
                cookie, self.key, algorithms=[_ALGORITHM],
                # Its end is checked below, against the injected clock.
                options={"require": ["sid", "acct", "sub", "jti", "exp"], "verify_exp": False},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        if not all(_text(claims[name]) for name in ("sid", "acct", "sub", "jti")):
            return None
        expires = claims["exp"]
        if not isinstance(expires, int) or isinstance(expires, bool) or expires <= self.clock.seconds():
            return None
        session_id = claims["sid"]
        if session_id in self._signed_out or session_id in self.ended or claims["jti"] in self.revoked:
            return None
        return self._session(cookie, claims)

    def principal(self, request: IRequest) -> Principal | None:
        """
        Who signed in C{request}'s session; C{None} if it has no session
        cookie at all.

        @raise Unauthorized: if the session is over.
        @raise Forbidden: if the request changes something without the
            session's CSRF token.
        """
        cookie = _session_cookie(request)
        if cookie is None:
            return None
        session = self._read(cookie)
        if session is None:
            raise Unauthorized("the session is over: sign in again")
        check_csrf(request, session)
        secure_headers(request, API_POLICY)
        return session.principal


def check_csrf(request: IRequest, session: Session) -> None:
    """
    @raise Forbidden: if C{request} may change something (it is not a GET or
        a HEAD; an upload is checked before its method is even read) and
        does not carry the CSRF token of C{session}.
    """
    if request.method in (b"GET", b"HEAD"):
        return
    given = (header(request, CSRF_HEADER) or "").encode()
    if not hmac.compare_digest(given, session.csrf.encode()):
        raise Forbidden(f"a request that changes something needs the page's {CSRF_HEADER}")


def set_cookie(request: IRequest, value: str, max_age: int) -> None:
    """
    Set the session cookie: never readable by scripts, never sent with a
    request started by another site, over TLS only when served over TLS.
    """
    cast(Request, request).addCookie(
        SESSION_COOKIE.encode(),
        value.encode(),
        path=b"/",
        max_age=str(max_age).encode(),
        httpOnly=True,
        sameSite="strict",
        secure=request.isSecure(),
    )


def json_request(request: IRequest) -> dict[str, Any]:
    """
    The JSON object a page request sends. Only a script of the same origin
    can send C{application/json} (a form of another site cannot, nor can a
    script there without a CORS preflight, which this server never allows).

    @raise ProtocolError: if the request is not such JSON.
    """
    kind = (header(request, "Content-Type") or "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ProtocolError("send JSON (Content-Type: application/json)")
    try:
        body = json.loads(request.content.read() or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("the body must be a JSON object")
    return body


def same_origin(request: IRequest) -> None:
    """
    @raise Forbidden: if the browser says the request comes from a page of
        another host. The scheme is not compared: behind a proxy that ends
        TLS, the server itself is asked over plain HTTP.
    """
    origin = header(request, "Origin")
    if origin is None:
        return
    hosts = {header(request, "Host"), header(request, "X-Forwarded-Host")}
    if urlsplit(origin).netloc.lower() not in {host.lower() for host in hosts if host}:
        raise Forbidden("requests from other sites are refused")


