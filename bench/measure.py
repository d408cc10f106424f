"""
Measuring tools shared by the benchmarks: peak RSS of processes while
something runs, and medians.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

import psutil

from boxsync.testing import Client, Process, Server, wait_until

_T = TypeVar("_T")


class PeakRSS:
    """
    Samples the RSS of some processes every few milliseconds, in a thread,
    and keeps each one's peak.
    """

    def __init__(self, pids: Callable[[], Iterable[int]], every: float = 0.02) -> None:
        self._pids = pids
        self._every = every
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in list(self._pids()):
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[pid] = max(self.peaks.get(pid, 0), rss)
            time.sleep(self._every)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn: Callable[[], _T]) -> tuple[float, _T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def remove(tree: Path, many_files: bool = True) -> None:
    """
    Take C{tree} out of the way of the next measurement: one of few files
    is deleted, one of C{many_files} only moves into C{.aside/} beside it,
    deleted with the benchmark's temporary folder at its end.

    Deleting thousands of files just before a run slows the file creations
    of the run that follows: with no journal, ext4 skips, one by one, the
    inodes freed in the last minute or more when it looks for a free one
    (C{recently_deleted} in its inode allocator, the server's top function
    under C{perf} in such a run). boxsync's 10,000 files took up to 9 s
    right after such a delete, and 4.7–5.4 s with none.
    """
    if not many_files:
        shutil.rmtree(tree)
        return
    aside = tree.parent / ".aside"
    aside.mkdir(exist_ok=True)
    os.rename(tree, Path(tempfile.mkdtemp(prefix=f"{tree.name}-", dir=aside)) / tree.name)


def live_pair(root: Path) -> tuple[Server, Client, Client]:
    """
    A server below C{root} and two live clients, A and B, connected (a first
    file has gone from A to B, and stays there as C{warm.txt}). The clients
    log and rescan as a user's would, by default.
    """
    server = Server(root / "box").start()
    a = Client(server, root / "a", "a", verbose=False, rescan=None).start()
    b = Client(server, root / "b", "b", verbose=False, rescan=None).start()
    try:
        (a.folder / "warm.txt").write_text("warm up")
        wait_until(lambda: (b.folder / "warm.txt").exists(), what="the clients to connect")
    except BaseException:
        for thing in (a, b, server):
            thing.kill()
        raise
    return server, a, b


def client_once(client: Client, timeout: float = 3600) -> tuple[float, int, int]:
    """
    Run C{boxsync-client --once} for C{client}: (seconds, its peak RSS, the
    bytes it read through C{read()}-like calls, sockets included).
    """
    process = Process(client.args("--once", "-q"), client.folder.parent / f"{client.name}.log")
    start = time.perf_counter()
    process.start()
    assert process.popen is not None
    proc = psutil.Process(process.popen.pid)
    with PeakRSS(lambda: [proc.pid]) as sampler:
        read = 0
        while process.popen.poll() is None:
            if time.perf_counter() - start > timeout:
                process.kill()
                raise SystemExit(f"client {client.name} did not finish in {timeout} s")
            try:
                read = max(read, proc.io_counters().read_chars)
            except psutil.Error:
                pass
            time.sleep(0.01)
    elapsed = time.perf_counter() - start
    if process.popen.returncode != 0:
        raise SystemExit(f"client {client.name} failed:\n{process.output()}")
    return elapsed, sampler.peaks.get(proc.pid, 0), read


@contextmanager
def scratch_pair() -> Iterator[tuple[Path, Server, Client, Client]]:
    """
    A server on a scratch folder (under C{$BENCH_DIR} if set) and two
    clients' empty folders, A and B; the server is killed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="boxsync-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        server = Server(root / "box").start()
        try:
            a = Client(server, root / "a", "a")
            b = Client(server, root / "b", "b")
            a.folder.mkdir()
            b.folder.mkdir()
            yield root, server, a, b
        finally:
            server.kill()
