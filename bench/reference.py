"""
The references the benchmarks measure boxsync against, in the same run on the
same machine: nginx (Debian's package, installed here if missing) serving a
folder on 127.0.0.1 with ``sendfile`` for GET and WebDAV ``PUT`` for uploads,
driven by curl; and an rsync daemon (Debian's package too) that a tree is
pushed to and pulled from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from boxsync.testing import free_port, wait_until

from .measure import remove

NGINX = "/usr/sbin/nginx"

_CONFIG = """\
{user}
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {root}/.tmp;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        dav_methods PUT;
        create_full_put_path on;
    }}
}}
"""


def ensure_nginx() -> str | None:
    """
    The path of an nginx with the WebDAV module, installing Debian's package
    when there is none and we may (root, apt-get). C{None} if it cannot be had.
    """
    if not os.path.exists(NGINX):
        _install("nginx-light")
    if not os.path.exists(NGINX):
        return None
    version = subprocess.run([NGINX, "-V"], capture_output=True, text=True).stderr
    return NGINX if "http_dav_module" in version else None


def _install(package: str) -> None:
    """
    Install Debian's C{package}, if we may (root, apt-get).
    """
    if shutil.which("apt-get") and os.geteuid() == 0:
        print(f"installing {package} (apt-get)...", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, capture_output=True)


def ensure_rsync() -> str | None:
    """
    The path of rsync, installing Debian's package when there is none and
    we may. C{None} if it cannot be had.
    """
    if shutil.which("rsync") is None:
        _install("rsync")
    return shutil.which("rsync")


def terminate(popen: subprocess.Popen[bytes] | None) -> None:
    """
    Stop a reference's process, if it runs: asked first, killed if it does
    not stop within 10 s.
    """
    if popen is not None and popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)


class _Child:
    """
    A reference server run as a child process on 127.0.0.1 for one
    benchmark, serving the folder C{root}, its own files in C{prefix}.
    """

    def __init__(self, root: Path, prefix: Path) -> None:
        self.root = root
        self.prefix = prefix
        self.port = free_port()
        self.popen: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        terminate(self.popen)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RsyncDaemon(_Child):
    """
    An rsync daemon serving C{root} as the module C{box}.
    """

    @property
    def url(self) -> str:
        return f"rsync://127.0.0.1:{self.port}/box/"

    def __enter__(self) -> RsyncDaemon:
        binary = ensure_rsync()
        if binary is None:
            raise RuntimeError("rsync is not available")
        self.root.mkdir(parents=True, exist_ok=True)
        self.prefix.mkdir(parents=True, exist_ok=True)
        config = self.prefix / "rsyncd.conf"
        owner = "uid = 0\ngid = 0\n" if os.geteuid() == 0 else ""
        config.write_text(
            f"use chroot = no\npid file = {self.prefix}/rsyncd.pid\n{owner}"
            f"[box]\npath = {self.root}\nread only = no\n"
        )
        self.popen = subprocess.Popen(
            [binary, "--daemon", "--no-detach", "--address=127.0.0.1", f"--port={self.port}", f"--config={config}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError("the rsync daemon exited")
            return subprocess.run([binary, self.url], capture_output=True).returncode == 0

        wait_until(listening, timeout=10, what="rsync to listen")
        return self


def rsync_push_pull(source: Path, work: Path, many: bool = False) -> float:
    """
    Push the tree C{source} to an rsync daemon, then pull it into a new
    folder (what boxsync's A → B does with two copies), from a quiet disk:
    the seconds both took.

    @param many: whether the tree has many files (see L{remove}).
    """
    os.sync()
    with RsyncDaemon(work / "daemon-box", work / "daemon") as daemon:
        start = time.perf_counter()
        subprocess.run(["rsync", "-a", "--exclude=/.boxsync", f"{source}/", daemon.url], check=True)
        subprocess.run(["rsync", "-a", daemon.url, f"{work / 'pulled'}/"], check=True)
        seconds = time.perf_counter() - start
    remove(work, many)
    return seconds


class Nginx(_Child):
    """
    nginx serving C{root}.
    """

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        binary = ensure_nginx()
        if binary is None:
            raise RuntimeError("nginx with http_dav_module is not available")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".tmp").mkdir(exist_ok=True)
        self.prefix.mkdir(parents=True, exist_ok=True)
        config = self.prefix / "nginx.conf"
        config.write_text(
            _CONFIG.format(
                user="user root;" if os.geteuid() == 0 else "",
                prefix=self.prefix,
                root=self.root,
                port=self.port,
            )
        )
        self.popen = subprocess.Popen(
            [binary, "-p", str(self.prefix), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.prefix / "stderr.log", "wb"),
        )

        def listening() -> bool:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(
                    "nginx exited: " + (self.prefix / "stderr.log").read_text(errors="replace")
                )
            return subprocess.run(
                ["curl", "-s", "-o", "/dev/null", self.url + "/"], capture_output=True
            ).returncode == 0

        wait_until(listening, timeout=10, what="nginx to listen")
        return self

    def __enter__(self) -> Nginx:
        return self.start()


def curl(*args: str, durable: bool = False) -> float:
    """
    Run curl (silent, failing on an HTTP error) and return how long it took,
    from a quiet disk (what earlier runs wrote is written out first).

    @param durable: count the time until what the server wrote is on the
        disk (a C{sync} after curl): boxsync answers an upload only then,
        nginx as soon as the file is in the page cache.
    """
    os.sync()
    start = time.perf_counter()
    result = subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "3600", *args], capture_output=True, text=True
    )
    if durable:
        os.sync()
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)} failed: {result.stderr.strip()}")
    return elapsed
