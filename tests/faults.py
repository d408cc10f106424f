"""
Tools for the fault-injection tests (``tests/system/test_faults*.py``): a TCP proxy
that can sever, freeze or slow the link, an observer that records every
version the box commits, and checks of the server's index against its box.

All of it runs in threads of the test process, on 127.0.0.1 only, so the
tests stay plain synchronous functions that drive real processes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Iterator

import pytest
from attrs import define, field, frozen

from boxsync.wire import (
    EVENT_STREAM,
    Delete,
    Download,
    Manifest,
    SSEParser,
    decode_event,
    encode_manifest,
)
from boxsync.testing import Client, Proxy, Server, tree, wait_until

# Figures for docs/reliability.md: with BOXSYNC_FAULT_FIGURES=<file>, every
# fault test appends one JSON line of what it injected and checked.
FIGURES = os.environ.get("BOXSYNC_FAULT_FIGURES")


def record(test: str, faults: int, files: int, lost: int = 0) -> None:
    """
    Note what a test injected and checked (when figures are being collected).
    """
    if FIGURES:
        line = {"test": test, "faults": faults, "files": files, "lost": lost}
        with open(FIGURES, "a") as f:
            f.write(json.dumps(line) + "\n")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """
    A server process on a new box (with the test module's C{SERVER_OPTIONS}),
    killed when the test ends. Test modules import it.
    """
    running = Server(tmp_path / "box", options=list(getattr(request.module, "SERVER_OPTIONS", []))).start()
    try:
        yield running
    finally:
        running.kill()


def output(of: Server | Client) -> str:
    """
    What the process of a server or a client has logged so far.
    """
    assert of.process is not None
    return of.process.output()


def backoffs(client: Client) -> list[float]:
    """
    How long the client waited before each of its reconnections, in order.
    """
    return [float(d) for d in re.findall(r"resyncing in ([\d.]+) s", output(client))]


#: The client's longest wait between two sessions; each wait is a random
#: 50 to 100 % of its step, so once there it varies between half and all.
MAX_BACKOFF = 5.0


def backing_off(delays: list[float]) -> bool:
    """
    Whether C{delays} (between tries, in order) back off: each at least as
    long as the one before until they reach the cap, none over it, none
    shorter than the first step (no spinning).
    """
    grows = all(b >= a or b >= MAX_BACKOFF / 2 for a, b in zip(delays, delays[1:]))
    return grows and all(0.125 <= d <= MAX_BACKOFF for d in delays)


def stop_and_check(server: Server, test: str, faults: int, *folders: Path) -> None:
    """
    Stop the server, check its index against its box, and record the test's
    figures: the box's files and every folder's.
    """
    server.stop()
    files = check_index(server.box) + sum(len(tree(folder)) for folder in folders)
    record(test, faults=faults, files=files)


# The server, over plain HTTP from the test


def _connection(server: Server, timeout: float = 30.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def _url(path: str) -> str:
    return "/files/" + "/".join(urllib.parse.quote(s, safe="") for s in path.split("/"))


def put(server: Server, path: str, data: bytes, base: int | None = None) -> tuple[int, dict[str, object]]:
    """
    Upload C{data} as C{path}; return the status and the JSON answer.
    """
    headers = {"Authorization": f"Bearer {server.key}", "X-Boxsync-Client": "test"}
    if base is not None:
        headers["X-Boxsync-Base"] = str(base)
    connection = _connection(server)
    try:
        connection.request("PUT", _url(path), body=data, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def delete(server: Server, path: str, base: int) -> int:
    """
    Delete C{path} at C{base}; return the status.
    """
    headers = {"Authorization": f"Bearer {server.key}", "X-Boxsync-Base": str(base)}
    connection = _connection(server)
    try:
        connection.request("DELETE", _url(path), headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def get(server: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    """
    Download C{path}: the status, the headers and the body.
    """
    connection = _connection(server)
    try:
        connection.request("GET", _url(path), headers={"Authorization": f"Bearer {server.key}"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def committed_seqs(server: Server) -> list[int]:
    """
    The seq of every commit the server has logged, across its restarts.
    """
    return [int(n) for n in re.findall(r" as seq (\d+)", output(server))]


def requests_in_log(server: Server, method: str, path: str) -> int:
    """
    How many C{method} requests for C{/files/<path>} the server has logged.
    """
    return output(server).count(f'"{method} {_url(path)} HTTP/1.1"')


# The index, read after the server stopped


@frozen
class Row:
    path: str
    sha256: str
    seq: int
    deleted: bool
    folder: bool = False


def index_rows(box: Path) -> tuple[list[Row], int]:
    """
    The rows of a stopped server's index, and the account's latest seq.
    """
    db = sqlite3.connect(f"file:{box / '.boxsync/index.sqlite'}?mode=ro", uri=True)
    try:
        rows = [
            Row(path, sha256, seq, bool(deleted), bool(folder))
            for path, sha256, seq, deleted, folder in db.execute(
                "SELECT path, sha256, seq, deleted, folder FROM files"
            )
        ]
        latest = max([seq for (seq,) in db.execute("SELECT seq FROM accounts")], default=0)
    finally:
        db.close()
    return rows, latest


def check_index(box: Path) -> int:
    """
    Check a stopped server's index against its box: the live rows are
    exactly the box's files with their sha256 (and folders there), no two
    rows share a seq, and
    the account's seq is at least every row's. Return how many files.
    """
    rows, latest = index_rows(box)
    live = {row.path: row.sha256 for row in rows if not row.deleted and not row.folder}
    assert live == tree(box), "the index does not match the box"
    folders = [row.path for row in rows if row.folder and not row.deleted]
    assert all((box / path).is_dir() for path in folders), "a folder of the index is not in the box"
    seqs = [row.seq for row in rows]
    assert len(seqs) == len(set(seqs)), f"a seq is used twice: {sorted(seqs)}"
    assert all(seq <= latest for seq in seqs)
    assert not list((box / ".boxsync/staging").iterdir()), "a staging file was left"
    return len(live)


# Every version the box commits, as an event stream shows them


@define
class Observer:
    """
    An event stream to the server, opened with an empty manifest: it gets
    every version already in the box (the plan), then every commit live.

    @ivar commits: (path, sha256, seq) of every version seen; a delete is
        recorded with sha256 C{None}.
    """

    server: Server
    commits: list[tuple[str, str | None, int]] = field(factory=list)
    _connection: http.client.HTTPConnection | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(factory=threading.Lock)
    _ready: threading.Event = field(factory=threading.Event)
    error: BaseException | None = None
    _stopping: bool = False

    def start(self) -> Observer:
        self._connection = _connection(self.server, timeout=120)
        self._connection.request(
            "POST",
            "/sync",
            body=encode_manifest(Manifest(client="observer")),
            headers={
                "Authorization": f"Bearer {self.server.key}",
                "Accept": EVENT_STREAM,
                "Content-Type": "application/json",
            },
        )
        response = self._connection.getresponse()
        assert response.status == 200
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the observer's plan did not end"
        return self

    def _read(self, response: http.client.HTTPResponse) -> None:
        parser = SSEParser()
        try:
            while chunk := response.read1(65536):
                for message in parser.feed(chunk):
                    event = decode_event(message)
                    with self._lock:
                        if isinstance(event, Download):
                            self.commits.append((event.path, event.sha256, event.seq))
                        elif isinstance(event, Delete):
                            self.commits.append((event.path, None, event.seq))
                    if message.event == "ready":
                        self._ready.set()
        except Exception as e:
            # http.client fails in odd ways when stop() shuts the socket.
            if not self._stopping:
                self.error = e

    def versions(self, path: str | None = None) -> set[str]:
        """
        Every sha256 committed (at C{path}, or anywhere).
        """
        with self._lock:
            return {s for p, s, _ in self.commits if s is not None and path in (None, p)}

    def stop(self) -> None:
        self._stopping = True
        if self._connection is not None and self._connection.sock is not None:
            self._connection.sock.shutdown(socket.SHUT_RDWR)
            self._connection.close()
        if self._thread is not None:
            self._thread.join(10)


# A TCP proxy between the clients and the server




def staged(box: Path) -> list[Path]:
    staging = box / ".boxsync/staging"
    return list(staging.iterdir()) if staging.exists() else []


def temp_files(folder: Path) -> list[Path]:
    tmp = folder / ".boxsync/tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def converged(*folders: Path) -> bool:
    """
    Whether C{folders} hold the same files. A file gone between the listing
    of its folder and its reading (a client is still at work there) means
    they do not yet.
    """
    try:
        first = tree(folders[0])
        return all(tree(folder) == first for folder in folders[1:])
    except FileNotFoundError:
        return False


def two_clients_converge(a: Client, b: Client, box: Path, timeout: float = 30) -> None:
    """
    Start C{a} and C{b}; make a series of changes, each in one of their
    folders in turn, and wait after each until both and the box hold the
    same files; check the outcome and that neither made a conflict copy;
    stop both, which must exit cleanly.
    """
    steps: list[tuple[Client, Callable[[Path], object]]] = [
        (a, lambda f: (f / "notes.txt").write_text(f"made on a, through {a.url or a.server.url}")),
        (b, lambda f: (f / "notes.txt").write_text(f"edited on b, through {b.url or b.server.url}")),
        (a, lambda f: (f / "big.bin").write_bytes(bytes(range(256)) * 20_000)),
        (b, lambda f: [(f / f"many-{n}.txt").write_text(str(n)) for n in range(50)]),
        (a, lambda f: (f / "notes.txt").unlink()),
    ]
    a.start()
    b.start()
    try:
        for who, change in steps:
            change(who.folder)
            wait_until(
                lambda: converged(a.folder, b.folder, box), timeout=timeout, what=f"sync after a step by {who.name}"
            )
        assert not (b.folder / "notes.txt").exists()
        assert (b.folder / "many-49.txt").read_text() == "49"
        assert not list(a.folder.glob("*.conflict-*")) and not list(b.folder.glob("*.conflict-*"))
    finally:
        assert a.stop() == 0 and b.stop() == 0


def a_big_file_flows_while_sent(folder: Path, a_server: Server, b_server: Server, box: Path) -> None:
    """
    A live b (of C{b_server}) fetches the blocks of a's new 64 MiB file (a
    of C{a_server}, sending at 8 MiB/s) as they reach the server, before
    the commit; nothing shows under the real name (on b or in C{box})
    until then, and what b fetched ahead is not fetched again.
    """
    mib = 2**20
    up, down = Proxy(a_server.port, rate=8 * mib).start(), Proxy(b_server.port).start()
    a = Client(a_server, folder / "a", "a", url=up.url)
    b = Client(b_server, folder / "b", "b", url=down.url)
    try:
        a.folder.mkdir(parents=True)
        a.start()
        b.start()
        (a.folder / "warm.txt").write_text("warm up")
        wait_until(lambda: (b.folder / "warm.txt").exists(), what="the clients to connect")
        data = os.urandom(64 * mib)
        (folder / "big.bin").write_bytes(data)
        up.carried()
        down.carried()
        os.rename(folder / "big.bin", a.folder / "big.bin")
        ahead = b.folder / ".boxsync/tmp"
        wait_until(
            lambda: any(p.stat().st_size > 16 * mib for p in ahead.glob("in-*")), timeout=60, what="b fetching ahead"
        )
        assert not (box / "big.bin").exists() and not (b.folder / "big.bin").exists()
        wait_until(lambda: (b.folder / "big.bin").exists(), timeout=60, what="the file on b")
        assert sha((b.folder / "big.bin").read_bytes()) == sha(data)
        fetched = down.carried()[1]
        assert 64 * mib < fetched < 66 * mib, fetched
        assert list(ahead.glob("in-*")) == []
    finally:
        for client in (a, b):
            client.kill()
        for proxy in (up, down):
            proxy.stop()


@define
class Edits:
    """
    C{clients} that each keep editing files of their own, in rounds, and
    what every one of their folders and the C{box} must end with.
    """

    clients: list[Client]
    box: Path
    expected: dict[str, str] = field(factory=dict)

    def make(self, round_: int) -> None:
        """
        On each client, rewrite its 3 files and add one for this round.
        """
        for client in self.clients:
            for n in range(3):
                text = f"{client.name}: file {n}, edit {round_}\n"
                (client.folder / f"{client.name}-{n}.txt").write_text(text)
                self.expected[f"{client.name}-{n}.txt"] = text
            (client.folder / f"{client.name}-round-{round_}.txt").write_text(str(round_))
            self.expected[f"{client.name}-round-{round_}.txt"] = str(round_)

    def held_by(self, folder: Path) -> bool:
        """
        Whether C{folder} holds every edit (and nothing else but conflict
        copies), as the box does.
        """
        want = {path: sha(text.encode()) for path, text in self.expected.items()}
        edits = {p.name: sha(p.read_bytes()) for p in folder.glob("*.txt") if ".conflict-" not in p.name}
        return converged(folder, self.box) and edits == want

    def wait_everywhere(self, timeout: float) -> None:
        """
        Wait until every client holds every edit.
        """
        for client in self.clients:
            wait_until(lambda: self.held_by(client.folder), timeout=timeout, what=f"every edit on {client.name}")


__all__ = [
    "a_big_file_flows_while_sent",
    "Edits",
    "Observer",
    "Proxy",
    "Row",
    "backoffs",
    "check_index",
    "committed_seqs",
    "converged",
    "index_rows",
    "output",
    "put",
    "record",
    "requests_in_log",
    "server",
    "sha",
    "staged",
    "stop_and_check",
    "temp_files",
    "two_clients_converge",
]


def copied_in_slowly(target: Path, pieces: int, watched: Path) -> tuple[bytes, set[int]]:
    """
    Write C{pieces} pieces of 1 MiB of random bytes to the new file
    C{target}, one every 0.3 s (a copy from a slow disk, a download saved as
    it comes), then close it; wait until C{watched} (the other side's copy)
    is whole.

    @return: what was written, and every size C{watched} was seen at while
        it was (a torn copy shows one below the whole).
    """
    piece = os.urandom(1 << 20)
    seen: set[int] = set()
    with open(target, "wb") as f:
        for _ in range(pieces):
            f.write(piece)
            f.flush()
            time.sleep(0.3)  # the writer's pace, not a wait for the sync
            if watched.exists():
                seen.add(watched.stat().st_size)
    whole = piece * pieces
    wait_until(lambda: watched.exists() and watched.stat().st_size == len(whole), what=f"{watched.name} whole")
    return whole, seen


def in_sync(client: Client) -> bool:
    """
    Whether C{client} runs and says its folder is in sync (its status
    file, written twice a second).
    """
    try:
        status = json.loads((client.folder / ".boxsync/status.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(status.get("running") and status.get("in_sync"))
