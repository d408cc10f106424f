"""
What a box that went back lost (L{boxsync.client.wentback}): the seq up to
which the box and a folder share their history, asked of the real server
resource in memory.
"""

from __future__ import annotations

from pathlib import Path

from boxsync.client.wentback import WentBack, shared_up_to
from tests.integration.test_client_api import commit, sha256
from tests.memory import MemoryServer
from tests.memory import server  # noqa: F401 (the fixture)


def test_the_newest_version_the_box_still_has_tells_how_far_it_is_shared(
    server: MemoryServer, tmp_path: Path  # noqa: F811
) -> None:
    """
    Asked newest first: a base at a seq where the box committed other
    bytes, or of a path the box never had, is passed over; the first the
    box has at that seq with those bytes is the answer, and no more is
    asked. None found: 0, and nothing the box has is taken for older.
    """
    one = commit(server, tmp_path, "one.txt", b"one")
    two = commit(server, tmp_path, "two.txt", b"two")
    other = commit(server, tmp_path, "two.txt", b"not the folder's", base=two.seq)
    api = server.api()
    asked = [
        ("two.txt", other.seq, sha256(b"what the folder had")),
        ("never.txt", other.seq - 1, sha256(b"x")),
        ("two.txt", two.seq, sha256(b"two")),
        ("one.txt", one.seq, sha256(b"one")),
    ]
    before = len(server.requests)
    assert server.run(shared_up_to(api, asked)) == two.seq
    assert len(server.requests) - before == 3
    assert server.run(shared_up_to(api, asked[:2])) == 0
    went_back = WentBack(frozenset({"lost.txt"}), two.seq)
    assert went_back.older("lost.txt", two.seq) and not went_back.older("lost.txt", two.seq + 1)
    assert not went_back.older("two.txt", 1) and not WentBack().older("lost.txt", 0)
