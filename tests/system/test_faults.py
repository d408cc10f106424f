"""
Faults injected into real processes: kill -9 of the server or of a client
in the middle of a transfer. Afterwards there is no partial file anywhere,
the server's index matches its box and no seq is used twice, and everything
finishes by itself.

The other faults are in test_faults_*.py; docs/reliability.md lists them all.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from boxsync.blocks import recipe_of
from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import committed_seqs, output, put, record, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)

SIZE = 384 * 2**20


def big_file(path: Path, size: int = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(2**20)
    with open(path, "wb") as f:
        for i in range(size // 2**20):
            f.write(block[:-8] + i.to_bytes(8, "big"))


def staged_bytes(box: Path) -> int:
    staging = box / ".boxsync/staging"
    return sum(p.stat().st_size for p in staging.iterdir()) if staging.exists() else 0


def temp_bytes(folder: Path) -> int:
    tmp = folder / ".boxsync/tmp"
    return sum(p.stat().st_size for p in tmp.iterdir()) if tmp.exists() else 0


def no_partial_files(folder: Path, expected: dict[str, str]) -> None:
    for name, digest in tree(folder).items():
        assert expected.get(name) == digest, f"{folder / name} is not a whole file"


@pytest.mark.slow
def test_server_killed_mid_upload(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    big_file(a.folder / "big.bin")
    expected = tree(a.folder)
    a.start()
    try:
        wait_until(lambda: staged_bytes(server.box) > 2**20, what="the upload to start")
        server.kill()
        no_partial_files(server.box, expected)
        server.start()
        # The half upload is gone, and the client finishes by itself.
        wait_until(lambda: tree(server.box) == expected, timeout=120, what="the upload to finish")
        assert staged_bytes(server.box) == 0
    finally:
        a.kill()
    b = Client(server, tmp_path / "b", "b")
    b.once()
    assert tree(b.folder) == expected
    stop_and_check(server, "server killed mid-upload", 1, b.folder)


@pytest.mark.slow
def test_server_killed_mid_download(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    big_file(a.folder / "big.bin")
    (a.folder / "small.txt").write_text("small")
    expected = tree(a.folder)
    a.once(timeout=120)
    before = committed_seqs(server)
    b = Client(server, tmp_path / "b", "b").start()
    try:
        wait_until(lambda: temp_bytes(b.folder) > 8 * 2**20, what="the download to start")
        server.kill()
        assert 0 < temp_bytes(b.folder) < SIZE
        no_partial_files(b.folder, expected)
        fetched = blocks_sent(server)
        server.start()
        # b reconnects by itself and goes on from where it stopped: the
        # blocks it had are not fetched again.
        wait_until(lambda: tree(b.folder) == expected, timeout=120, what="the download to finish")
        assert temp_bytes(b.folder) == 0
        assert fetched > 0 and blocks_sent(server) - fetched < len(recipe_of(a.folder / "big.bin").blocks)
        # No seq is used twice: the next commit comes after every earlier one.
        status, answer = put(server, "after.txt", b"after the restart", base=0)
        assert status == 201 and int(answer["seq"]) > max(before)  # type: ignore[call-overload]
        wait_until(lambda: "after.txt" in tree(b.folder), what="a live change after the restart")
    finally:
        b.kill()
    stop_and_check(server, "server killed mid-download", 1, b.folder)


@pytest.mark.slow
def test_client_killed_mid_download_resumes(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    big_file(a.folder / "big.bin")
    expected = tree(a.folder)
    a.once(timeout=120)
    b = Client(server, tmp_path / "b", "b").start()
    wait_until(lambda: temp_bytes(b.folder) > 8 * 2**20, what="the download to start")
    b.process.popen.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    b.process.wait()  # type: ignore[union-attr]
    partial = temp_bytes(b.folder)
    assert 0 < partial < SIZE
    no_partial_files(b.folder, expected)
    before = blocks_sent(server)
    b.once(timeout=120)
    assert tree(b.folder) == expected
    assert temp_bytes(b.folder) == 0
    # It went on from where it stopped: the blocks it had were not fetched again.
    assert before > 0 and blocks_sent(server) - before < len(recipe_of(a.folder / "big.bin").blocks)
    record("client killed mid-download", faults=1, files=len(tree(b.folder)))


def blocks_sent(server: Server) -> int:
    """
    How many blocks the server has sent so far, as its log says.
    """
    return output(server).count('"GET /blocks/')


@pytest.mark.slow
def test_client_killed_mid_upload(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    big_file(a.folder / "big.bin")
    expected = tree(a.folder)
    a.start()
    wait_until(lambda: staged_bytes(server.box) > 2**20, what="the upload to start")
    a.kill()
    # The server drops the half upload as soon as the connection goes.
    wait_until(lambda: staged_bytes(server.box) == 0, what="the staging file to go")
    no_partial_files(server.box, expected)
    a.once(timeout=120)
    assert tree(server.box) == expected
    stop_and_check(server, "client killed mid-upload", 1)
