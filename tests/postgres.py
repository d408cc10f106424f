"""
A real PostgreSQL 15 for the tests: Debian's binaries, a new cluster in a
temporary folder, listening on 127.0.0.1 on a free port and on a unix
socket in a folder of its own. PostgreSQL refuses to run as root: as root
(CI), it runs as the C{postgres} system user, in folders that user owns.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from attrs import define, field

from boxsync.testing import free_port, wait_until

__all__ = ["BINARIES", "PostgreSQL", "missing"]

BINARIES = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"


def missing() -> str | None:
    """
    Why PostgreSQL cannot run here, or C{None} if it can.
    """
    if not (BINARIES / "postgres").exists():
        return f"PostgreSQL 15 is not installed ({BINARIES}): .ci/run installs Debian's postgresql"
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


@define
class PostgreSQL:
    """
    A PostgreSQL server of the tests' own; L{start} it, L{stop} it.
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
        return self._run()

    def _run(self) -> PostgreSQL:
        with open(self.folder / "postgres.log", "ab") as log:
            # Durability is not what these tests are about: no fsync.
            self.process = subprocess.Popen(
                [
                    str(BINARIES / "postgres"), "-D", str(self.data), "-p", str(self.port),
                    "-h", "127.0.0.1", "-k", str(self.sockets), "-c", "fsync=off",
                    "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
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
        self._stop_server()
        self._run()

    def stop(self) -> None:
        """
        Stop the server and remove its folder.
        """
        self._stop_server()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _stop_server(self) -> None:
        """
        A fast shutdown: its clients are disconnected.
        """
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None
