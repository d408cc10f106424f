"""
Blocks: what a rename, an edit in the middle, a cut-off upload and a file of
text cost, in bytes on the wire and in time, A → B.

Each client goes through a TCP proxy of its own (``boxsync.testing.Proxy``)
that counts the bytes it carries each way, so the figures do not trust the
code's own counters. Each row is a whole ``boxsync-client --once`` on A and
then on B, process start-up included, but those with both clients running:
timed from the change until B has it. The reference for a new file is curl
``PUT`` then ``GET`` of a file of the same size through nginx, in the same
run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable

from boxsync.blocks import recipe_of
from boxsync.testing import Client, Proxy, Server, wait_until

from .measure import mib
from .reference import Nginx, curl, ensure_nginx


def _random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // 2**20):
            f.write(os.urandom(2**20))


def _text(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        n = 0
        while f.tell() < size:
            f.write(b"2026-12-05T12:%02d:%02d INFO request %d served in %d ms\n" % (n // 60 % 60, n % 60, n, n % 97))
            n += 1


def _both(a: Client, b: Client, up: Proxy, down: Proxy) -> tuple[float, int, int]:
    """
    A then B, each once: the seconds, and the bytes A sent up and B fetched.
    """
    up.carried()
    down.carried()
    start = time.perf_counter()
    a.once(timeout=3600)
    b.once(timeout=3600)
    seconds = time.perf_counter() - start
    return seconds, sum(up.carried()), sum(down.carried())


def _live(
    a: Client, b: Client, up: Proxy, down: Proxy, what: str, change: Callable[[], object], arrived: Callable[[], bool]
) -> tuple[float, int, int]:
    """
    Make C{change} in A's folder with both clients running (and in sync):
    the seconds until B shows it (C{arrived}, polled every millisecond),
    and the bytes A sent up and B fetched from the change until both
    clients have stopped.
    """
    a.start()
    b.start()
    try:
        (a.folder / "warm.txt").write_text(what)
        wait_until(
            lambda: (b.folder / "warm.txt").exists() and (b.folder / "warm.txt").read_text() == what,
            what="the clients to connect",
        )
        up.carried()
        down.carried()
        start = time.perf_counter()
        change()
        deadline = start + 600
        while not arrived():
            if time.perf_counter() > deadline:
                raise SystemExit(f"blocks: B did not get {what} in 600 s")
            time.sleep(0.001)
        seconds = time.perf_counter() - start
    finally:
        a.stop()
        b.stop()
    return seconds, sum(up.carried()), sum(down.carried())


def _moved(a: Client, b: Client, old: Path, new: str, files: int = 0) -> tuple[Callable[[], object], Callable[[], bool]]:
    """
    The change that moves C{old} to C{new} in A's folder (from outside it, a
    new file; from inside, a rename), and whether B has it under the new
    name (placed whole and checked; a folder: with its C{files} files)
    and, for a rename, no longer under the old.
    """
    gone = b.folder / old.relative_to(a.folder) if old.is_relative_to(a.folder) else None
    there = b.folder / new

    def arrived() -> bool:
        return (
            there.exists()
            and (gone is None or not gone.exists())
            and (not files or len(os.listdir(there)) == files)
        )

    return partial(os.rename, old, a.folder / new), arrived


def _edited(a: Client, b: Client, name: str, offset: int, data: bytes) -> tuple[Callable[[], object], Callable[[], bool]]:
    """
    The change that writes C{data} at C{offset} in A's file C{name}, and
    whether B's copy has them there.
    """

    def change() -> None:
        with open(a.folder / name, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def arrived() -> bool:
        try:
            with open(b.folder / name, "rb") as f:
                f.seek(offset)
                return f.read(len(data)) == data
        except FileNotFoundError:
            return False

    return change, arrived


def _row(work: str, size: int, seconds: float, sent: int, fetched: int, **more: object) -> dict[str, object]:
    return {
        "work": work,
        "size": mib(size),
        "A→B s": f"{seconds:.2f}",
        "up": mib(sent),
        "down": mib(fetched),
        **more,
    }


def run(size_mib: int, text_mib: int, use_nginx: bool = True) -> list[dict[str, object]]:
    size = size_mib * 2**20
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="boxsync-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        server = Server(root / "box").start()
        up, down = Proxy(server.port).start(), Proxy(server.port).start()
        a = Client(server, root / "a", "a", url=up.url, verbose=False)
        b = Client(server, root / "b", "b", url=down.url, verbose=False)
        a.folder.mkdir()
        b.folder.mkdir()
        try:
            source = root / "big.bin"
            _random(source, size)
            reference = "n/a"
            if use_nginx and ensure_nginx() is not None:
                with Nginx(root / "www", root / "nginx") as nginx:
                    put = curl("-T", str(source), f"{nginx.url}/big.bin")
                    get = curl("-o", str(root / "got.bin"), f"{nginx.url}/big.bin")
                    reference = f"{put + get:.2f} s"
                (root / "got.bin").unlink(missing_ok=True)
            shutil.move(source, a.folder / "big.bin")
            seconds, sent, fetched = _both(a, b, up, down)
            rows.append(_row("new file", size, seconds, sent, fetched, reference=f"nginx PUT+GET {reference}"))
            # The same with both clients running: B takes the blocks as A
            # sends them (its own bytes: none in common with the first).
            _random(source, size)
            os.sync()
            rows.append(
                _row(
                    "new file, both clients running",
                    size,
                    *_live(a, b, up, down, "new.bin", *_moved(a, b, source, "new.bin")),
                    reference=f"nginx PUT+GET {reference}",
                )
            )
            (a.folder / "new.bin").unlink()
            _both(a, b, up, down)
            os.rename(a.folder / "big.bin", a.folder / "renamed.bin")
            rows.append(_row("rename", size, *_both(a, b, up, down)))
            renamed = _moved(a, b, a.folder / "renamed.bin", "live.bin")
            rows.append(_row("rename, both clients running", size, *_live(a, b, up, down, "live.bin", *renamed)))
            os.rename(a.folder / "live.bin", a.folder / "renamed.bin")
            _both(a, b, up, down)
            with open(a.folder / "renamed.bin", "r+b") as f:
                f.seek(size // 2)
                f.write(os.urandom(4096))
            rows.append(_row("4 KiB overwritten in the middle", size, *_both(a, b, up, down)))
            edited = _edited(a, b, "renamed.bin", size // 2 + 8192, os.urandom(4096))
            rows.append(_row("4 KiB overwritten, both clients running", size, *_live(a, b, up, down, "edit", *edited)))
            _text(a.folder / "app.log", text_mib * 2**20)
            rows.append(_row("log text", text_mib * 2**20, *_both(a, b, up, down)))
            folder = a.folder / "photos"
            folder.mkdir()
            for n in range(1000):
                (folder / f"{n:04d}.txt").write_bytes(os.urandom(4096))
            _both(a, b, up, down)
            os.rename(folder, a.folder / "renamed-photos")
            rows.append(_row("rename of a folder of 1,000 × 4 KiB", 1000 * 4096, *_both(a, b, up, down)))
            rows.append(
                _row(
                    "rename of that folder, both clients running",
                    1000 * 4096,
                    *_live(a, b, up, down, "photos", *_moved(a, b, a.folder / "renamed-photos", "photos", files=1000)),
                )
            )
            rows.append(_resumed(root, server, size))
        finally:
            up.stop()
            down.stop()
            server.kill()
    return rows


def _resumed(root: Path, server: Server, size: int) -> dict[str, object]:
    """
    A new file whose upload is killed (kill -9) once half its blocks are on
    the server, then sent again: how much of it goes up the second time. The
    first try goes through a link slowed to take ~10 s, so the kill lands
    halfway at any size.
    """
    proxy = Proxy(server.port, rate=max(size / 10, 2**20)).start()
    c = Client(server, root / "c", "c", url=proxy.url, verbose=False)
    c.folder.mkdir()
    data = c.folder / "cut.bin"
    _random(data, size)
    blocks = len(recipe_of(data).blocks)
    sent = server.box / ".boxsync" / "blocks"
    try:
        c.start()
        wait_until(lambda: len(list(sent.iterdir())) >= blocks // 2, timeout=3600, what="half the blocks")
        c.kill()
        kept = sum(entry.stat().st_size for entry in sent.iterdir() if not entry.name.startswith("."))
        proxy.rate = None
        proxy.carried()
        start = time.perf_counter()
        c.once(timeout=3600)
        seconds = time.perf_counter() - start
        # Up only: c also fetches what the box holds.
        again = proxy.carried()[0]
    finally:
        c.kill()
        proxy.stop()
    # What went up again beyond what the server did not have yet.
    resent = max(0, again - (size - kept))
    return _row(
        "upload killed at 50 %, then resumed (the resume)", size, seconds, again, 0,
        reference=f"{100 * kept / size:.0f} % kept, {100 * resent / size:.1f} % re-sent",
    )
