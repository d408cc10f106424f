"""
A full disk, on the server during an upload and on a client during a
download. The full disk is a cap on the size of any file the process writes
(RLIMIT_FSIZE, lifted later with prlimit): a write past it fails with EFBIG,
as a write to a full file system fails with ENOSPC.

The transfer fails with a clear error and commits nothing, the other side
keeps working, and the client tries again later, backing off, rather than
spinning; once there is room again it finishes by itself.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.blocks import recipe_of
from boxsync.client.room import FLOOR
from boxsync.testing import Client, Proxy, Server, tree, wait_until
from tests.faults import (
    backing_off,
    backoffs,
    get,
    output,
    put,
    record,
    sha,
    staged,
    stop_and_check,
    temp_files,
)
from tests.faults import server  # noqa: F401 (the fixture)

#: Room left on the "disk": any one file may grow to this size.
ROOM = 4 * 2**20

#: No periodic rescan during the test: every try the client makes comes
#: from its back-off, and is counted as such.
NO_RESCAN = ["--rescan", "600"]


def commits(server: Server) -> int:
    """
    How many times the server was asked to commit a file by its blocks.
    """
    return output(server).count('"POST /blocks/commit HTTP/1.1"')


def tries(client: Client) -> int:
    """
    How many times the client started downloading big.bin.
    """
    return output(client).count("download big.bin (")


def check_backing_off(client: Client, attempts: int) -> None:
    """
    The client made C{attempts} tries, each after a longer wait than the
    one before up to the cap: it is backing off, not spinning.
    """
    delays = backoffs(client)
    assert len(delays) >= attempts - 1, delays
    assert backing_off(delays), delays
    assert attempts <= len(delays) + 1


@pytest.mark.slow
def test_server_disk_full_during_an_upload(tmp_path: Path, server: Server) -> None:
    server.process.set_file_size_limit(ROOM)  # type: ignore[union-attr]
    a = Client(server, tmp_path / "a", "a", options=NO_RESCAN)
    a.folder.mkdir()
    (a.folder / "big.bin").write_bytes(os.urandom(4 * ROOM))
    (a.folder / "small.txt").write_text("fits")
    a.start()
    try:
        # big.bin moves by blocks: they fit, the file they make does not.
        wait_until(lambda: commits(server) >= 4, timeout=60, what="four tries")
        assert output(server).count('"POST /blocks/commit HTTP/1.1" 507') == commits(server)
        # Nothing of it committed, nothing left in staging; the rest synced.
        assert tree(server.box) == {"small.txt": tree(a.folder)["small.txt"]}
        assert not staged(server.box)
        assert "big.bin: HTTP 507: no space left in the box" in output(a)
        assert "resyncing in" in output(a) and "a change raced" not in output(a)
        check_backing_off(a, commits(server))
        # The server keeps serving.
        status, _ = put(server, "other.txt", b"still serving", base=0)
        assert status == 201
        # Room again: the client's next try goes through.
        server.process.set_file_size_limit(None)  # type: ignore[union-attr]
        wait_until(lambda: "big.bin" in tree(server.box), timeout=60, what="the upload once there is room")
        wait_until(lambda: tree(a.folder) == tree(server.box), what="a to be in sync")
    finally:
        a.kill()
    stop_and_check(server, "server disk full", commits(server) - 1)


@pytest.mark.slow
def test_client_disk_full_during_a_download(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir()
    (a.folder / "big.bin").write_bytes(os.urandom(4 * ROOM))
    (a.folder / "small.txt").write_text("fits")
    a.once()
    # b goes through a proxy that counts what it receives.
    proxy = Proxy(server.port).start()
    b = Client(server, tmp_path / "b", "b", url=proxy.url, options=NO_RESCAN, file_size_limit=ROOM).start()
    try:
        # The server logs no GET that b cut short: count b's tries.
        wait_until(lambda: tries(b) >= 4, timeout=60, what="four tries")
        # Nothing half-written in b's folder; the file that fits is there.
        assert tree(b.folder) == {"small.txt": tree(a.folder)["small.txt"]}
        assert "big.bin: no space left on this disk (File too large)" in output(b)
        check_backing_off(b, tries(b))
        reasons = re.findall(r"resyncing in [\d.]+ s: (.*)", output(b))
        assert set(reasons) == {"big.bin: no space left on this disk (File too large)"}
        # Room again: b goes on from what it had (the blocks it wrote are
        # not fetched again), and finishes.
        # Counted once the try under way has failed too (the next waits
        # for the back-off).
        wait_until(lambda: output(b).count("bytes): failed") >= tries(b), what="the last try to fail")
        proxy.carried()
        b.process.set_file_size_limit(None)  # type: ignore[union-attr]
        wait_until(lambda: tree(b.folder) == tree(a.folder), timeout=60, what="the download once there is room")
        assert not temp_files(b.folder)
        # Less than the whole file came down: not every block was fetched
        # again (counted by the proxy, which no log lags behind).
        assert len(recipe_of(a.folder / "big.bin").blocks) > 1
        assert proxy.carried()[1] < 4 * ROOM
    finally:
        b.kill()
        proxy.stop()
    record("client disk full", faults=tries(b) - 1, files=len(tree(b.folder)))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """
    A real file system of 16 MiB (a tmpfs), mounted for the test: a disk
    that really fills up, for the server's box and its index alike.
    """
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """
    Fill C{disk} with a file of its own until no room is left, then give
    back C{leave} bytes of it; return the file.
    """
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def room(disk: Path) -> int:
    st = os.statvfs(disk)
    return st.f_bavail * st.f_frsize


@pytest.mark.slow
def test_server_commit_on_a_full_disk_is_all_or_nothing(tmp_path: Path, small_disk: Path) -> None:
    """
    An upload that takes the disk's last bytes, so that its bytes are placed
    but its index commit cannot be written: the box is put back as it was,
    the answer is 507, and every GET still sends the bytes its ETag names.
    Sizes from the last free byte down are tried, so one of them fails at
    the index and not before.
    """
    server = Server(small_disk / "box").start()
    try:
        status, first = put(server, "doc.bin", b"v1" * 4096, base=0)
        assert status == 201
        filler = fill(small_disk, leave=256 * 1024)
        answers = []
        size = room(small_disk)
        while size > 0:
            status, answer = put(server, "doc.bin", os.urandom(size), base=int(str(first["seq"])))
            answers.append((status, answer.get("error")))
            assert status in (201, 507), answers
            got, headers, body = get(server, "doc.bin")
            assert got == 200 and sha(body) in headers["ETag"], "the box and the index disagree"
            if status == 201:
                break
            size -= 16 * 1024
        assert any("index" in str(error) for _, error in answers), answers
        # Room again: the same upload goes through, and a new client gets it.
        filler.unlink()
        status, _ = put(server, "doc.bin", b"v2" * 4096)
        assert status == 201
        fresh = Client(server, tmp_path / "fresh", "fresh", rescan=None)
        fresh.folder.mkdir()
        fresh.once()
        assert tree(fresh.folder) == tree(server.box)
    finally:
        server.kill()
    stop_and_check(server, "server index on a full disk", len(answers))


@pytest.mark.slow
def test_a_client_on_a_small_disk_keeps_room_and_goes_on_once_there_is_more(
    tmp_path: Path, small_disk: Path, server: Server
) -> None:
    """
    B's folder is a real disk of 16 MiB; A has 28 MiB of large files and
    small ones. B takes what fits, keeps room on its disk (it never meets a
    full one: its record of the folder, in SQLite on that disk, keeps being
    written), says which files wait and why, and once A deletes some, takes
    those deletes and the rest. Before, B filled the disk: every session
    then failed on "database or disk is full", the deletes that would have
    made room included, and the files it deleted stayed on the disk, set
    aside for a rename, for 10 minutes.
    """
    a = Client(server, tmp_path / "a", "a", rescan=None)
    a.folder.mkdir()
    for n in range(7):
        (a.folder / f"big{n}.bin").write_bytes(os.urandom(4 << 20))
    for n in range(20):
        (a.folder / f"small{n}.txt").write_text(f"small {n}")
    a.once()
    b = Client(server, small_disk / "b", "b", rescan=None)
    b.folder.mkdir()
    b.start()
    try:
        wait_until(lambda: "to download" in output(b) and len(tree(b.folder)) >= 20, what="b to have what fits")
        assert room(small_disk) >= FLOOR
        waiting = re.findall(r"(big\d\.bin): no space left on this disk \(4\.0 MiB to download, [\d.]+ \w*B free", output(b))
        assert waiting and set(waiting).isdisjoint(tree(b.folder))
        for n in range(5):
            os.unlink(a.folder / f"big{n}.bin")
        a.once()
        wait_until(lambda: tree(b.folder) == tree(a.folder), timeout=60, what="b in sync with a")
        assert "No space left on device" not in output(b)
        assert "disk is full" not in output(b)
    finally:
        b.kill()
    stop_and_check(server, "client keeps room on a small disk", len(set(waiting)), b.folder)


@pytest.mark.slow
def test_a_client_keeps_the_room_it_is_told_to(tmp_path: Path, small_disk: Path, server: Server) -> None:
    """
    C{--keep-free 50%} on a disk of 16 MiB: B takes what leaves 8 MiB free,
    and says what waits and why.
    """
    a = Client(server, tmp_path / "a", "a", rescan=None)
    a.folder.mkdir()
    for n in range(3):
        (a.folder / f"big{n}.bin").write_bytes(os.urandom(3 << 20))
    a.once()
    b = Client(server, small_disk / "b", "b", rescan=None, options=["--keep-free", "50%"])
    b.folder.mkdir()
    ran = subprocess.run(b.args("--once"), capture_output=True, text=True, timeout=120)
    assert ran.returncode == 1
    assert "3.0 MiB to download" in ran.stderr and "8.0 MiB kept free" in ran.stderr
    assert 1 <= len(tree(b.folder)) < 3
    assert room(small_disk) >= 8 << 20


@pytest.mark.slow
def test_on_a_full_box_the_oldest_kept_versions_make_room_for_new_files(tmp_path: Path, small_disk: Path) -> None:
    """
    The box's disk (16 MiB) holds a file and two of its earlier versions,
    kept for their 30 days, when a new file of 5 MiB comes: its commit
    finds the disk full (507), the server removes the oldest kept versions
    to make room, and the client's next try goes through. Before, every
    try was refused until an hourly tidy a month later, or an operator.
    """
    server = Server(small_disk / "box").start()
    a = Client(server, tmp_path / "a", "a", rescan=None)
    a.folder.mkdir()
    a.start()
    try:
        for _ in range(3):
            data = os.urandom(3 << 20)
            (a.folder / "doc.bin").write_bytes(data)
            wait_until(lambda: tree(server.box).get("doc.bin") == sha(data), what="doc.bin's version in the box")
        (a.folder / "new.bin").write_bytes(os.urandom(5 << 20))
        wait_until(lambda: tree(server.box) == tree(a.folder), timeout=60, what="new.bin in the box")
        assert output(server).count('"POST /blocks/commit HTTP/1.1" 507') >= 1
        assert "the box's disk is full: the oldest kept versions go" in output(server)
        assert re.search(r"tidied the box: [12] old versions", output(server))
    finally:
        a.kill()
        server.kill()
    stop_and_check(server, "a full box makes room", output(server).count(" 507 "), a.folder)


@pytest.mark.slow
def test_a_box_the_server_may_not_write_is_said_in_one_line_and_synced_once_it_may(
    tmp_path: Path, server: Server
) -> None:
    """
    The box, and its staging folder, made immutable (as a wrong owner or a
    read-only mount would leave them): every upload is refused with a 503
    that says the server cannot write in its box, the client shows that and
    tries again, and the server's log says it in one line (no traceback,
    not once a request). Before, each upload was a 500, "internal server
    error", and a traceback in the log. Once the box may be written again,
    everything arrives.
    """
    immutable = [server.box, server.box / ".boxsync" / "staging"]
    a = Client(server, tmp_path / "a", "a", rescan=None)
    a.folder.mkdir()
    a.start()
    try:
        for folder in immutable:
            done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot make a folder immutable here (needs root and ext4 or tmpfs): {done.stderr}")
        (a.folder / "small.txt").write_text("small")
        (a.folder / "big.bin").write_bytes(os.urandom(3 << 20))
        said = "the server cannot write in its box"
        wait_until(lambda: output(a).count(said) >= 4, what="a to be told, more than once")
        assert output(server).count(said) == 1
        assert "Traceback" not in output(server) and '" 500 ' not in output(server)
    finally:
        for folder in immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    try:
        wait_until(lambda: tree(server.box) == tree(a.folder), timeout=60, what="a's files in the box")
    finally:
        a.kill()
    stop_and_check(server, "a box the server may not write", 2, a.folder)
