"""
When the client's token expires, as its own claims say: the note added to
the server's refusal, the date `status` shows, and the warnings of the last
week, on an injected clock.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from boxsync.client.expiry import DAY, ExpiryWarning, coming, expired_note, token_expires
from boxsync.server.tokens import TokenClaims, mint

NOW = 1_800_000_000


def token(expires: int | None) -> str:
    return mint(b"k" * 32, TokenClaims("0123456789abcdef", "alice", "laptop", NOW - 3600, expires))


@pytest.mark.parametrize(
    "expires, says",
    [
        (NOW - 60, " (it expired on 2027-01-15 07:59:00 UTC: ask for a new one)"),
        (NOW, " (it expired on 2027-01-15 08:00:00 UTC: ask for a new one)"),
        (NOW + 60, ""),
        (None, ""),
    ],
)
def test_a_refused_token_says_when_it_expired(expires: int | None, says: str) -> None:
    assert expired_note(token(expires), NOW) == says


@pytest.mark.parametrize("value", [None, "", "a-shared-key", "a.b.c", "e30.e30.e30"])
def test_a_shared_key_or_a_broken_token_says_nothing_more(value: str | None) -> None:
    assert expired_note(value, NOW) == ""
    assert token_expires(value) is None


def test_a_token_tells_when_it_expires() -> None:
    assert token_expires(token(NOW + 5)) == NOW + 5
    assert token_expires(token(None)) is None


@pytest.mark.parametrize(
    "left, says",
    [
        (30 * DAY, "expires on 2027-02-14 08:00:00 UTC (in 30 days)"),
        (6 * DAY + 5, "expires on 2027-01-21 08:00:05 UTC (in 6 days): ask for a new one"),
        (1 * DAY, "expires on 2027-01-16 08:00:00 UTC (in 1 day): ask for a new one"),
        (3 * 3600 + 59, "expires on 2027-01-15 11:00:59 UTC (in 3 hours): ask for a new one"),
        (59, "expires on 2027-01-15 08:00:59 UTC (in less than an hour): ask for a new one"),
        (0, "expired on 2027-01-15 08:00:00 UTC: ask for a new one"),
    ],
)
def test_status_says_when_the_token_expires(left: int, says: str) -> None:
    assert coming(NOW + left, NOW) == says


def test_the_last_week_of_a_token_is_warned_of_once_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []

    def heard(event: Any) -> None:
        said.append(formatEvent(event))

    monkeypatch.setattr(ExpiryWarning, "log", Logger(observer=heard))
    clock = Clock()
    clock.advance(NOW)
    warning = ExpiryWarning(clock, NOW + 9 * DAY)
    warning.startService()
    assert said == []
    clock.advance(DAY)  # 8 days left
    assert said == []
    clock.advance(DAY)  # 7 days left
    assert said == ["the token expires on 2027-01-24 08:00:00 UTC, in 7 days: ask for a new one (boxsync-admin token)"]
    for _ in range(10):
        clock.advance(DAY)
    # Once a day up to the last, none after it.
    assert len(said) == 7 and said[-1].endswith("in 1 day: ask for a new one (boxsync-admin token)")
    warning.stopService()
    assert clock.getDelayedCalls() == []
