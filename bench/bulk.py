"""
Bulk transfer of one large file through boxsync, up and down, beside the best
a plain HTTP stack does on this machine in the same run: nginx (``sendfile``
for GET, WebDAV ``PUT``) driven by curl. Every figure is the median of several
runs, interleaved so that the machine's noise hits all of them alike; every
transfer is checked against the source's sha256.

Rows:

- ``curl → nginx`` / ``curl → boxsync``: the same curl command against both
  servers (upload ``-T``, download to a file and to ``/dev/null``). boxsync
  also checks the sha256 and fsyncs before it answers; nginx does neither.
  So uploads are also compared with ``nginx + sync``: the same PUT to nginx
  timed until its file is on the disk, as boxsync's is when it answers.
- ``boxsync-client``: a whole ``boxsync-client --once`` run, up from a folder
  holding the file (hashing it as it sends it, against a server with
  ``sha256-trailer``) and down into an empty folder (verifying it), process
  start-up included.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from boxsync.wire import SHA256_HEADER
from boxsync.testing import Client, Server

from .measure import median
from .memory import _write
from .reference import Nginx, curl, ensure_nginx


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _client_once(client: Client) -> float:
    os.sync()  # from a quiet disk, as curl()
    start = time.perf_counter()
    client.once(timeout=3600)
    return time.perf_counter() - start


def run(size_mib: int, runs: int = 3, use_nginx: bool = True) -> list[dict[str, object]]:
    """
    @param use_nginx: measure nginx + curl beside boxsync (installing nginx
        when missing); without it the ratios are C{n/a}.
    """
    size = size_mib * 2**20
    have_nginx = use_nginx and ensure_nginx() is not None
    with tempfile.TemporaryDirectory(prefix="boxsync-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        source = root / "big.bin"
        _write(source, size)
        digest = sha256_of(source)
        got = root / "got.bin"
        times: dict[str, list[float]] = {}

        def record(name: str, seconds: float) -> None:
            times.setdefault(name, []).append(seconds)

        def check(path: Path, what: str) -> None:
            if sha256_of(path) != digest:
                raise SystemExit(f"{what}: the file arrived corrupted")
            path.unlink()

        nginx = Nginx(root / "www", root / "nginx") if have_nginx else None
        if nginx is not None:
            nginx.start()
        server = Server(root / "box").start()
        auth = ["-H", f"Authorization: Bearer {server.key}"]
        try:
            for i in range(runs):
                print(f"  bulk {size_mib} MiB: run {i + 1}/{runs}", flush=True, file=sys.stderr)
                if nginx is not None:
                    put = ("-T", str(source), nginx.url + "/big.bin", "-o", "/dev/null")
                    record("nginx up", curl(*put))
                    check(nginx.root / "big.bin", "nginx PUT")
                    record("nginx up+sync", curl(*put, durable=True))
                    check(nginx.root / "big.bin", "nginx PUT")
                    # Put it back for the downloads (not timed).
                    os.link(source, nginx.root / "big.bin")
                    record("nginx down", curl("-o", str(got), nginx.url + "/big.bin"))
                    check(got, "nginx GET")
                    record("nginx null", curl("-o", "/dev/null", nginx.url + "/big.bin"))
                    (nginx.root / "big.bin").unlink()
                url = server.url + "/files/big.bin"
                record(
                    "boxsync up",
                    curl(*auth, "-H", f"{SHA256_HEADER}: {digest}", "-T", str(source), url, "-o", "/dev/null"),
                )
                record("boxsync down", curl(*auth, "-o", str(got), url))
                check(got, "boxsync GET")
                record("boxsync null", curl(*auth, "-o", "/dev/null", url))

                # The real client, against a box of its own each time.
                own = Server(root / f"box{i}").start()
                try:
                    a = Client(own, root / f"a{i}", "a")
                    b = Client(own, root / f"b{i}", "b")
                    a.folder.mkdir()
                    b.folder.mkdir()
                    os.link(source, a.folder / "big.bin")
                    record("client up", _client_once(a))
                    record("client down", _client_once(b))
                    check(b.folder / "big.bin", "boxsync-client download")
                    # A run with nothing to do: process start-up, connect, plan.
                    record("client start-up", _client_once(a))
                finally:
                    own.kill()
                    for folder in (f"box{i}", f"a{i}", f"b{i}"):
                        shutil.rmtree(root / folder, ignore_errors=True)
        finally:
            server.kill()
            if nginx is not None:
                nginx.stop()

    mb = size / 1e6
    m = {name: median(values) for name, values in times.items()}
    startup = m["client start-up"]

    def row(what: str, key: str, ref: str | None, note: str = "") -> dict[str, object]:
        rate = mb / m[key]
        ref_rate = mb / m[ref] if ref is not None and ref in m else None
        return {
            "size": f"{size_mib} MiB",
            "transfer": what,
            "MB/s": f"{rate:.0f}",
            "nginx+curl MB/s": f"{ref_rate:.0f}" if ref_rate else "n/a",
            "ratio": f"{rate / ref_rate:.2f}x" if ref_rate else "n/a",
            "runs": len(times[key]),
            "note": note,
        }

    rows = [
        row("upload, curl -T", "boxsync up", "nginx up", "boxsync also checks sha256 and fsyncs"),
        row("download to a file, curl", "boxsync down", "nginx down"),
        row("download to /dev/null, curl", "boxsync null", "nginx null"),
        row("upload, boxsync-client --once", "client up", "nginx up", f"hashed as sent + {startup:.2f} s start-up"),
        row("upload, curl -T, vs nginx + sync", "boxsync up", "nginx up+sync", "both on disk when timed"),
        row("upload, client --once, vs nginx + sync", "client up", "nginx up+sync", "both on disk when timed"),
        row("download, boxsync-client --once", "client down", "nginx down", f"verify + {startup:.2f} s start-up"),
    ]
    for name, key, ref in (("upload", "client up", "nginx up"), ("download", "client down", "nginx down")):
        if m[key] > startup:
            net = mb / (m[key] - startup)
            ref_rate = mb / m[ref] if ref in m else None
            rows.append(
                {
                    **row(f"{name}, boxsync-client less start-up", key, ref),
                    "MB/s": f"{net:.0f}",
                    "ratio": f"{net / ref_rate:.2f}x" if ref_rate else "n/a",
                    "note": "median run less the median no-op run",
                }
            )
    return rows

