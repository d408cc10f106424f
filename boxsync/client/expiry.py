"""
When the client's token expires, as its own claims say: its holder may read
them (the server only says a refused token is not valid, whatever the
reason). A client warns in its log, once a day, through the last week of
its token, and says when it expired once the server refuses it; `status`
shows the date. A token that expires unnoticed would stop the sync with no
one there to see it.
"""

from __future__ import annotations

from datetime import datetime, timezone

import jwt
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["DAY", "WARN_BEFORE", "ExpiryWarning", "coming", "expired_note", "token_expires", "utc"]

DAY = 86400

#: How long before its token expires a client begins to warn.
WARN_BEFORE = 7 * DAY


def token_expires(token: str | None) -> int | None:
    """
    When C{token} expires (seconds since the epoch), if it is a token that
    says so; C{None} for a shared key, a token that never expires, or
    anything else.
    """
    try:
        expires = jwt.decode(token or "", options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return expires if isinstance(expires, int) and not isinstance(expires, bool) else None


def utc(when: float) -> str:
    """
    C{when} (seconds since the epoch) as people read it, in UTC.
    """
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def expired_note(token: str | None, now: float) -> str:
    """
    What to add to the server's refusal of C{token}, if its own claims tell
    why: it expired (C{""} otherwise).
    """
    expires = token_expires(token)
    if expires is None or expires > now:
        return ""
    return f" (it expired on {utc(expires)}: ask for a new one)"


def _within(seconds: float) -> str:
    days, hours = int(seconds // DAY), int(seconds % DAY // 3600)
    if days:
        return f"{days} day{'s' if days > 1 else ''}"
    return f"{hours} hour{'s' if hours != 1 else ''}" if hours else "less than an hour"


def coming(expires: int, now: float) -> str:
    """
    When a token expires, said for C{status}: C{"2026-12-15 08:00:00 UTC
    (in 6 days)"}, with what to do in its last week.
    """
    left = expires - now
    if left <= 0:
        return f"expired on {utc(expires)}: ask for a new one"
    soon = ": ask for a new one" if left <= WARN_BEFORE else ""
    return f"expires on {utc(expires)} (in {_within(left)}){soon}"


class ExpiryWarning(Service):
    """
    Warns in the log, at start and once a day, while the token's last week
    runs (nothing before it).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, expires: int) -> None:
        self.clock = clock
        self.expires = expires
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(DAY, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        """
        Warn if the token expires within L{WARN_BEFORE}.
        """
        left = self.expires - self.clock.seconds()
        if 0 < left <= WARN_BEFORE:
            self.log.warn(
                "the token expires on {when}, in {left}: ask for a new one (boxsync-admin token)",
                when=utc(self.expires),
                left=_within(left),
            )
