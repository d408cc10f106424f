"""
Blocks with real processes, the bytes on the wire counted by the proxy
each client goes through (not by the code's own counters): a rename, a
copy, an edit in the middle and a folder of text move almost nothing; an
upload cut off by a kill -9 of the client or of the server resumes with
the blocks the server kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.blocks import recipe_of_bytes
from boxsync.client.status import read_status
from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import Proxy, a_big_file_flows_while_sent, converged, sha
from tests.helpers import edit_keeping_stamps
from tests.faults import server  # noqa: F401 (the fixture)

MiB = 2**20


@pytest.fixture
def pair(tmp_path: Path, server: Server) -> Iterator[tuple[Client, Proxy, Client, Proxy]]:
    """
    Clients a and b, each through a proxy of its own that counts its bytes.
    """
    proxies = [Proxy(server.port).start(), Proxy(server.port).start()]
    a = Client(server, tmp_path / "a", "a", url=proxies[0].url)
    b = Client(server, tmp_path / "b", "b", url=proxies[1].url)
    try:
        yield a, proxies[0], b, proxies[1]
    finally:
        for client in (a, b):
            client.kill()
        for proxy in proxies:
            proxy.stop()


def sync_both(a: Client, b: Client) -> None:
    a.once()
    b.once()
    assert converged(a.folder, b.folder)


def carried(up: Proxy, down: Proxy) -> tuple[int, int]:
    """
    The bytes a sent up and b fetched since the last call.
    """
    return up.carried()[0], down.carried()[1]


def renamed_in_place(a: Client, b: Client, up: Proxy, down: Proxy, old: str, new: str, inside: str = "") -> None:
    """
    Rename C{old} to C{new} on a: under a MiB moves either way, and b's
    file (C{inside} the folder renamed) keeps its mtime: moved, not fetched.
    """
    mtime = (b.folder / old / inside).stat().st_mtime_ns
    os.rename(a.folder / old, a.folder / new)
    sync_both(a, b)
    assert max(carried(up, down)) < MiB
    assert (b.folder / new / inside).stat().st_mtime_ns == mtime


def test_a_rename_a_copy_and_an_edit_move_almost_nothing(
    server: Server, pair: tuple[Client, Proxy, Client, Proxy]
) -> None:
    a, up, b, down = pair
    a.folder.mkdir(parents=True)
    data = os.urandom(64 * MiB)
    (a.folder / "video.bin").write_bytes(data)
    sync_both(a, b)
    assert min(carried(up, down)) > 64 * MiB
    # A rename: the server has every block, b moves its own file in place.
    renamed_in_place(a, b, up, down, "video.bin", "renamed.bin")
    assert set(tree(b.folder)) == {"renamed.bin"}
    # A copy: nothing new either way.
    shutil.copyfile(a.folder / "renamed.bin", a.folder / "copy.bin")
    sync_both(a, b)
    assert max(carried(up, down)) < MiB
    # An edit in the middle: a block or two each way.
    edited = data[: 32 * MiB] + b"edited" + data[32 * MiB + 6 :]
    (a.folder / "copy.bin").write_bytes(edited)
    sync_both(a, b)
    assert max(carried(up, down)) < 10 * MiB
    assert sha((b.folder / "copy.bin").read_bytes()) == sha(edited)
    assert converged(a.folder, b.folder, server.box)


#: Runs boxsync-client (its arguments follow) and, as it exits, writes how
#: many bytes it read, as the kernel counts them (/proc/self/io's rchar:
#: files, sockets, its own modules), to the file named by its environment.
_COUNTING = """
import atexit, os, runpy, sys

def count():
    with open("/proc/self/io") as io:
        read = dict(line.split(": ") for line in io.read().splitlines())["rchar"]
    with open(os.environ["BOXSYNC_TEST_READ"], "w") as out:
        out.write(read)

