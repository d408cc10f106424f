"""
What the client's command line makes of what it meets: here, a refused
token that its own claims say has expired.
"""

from __future__ import annotations

import pytest

from boxsync.client.cli import _expired
from boxsync.server.tokens import TokenClaims, mint

NOW = 1_800_000_000


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
    token = mint(b"k" * 32, TokenClaims("0123456789abcdef", "alice", "laptop", NOW - 3600, expires))
    assert _expired(token, NOW) == says


@pytest.mark.parametrize("token", [None, "", "a-shared-key", "a.b.c", "e30.e30.e30"])
def test_a_shared_key_or_a_broken_token_says_nothing_more(token: str | None) -> None:
    assert _expired(token, NOW) == ""
