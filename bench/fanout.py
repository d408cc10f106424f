"""
Fan-out: N event streams held open against one server (by one raw-socket,
epoll-driven holder in this process, so the streams cost almost nothing here),
then one upload; the time from sending the upload to the last stream having
read its event, and the server's RSS per open stream. The holder
(L{Holder}) spreads its streams over several servers too, and L{spread} over
several processes of its own, for more streams than one process may open
(bench/cluster.py).

The file descriptor limit is raised as far as the hard limit allows (as root,
the hard limit too), for this process and so for the server it starts.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import resource
import selectors
import socket
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Sequence

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


def _upload(server: Server, name: str) -> tuple[socket.socket, float]:
    """
    Send the upload of a small file C{name} to C{server}: its connection
    (to close once it is no longer needed), and when it was sent.
    """
    body = b"fan-out\n"
    upload = socket.create_connection(("127.0.0.1", server.port))
    request = _request(server, "PUT", f"/files/{name}", body, {
        SHA256_HEADER: hashlib.sha256(body).hexdigest(), CLIENT_HEADER: "uploader"})
    start = time.perf_counter()
    upload.sendall(request)
    return upload, start


class Holder:
    """
    Event streams on raw non-blocking sockets, all read by one selector,
    spread over C{servers} in turn; C{name} begins their clients' names.
    """

    def __init__(self, servers: Sequence[Server], name: str = "fan") -> None:
        if not servers:
            raise ValueError("streams need at least one server")
        self.servers = list(servers)
        self.name = name
        self.selector = selectors.DefaultSelector()
        self.buffers: dict[socket.socket, bytearray] = {}
        self.ready: set[socket.socket] = set()

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
                    CLIENT_HEADER: f"{self.name}{opened}"}))
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
        upload, start = _upload(self.servers[0], name)
        try:
            times = self.wait_for(name, start + timeout)
        finally:
            upload.close()
        offsets = [t - start for t in times]
        return max(offsets), median(offsets)

    def wait_for(self, name: str, deadline: float) -> list[float]:
        """
        Read until every stream has the event of file C{name}, by
        C{deadline} (of C{time.perf_counter}): when each had it.
        """
        marker = f'"path":"{name}"'.encode()
        got: set[socket.socket] = set()
        times: dict[socket.socket, float] = {}
        while len(got) < len(self.buffers):
            if time.perf_counter() > deadline:
                raise SystemExit(f"fan-out: {len(got)} of {len(self.buffers)} streams got the event")
            self._poll(marker, got, times)
        return list(times.values())

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


#: Streams one holding process keeps open at most: a process may be allowed
#: no more than 20,000 open files, and cannot always raise that.
PER_PROCESS = 15_000


def spread(servers: Sequence[Server], count: int, events: int, timeout: float = 60.0) -> tuple[list[float], float]:
    """
    Hold C{count} streams over C{servers}, in as many processes as
    L{PER_PROCESS} asks, then upload C{events} small files through the first
    server, one after the other: for each, the seconds until the last
    stream had its event (every process reads its own streams; their clocks
    are the system's monotonic one); and the seconds opening every stream
    took.
    """
    processes = -(-count // PER_PROCESS)
    shares = [count // processes + (1 if n < count % processes else 0) for n in range(processes)]
    context = multiprocessing.get_context("fork")
    pipes, workers = [], []
    try:
        for n, share in enumerate(shares):
            mine, theirs = context.Pipe()
            worker = context.Process(
                target=_hold, args=(theirs, list(servers), share, f"fan{n}-", timeout), daemon=True
            )
            worker.start()
            pipes.append(mine)
            workers.append(worker)
        opening = max(_answer(pipe) for pipe in pipes)
        lasts = []
        for i in range(events):
            name = f"event{i}.txt"
            for pipe in pipes:
                pipe.send(name)
            upload, start = _upload(servers[0], name)
            try:
                lasts.append(max(max(_answer(pipe)) for pipe in pipes) - start)
            finally:
                upload.close()
        return lasts, opening
    finally:
        for pipe in pipes:
            try:
                pipe.send(None)
            except OSError:  # it ended already
                pass
            pipe.close()
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
                worker.join()


def _answer(pipe: Connection) -> Any:
    """
    What a holding process answered, or its error raised here.
    """
    try:
        if not pipe.poll(3600):
            raise SystemExit("fan-out: a holding process did not answer")
        ok, value = pipe.recv()
    except EOFError:
        raise SystemExit("fan-out: a holding process ended") from None
    if not ok:
        raise SystemExit(value)
    return value


def _hold(pipe: Connection, servers: list[Server], count: int, name: str, timeout: float) -> None:
    """
    A holding process: open C{count} streams and answer how long that took;
    then, for each file name it is sent, when each stream had its event;
    until it is sent C{None}.
    """
    raise_fd_limit(count + 1024)
    holder = Holder(servers, name)
    try:
        start = time.perf_counter()
        holder.open(count)
        pipe.send((True, time.perf_counter() - start))
        while (event := pipe.recv()) is not None:
            pipe.send((True, holder.wait_for(event, time.perf_counter() + timeout)))
    except (SystemExit, OSError) as e:
        pipe.send((False, str(e.code) if isinstance(e, SystemExit) else f"fan-out: {e}"))
    finally:
        holder.close()


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
