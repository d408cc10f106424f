"""
Start-up cost of a large tree: a folder of many small files already in sync
(the same files put in the box and in client B's folder, then one first sync
of B that finds them identical), then B is restarted (``boxsync-client --once``, which exits once in sync). It must not
re-hash or re-send anything: the server's access log is checked for file
transfers during the restart, and the client's reads from disk are counted.

Beside it, the floor of any scan: ``find -printf`` of every file's size and
mtime (one ``stat`` each), on the same tree.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

from boxsync.testing import Server

from .e2e import small_tree
from .measure import client_once, median, scratch_pair

#: A request that moves file bytes: one file, or a batch of them.
_TRANSFER = re.compile(rb'"(PUT /files/|GET /files/|POST /batch/)')


def _transfers(server: Server) -> int:
    assert server.process is not None
    return len(_TRANSFER.findall(server.process.log.read_bytes()))


def run(count: int, runs: int = 3) -> list[dict[str, object]]:
    with scratch_pair() as (_, server, _, b):
        # The same files in the box (adopted as the server starts) and in B,
        # as after a restore from a backup: B's first sync then finds them
        # all identical and records them without a transfer.
        print(f"  restart: writing {count:,} files", file=sys.stderr, flush=True)
        server.stop()
        small_tree(b.folder, count, 64, nested=True)
        subprocess.run(["cp", "-a", f"{b.folder}/.", str(server.box)], check=True)
        setup = time.perf_counter()
        # Adopting the box before it listens takes a while with many files.
        server.start(timeout=3600)
        print("  restart: first sync of B (adopted by the server; not timed)", file=sys.stderr, flush=True)
        b.once(timeout=3600)
        setup = time.perf_counter() - setup
        synced = sum(1 for _ in b.folder.rglob("*.bin"))
        if synced != count:
            raise SystemExit(f"restart: B has {synced} of {count} files after the first sync")
        restarts: list[float] = []
        reads: list[float] = []
        finds: list[float] = []
        before = _transfers(server)
        for i in range(runs):
            print(f"  restart: run {i + 1}/{runs}", file=sys.stderr, flush=True)
            seconds, _, read = client_once(b)
            restarts.append(seconds)
            reads.append(read)
            start = time.perf_counter()
            subprocess.run(
                ["find", str(b.folder), "-type", "f", "-printf", "%s %T@ %i\n"],
                stdout=subprocess.DEVNULL, check=True,
            )
            finds.append(time.perf_counter() - start)
        transfers = _transfers(server) - before
    return [
        {
            "files in sync": f"{count:,}",
            "restart to in sync s (median)": f"{median(restarts):.2f}",
            "min–max s": f"{min(restarts):.2f}–{max(restarts):.2f}",
            "file transfers": transfers,
            "client read MiB (incl. its own state)": f"{median(reads) / 2**20:.1f}",
            "find -printf s (reference)": f"{median(finds):.2f}",
            "first sync s (adopt + B joins)": f"{setup:.1f}",
            "runs": runs,
        }
    ]
