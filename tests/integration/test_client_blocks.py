"""
The real client over the real server, moving large files by their blocks:
an edit in the middle moves a block or two each way, an interrupted upload
resumes with what the server kept, a rename elsewhere is moved back in
place without a byte fetched, a copy is taken from the local file, and a
block that arrives corrupted is refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Callable, TypeVar

import pytest
import pytest_twisted

from boxsync.blocks import BLOCK_MAX, Block, Recipe, recipe_of_bytes
from boxsync import fs
from boxsync.client import blockwise, scanner, transfers
from boxsync.client.api import BoxsyncAPI
from boxsync.client.placing import set_aside_path
from boxsync.client.transfers import Transfers
from boxsync.client.errors import CorruptBlock, NotFound
from boxsync.client.prefetch import IDLE_SECONDS, Prefetch
from boxsync.client.blockwise import Blockwise, Fetched
from boxsync.server.blockstore import LocalBlockStore
from boxsync.wire import Download, Incoming
from boxsync.wire.blocks import BlockCommit
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from tests.helpers import Folder, RunningServer, count_hashing, edit_keeping_stamps, file_sha, sha, eventually, timed

MiB = 2**20

_T = TypeVar("_T")


@pytest.fixture
def moved(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """
    The sizes of the blocks each client sends and fetches, as they pass
    through its API.
    """
    seen: dict[str, list[int]] = {}
    real_put, real_get = BoxsyncAPI.put_block, BoxsyncAPI.get_block

    async def put_block(self: BoxsyncAPI, block: Block, data: bytes, codings: Any = ()) -> int:
        seen.setdefault(f"{self.client_name} up", []).append(len(data))
        return await real_put(self, block, data, codings)

    async def get_block(self: BoxsyncAPI, block: Block, wait: float = 0) -> bytes:
        data = await real_get(self, block, wait)
        seen.setdefault(f"{self.client_name} down", []).append(len(data))
        return data

    monkeypatch.setattr(BoxsyncAPI, "put_block", put_block)
    monkeypatch.setattr(BoxsyncAPI, "get_block", get_block)
    return seen


async def pair(folders: Any, name: str, size: int) -> tuple[Folder, Folder, bytes]:
    """
    Clients a and b, both with the file C{name} of C{size} random bytes.
    """
    a, b = folders("a"), folders("b")
    data = os.urandom(size)
    (a.root / name).write_bytes(data)
    await a.sync()
    await b.sync()
    return a, b, data


def blocks_in(data: bytes) -> int:
    return len(recipe_of_bytes(data).blocks)


def counted(calls: list[object], real: Callable[..., _T]) -> Callable[..., _T]:
    """
    C{real}, each of its calls recorded in C{calls}.
    """

    def counting(*args: Any, **kwargs: Any) -> _T:
        calls.append(args)
        return real(*args, **kwargs)

    return counting


@pytest_twisted.ensureDeferred
async def test_an_edit_in_the_middle_moves_a_block_or_two(
    folders: Any, server: RunningServer, moved: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = folders("a"), folders("b")
    data = os.urandom(12 * MiB)
    (a.root / "big.bin").write_bytes(data)
    await a.sync()
    assert (server.box / "big.bin").read_bytes() == data
    assert len(moved["a up"]) == blocks_in(data)
    await b.sync()
    assert (b.root / "big.bin").read_bytes() == data
    assert sum(moved["b down"]) == len(data)
    moved.clear()
    edited = data[: 6 * MiB] + b"a few new bytes" + data[6 * MiB + 5 :]
    (a.root / "big.bin").write_bytes(edited)
    # Each side reads the file once: a cuts it as its scan hashes it, and b
    # takes its old copy's blocks from where the server's recipe of that
    # version puts them (its stamps unchanged), without cutting it.
    cut: list[object] = []
    for module, name in ((scanner, "recipe_of"), (fs, "hash_file"), (blockwise, "recipe_of"), (blockwise, "Cutter")):
        monkeypatch.setattr(module, name, counted(cut, getattr(module, name)))
    # The server makes the new version once: the new blocks came first.
    assembled: list[object] = []
    monkeypatch.setattr(LocalBlockStore, "assemble", counted(assembled, LocalBlockStore.assemble))
    await a.sync()
    assert len(cut) == 1 and len(assembled) == 1
    # b's old copy's blocks are copied in the kernel, not read into b.
    read: list[int] = []
    copied: list[object] = []
    real_read = blockwise.read_block

    def reading(*args: Any, **kwargs: Any) -> bytes | None:
        data = real_read(*args, **kwargs)
        if data is not None:
            read.append(len(data))
        return data

    monkeypatch.setattr(blockwise, "read_block", reading)
    monkeypatch.setattr(blockwise, "copy_range", counted(copied, blockwise.copy_range))
    await b.sync()
    assert len(cut) == 1
    assert read == [] and len(copied) >= 2
    assert (b.root / "big.bin").read_bytes() == edited
    assert file_sha(server.box / "big.bin") == sha(edited)
    assert 1 <= len(moved["a up"]) <= 2 and sum(moved["a up"]) < 9 * MiB
    assert 1 <= len(moved["b down"]) <= 2 and sum(moved["b down"]) < 9 * MiB


@pytest_twisted.ensureDeferred
async def test_an_edit_under_a_running_client_is_read_once(
    folders: Any, server: RunningServer, moved: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A large file changed under a running client (told by its watcher) is
    cut as its look hashes it, as a scan does: its upload sends the new
    blocks without reading the file again.
    """
    a, b, data = await pair(folders, "big.bin", 12 * MiB)
    moved.clear()
    read: list[object] = []
    for module, name in ((scanner, "recipe_of"), (fs, "hash_file"), (blockwise, "recipe_of"), (blockwise, "Cutter")):
        monkeypatch.setattr(module, name, counted(read, getattr(module, name)))
    engine = a.engine()
    running = Deferred.fromCoroutine(engine.run())
    edited = data[: 6 * MiB] + b"a few new bytes" + data[6 * MiB + 5 :]
    try:
        await eventually(a.reactor, lambda: engine.in_sync)
        # Its first scan may read the file again, its stamps too new to trust.
        read.clear()
        (a.root / "big.bin").write_bytes(edited)
        engine.changed("big.bin")
        await eventually(a.reactor, lambda: (server.box / "big.bin").read_bytes() == edited)
    finally:
        engine.stop()
        await timed(running, a.reactor)
    assert len(read) == 1
    assert 0 < sum(moved["a up"]) < len(edited) / 2


