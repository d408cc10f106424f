"""
The client's bandwidth limits on real processes: a client run with
C{--limit-up 256K} takes about 4 s to send 1 MiB, one run with
C{--limit-down 256K} about 4 s to receive it; without them, the same
transfers take well under a second. The same for 4 MiB at 1 MiB/s, a file
that moves in blocks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import pytest

from boxsync.testing import Client, Server, wait_until
from tests.faults import sha, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)

#: 1 MiB at 256 KiB/s (or 4 MiB at 1 MiB/s), less the bucket's first
#: burst: over 3.8 s.
SLOWEST_UNLIMITED = 3.5


def seconds_until(condition: Callable[[], bool], timeout: float) -> float:
    """
    How long until C{condition} holds, polled every 20 ms; fails after
    C{timeout} seconds.
    """
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not done after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - began


@pytest.mark.slow
@pytest.mark.parametrize("limited", ["up", "down", None])
@pytest.mark.parametrize(("size", "rate"), [(2**20, "256K"), (4 * 2**20, "1M")], ids=["whole", "in-blocks"])
def test_a_limit_holds_a_transfer_to_its_rate(
    tmp_path: Path, server: Server, limited: str | None, size: int, rate: str
) -> None:
    """
    A's upload or B's download (one limited at a time: B may fetch the
    blocks of a file still on its way up) takes as long as its limit says.
    """
    a = Client(server, tmp_path / "a", "a", options=["--limit-up", rate] if limited == "up" else [])
    b = Client(server, tmp_path / "b", "b", options=["--limit-down", rate] if limited == "down" else [])
    a.start()
    b.start()
    try:
        (a.folder / "hello.txt").write_text("both live")
        wait_until(lambda: (b.folder / "hello.txt").exists(), what="hello.txt on b")
        data = os.urandom(size)
        staged = tmp_path / "staged.bin"
        staged.write_bytes(data)
        began = time.monotonic()
        os.rename(staged, a.folder / "big.bin")
        # Both the box and b put a file in place whole, with a rename.
        up = seconds_until((server.box / "big.bin").exists, timeout=20)
        seconds_until((b.folder / "big.bin").exists, timeout=20)
        down = time.monotonic() - began
        assert sha((b.folder / "big.bin").read_bytes()) == sha(data)
        if limited == "up":
            assert SLOWEST_UNLIMITED <= up < 10, up
        elif limited == "down":
            assert up < SLOWEST_UNLIMITED <= down < 10, (up, down)
        else:
            assert up < SLOWEST_UNLIMITED and down < SLOWEST_UNLIMITED, (up, down)
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "bandwidth limits", 0, a.folder, b.folder)
