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

import os
import re
from pathlib import Path

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import backoffs, output, put, record, requests_in_log, staged, stop_and_check, temp_files
from tests.faults import server  # noqa: F401 (the fixture)

#: Room left on the "disk": any one file may grow to this size.
ROOM = 4 * 2**20

#: No periodic rescan during the test: every try the client makes comes
#: from its back-off, and is counted as such.
NO_RESCAN = ["--rescan", "600"]


def tries(client: Client) -> int:
    """
    How many times the client started downloading big.bin.
    """
    return output(client).count("download big.bin (")


def check_backing_off(client: Client, attempts: int) -> None:
    """
    The client made C{attempts} tries, each after a longer wait than the
    one before: it is backing off, not spinning.
    """
    delays = backoffs(client)
    assert len(delays) >= attempts - 1, delays
    assert delays == sorted(delays), delays
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
        wait_until(lambda: requests_in_log(server, "PUT", "big.bin") >= 4, timeout=60, what="four tries")
        assert output(server).count('"PUT /files/big.bin HTTP/1.1" 507') == requests_in_log(server, "PUT", "big.bin")
        # Nothing of it committed, nothing left in staging; the rest synced.
        assert tree(server.box) == {"small.txt": tree(a.folder)["small.txt"]}
        assert not staged(server.box)
        assert "big.bin: HTTP 507: no space left in the box" in output(a)
        assert "resyncing in" in output(a) and "a change raced" not in output(a)
        check_backing_off(a, requests_in_log(server, "PUT", "big.bin"))
        # The server keeps serving.
        status, _ = put(server, "other.txt", b"still serving", base=0)
        assert status == 201
        # Room again: the client's next try goes through.
        server.process.set_file_size_limit(None)  # type: ignore[union-attr]
        wait_until(lambda: "big.bin" in tree(server.box), timeout=60, what="the upload once there is room")
        wait_until(lambda: tree(a.folder) == tree(server.box), what="a to be in sync")
    finally:
        a.kill()
    stop_and_check(server, "server disk full", requests_in_log(server, "PUT", "big.bin") - 1)


@pytest.mark.slow
def test_client_disk_full_during_a_download(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir()
    (a.folder / "big.bin").write_bytes(os.urandom(4 * ROOM))
    (a.folder / "small.txt").write_text("fits")
    a.once()
    b = Client(server, tmp_path / "b", "b", options=NO_RESCAN, file_size_limit=ROOM).start()
    try:
        # The server logs no GET that b cut short: count b's tries.
        wait_until(lambda: tries(b) >= 4, timeout=60, what="four tries")
        # Nothing half-written in b's folder; the file that fits is there.
        assert tree(b.folder) == {"small.txt": tree(a.folder)["small.txt"]}
        assert "big.bin: no space left on this disk (File too large)" in output(b)
        check_backing_off(b, tries(b))
        reasons = re.findall(r"resyncing in [\d.]+ s: (.*)", output(b))
        assert set(reasons) == {"big.bin: no space left on this disk (File too large)"}
        # Room again: b goes on from what it had, and finishes.
        b.process.set_file_size_limit(None)  # type: ignore[union-attr]
        wait_until(lambda: tree(b.folder) == tree(a.folder), timeout=60, what="the download once there is room")
        assert not temp_files(b.folder)
        assert '"GET /files/big.bin HTTP/1.1" 206' in output(server)
    finally:
        b.kill()
    record("client disk full", faults=tries(b) - 1, files=len(tree(b.folder)))
