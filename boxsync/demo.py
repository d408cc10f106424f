"""
``python -m boxsync.demo``: a server and two clients on the embedded
default, on two demo folders, so a newcomer sees files move in seconds.

Everything lives under ``./demo`` (or the folder given): the box, and the
folders ``alice`` and ``bob``. Drop files into one of them and watch them
appear in the other. Ctrl-C stops all three processes.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    args = parser.parse_args(argv)
    root = Path(args.folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port, key = _free_port(), secrets.token_urlsafe(16)
    url = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []

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

    try:
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
        print(f"boxsync demo: server on {url}, box in {root / 'box'}", flush=True)
        print(f"  folders {root / 'alice'} and {root / 'bob'} are kept in sync, live", flush=True)
        print(f"  logs: {root}/server.log, alice.log, bob.log", flush=True)
        deadline = time.monotonic() + args.seconds if args.seconds else None
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        # Ctrl-C stops the demo even where it was started with SIGINT
        # ignored (a job in the background of a shell starts so, and Python
        # then leaves it ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        moved = False
        while deadline is None or time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes):
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
        print("boxsync demo stopped.", flush=True)


if __name__ == "__main__":
    main()