@pytest_twisted.ensureDeferred
async def test_a_file_comes_with_the_mode_a_new_file_gets_here_whatever_its_size(folders: Any) -> None:
    """
    A large file, moved by its blocks, comes with the mode the umask gives
    a new file, as a small one does (not one only its owner can read).
    """
    a, b = folders("a"), folders("b")
    sizes = {"small.txt": 100, "big.bin": 12 * MiB}
    for name, size in sizes.items():
        (a.root / name).write_bytes(os.urandom(size))
    await a.sync()
    await b.sync()
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {name: stat.S_IMODE((b.root / name).stat().st_mode) for name in sizes}
    assert modes == {name: 0o666 & ~umask for name in sizes}


@pytest_twisted.ensureDeferred
async def test_without_the_recipe_of_its_version_b_cuts_its_old_copy(
    folders: Any, server: RunningServer, moved: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    When the server has no recipe of the version b has (a kept version
    dropped), b finds the blocks of its old copy by cutting it, as before.
    """
    a, b, data = await pair(folders, "big.bin", 8 * MiB)
    real = BoxsyncAPI.recipe

    async def no_kept_recipes(self: BoxsyncAPI, path: str, seq: int | None = None) -> Any:
        if seq is not None:
            raise NotFound(404, "no recipe")
        return await real(self, path)

    monkeypatch.setattr(BoxsyncAPI, "recipe", no_kept_recipes)
    cut: list[object] = []
    monkeypatch.setattr(blockwise, "recipe_of", counted(cut, blockwise.recipe_of))
    edited = data[: 4 * MiB] + b"edited" + data[4 * MiB + 6 :]
    (a.root / "big.bin").write_bytes(edited)
    await a.sync()
    moved.clear()
    await b.sync()
    assert (b.root / "big.bin").read_bytes() == edited
    assert len(cut) == 1 and sum(moved["b down"]) < 9 * MiB


@pytest_twisted.ensureDeferred
async def test_a_resumed_upload_sends_only_the_rest(
    folders: Any, server: RunningServer, moved: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = folders("a")
    data = os.urandom(16 * MiB)
    (a.root / "big.bin").write_bytes(data)
    total = blocks_in(data)
    real_put = BoxsyncAPI.put_block
    sent: list[int] = []

    async def cut_off(self: BoxsyncAPI, block: Block, data: bytes, codings: Any = ()) -> int:
        if len(sent) >= total // 2:
            raise ConnectionError("the link went down")
        sent.append(len(data))
        return await real_put(self, block, data, codings)

    monkeypatch.setattr(BoxsyncAPI, "put_block", cut_off)
    engine = a.engine()  # not --once: it would retry for good
    running = Deferred.fromCoroutine(engine.run())
    await eventually(a.reactor, lambda: engine.last_error is not None)
    engine.stop()
    await timed(running, a.reactor)
    assert not (server.box / "big.bin").exists()
    assert len(sent) == total // 2
    monkeypatch.setattr(BoxsyncAPI, "put_block", real_put)
    moved.clear()
    await a.sync()
    assert (server.box / "big.bin").read_bytes() == data
    assert len(moved.get("a up", [])) == total - total // 2


@pytest_twisted.ensureDeferred
async def test_a_rename_elsewhere_moves_the_file_back_in_place(
    folders: Any, server: RunningServer, moved: dict[str, list[int]]
) -> None:
    a, b, data = await pair(folders, "old.bin", 10 * MiB)
    moved.clear()
    os.rename(a.root / "old.bin", a.root / "new.bin")
    await a.sync()
    assert "a up" not in moved  # the server had every block
    assert (server.box / "new.bin").read_bytes() == data and not (server.box / "old.bin").exists()
    inode = (b.root / "old.bin").stat().st_ino
    await b.sync()
    assert "b down" not in moved
    assert (b.root / "new.bin").read_bytes() == data and not (b.root / "old.bin").exists()
    assert (b.root / "new.bin").stat().st_ino == inode


async def photos(folders: Any) -> tuple[Folder, Folder, dict[str, bytes], dict[str, int]]:
    """
    Clients a and b, both with a folder C{photos} of 300 small files (more
    than a batch): the files, and the inodes of b's.
    """
    a, b = folders("a"), folders("b")
    (a.root / "photos").mkdir()
    data = {f"{n:03d}.jpg": os.urandom(4096 + n) for n in range(300)}
    for name, content in data.items():
        (a.root / "photos" / name).write_bytes(content)
    await a.sync()
    await b.sync()
    return a, b, data, {name: (b.root / "photos" / name).stat().st_ino for name in data}


async def moved_in_place(a: Folder, b: Folder, data: dict[str, bytes], inodes: dict[str, int]) -> None:
    """
    Each file of C{photos} was deleted on the server before it came up again
    in C{renamed}, and b has it there, moved (its inode kept), not copied.
    """
    assert not (b.root / "photos").exists()
    for name, content in data.items():
        deleted, (old,) = await a.api.history(f"photos/{name}")
        _, (new,) = await a.api.history(f"renamed/{name}")
        assert deleted and old.ended_seq is not None and old.ended_seq < new.seq
        assert (b.root / "renamed" / name).read_bytes() == content
        assert (b.root / "renamed" / name).stat().st_ino == inodes[name], name


@pytest_twisted.ensureDeferred
async def test_a_renamed_folder_of_small_files_is_moved_in_place_elsewhere(
    folders: Any, server: RunningServer, moved: dict[str, list[int]]
) -> None:
    """
    a commits the delete of each old path before the upload of its new one,
    so b sets each file aside before it is asked for it under its new name:
    b moves its own files into the renamed folder (their inodes kept)
    rather than copying them from the old names.
    """
    a, b, data, inodes = await photos(folders)
    os.rename(a.root / "photos", a.root / "renamed")
    await a.sync()
    assert sorted(p.name for p in (server.box / "renamed").iterdir()) == sorted(data)
    await b.sync()
    await moved_in_place(a, b, data, inodes)
    assert "b down" not in moved


@pytest_twisted.ensureDeferred
async def test_a_folder_of_small_files_renamed_under_a_running_client_is_moved_in_place_elsewhere(
    folders: Any, server: RunningServer, moved: dict[str, list[int]]
) -> None:
    """
    As above with both clients running: a, told of each new path before
    each old one (as a watcher may), knows each small file for a rename by
    its bytes, and deletes its old path first.
    """
    a, b, data, inodes = await photos(folders)
    engines = [a.engine(), b.engine()]
    running = [Deferred.fromCoroutine(engine.run()) for engine in engines]
    try:
        os.rename(a.root / "photos", a.root / "renamed")
        for name in data:
            engines[0].changed(f"renamed/{name}")
        for name in data:
            engines[0].changed(f"photos/{name}")
        await eventually(
            a.reactor,
            lambda: not (b.root / "photos").exists()
            and sorted(p.name for p in (b.root / "renamed").glob("*.jpg")) == sorted(data),
        )
    finally:
        for engine in engines:
            engine.stop()
        for done in running:
            await timed(done, a.reactor)
    await moved_in_place(a, b, data, inodes)
    assert "a up" not in moved and "b down" not in moved


@pytest_twisted.ensureDeferred
async def test_a_file_set_aside_is_taken_back_unread_only_while_its_stamps_hold(
    folders: Any, server: RunningServer, moved: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    b takes the file it set aside for a rename back without reading it; one
    written to while set aside (its size and mtime kept, its ctime moved) is
    read, found changed, and fetched instead.
    """
    read = count_hashing(monkeypatch, transfers)
    a, b, data = await pair(folders, "old.bin", 10 * MiB)
    moved.clear()
    os.rename(a.root / "old.bin", a.root / "new.bin")
    await a.sync()
    await b.sync()
    assert read == [] and "b down" not in moved
    assert (b.root / "new.bin").read_bytes() == data

    real_set_aside = Transfers.set_aside

    def written_meanwhile(self: Transfers, local: Path, sha256: str, seen: Any = None) -> None:
        real_set_aside(self, local, sha256, seen)
        edit_keeping_stamps(set_aside_path(self.tmp, sha256), bytes(len(data)))

    monkeypatch.setattr(Transfers, "set_aside", written_meanwhile)
    os.rename(a.root / "new.bin", a.root / "third.bin")
    await a.sync()
    await b.sync()
    assert len(read) == 1 and sum(moved["b down"]) == len(data)
    assert (b.root / "third.bin").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_a_small_file_set_aside_is_taken_back_in_place_while_its_stamps_hold(
    folders: Any, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A small file set aside for a rename is taken back as it is (the same
    inode, not read), unless it was written to while set aside: then the
    batch brings the server's bytes instead.
    """
    a, b = folders("a"), folders("b")
    data = os.urandom(4096)
    (a.root / "new.txt").write_bytes(data)
    await a.sync()
    engine = b.engine(once=True)
    engine._transfers.blockwise = Blockwise(engine.api, engine._thread)
    event = Download("new.txt", sha(data), len(data), 1_700_000_000 * 10**9, 1, False)
    read = count_hashing(monkeypatch, transfers)

    async def set_aside_and_take(spoil: bool) -> tuple[Path, int]:
        (b.root / "old.txt").write_bytes(data)
        seen = scanner.scan_one(b.root, "old.txt", None)
        assert seen is not None
        engine._transfers.set_aside(b.root / "old.txt", seen.sha256 or "", seen)
        aside = set_aside_path(engine._transfers.tmp, seen.sha256 or "")
        inode = aside.stat().st_ino
        if spoil:
            edit_keeping_stamps(aside, bytes(len(data)))
        taken = await engine._transfers.download(event)
        assert taken is not None and taken[0].read_bytes() == data
        return taken[0], inode

    temp, inode = await set_aside_and_take(spoil=False)
    assert temp.stat().st_ino == inode and read == []
    temp.unlink()
    # Read (and found not to be the version), so the server's bytes came.
    await set_aside_and_take(spoil=True)
    assert len(read) == 1


@pytest_twisted.ensureDeferred
async def test_a_look_knows_a_rename_by_its_stamps(
    folders: Any, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A look at a new path (a job the folder watcher started) knows a file
    renamed from a path in sync by its stamps, hashed once (in a thread)
    to be sure; a hard link, or a renamed file whose mtime changed, is
    read.
    """
    monkeypatch.setattr(scanner, "RACY_NS", 0)
    a = folders("a")
    for name in ("old.bin", "kept.bin", "touched.bin"):
        (a.root / name).write_bytes(os.urandom(MiB))
    await a.sync()
    bases = {name: a.state.get(name) for name in ("old.bin", "kept.bin", "touched.bin")}
    os.rename(a.root / "old.bin", a.root / "new.bin")
    os.link(a.root / "kept.bin", a.root / "linked.bin")
    os.rename(a.root / "touched.bin", a.root / "later.bin")
    os.utime(a.root / "later.bin", ns=(1, 1))
    read = count_hashing(monkeypatch, fs)
    looks = a.engine(once=True)._looks
    new = await looks.look("new.bin")
    assert new is not None and read == [a.root / "new.bin"]
    assert (new.sha256, new.base, new.changed, new.moved_from) == (
        bases["old.bin"].sha256, 0, True, bases["old.bin"]  # type: ignore[union-attr]
    )
    for name in ("linked.bin", "later.bin"):
        found = await looks.look(name)
        assert found is not None and found.moved_from is None
    assert sorted(path.name for path in read) == ["later.bin", "linked.bin", "new.bin"]


@pytest_twisted.ensureDeferred
async def test_a_large_file_renamed_is_checked_block_by_block(
    folders: Any, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A large file known renamed by its stamps is made sure of by the blocks
    of its version, which the server has: not hashed whole. One edited in
    place with its size and mtime put back before the rename is found out
    all the same, and is no rename.
    """
    monkeypatch.setattr(scanner, "RACY_NS", 0)
    a = folders("a")
    data = {name: os.urandom(6 * MiB) for name in ("old.bin", "edited.bin")}
    for name, content in data.items():
        (a.root / name).write_bytes(content)
    await a.sync()
    bases = {name: a.state.get(name) for name in data}
    edited = bytearray(data["edited.bin"])
    edited[3 * MiB] ^= 1
    edit_keeping_stamps(a.root / "edited.bin", bytes(edited))
    os.rename(a.root / "old.bin", a.root / "new.bin")
    os.rename(a.root / "edited.bin", a.root / "later.bin")
    read = count_hashing(monkeypatch, fs)
    engine = a.engine(once=True)
    # As in a session with a server that speaks blocks.
    engine._transfers.blockwise = Blockwise(engine.api, engine._thread)
    looks = engine._looks
    new = await looks.look("new.bin")
    assert new is not None and new.moved_from == bases["old.bin"]
    assert read == []
    later = await looks.look("later.bin")
    assert later is not None and later.moved_from is None
    assert later.sha256 == sha(bytes(edited))


@pytest_twisted.ensureDeferred
async def test_a_known_recipe_is_told_in_order_and_each_block_sent_once(
    folders: Any, server: RunningServer, moved: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    An upload whose recipe is known without cutting the file (a renamed
    file, or one its look cut) tells the other clients which blocks make
    it, a run at a time in the order they are placed, as a cut does: they
    may fetch them as they arrive. A block that recurs is sent once.
    """
    a = folders("a")
    data = os.urandom(3 * MiB) + bytes(4 * BLOCK_MAX) + os.urandom(MiB)
    (a.root / "big.bin").write_bytes(data)
    recipe = recipe_of_bytes(data)
    told: list[Incoming | None] = []
    real = BoxsyncAPI.missing_blocks

    async def missing_blocks(self: BoxsyncAPI, hashes: list[str], incoming: Incoming | None = None) -> set[str]:
        told.append(incoming)
        return await real(self, hashes, incoming)

    monkeypatch.setattr(BoxsyncAPI, "missing_blocks", missing_blocks)
    monkeypatch.setattr(blockwise, "MAX_INCOMING", 3)
    await Blockwise(a.api, deferToThread).upload(
        "big.bin", a.root / "big.bin", None, 1_700_000_000 * 10**9, len(data), sha(data), False, lambda n: None, recipe
    )
    assert (server.box / "big.bin").read_bytes() == data
    placed = list(recipe.placed())
    assert [incoming.offset if incoming else None for incoming in told] == [offset for offset, _ in placed[::3]]
    assert [pair for incoming in told if incoming for pair in incoming.blocks] == [
        (block.sha256, block.size) for block in recipe.blocks
    ]
    distinct = {block.sha256: block.size for block in recipe.blocks}
    assert len(distinct) < len(recipe.blocks)
    assert sorted(moved["a up"]) == sorted(distinct.values())


@pytest_twisted.ensureDeferred
async def test_a_copy_is_taken_from_the_local_file(
    folders: Any, server: RunningServer, moved: dict[str, list[int]]
) -> None:
    a, b, data = await pair(folders, "one.bin", 6 * MiB)
    moved.clear()
    (a.root / "two.bin").write_bytes(data)
    await a.sync()
    await b.sync()
    assert "a up" not in moved and "b down" not in moved
    assert (b.root / "two.bin").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_a_block_that_arrives_corrupted_is_refused_and_fetched_again(
    folders: Any, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from boxsync.client import api

    a, b = folders("a"), folders("b")
    data = os.urandom(3 * MiB)
    (a.root / "big.bin").write_bytes(data)
    await a.sync()
    real_decode = api.coding.decode
    spoiled: list[int] = []

    def decode(body: bytes, coding: str | None, limit: int) -> bytes:
        decoded = real_decode(body, coding, limit)
        if not spoiled:
            spoiled.append(len(decoded))
            return bytes([decoded[0] ^ 1]) + decoded[1:]
        return decoded

    monkeypatch.setattr(api.coding, "decode", decode)
    with pytest.raises(CorruptBlock):
        block = recipe_of_bytes(data).blocks[0]
        await b.api.get_block(block)
    spoiled.clear()
    engine = b.engine(once=True, max_backoff=0.05)
    await b.sync(engine)
    assert spoiled and (b.root / "big.bin").read_bytes() == data
    assert not [p for p in (b.root / ".boxsync/tmp").iterdir() if p.name.startswith("dl-")]


@pytest_twisted.ensureDeferred
async def test_a_failure_among_many_blocks_ends_the_transfer(reactor: Any) -> None:
    """
    Thousands of blocks, the first of which fails at once (a refused
    connection): the rest are not started, and the failure comes back.
    """
    from boxsync.client.blockwise import IN_FLIGHT, _all

    started: list[int] = []

    def work(n: int) -> Any:
        async def one() -> None:
            started.append(n)
            if n == 0:
                raise ConnectionRefusedError("refused")

        return one

    with pytest.raises(ConnectionRefusedError):
        await timed(Deferred.fromCoroutine(_all([work(n) for n in range(5000)])), reactor)
    assert started[0] == 0 and len(started) <= IN_FLIGHT


@pytest_twisted.ensureDeferred
async def test_a_download_cut_off_keeps_the_blocks_it_wrote(
    folders: Any, server: RunningServer, moved: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = folders("a"), folders("b")
    data = os.urandom(16 * MiB)
    (a.root / "big.bin").write_bytes(data)
    await a.sync()
    total = blocks_in(data)
    real_get = BoxsyncAPI.get_block
    got: list[int] = []

    async def cut_off(self: BoxsyncAPI, block: Block) -> bytes:
        if len(got) >= total // 2:
            raise ConnectionError("the link went down")
        got.append(block.size)
        return await real_get(self, block)

    monkeypatch.setattr(BoxsyncAPI, "get_block", cut_off)
    engine = b.engine()
    running = Deferred.fromCoroutine(engine.run())
    await eventually(b.reactor, lambda: engine.last_error is not None)
    engine.stop()
    await timed(running, b.reactor)
    assert not (b.root / "big.bin").exists() and len(got) == total // 2
    monkeypatch.setattr(BoxsyncAPI, "get_block", real_get)
    moved.clear()
    await b.sync()
    assert (b.root / "big.bin").read_bytes() == data
    assert len(moved["b down"]) == total - total // 2


@pytest_twisted.ensureDeferred
async def test_blocks_of_a_file_on_its_way_are_fetched_as_they_arrive(
    reactor: Any, server: RunningServer, folders: Any, http: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Announced blocks are fetched as each reaches the server and written at
    their place; the download then takes them. A file whose blocks stop
    coming is dropped after a while.
    """
    api = folders("b").api
    clock = Clock()
    tmp_path = tmp_path / "ahead"
    tmp_path.mkdir()
    prefetch = Prefetch(api, clock, deferToThread, tmp_path)
    # Past the largest block: always cut in two at least (3 MiB of random
    # bytes made one block now and then).
    data = os.urandom(BLOCK_MAX + MiB)
    placed = list(recipe_of_bytes(data).placed())
    assert len(placed) > 1
    prefetch.announced(Incoming("big.bin", len(data), 0, [(block.sha256, block.size) for _, block in placed]))
    (ahead,) = tmp_path.iterdir()
    for offset, block in placed:
        part = data[offset : offset + block.size]
        response = await http.put(f"{server.url}/blocks/{block.sha256}", data=part, headers=server.headers())
        assert response.code == 201
        await response.content()
        await eventually(reactor, lambda: ahead.read_bytes()[offset : offset + block.size] == part)
    fetched = await prefetch.take("big.bin", tmp_path / "dl")
    assert (tmp_path / "dl").read_bytes() == data and not ahead.exists()
    # Each block was checked as it came, and the whole hashed: the download
    # need not read any of it again.
    assert fetched.checked == {(offset, block.sha256) for offset, block in placed}
    assert fetched.whole == (len(data), sha(data))
    await api.commit_blocks(BlockCommit("big.bin", 0, 1_700_000_000 * 10**9, recipe_of_bytes(data)))

    def not_hashed_again(fd: int, size: int) -> str:
        raise AssertionError("the whole file was hashed again")

    monkeypatch.setattr(blockwise, "_finish", not_hashed_again)
    result = await Blockwise(api, deferToThread).download(
        "big.bin", tmp_path / "dl", sha(data), [], lambda n: None, fetched
    )
    assert result is not None and result.sha256 == sha(data)
    assert (tmp_path / "dl").read_bytes() == data

    # Announced, and nothing comes.
    prefetch.announced(Incoming("never.bin", 5 * MiB, 0, [("0" * 64, 5 * MiB)]))
    assert len(list(tmp_path.glob("in-*"))) == 1
    clock.advance(IDLE_SECONDS)
    await eventually(reactor, lambda: list(tmp_path.glob("in-*")) == [])
    assert await prefetch.take("never.bin", tmp_path / "dl2") == Fetched()
    assert not (tmp_path / "dl2").exists()


def in_place_edit(old: bytes) -> bytes:
    """
    C{old} with 4 KiB overwritten in the middle (an edit in place).
    """
    middle = len(old) // 2
    return old[:middle] + os.urandom(4096) + old[middle + 4096 :]


def shifted(old: bytes) -> bytes:
    """
    C{old} with 4 KiB put in the middle and its last 4 KiB cut: of the same
    size, most blocks elsewhere.
    """
    middle = len(old) // 2
    return old[:middle] + os.urandom(4096) + old[middle:-4096]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("change, spoil", [(in_place_edit, False), (shifted, False), (in_place_edit, True)])
async def test_a_file_edited_in_place_is_made_ahead_from_the_copy_here(
    reactor: Any,
    server: RunningServer,
    folders: Any,
    http: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[bytes], bytes],
    spoil: bool,
) -> None:
    """
    A new version of a file this client has, of the same size, on its way:
    its own copy is written at the places the blocks announced leave alone,
    hashed with them. An edit in place is then whole and hashed before its
    commit: its download places it, reading and fetching nothing more.
    Whatever the guess or a later announcement over the blocks copied, the
    download makes the version that was sent.
    """
    api = folders("b").api
    old = os.urandom(3 * BLOCK_MAX)
    own = tmp_path / "own.bin"
    own.write_bytes(old)
    asked: list[str] = []

    async def own_recipe(path: str) -> dict[Path, Recipe]:
        asked.append(path)
        return {own: recipe_of_bytes(old)}

    ahead = tmp_path / "ahead"
    ahead.mkdir()
    prefetch = Prefetch(api, Clock(), deferToThread, ahead, own_recipe)
    data = change(old)
    recipe = recipe_of_bytes(data)
    known = {block.sha256 for block in recipe_of_bytes(old).blocks}
    everything = Incoming("big.bin", len(data), 0, [(block.sha256, block.size) for block in recipe.blocks])
    runs = everything.lacking({block.sha256 for block in recipe.blocks} - known)
    assert runs and sum(len(run.blocks) for run in runs) < len(recipe.blocks)
    for run in runs:
        prefetch.announced(run)
    if spoil:
        # Announced again (another try of the sender), over blocks copied.
        prefetch.announced(everything)
    (made,) = ahead.iterdir()
    for run in runs:
        for offset, sha256, size in run.placed():
            part = data[offset : offset + size]
            response = await http.put(f"{server.url}/blocks/{sha256}", data=part, headers=server.headers())
            assert response.code == 201
            await response.content()
            await eventually(reactor, lambda: made.read_bytes()[offset : offset + size] == part)
    fetched = await prefetch.take("big.bin", tmp_path / "dl")
    assert asked == ["big.bin"]
    guessed = change is in_place_edit and not spoil
    assert (fetched.whole == (len(data), sha(data))) is guessed
    if guessed:
        assert (tmp_path / "dl").read_bytes() == data
    for offset, block in recipe.placed():
        if block.sha256 in known:
            response = await http.put(
                f"{server.url}/blocks/{block.sha256}", data=data[offset : offset + block.size], headers=server.headers()
            )
            await response.content()
    await api.commit_blocks(BlockCommit("big.bin", 0, 1_700_000_000 * 10**9, recipe))
    if guessed:

        def read_again(*args: object) -> None:
            raise AssertionError("the file made ahead was read again")

        for name in ("_finish", "read_block", "copy_range", "recipe_of"):
            monkeypatch.setattr(blockwise, name, read_again)
        monkeypatch.setattr(BoxsyncAPI, "get_block", read_again)
    result = await Blockwise(api, deferToThread).download(
        "big.bin", tmp_path / "dl", sha(data), [own], lambda n: None, fetched, {own: recipe_of_bytes(old)}
    )
    assert result is not None and result.sha256 == sha(data)
    assert (tmp_path / "dl").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_a_copy_that_changed_as_it_was_read_ahead_is_checked_block_by_block(
    reactor: Any, server: RunningServer, folders: Any, http: Any, tmp_path: Path
) -> None:
    """
    The copy here changed after its recipe was known and before it was
    read ahead (its stamps kept): the whole file made ahead is not the
    version, and the download checks each block where it is, and fetches
    those that are not theirs.
    """
    api = folders("b").api
    old = os.urandom(3 * BLOCK_MAX)
    own = tmp_path / "own.bin"
    own.write_bytes(old)
    before = recipe_of_bytes(old)
    edit_keeping_stamps(own, bytes(4096) + old[4096:])
    ahead = tmp_path / "ahead"
    ahead.mkdir()

    async def own_recipe(path: str) -> dict[Path, Recipe]:
        return {own: before}

    prefetch = Prefetch(api, Clock(), deferToThread, ahead, own_recipe)
    data = in_place_edit(old)
    recipe = recipe_of_bytes(data)
    for offset, block in recipe.placed():
        response = await http.put(
            f"{server.url}/blocks/{block.sha256}", data=data[offset : offset + block.size], headers=server.headers()
        )
        await response.content()
    everything = Incoming("big.bin", len(data), 0, [(block.sha256, block.size) for block in recipe.blocks])
    runs = everything.lacking({block.sha256 for block in recipe.blocks} - {b.sha256 for b in before.blocks})
    for run in runs:
        prefetch.announced(run)
    (made,) = ahead.iterdir()
    for offset, _, size in [placed for run in runs for placed in run.placed()]:
        await eventually(reactor, lambda: made.read_bytes()[offset : offset + size] == data[offset : offset + size])
    fetched = await prefetch.take("big.bin", tmp_path / "dl")
    assert fetched.whole is not None and fetched.whole != (len(data), sha(data))
    await api.commit_blocks(BlockCommit("big.bin", 0, 1_700_000_000 * 10**9, recipe))
    result = await Blockwise(api, deferToThread).download("big.bin", tmp_path / "dl", sha(data), [], lambda n: None, fetched)
    assert result is not None and result.sha256 == sha(data)
    assert (tmp_path / "dl").read_bytes() == data


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("only", [True, False])
async def test_a_file_fetched_ahead_is_read_only_where_blocks_were_fetched(
    server: RunningServer, folders: Any, http: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, only: bool
) -> None:
    """
    The download takes a file that was made to fetch some blocks ahead:
    nothing else of it is read (it holds nothing else), and the rest is
    fetched. A file left by an earlier try is read at every place.
    """
    api = folders("b").api
    data = os.urandom(BLOCK_MAX + MiB)
    recipe = recipe_of_bytes(data)
    placed = list(recipe.placed())
    assert len(placed) > 1
    for offset, block in placed:
        response = await http.put(
            f"{server.url}/blocks/{block.sha256}", data=data[offset : offset + block.size], headers=server.headers()
        )
        assert response.code == 201
        await response.content()
    await api.commit_blocks(BlockCommit("big.bin", 0, 1_700_000_000 * 10**9, recipe))
    _, first = placed[0]
    temp = tmp_path / "dl"
    temp.write_bytes(data[: first.size])
    reads: list[object] = []
    monkeypatch.setattr(blockwise, "read_block", counted(reads, blockwise.read_block))
    fetched = Fetched(frozenset({(0, first.sha256)}), None, only=only)
    result = await Blockwise(api, deferToThread).download("big.bin", temp, sha(data), [], lambda n: None, fetched)
    assert result is not None and result.sha256 == sha(data) and temp.read_bytes() == data
    assert len(reads) == (0 if only else len(placed) - 1)


@pytest_twisted.ensureDeferred
async def test_a_block_written_as_its_file_is_taken_leaves_nothing_behind(
    reactor: Any, server: RunningServer, folders: Any, http: Any, tmp_path: Path
) -> None:
    """
    The download takes a file while a block of it is still being written:
    the block is written, and nothing is left to drop the file (and close
    it once more) later.
    """
    clock = Clock()
    writes: list[tuple[Callable[[], object], Deferred[object]]] = []

    def held(work: Callable[[], object]) -> Deferred[object]:
        done: Deferred[object] = Deferred()
        writes.append((work, done))
        return done

    prefetch = Prefetch(folders("b").api, clock, held, tmp_path)
    data = os.urandom(100_000)
    prefetch.announced(Incoming("big.bin", len(data), 0, [(sha(data), len(data))]))
    response = await http.put(f"{server.url}/blocks/{sha(data)}", data=data, headers=server.headers())
    assert response.code == 201
    await response.content()
    await eventually(reactor, lambda: len(writes) == 1)
    taking = Deferred.fromCoroutine(prefetch.take("big.bin", tmp_path / "dl"))
    assert not taking.called
    work, done = writes[0]
    done.callback(work())
    fetched = await taking
    assert fetched.checked == {(0, sha(data))} and (tmp_path / "dl").read_bytes() == data
    assert [call for call in clock.getDelayedCalls() if call.active()] == []


def test_blocks_checked_as_they_came_are_not_read_again(tmp_path: Path) -> None:
    """
    A download takes the blocks its temporary file holds: read and checked,
    but for those checked already as they were written there.
    """
    from boxsync.client.blockwise import _fill_locally

    data = os.urandom(3 * MiB)
    recipe = recipe_of_bytes(data)
    placed = list(recipe.placed())
    temp = tmp_path / "dl"
    temp.write_bytes(data)
    # The first block is torn since: read, it is wanted again; taken as
    # checked, it is not (the whole file's sha256 will tell).
    offset, first = placed[0]
    with open(temp, "r+b") as f:
        f.write(b"\0" * 16)
    fd = os.open(temp, os.O_RDWR)
    try:
        assert _fill_locally(fd, recipe, []) == [(offset, first)]
        assert _fill_locally(fd, recipe, [], {(offset, first.sha256)}) == []
    finally:
        os.close(fd)


@pytest_twisted.ensureDeferred
async def test_a_file_over_the_server_s_limit_is_refused_before_its_blocks_and_alone(
    tmp_path: Path, reactor: Any, moved: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    C{--max-upload} holds for a file sent by its blocks as for one sent
    whole: it is refused (C{413}) when it is announced, before any of its
    blocks is sent, and at its commit. The running client lists it as not
    synced, tries it again by itself, and syncs the rest without starting
    its session over; it says why once, not at every try.
    """
    from twisted.logger import Logger, LogLevel, formatEvent

    from boxsync.client.engine import Engine
    from boxsync.client.errors import TooLarge
    from tests.helpers import running_server

    said: list[tuple[LogLevel, str]] = []
    monkeypatch.setattr(Engine, "log", Logger(observer=lambda e: said.append((e["log_level"], formatEvent(e)))))

    async with running_server(reactor, tmp_path / "box", "k" * 20, max_upload=3 * MiB) as server:
        a = Folder(reactor, server, tmp_path / "a", "a")
        (a.root / "big.bin").write_bytes(os.urandom(5 * MiB))
        (a.root / "fits.bin").write_bytes(os.urandom(2 * MiB))
        engine = a.engine()
        running = Deferred.fromCoroutine(engine.run())
        try:
            await eventually(reactor, lambda: "big.bin" in engine.problems and (server.box / "fits.bin").exists())
            assert "over the server's limit of 3.0 MiB (3,145,728 bytes)" in engine.problems["big.bin"]
            # Tried again by itself (after 1 s, then 2 s), said once.
            about = lambda: [level for level, line in said if line.startswith("big.bin: ")]  # noqa: E731
            await eventually(reactor, lambda: len(about()) >= 3)
            assert about().count(LogLevel.warn) == 1
            assert not (server.box / "big.bin").exists() and engine.sessions.attempt.failed is False
            assert sum(moved["a up"]) == 2 * MiB
            recipe = recipe_of_bytes((a.root / "big.bin").read_bytes())
            with pytest.raises(TooLarge, match=r"big.bin: 5.0 MiB \(5,242,880 bytes\) is over the server's limit of 3.0 MiB"):
                await a.api.commit_blocks(BlockCommit("big.bin", None, 0, recipe))
        finally:
            engine.stop()
            await timed(running, reactor)
            await a.close()
