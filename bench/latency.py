"""
Live latency: the time from a small file landing in client A's folder to it
being whole in client B's, over many single changes, beside the time of a
local write + rename of the same file (the floor for any sync tool).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from boxsync.testing import Client

from .measure import live_pair, median, percentile


def _arrived(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except OSError:
        return False


def measure(root: Path, a: Client, b: Client, changes: int) -> tuple[list[float], list[float]]:
    """
    C{changes} single small files written in A's folder, one after the
    other: the seconds each took to be whole in B's, and those a local write
    and rename of it take (below C{root}).
    """
    latencies = []
    local = []
    for i in range(changes):
        content = f"change {i} {os.urandom(8).hex()}\n".encode()
        start = time.perf_counter()
        (a.folder / f"f{i % 10}.txt").write_bytes(content)
        target = b.folder / f"f{i % 10}.txt"
        deadline = start + 30
        while not _arrived(target, content):
            if time.perf_counter() > deadline:
                raise SystemExit(f"change {i} did not arrive in 30 s")
            time.sleep(0.0005)
        latencies.append(time.perf_counter() - start)
        scratch = root / "scratch.tmp"
        start = time.perf_counter()
        scratch.write_bytes(content)
        os.replace(scratch, root / "scratch.txt")
        local.append(time.perf_counter() - start)
    return latencies, local


def run(changes: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="boxsync-bench-") as tmp:
        root = Path(tmp)
        server, a, b = live_pair(root)
        try:
            latencies, local = measure(root, a, b, changes)
        finally:
            a.kill()
            b.kill()
            server.kill()
    return [
        {
            "changes": changes,
            "median ms": f"{median(latencies) * 1000:.1f}",
            "p99 ms": f"{percentile(latencies, 99) * 1000:.1f}",
            "worst ms": f"{max(latencies) * 1000:.1f}",
            "local write+rename median ms (reference)": f"{median(local) * 1000:.3f}",
        }
    ]
