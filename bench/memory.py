"""
Peak RSS of the server and of the clients while one large file goes up
(client A to the box) and down (the box to client B), beside the idle RSS of
the same processes and the time ``cp`` takes for the same bytes.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from boxsync.testing import Client, tree

from .measure import PeakRSS, client_once, mib, scratch_pair, timed


def _write(path: Path, size: int) -> None:
    block = os.urandom(2**20)
    with open(path, "wb") as f:
        for i in range(size // 2**20):
            f.write(block[:-8] + i.to_bytes(8, "big"))


def _once(client: Client, peaks: list[int]) -> float:
    seconds, peak, _ = client_once(client)
    peaks.append(peak)
    return seconds


def run(sizes_mib: list[int]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for size_mib in sizes_mib:
        size = size_mib * 2**20
        with scratch_pair() as (root, server, a, b):
            _write(a.folder / "big.bin", size)
            cp_seconds, _ = timed(lambda: shutil.copy(a.folder / "big.bin", root / "copy.bin"))
            (root / "copy.bin").unlink()
            assert server.process is not None and server.process.popen is not None
            server_pid = server.process.popen.pid
            client_peaks: list[int] = []
            with PeakRSS(lambda: [server_pid]) as sampler:
                idle = 0
                time.sleep(0.2)
                idle = sampler.peaks.get(server_pid, 0)
                up = _once(a, client_peaks)
                down = _once(b, client_peaks)
            assert tree(a.folder) == tree(b.folder), "the file did not arrive whole"
            rows.append(
                {
                    "size": f"{size_mib} MiB",
                    "server idle RSS": mib(idle),
                    "server peak RSS": mib(sampler.peaks[server_pid]),
                    "client peak RSS (up)": mib(client_peaks[0]),
                    "client peak RSS (down)": mib(client_peaks[1]),
                    "upload MiB/s": f"{size_mib / up:.0f}",
                    "download MiB/s": f"{size_mib / down:.0f}",
                    "cp MiB/s (reference)": f"{size_mib / cp_seconds:.0f}",
                }
            )
    return rows
