"""
A commit whose answer never reached its client (the server went down just
after it) is sent again by the client, from the same base: the server
already holds those bytes, so the retry is answered with the version that
holds them, not with a conflict the user would have to sort out.
"""

from __future__ import annotations

import pytest

from boxsync.testing import Server
from tests.faults import committed_seqs, put, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


@pytest.mark.slow
def test_a_commit_sent_again_is_not_a_conflict(server: Server) -> None:
    status, first = put(server, "doc.txt", b"version 1", base=0)
    assert status == 201
    # The server restarts before the client learns of the commit.
    server.stop()
    server.start()
    status, again = put(server, "doc.txt", b"version 1", base=0)
    assert status in (200, 201) and again["seq"] == first["seq"], again
    assert committed_seqs(server) == [first["seq"]]
    # Other bytes from the old base are still a conflict.
    status, _ = put(server, "doc.txt", b"version 2", base=0)
    assert status == 412
    stop_and_check(server, "commit sent again", 1)
