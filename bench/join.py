"""
A new client joins: a box already holds a tree of small files, and client B
starts on an empty folder with ``--once`` (it exits once in sync). Timed from
B's start to its exit, every file then checked; beside it, an rsync daemon
serving the same tree pulled into an empty folder (no fsync), and ``cp -a``
of it with a ``sync`` after.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from boxsync.testing import tree

from .e2e import small_tree
from .measure import client_once, median, remove, scratch_pair
from .reference import RsyncDaemon, ensure_rsync


def run(count: int, runs: int = 3, use_rsync: bool = True) -> list[dict[str, object]]:
    with scratch_pair() as (root, server, _, b):
        print(f"  join: writing {count:,} files into the box", file=sys.stderr, flush=True)
        server.stop()
        small_tree(server.box, count, 4096, nested=True)
        expected = tree(server.box)
        # Adopting the box before it listens takes a while with many files.
        server.start(timeout=3600)
        joins: list[float] = []
        pulls: list[float] = []
        copies: list[float] = []
        for i in range(runs):
            print(f"  join: run {i + 1}/{runs}", file=sys.stderr, flush=True)
            remove(b.folder)
            b.folder.mkdir()
            subprocess.run(["sync"], check=True)
            seconds, _, _ = client_once(b)
            if tree(b.folder) != expected:
                raise SystemExit("join: B's files differ from the box's")
            joins.append(seconds)
            copy = root / "copy"
            start = time.perf_counter()
            subprocess.run(["cp", "-a", str(server.box), str(copy)], check=True)
            subprocess.run(["sync", "-f", str(copy)], check=True)
            copies.append(time.perf_counter() - start)
            remove(copy)
            if use_rsync and ensure_rsync():
                pulls.append(_rsync_pull(server.box, root / "rsync"))
    return [
        {
            "what an empty B gets with --once": f"{count:,} files of 4 KiB, nested folders",
            "boxsync s (median)": f"{median(joins):.2f}",
            "min–max s": f"{min(joins):.2f}–{max(joins):.2f}",
            "rsync pull s (reference)": f"{median(pulls):.2f}" if pulls else "n/a",
            "vs rsync": f"{median(joins) / median(pulls):.2g}x" if pulls else "n/a",
            "cp -a + sync s (reference)": f"{median(copies):.2f}",
            "runs": runs,
        }
    ]


def _rsync_pull(box: Path, work: Path) -> float:
    """
    Seconds an rsync daemon serving C{box} takes to be pulled into an empty
    folder (C{work} is removed afterwards).
    """
    subprocess.run(["sync"], check=True)
    with RsyncDaemon(box, work / "daemon") as daemon:
        start = time.perf_counter()
        subprocess.run(["rsync", "-a", "--exclude=/.boxsync", daemon.url, f"{work / 'pulled'}/"], check=True)
        seconds = time.perf_counter() - start
    remove(work)
    return seconds
