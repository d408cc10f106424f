"""
Several servers of one box (``boxsync.cluster``: PostgreSQL, the servers on
one box folder, HAProxy in front), beside one embedded server in the same
run:

- live latency between two clients, each on its own server (the commit
  travels from one server to the other through PostgreSQL's notifications);
- commits per second of 4 KiB files, uploaded by 8 concurrent writers spread
  over 1, 2 and 3 servers.
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

from boxsync.cluster import Cluster, haproxy_missing, missing
from boxsync.testing import Client, Server, wait_until

from . import latency
from .measure import median, percentile

#: Concurrent writers in the commits-per-second runs.
WRITERS = 8


def run(changes: int, files: int, sizes: tuple[int, ...] = (1, 2, 3)) -> list[dict[str, object]]:
    why = missing() or haproxy_missing()
    if why is not None:
        print(f"  cluster: skipped ({why})", file=sys.stderr, flush=True)
        return [{"what": "several servers of one box", "figure": f"not measured: {why}"}]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="boxsync-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        print("  cluster: latency, embedded", file=sys.stderr, flush=True)
        alone = _latency_alone(root / "alone", changes)
        print("  cluster: latency, a client on each of two servers", file=sys.stderr, flush=True)
        across = _latency_across(root / "across", changes)
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
        (root / "commits-alone").mkdir()
        server = Server(root / "commits-alone" / "box").start()
        try:
            rate = _commits([server], files)
        finally:
            server.kill()
        rows.append({"what": f"commits/s of 4 KiB, {WRITERS} writers, one embedded server", "median": f"{rate:.0f}",
                     "p99": "", "target": ""})
        for count in sizes:
            print(f"  cluster: commits per second, {count} servers", file=sys.stderr, flush=True)
            cluster = Cluster(root / f"commits-{count}", count).start()
            try:
                rate = _commits(cluster.servers, files)
            finally:
                cluster.stop()
            servers = "1 server" if count == 1 else f"{count} servers"
            rows.append({"what": f"commits/s of 4 KiB, {WRITERS} writers over {servers} (PostgreSQL)",
                         "median": f"{rate:.0f}", "p99": "", "target": ""})
    return rows


def _latency_alone(root: Path, changes: int) -> tuple[list[float], list[float]]:
    root.mkdir(parents=True)
    server = Server(root / "box").start()
    a, b = _clients(root, server, server)
    try:
        return latency.measure(root, a, b, changes)
    finally:
        a.kill()
        b.kill()
        server.kill()


def _latency_across(root: Path, changes: int) -> tuple[list[float], list[float]]:
    cluster = Cluster(root, 2).start()
    try:
        a, b = _clients(root, cluster.servers[0], cluster.servers[1])
        try:
            return latency.measure(root, a, b, changes)
        finally:
            a.kill()
            b.kill()
    finally:
        cluster.stop()


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
