"""
Fan-out: N event streams held open against one server (by one raw-socket,
epoll-driven holder in this process, so the streams cost almost nothing here),
then one upload; the time from sending the upload to the last stream having
read its event, and the server's RSS per open stream. The holder
(L{Holder}) spreads its streams over several servers too (bench/cluster.py).

The file descriptor limit is raised as far as the hard limit allows (as root,
the hard limit too), for this process and so for the server it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import psutil

from boxsync.wire import CLIENT_HEADER, SHA256_HEADER
from boxsync.testing import Server

from .measure import median


def raise_fd_limit(wanted: int) -> int:
    """
    Raise RLIMIT_NOFILE to at least C{wanted} if allowed; the soft limit now.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, wanted))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _request(server: Server, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             f"Authorization: Bearer {server.key}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Holder:
    """
    Event streams on raw non-blocking sockets, all read by one selector,
    spread over C{servers} in turn.
    """

    def __init__(self, servers: Sequence[Server]) -> None:
        if not servers:
            raise ValueError("streams need at least one server")
        self.servers = list(servers)
        self.selector = selectors.DefaultSelector()
        self.buffers: dict[socket.socket, bytearray] = {}
        self.ready: set[socket.socket] = set()
        self.got: dict[socket.socket, float] = {}

    def open(self, count: int, batch: int = 200, timeout: float = 120.0) -> None:
        """
        Open C{count} streams, C{batch} at a time, each batch ready within
        C{timeout} seconds.
        """
        manifest = json.dumps({"client": "fanout", "cursor": 0, "files": [], "deleted": []}).encode()
        opened = 0
        while opened < count:
            deadline = time.monotonic() + timeout
            for _ in range(min(batch, count - opened)):
                server = self.servers[opened % len(self.servers)]
                s = socket.create_connection(("127.0.0.1", server.port))
                s.sendall(_request(server, "POST", "/sync", manifest, {
                    "Accept": "text/event-stream", "Content-Type": "application/json",
                    CLIENT_HEADER: f"fan{opened}"}))
                s.setblocking(False)
                self.buffers[s] = bytearray()
                self.selector.register(s, selectors.EVENT_READ)
                opened += 1
            while len(self.ready) < opened:
                if time.monotonic() > deadline:
                    raise SystemExit(f"fan-out: only {len(self.ready)} of {count} streams ready")
                self._poll(b"event: ready", self.ready, None)

    def _poll(self, marker: bytes, into: set[socket.socket], times: dict[socket.socket, float] | None) -> None:
        for key, _ in self.selector.select(timeout=1.0):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise SystemExit("fan-out: the server closed a stream")
            buffer = self.buffers[s]
            buffer += data
            if s not in into and marker in buffer:
                into.add(s)
                if times is not None:
                    times[s] = time.perf_counter()
                del buffer[:]
            elif len(buffer) > 65536:
                del buffer[: -len(marker)]

    def broadcast(self, name: str, timeout: float = 60.0) -> tuple[float, float]:
        """
        Upload one small file through the first server; (seconds until the
        last stream read its event, median seconds over the streams).
        """
        server = self.servers[0]
        body = b"fan-out\n"
        upload = socket.create_connection(("127.0.0.1", server.port))
        request = _request(server, "PUT", f"/files/{name}", body, {
            SHA256_HEADER: hashlib.sha256(body).hexdigest(), CLIENT_HEADER: "uploader"})
        marker = f'"path":"{name}"'.encode()
        got: set[socket.socket] = set()
        times: dict[socket.socket, float] = {}
        start = time.perf_counter()
        upload.sendall(request)
        deadline = start + timeout
        while len(got) < len(self.buffers):
            if time.perf_counter() > deadline:
                raise SystemExit(f"fan-out: {len(got)} of {len(self.buffers)} streams got the event")
            self._poll(marker, got, times)
        upload.close()
        offsets = [t - start for t in times.values()]
        return max(offsets), median(offsets)

    def events(self, count: int) -> tuple[list[float], list[float]]:
        """
        L{broadcast} C{count} times: for each, the seconds until the last
        stream read it, and the median stream's.
        """
        lasts, medians = [], []
        for i in range(count):
            last, middle = self.broadcast(f"event{i}.txt")
            lasts.append(last)
            medians.append(middle)
        return lasts, medians

    def close(self) -> None:
        for s in list(self.buffers):
            self.selector.unregister(s)
            s.close()
        self.selector.close()


def run(counts: list[int], events: int = 3) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    limit = raise_fd_limit(max(counts) + 1024)
    for count in counts:
        if count + 100 > limit:
            rows.append({"streams": f"{count:,}", "all got the event s (median)": "n/a",
                         "note": f"file descriptor limit {limit}"})
            continue
        print(f"  fan-out: {count:,} streams", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="boxsync-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
            server = Server(Path(tmp) / "box").start()
            assert server.process is not None and server.process.popen is not None
            proc = psutil.Process(server.process.popen.pid)
            holder = Holder([server])
            try:
                time.sleep(0.3)
                before = proc.memory_info().rss
                start = time.perf_counter()
                holder.open(count)
                connect_seconds = time.perf_counter() - start
                time.sleep(0.3)
                after = proc.memory_info().rss
                lasts, medians = holder.events(events)
            finally:
                holder.close()
                server.kill()
        rows.append(
            {
                "streams": f"{count:,}",
                "all got the event s (median)": f"{median(lasts):.3f}",
                "worst of runs s": f"{max(lasts):.3f}",
                "median stream s": f"{median(medians):.3f}",
                "server RSS per stream KiB": f"{(after - before) / count / 1024:.1f}",
                "server RSS MiB": f"{after / 2**20:.0f}",
                "open all streams s": f"{connect_seconds:.1f}",
                "events": events,
            }
        )
    return rows
