"""
Several servers of one box (``boxsync.cluster``: PostgreSQL, the servers on
one box folder, HAProxy in front), beside one embedded server in the same
run:

- live latency between two clients, each on its own server (the commit
  travels from one server to the other through PostgreSQL's notifications);
- commits per second of 4 KiB files, uploaded by 8 concurrent writers spread
  over 1, 2 and 3 servers;
- one event to many open streams spread over 3 servers (straight to each
  server, not through HAProxy: the holder of bench/fanout.py opens them),
  the upload made on one of them, beside the same number of streams on one
  embedded server;
- a new file of random bytes from client A to client B, A on one server and
  B on another, until it is whole in B's folder, beside both on one
  embedded server.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar
from urllib.parse import quote, urlsplit

from boxsync.cluster import Cluster, haproxy_missing, missing
from boxsync.testing import Client, Server, wait_until

from . import latency
from .fanout import raise_fd_limit, spread
from .measure import median, percentile

#: Concurrent writers in the commits-per-second runs.
WRITERS = 8

#: Events sent to the open streams in each fan-out; the median is reported.
EVENTS = 3

#: Servers the fan-out's streams are spread over.
FANOUT_SERVERS = 3

#: How long a file A → B may take, in seconds.
TRANSFER_TIMEOUT = 600.0

_T = TypeVar("_T")


def run(
    changes: int, files: int, sizes: tuple[int, ...] = (1, 2, 3), streams: int = 30_000, big_mib: int = 1024,
    runs: int = 3,
) -> list[dict[str, object]]:
    """
    @param changes: live changes for the latencies.
    @param files: 4 KiB files for the commits per second.
    @param sizes: how many servers for the commits per second.
    @param streams: open streams for the fan-out (0: none).
    @param big_mib: the size of the file A → B in MiB (0: none).
    @param runs: runs of the file A → B; the median is reported.
    """
    why = missing() or haproxy_missing()
    if why is not None:
        print(f"  cluster: skipped ({why})", file=sys.stderr, flush=True)
        return [{"what": "several servers of one box", "figure": f"not measured: {why}"}]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="boxsync-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        print("  cluster: latency, embedded", file=sys.stderr, flush=True)
        alone = _alone(root / "alone", lambda a, b: latency.measure(root / "alone", a, b, changes))
        print("  cluster: latency, a client on each of two servers", file=sys.stderr, flush=True)
        across = _across(root / "across", lambda a, b: latency.measure(root / "across", a, b, changes))
        for label, (latencies, _) in [("one embedded server", alone), ("clients on two servers", across)]:
            rows.append(
                {
                    "what": f"live latency, {label} ({changes} changes)",
                    "median": f"{median(latencies) * 1000:.1f} ms",
                    "p99": f"{percentile(latencies, 99) * 1000:.1f} ms",
                    "target": "p50 < 60 ms, p99 < 250 ms" if label.startswith("clients") else "",
                }
            )
        print("  cluster: commits per second, embedded", file=sys.stderr, flush=True)
        with _embedded(root / "commits-alone") as servers:
            rate = _commits(servers, files)
        rows.append({"what": f"commits/s of 4 KiB, {WRITERS} writers, one embedded server", "median": f"{rate:.0f}",
                     "p99": "", "target": ""})
        for count in sizes:
            print(f"  cluster: commits per second, {count} servers", file=sys.stderr, flush=True)
            with _cluster(root / f"commits-{count}", count) as servers:
                rate = _commits(servers, files)
            servers_ = "1 server" if count == 1 else f"{count} servers"
            rows.append({"what": f"commits/s of 4 KiB, {WRITERS} writers over {servers_} (PostgreSQL)",
                         "median": f"{rate:.0f}", "p99": "", "target": ""})
        if streams:
            rows += _fanout(root, streams)
        if big_mib:
            rows += _a_to_b(root, big_mib, runs)
    return rows


@contextmanager
def _embedded(folder: Path) -> Iterator[list[Server]]:
    """
    One embedded server of a new box in C{folder}.
    """
    folder.mkdir(parents=True)
    server = Server(folder / "box").start()
    try:
        yield [server]
    finally:
        server.kill()


@contextmanager
def _cluster(folder: Path, count: int, bucket: bool = True) -> Iterator[list[Server]]:
    """
    The C{count} servers of a new cluster in C{folder}; with C{bucket}, the
    blocks sent kept in its SeaweedFS (C{--store}), else in the box folder.
    """
    cluster = Cluster(folder, count, bucket=bucket).start()
    try:
        yield cluster.servers
    finally:
        cluster.stop()


def _pair(folder: Path, servers: list[Server], work: Callable[[Client, Client], _T]) -> _T:
    """
    C{work} done with live clients A and B, A on the first of C{servers}
    and B on the last.
    """
    a, b = _clients(folder, servers[0], servers[-1])
    try:
        return work(a, b)
    finally:
        a.kill()
        b.kill()


def _alone(folder: Path, work: Callable[[Client, Client], _T]) -> _T:
    """
    C{work} done with live clients A and B of one embedded server.
    """
    with _embedded(folder) as servers:
        return _pair(folder, servers, work)


def _across(folder: Path, work: Callable[[Client, Client], _T]) -> _T:
    """
    C{work} done with live clients A and B, each on a server of its own.
    """
    with _cluster(folder, 2) as servers:
        return _pair(folder, servers, work)


def _across_no_bucket(folder: Path, work: Callable[[Client, Client], _T]) -> _T:
    """
    As L{_across}, the blocks sent kept in the shared box folder.
    """
    with _cluster(folder, 2, bucket=False) as servers:
        return _pair(folder, servers, work)


def _fanout(root: Path, streams: int) -> list[dict[str, object]]:
    """
    One event to C{streams} open streams spread over L{FANOUT_SERVERS}
    servers (the upload made on the first), and to as many on one embedded
    server, or as many as one process may hold open here.
    """
    # The servers started here inherit this limit.
    limit = raise_fd_limit(streams + 1024)
    alone = min(streams, (limit - 1024) // 1000 * 1000)
    places: list[tuple[str, int, Callable[[Path], AbstractContextManager[list[Server]]], str]] = [
        ("one embedded server", alone, _embedded, ""),
        (f"over {FANOUT_SERVERS} servers", streams, lambda folder: _cluster(folder, FANOUT_SERVERS), "< 2 s"),
    ]
    rows = []
    for label, count, servers_in, target in places:
        if count <= 0:
            rows.append({"what": f"one event to open streams, {label}", "median": "not measured",
                         "note": f"one process may open {limit:,} files here"})
            continue
        print(f"  cluster: one event to {count:,} streams, {label}", file=sys.stderr, flush=True)
        with servers_in(root / f"fanout-{len(rows)}") as servers:
            lasts, opening = spread(servers, count, EVENTS)
        why = f"; one process may open {limit:,} files here" if count < streams else ""
        rows.append(
            {
                "what": f"one event to {count:,} open streams, {label}",
                "median": f"{median(lasts):.3f} s",
                "p99": "",
                "target": target,
                "note": f"until the last stream has it; worst of {EVENTS} events {max(lasts):.3f} s; "
                f"opening the streams took {opening:.0f} s{why}",
            }
        )
    return rows


def _a_to_b(root: Path, big_mib: int, runs: int) -> list[dict[str, object]]:
    """
    A new file of C{big_mib} MiB of random bytes from A to B, C{runs} times:
    with both on one embedded server, then with A and B on two servers.
    """
    places: list[tuple[str, Callable[[Path, Callable[[Client, Client], list[float]]], list[float]], str]] = [
        ("one embedded server", _alone, ""),
        ("A and B on two servers, blocks sent kept in S3", _across, "≥ 0.7x the embedded server"),
        ("A and B on two servers, blocks sent kept in the box folder", _across_no_bucket, "≥ 0.7x the embedded server"),
    ]
    timings = []
    for label, where, _ in places:
        print(f"  cluster: {big_mib} MiB A → B, {label}", file=sys.stderr, flush=True)
        folder = root / f"a-to-b-{len(timings)}"
        timings.append(where(folder, lambda a, b: [_transfer(folder, a, b, big_mib, n) for n in range(runs)]))
    rows = []
    for (label, _, target), seconds in zip(places, timings):
        middle = median(seconds)
        ratio = f"{median(timings[0]) / middle:.2f}x the embedded server; " if target else ""
        rows.append(
            {
                "what": f"a new file of {big_mib} MiB A → B, {label}",
                "median": f"{middle:.2f} s ({big_mib / middle:.0f} MiB/s)",
                "p99": "",
                "target": target,
                "note": f"{ratio}{runs} runs, {min(seconds):.2f}–{max(seconds):.2f} s",
            }
        )
    return rows


def _transfer(folder: Path, a: Client, b: Client, big_mib: int, n: int) -> float:
    """
    Move a new file of C{big_mib} MiB of random bytes into A's folder: the
    seconds until it is whole in B's (then checked byte for byte, off the
    clock). It is deleted afterwards, on both.
    """
    name = f"big-{n}.bin"
    staged = folder / name
    digest = hashlib.sha256()
    with open(staged, "wb") as f:
        for _ in range(big_mib):
            block = os.urandom(2**20)
            digest.update(block)
            f.write(block)
    # The disk starts quiet: the file is written out before the clock starts.
    os.sync()
    arrived = b.folder / name
    size = big_mib * 2**20
    start = time.perf_counter()
    os.rename(staged, a.folder / name)
    # It appears in B only once complete (moved into place).
    while not (arrived.exists() and arrived.stat().st_size == size):
        if time.perf_counter() - start > TRANSFER_TIMEOUT:
            raise SystemExit(f"cluster: {name} did not reach B in {TRANSFER_TIMEOUT:g} s")
        # Within 1 % of the time so far: looking costs the clients no CPU.
        time.sleep(max(0.01, (time.perf_counter() - start) / 100))
    seconds = time.perf_counter() - start
    with open(arrived, "rb") as f:
        if hashlib.file_digest(f, "sha256").hexdigest() != digest.hexdigest():
            raise SystemExit(f"cluster: {name} reached B with other bytes")
    (a.folder / name).unlink()
    wait_until(lambda: not arrived.exists(), timeout=60, what=f"{name} deleted on B")
    return seconds


def _clients(root: Path, one: Server, two: Server) -> tuple[Client, Client]:
    a = Client(one, root / "a", "a", verbose=False, rescan=None).start()
    b = Client(two, root / "b", "b", verbose=False, rescan=None).start()
    (a.folder / "warm.txt").write_text("warm up")
    wait_until(lambda: (b.folder / "warm.txt").exists(), timeout=60, what="the clients to connect")
    return a, b


def _commits(servers: list[Server], files: int) -> float:
    """
    Upload C{files} new 4 KiB files with L{WRITERS} writers, each on one of
    C{servers} in turn: commits per second.
    """
    data = os.urandom(4096)

    def write(writer: int) -> int:
        server = servers[writer % len(servers)]
        place = urlsplit(server.url)
        connection = http.client.HTTPConnection(place.hostname or "127.0.0.1", place.port, timeout=60)
        done = 0
        try:
            for n in range(writer, files, WRITERS):
                connection.request(
                    "PUT",
                    "/files/" + quote(f"w{writer}/f{n}.bin"),
                    body=data,
                    headers={"Authorization": f"Bearer {server.key}", "X-Boxsync-Base": "0"},
                )
                response = connection.getresponse()
                response.read()
                if response.status not in (200, 201):
                    raise SystemExit(f"commits: PUT answered {response.status}")
                done += 1
        finally:
            connection.close()
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(WRITERS) as pool:
        done = sum(pool.map(write, range(WRITERS)))
    return done / (time.perf_counter() - start)
