"""
``python -m boxsync.demo``: a server and two clients on the embedded
default, on two demo folders, so a newcomer sees files move in seconds.

Everything lives under ``./demo`` (or the folder given): the box, and the
folders ``alice`` and ``bob``. Drop files into one of them and watch them
appear in the other. Ctrl-C stops all three processes.

``--cluster N`` runs the scaled-out layout instead, all on 127.0.0.1: a
PostgreSQL of its own, a SeaweedFS whose bucket keeps the blocks sent, N
servers of the one box with their index in PostgreSQL, and HAProxy in
front; the clients use HAProxy's address. ``--info FILE`` writes
where it all is as JSON once it is ready.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, server: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the demo server exited; see demo/server.log")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("the demo server did not start in time; see demo/server.log")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m boxsync.demo", description=__doc__)
    parser.add_argument("folder", nargs="?", default="demo", help="where the demo lives")
    parser.add_argument(
        "--seconds", type=float, default=0, help="stop after this many seconds (0: at Ctrl-C)"
    )
    parser.add_argument(
        "--cluster", type=int, metavar="N", default=0,
        help="N servers on PostgreSQL behind HAProxy, rather than one server on its own",
    )
    parser.add_argument("--info", type=Path, metavar="FILE", help="write where it all is, as JSON, once it is ready")
    args = parser.parse_args(argv)
    if args.cluster < 0:
        parser.error("--cluster takes a number of servers, 1 or more")
    root = Path(args.folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port, key = _free_port(), secrets.token_urlsafe(16)
    url = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []
    cluster = None

    def spawn(log: str, *command: str) -> subprocess.Popen[bytes]:
        with open(root / log, "ab") as out:
            # Ctrl-C reaches the whole foreground group: the server and the
            # clients leave it to the demo, which stops each once, cleanly.
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
            )
        processes.append(process)
        return process

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        if args.cluster:
            cluster = _start_cluster(root, args.cluster, key)
            url = cluster.url
        else:
            server = spawn(
                "server.log", sys.executable, "-m", "twisted", "--log-format=text", "boxsync",
                "--listen", f"tcp:{port}:interface=127.0.0.1",
                "--box", str(root / "box"), "--api-key", key,
            )
            _wait_for_port(port, server)
        for name in ("alice", "bob"):
            (root / name).mkdir(exist_ok=True)
            spawn(
                f"{name}.log", sys.executable, "-m", "boxsync.client",
                "--server", url, f"--token={key}", "--name", name, str(root / name),
            )
        hello = root / "alice" / "hello.txt"
        if not hello.exists():
            hello.write_text("Hello from alice! Edit me, or drop files into alice/ or bob/.\n")
        if cluster is not None:
            print(f"boxsync demo: {args.cluster} servers behind HAProxy on {url}, box in {cluster.box}", flush=True)
            for each in cluster.info()["instances"]:
                print(f"  server {each['url']} (process {each['pid']})", flush=True)
            print(f"  token: {key}", flush=True)
            print(f"  logs: {root}/haproxy.log, server-*.log, alice.log, bob.log", flush=True)
        else:
            print(f"boxsync demo: server on {url}, box in {root / 'box'}", flush=True)
            print(f"  logs: {root}/server.log, alice.log, bob.log", flush=True)
        print(f"  folders {root / 'alice'} and {root / 'bob'} are kept in sync, live", flush=True)
        if args.info is not None:
            info = cluster.info() if cluster is not None else {"url": url, "token": key, "instances": []}
            _write_json(args.info, info)
        deadline = time.monotonic() + args.seconds if args.seconds else None
        # Ctrl-C stops the demo even where it was started with SIGINT
        # ignored (a job in the background of a shell starts so, and Python
        # then leaves it ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        moved = False
        while deadline is None or time.monotonic() < deadline:
            others = list(cluster.processes()) if cluster is not None else []
            if any(p.poll() is not None for p in processes) or not all(p.running for p in others):
                raise SystemExit("a demo process exited; see the logs in " + str(root))
            if not moved and (root / "bob" / "hello.txt").exists() and hello.exists():
                print("  hello.txt went from alice to bob: the demo works. Ctrl-C to stop.", flush=True)
                moved = True
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if cluster is not None:
            cluster.stop()
        print("boxsync demo stopped.", flush=True)


def _start_cluster(root: Path, count: int, key: str) -> Cluster:
    from .cluster import Cluster, haproxy_missing

    why = haproxy_missing()
    if why is not None:
        raise SystemExit(f"boxsync demo: no cluster here: {why}")
    print(f"boxsync demo: starting PostgreSQL, SeaweedFS, {count} servers and HAProxy...", flush=True)
    return Cluster(root, count, key=key).start()


def _write_json(path: Path, value: Any) -> None:
    """
    Write C{value} to C{path} in one step: a reader sees all of it or none.
    """
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(partial, path)


if __name__ == "__main__":
    main()