atexit.register(count)
sys.argv[0] = "boxsync-client"
runpy.run_module("boxsync.client", run_name="__main__", alter_sys=True)
"""


def once_reading(client: Client) -> int:
    """
    Run C{client} once: how many bytes it read, by the kernel's count.
    """
    args = client.args("--once")
    assert args[1:3] == ["-m", "boxsync.client"]
    counted = client.folder.parent / f"read-{client.name}"
    env = {**os.environ, "BOXSYNC_TEST_READ": str(counted)}
    done = subprocess.run([args[0], "-c", _COUNTING, *args[3:]], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return int(counted.read_text())


def test_a_renamed_file_is_read_once_and_sent_as_a_rename(
    server: Server, pair: tuple[Client, Proxy, Client, Proxy]
) -> None:
    """
    A rename on a, known from the file's stamps, is hashed once to be sure
    and sent without its bytes, and b takes its own copy back without
    reading it; a renamed file whose mtime changed too is read again. A
    file edited in place with its size and mtime put back, then renamed,
    reaches b with its new bytes.
    """
    a, up, b, down = pair
    a.folder.mkdir(parents=True)
    (a.folder / "video.bin").write_bytes(os.urandom(32 * MiB))
    sync_both(a, b)
    carried(up, down)
    inode = (b.folder / "video.bin").stat().st_ino
    os.rename(a.folder / "video.bin", a.folder / "renamed.bin")
    assert 32 * MiB < once_reading(a) < 48 * MiB
    assert once_reading(b) < 16 * MiB
    assert converged(a.folder, b.folder, server.box)
    assert max(carried(up, down)) < MiB
    # b's own file, moved in place.
    assert (b.folder / "renamed.bin").stat().st_ino == inode
    # The same bytes under a new name, but a new mtime: not trusted.
    os.rename(a.folder / "renamed.bin", a.folder / "again.bin")
    later = (a.folder / "again.bin").stat().st_mtime_ns + 10**9
    os.utime(a.folder / "again.bin", ns=(later, later))
    assert once_reading(a) > 32 * MiB
    b.once()
    assert converged(a.folder, b.folder, server.box)
    assert (b.folder / "again.bin").stat().st_mtime_ns == later
    # Edited in place with its stamps put back, then renamed: new bytes.
    edited = os.urandom(32 * MiB)
    edit_keeping_stamps(a.folder / "again.bin", edited)
    os.rename(a.folder / "again.bin", a.folder / "edited.bin")
    a.once()
    b.once()
    assert converged(a.folder, b.folder, server.box)
    assert sha((b.folder / "edited.bin").read_bytes()) == sha(edited)


def read_by(client: Client) -> int:
    """
    How many bytes the running C{client} has read, by the kernel's count.
    """
    assert client.process is not None and client.process.popen is not None
    with open(f"/proc/{client.process.popen.pid}/io") as io:
        return int(dict(line.split(": ") for line in io.read().splitlines())["rchar"])


def test_a_live_client_sends_a_rename_as_a_rename(
    server: Server, pair: tuple[Client, Proxy, Client, Proxy]
) -> None:
    """
    A running client told of a rename by the folder watcher knows it by
    the file's stamps too: the file is hashed once, not cut, and its bytes
    are not sent.
    """
    a, up, b, down = pair
    a.folder.mkdir(parents=True)
    (a.folder / "video.bin").write_bytes(os.urandom(32 * MiB))
    sync_both(a, b)
    a.rescan = None  # only the watcher tells it
    a.start()
    wait_until(lambda: bool((read_status(a.folder) or {}).get("in_sync")), timeout=30, what="a in sync")
    before = read_by(a)
    carried(up, down)
    os.rename(a.folder / "video.bin", a.folder / "renamed.bin")
    wait_until(lambda: (server.box / "renamed.bin").exists() and not (server.box / "video.bin").exists(),
               timeout=30, what="the rename on the server")
    assert read_by(a) - before < 48 * MiB
    assert max(carried(up, down)) < MiB
    b.once()
    assert converged(a.folder, b.folder, server.box)


def test_a_folder_of_small_files_renamed_or_copied_moves_almost_nothing(
    server: Server, pair: tuple[Client, Proxy, Client, Proxy]
) -> None:
    """
    A folder of 1,000 small files renamed, then copied: the server takes
    their content from the files it has, b from the files it has.
    """
    a, up, b, down = pair
    (a.folder / "docs/deeper").mkdir(parents=True)
    for n in range(1000):
        (a.folder / f"docs/{'deeper/' if n % 2 else ''}{n}.txt").write_bytes(os.urandom(4096))
    sync_both(a, b)
    assert min(carried(up, down)) > 4 * MiB
    renamed_in_place(a, b, up, down, "docs", "papers", "deeper/1.txt")
    assert {path.split("/")[0] for path in tree(b.folder)} == {"papers"}
    shutil.copytree(a.folder / "papers", a.folder / "copy")
    sync_both(a, b)
    assert max(carried(up, down)) < MiB
    assert len(tree(b.folder)) == 2000
    assert converged(a.folder, b.folder, server.box)


def test_text_travels_compressed(server: Server, pair: tuple[Client, Proxy, Client, Proxy]) -> None:
    a, up, b, down = pair
    (a.folder / "logs").mkdir(parents=True)
    with open(a.folder / "logs/app.log", "wb") as f:
        for n in range(400_000):
            f.write(b"2026-12-05T12:%02d:%02d INFO request %d served in %d ms\n" % (n // 60 % 60, n % 60, n, n % 97))
    size = (a.folder / "logs/app.log").stat().st_size
    assert size > 20 * MiB
    sync_both(a, b)
    sent, fetched = carried(up, down)
    assert sent < size / 10 and fetched < size / 10, (sent, fetched, size)


def test_an_upload_killed_midway_resumes(tmp_path: Path, server: Server) -> None:
    """
    A kill -9 of the client once half the blocks are on the server, then of
    the server itself: each time, what came before is not sent again.
    """
    proxy = Proxy(server.port, rate=16 * MiB).start()
    a = Client(server, tmp_path / "a", "a", url=proxy.url)
    try:
        a.folder.mkdir(parents=True)
        data = os.urandom(160 * MiB)
        (a.folder / "big.bin").write_bytes(data)
        blocks = {block.sha256: block.size for block in recipe_of_bytes(data).blocks}
        sent = server.box / ".boxsync/blocks"

        def kept() -> set[str]:
            # Whole blocks only: a block still being written has a temporary name.
            return {p.name for p in sent.iterdir()} & set(blocks)

        a.start()
        wait_until(lambda: len(kept()) >= len(blocks) // 3, timeout=60, what="a third of the blocks")
        a.kill()
        server.kill()
        server.start()
        there = kept()
        assert len(blocks) // 3 <= len(there) < len(blocks)
        proxy.carried()
        a.once(timeout=120)
        assert sha((server.box / "big.bin").read_bytes()) == sha(data)
        # What the server kept was not sent again: the rest of the blocks,
        # and no more than a MiB of requests around them.
        rest = sum(size for sha256, size in blocks.items() if sha256 not in there)
        assert rest <= proxy.carried()[0] < rest + MiB
    finally:
        a.kill()
        proxy.stop()


def test_a_download_killed_midway_resumes(tmp_path: Path, server: Server) -> None:
    """
    A kill -9 of the client halfway through a download by blocks: started
    again, it keeps the blocks already in its temporary file and fetches
    only the rest.
    """
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir(parents=True)
    data = os.urandom(96 * MiB)
    (a.folder / "big.bin").write_bytes(data)
    a.once()
    proxy = Proxy(server.port, rate=12 * MiB).start()
    b = Client(server, tmp_path / "b", "b", url=proxy.url)
    try:
        b.start()
        temp = b.folder / ".boxsync/tmp"
        wait_until(
            lambda: any(p.name.startswith("dl-") and p.stat().st_size > 40 * MiB for p in temp.glob("dl-*")),
            timeout=60,
            what="half the download",
        )
        b.kill()
        proxy.rate = None
        proxy.carried()
        b.once(timeout=120)
        assert sha((b.folder / "big.bin").read_bytes()) == sha(data)
        # What came before the kill was not fetched again.
        assert proxy.carried()[1] < len(data) * 0.7
    finally:
        b.kill()
        proxy.stop()


def test_a_big_file_reaches_a_live_b_while_a_still_sends_it(tmp_path: Path, server: Server) -> None:
    a_big_file_flows_while_sent(tmp_path, server, server, server.box)
