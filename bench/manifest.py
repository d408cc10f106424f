"""
``python -m bench.manifest [ENTRIES] [--legacy]``: a huge manifest against a
real server.

One client opens its event stream with a manifest of ENTRIES new files
(1,000,000 by default, ~150 bytes each; with C{--legacy}, the legacy
clients' list of paths and mtimes) and reads the plan to its end, while
another asks ``GET /healthz`` every 20 ms. Prints the manifest's size, the
server's RSS before and at its peak, the slowest ``/healthz`` answers, and how
long the plan took.
"""

from __future__ import annotations

import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from boxsync.wire import EVENT_STREAM
from boxsync.testing import Server

from .measure import PeakRSS, mib, percentile


def legacy_manifest(entries: int) -> bytes:
    files = ",".join(
        json.dumps({"path": f"folder{n // 1000:04d}/file{n:07d}.txt", "lastUpdate": 1_700_000_000 + n})
        for n in range(entries)
    )
    return b'{"files":[' + files.encode() + b"]}"


def manifest(entries: int) -> bytes:
    files = ",".join(
        json.dumps(
            {
                "path": f"folder{n // 1000:04d}/file{n:07d}.txt",
                "sha256": f"{n:064x}",
                "size": n,
                "mtime_ns": 1_700_000_000_000_000_000 + n,
                "base": 0,
                "changed": True,
            },
            separators=(",", ":"),
        )
        for n in range(entries)
    )
    return b'{"client":"huge","cursor":0,"files":[' + files.encode() + b'],"deleted":[]}'


def sync(server: Server, body: bytes, outcome: dict[str, object], legacy: int = 0) -> None:
    """
    Send C{body} to open a stream and read the plan to its end, counting
    its uploads into C{outcome}; with C{legacy}, a legacy stream, whose
    plan has no end: it is read until that many uploads came.
    """
    upload, end = (b'"Action":2', b"") if legacy else (b"event: upload", b"event: ready")
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    try:
        connection.request(
            "POST",
            "/sync",
            body=body,
            headers={"Authorization": f"Bearer {server.key}", **({} if legacy else {"Accept": EVENT_STREAM})},
        )
        response = connection.getresponse()
        outcome["status"] = response.status
        events = 0
        if response.status == 200:
            # A tail shorter than what is counted: no match is counted twice.
            tail = b""
            while chunk := response.read1(1 << 20):
                events += (tail + chunk).count(upload)
                if (end and end in tail + chunk) or (legacy and events >= legacy):
                    break
                tail = chunk[-(len(upload) - 1) :]
        else:
            outcome["answer"] = response.read()[:200]
        outcome["events"] = events
    finally:
        connection.close()
        outcome["seconds"] = time.perf_counter() - start


def healthz(server: Server) -> float:
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("GET", "/healthz")
        connection.getresponse().read()
    finally:
        connection.close()
    return time.perf_counter() - start


def main(entries: int, legacy: bool) -> None:
    body = legacy_manifest(entries) if legacy else manifest(entries)
    with tempfile.TemporaryDirectory(prefix="boxsync-manifest-") as tmp:
        server = Server(Path(tmp) / "box").start()
        try:
            assert server.process is not None and server.process.popen is not None
            pid = server.process.popen.pid
            time.sleep(1)
            before = psutil.Process(pid).memory_info().rss
            outcome: dict[str, object] = {}
            poster = threading.Thread(target=sync, args=(server, body, outcome, entries if legacy else 0))
            latencies = []
            with PeakRSS(lambda: [pid]) as peak:
                poster.start()
                while poster.is_alive():
                    latencies.append(healthz(server))
                    time.sleep(0.02)
                poster.join()
        finally:
            server.kill()
    print(f"entries: {entries:,}  manifest: {mib(len(body))}  answer: {outcome.get('status')} {outcome.get('answer', '')!r}")
    print(f"plan: {outcome.get('events'):,} events in {outcome.get('seconds'):.1f} s")
    print(f"server RSS: {mib(before)} before, {mib(peak.peaks.get(pid, 0))} at its peak")
    print(
        f"/healthz: {len(latencies)} asked, slowest {max(latencies) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.0f} ms, median {percentile(latencies, 50) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    numbers = [arg for arg in sys.argv[1:] if arg.isdigit()]
    main(int(numbers[0]) if numbers else 1_000_000, "--legacy" in sys.argv)
