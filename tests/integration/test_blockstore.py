"""
The block store contract, on local disk (L{LocalBlockStore}) and on a real
SeaweedFS (L{S3BlockStore}): the same tests, run against each, with the
real SQLite index and a real box. Then what only the bucket has: blocks
written once, claims that keep an old block an upload needs, and memory
that stays flat while a large file is assembled.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import psutil
import pytest
import pytest_twisted
from attrs import define, field
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.task import deferLater

from bench.measure import PeakRSS
from boxsync.blocks import Block, Recipe, recipe_of_bytes
from boxsync.server.blockstore import BadBlock, IBlockStore, LocalBlockStore
from boxsync.server.box import Box, DigestMismatch, MissingBlocks
from boxsync.server.bucketed import BucketedBlockStore
from boxsync.server.hub import Hub
from boxsync.server.index import FileRecord, SQLiteIndex
from boxsync.server.s3store import S3Bucket, S3BlockStore, StoreUnavailable, stores_from_url
from boxsync.server.storage import BoxStorage
from boxsync.testing import SeaweedFS, free_port
from boxsync.wire.blocks import BlockCommit
from tests.helpers import sha, timed

MiB = 2**20
HOUR_NS = 3600 * 10**9

#: Makes a store of an account: (account, index, storage, reactor).
MakeStore = Callable[[str, SQLiteIndex, BoxStorage, Any], IBlockStore]


def data_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def pieces_of(data: bytes) -> tuple[Recipe, dict[str, bytes]]:
    """
    The recipe of C{data}, and the bytes of each of its blocks.
    """
    recipe = recipe_of_bytes(data)
    return recipe, {block.sha256: data[offset : offset + block.size] for offset, block in recipe.placed()}


@pytest.fixture(params=["local", "s3", "bucketed"])
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    """
    The box's own store; the bucket's; and the two together, as the
    servers of a C{--store} use them.
    """
    if request.param == "local":
        return lambda account, index, storage, reactor: LocalBlockStore(account, index, storage)
    seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")

    def in_bucket(account: str, index: SQLiteIndex, storage: BoxStorage, reactor: Any) -> S3BlockStore:
        return stores_from_url(seaweedfs.url, reactor, index, seaweedfs.credentials)(account)

    if request.param == "s3":
        return in_bucket
    return lambda account, index, storage, reactor: BucketedBlockStore(
        LocalBlockStore(account, index, storage), in_bucket(account, index, storage, reactor)
    )


@define
class Contract:
    """
    A store of a new account, with the box and index it serves.
    """

    reactor: Any
    account: str
    index: SQLiteIndex
    storage: BoxStorage
    store: IBlockStore
    box: Box = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.box = Box(self.account, self.index, self.storage, Hub(self.reactor), blocks=self.store)

    async def put_all(self, pieces: dict[str, bytes]) -> None:
        for sha256, data in pieces.items():
            await timed(ensureDeferred(self.store.put(Block(sha256, len(data)), data)), self.reactor)

    async def commit(self, path: str, recipe: Recipe, base: int | None = 0) -> FileRecord:
        record: FileRecord = await self.box.commit_recipe(BlockCommit(path, base, 1_700_000_000 * 10**9, recipe))
        return record

    async def committed(self, path: str, data: bytes, base: int | None = 0) -> FileRecord:
        """
        Commit C{data} at C{path} by its recipe, its blocks held already;
        check the box's file.
        """
        record = await self.commit(path, recipe_of_bytes(data), base)
        assert (self.storage.root / path).read_bytes() == data
        return record

    async def edited(
        self, seed: int, size: int, kept: int, added: int
    ) -> tuple[dict[str, bytes], bytes, Recipe, dict[str, bytes]]:
        """
        C{old.bin} of C{size} bytes committed by its blocks, and a new
        version of it: its first C{kept} bytes, then C{added} new ones. The
        blocks of the old, the new version, its recipe and its blocks.
        """
        old = data_of(seed, size)
        _, old_pieces = pieces_of(old)
        await self.put_all(old_pieces)
        await self.committed("old.bin", old)
        new = old[:kept] + data_of(seed + 1, added)
        recipe, pieces = pieces_of(new)
        return old_pieces, new, recipe, pieces

    async def readable(self, hashes: list[str]) -> set[str]:
        """
        Those of C{hashes} the store gives the right bytes of.
        """
        got: dict[str, bytes] = await self.store.read_many(hashes)
        assert all(sha(data) == sha256 for sha256, data in got.items())
        return set(got)

    def tear(self, sha256: str, data: bytes) -> None:
        """
        Store C{data}, which is not block C{sha256}, as that block (a torn
        write, a disk or a bucket gone bad).
        """
        store = self.store.bucket if isinstance(self.store, BucketedBlockStore) else self.store
        if isinstance(store, S3BlockStore):
            bucket = store.bucket
            bucket.client.put_object(Bucket=bucket.name, Key=store.key(sha256), Body=data)
        else:
            assert isinstance(self.store, LocalBlockStore)
            (self.store.pending / sha256).write_bytes(data)


@pytest_twisted.async_yield_fixture
async def contract(tmp_path: Path, reactor: Any, make_store: MakeStore) -> AsyncIterator[Contract]:
    index = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    index.start()
    storage = BoxStorage(reactor, tmp_path / "box")
    # A new account each time: the S3 cases share one bucket.
    account = f"acct-{os.urandom(6).hex()}"
    try:
        yield Contract(reactor, account, index, storage, make_store(account, index, storage, reactor))
    finally:
        index.stop()


@pytest_twisted.ensureDeferred
async def test_missing_put_read_and_read_many(contract: Contract) -> None:
    one, two = data_of(1, 300_000), data_of(2, 200_000)
    store = contract.store
    assert await store.missing([sha(one), sha(two), sha(one)]) == [sha(one), sha(two)]
    await store.put(Block(sha(one), len(one)), one)
    assert await store.missing([sha(two), sha(one)]) == [sha(two)]
    assert await store.read(sha(one)) == one
    assert await store.read(sha(two)) is None
    assert await store.read_many([sha(two), sha(one), sha(one)]) == {sha(one): one}
    # A second put of the same block changes nothing.
    await store.put(Block(sha(one), len(one)), one)
    assert await store.read(sha(one)) == one


@pytest_twisted.ensureDeferred
async def test_a_block_that_is_not_what_it_says_is_refused(contract: Contract) -> None:
    good, bad = data_of(3, 100_000), data_of(4, 100_000)
    with pytest.raises(BadBlock, match=f"^the bytes sent are not block {sha(good)}$"):
        await contract.store.put(Block(sha(good), len(good)), bad)
    with pytest.raises(BadBlock):
        await contract.store.put(Block(sha(good), len(good) + 1), good)
    assert await contract.store.missing([sha(good)]) == [sha(good)]
    assert await contract.store.read(sha(good)) is None


@define
class ToldArrivals:
    """
    A relay that keeps the arrivals a box tells it.
    """

    arrived: list[tuple[str, str]] = field(factory=list)

    def tell_arrived(self, account: str, sha256: str) -> None:
        self.arrived.append((account, sha256))


@pytest_twisted.ensureDeferred
async def test_a_block_put_through_the_box_ends_the_waits_for_it(contract: Contract) -> None:
    """
    A block put through the box, whatever its store, fires the waits for
    it here (and only for it; one given up is forgotten) and is told to
    the other servers.
    """
    one, two = data_of(5, 1000), data_of(6, 1000)
    box, relay = contract.box, ToldArrivals()
    box.relay = relay  # type: ignore[assignment]
    first, second, given_up = box.arrivals.wait(sha(one)), box.arrivals.wait(sha(one)), box.arrivals.wait(sha(two))
    assert not (first.called or second.called or given_up.called)
    given_up.cancel()
    with pytest.raises(CancelledError):
        await given_up
    assert box.arrivals.waited_for() == [sha(one)]
    await box.put_block(Block(sha(two), len(two)), two)
    assert not first.called
    await box.put_block(Block(sha(one), len(one)), one)
    assert first.called and second.called
    await first
    await second
    assert box.arrivals.waited_for() == []
    assert relay.arrived == [(contract.account, sha(two)), (contract.account, sha(one))]
    assert await contract.store.read(sha(one)) == one


@pytest_twisted.ensureDeferred
async def test_assemble_makes_the_file_from_blocks_of_several_sources(contract: Contract) -> None:
    """
    A file made of blocks of an earlier version (in the box, or referenced
    in the bucket) and of blocks sent ahead: assembled whole; a recipe
    with blocks the store lacks names them, and only them.
    """
    old_pieces, new, recipe, pieces = await contract.edited(7, 3 * MiB, 2 * MiB, 2 * MiB)
    shared = set(pieces) & set(old_pieces)
    fresh = [sha256 for sha256 in pieces if sha256 not in old_pieces]
    assert shared and fresh and len(recipe.blocks) > 2
    assert await contract.store.missing(list(pieces)) == fresh

    staged = contract.storage.new_staging()
    try:
        assert await contract.store.assemble(recipe, staged) == fresh
    finally:
        staged.discard()

    await contract.put_all({sha256: pieces[sha256] for sha256 in fresh})
    staged = contract.storage.new_staging()
    try:
        assert await contract.store.assemble(recipe, staged) == []
        assert staged.sha256 == recipe.sha256 and staged.size == len(new)
        assert staged.path.read_bytes() == new
    finally:
        staged.discard()
    await contract.committed("new.bin", new)


@pytest_twisted.ensureDeferred
async def test_an_assembly_opens_each_version_it_reads_once(
    tmp_path: Path, reactor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The blocks a new version takes from the one before are read from that
    file opened once, not once a block.
    """
    index = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    index.start()
    storage = BoxStorage(reactor, tmp_path / "box")
    contract = Contract(reactor, "acct", index, storage, LocalBlockStore("acct", index, storage))
    try:
        old_pieces, new, recipe, pieces = await contract.edited(9, 12 * MiB, 10 * MiB, 2 * MiB)
        await contract.put_all({sha256: data for sha256, data in pieces.items() if sha256 not in old_pieces})
        taken = [block for block in recipe.blocks if block.sha256 in old_pieces]
        assert len(taken) > 2
        opened: list[str] = []
        real = BoxStorage.open_fd

        def counting(self: BoxStorage, path: str) -> int | None:
            opened.append(path)
            return real(self, path)

        monkeypatch.setattr(BoxStorage, "open_fd", counting)
        staged = storage.new_staging()
        try:
            assert await contract.store.assemble(recipe, staged) == []
            assert staged.path.read_bytes() == new
        finally:
            staged.discard()
        assert opened == ["old.bin"]
    finally:
        index.stop()


@pytest_twisted.ensureDeferred
async def test_a_recipe_whose_sha256_is_wrong_is_refused(contract: Contract) -> None:
    data = data_of(9, 2 * MiB)
    recipe, pieces = pieces_of(data)
    await contract.put_all(pieces)
    wrong = Recipe(sha(b"something else"), recipe.size, recipe.blocks)
    with pytest.raises(DigestMismatch):
        await contract.commit("wrong.bin", wrong)
    assert await contract.index.get(contract.account, "wrong.bin") is None
    assert list(contract.storage.staging.iterdir()) == []
    # The blocks themselves are fine, and make the right file.
    await contract.committed("right.bin", data)


@pytest_twisted.ensureDeferred
async def test_a_torn_block_is_never_used_and_is_sent_again(contract: Contract) -> None:
    data = data_of(10, 2 * MiB)
    recipe, pieces = pieces_of(data)
    torn, *rest = pieces
    await contract.put_all({sha256: pieces[sha256] for sha256 in rest})
    contract.tear(torn, data_of(11, len(pieces[torn])))
    assert await contract.store.read(torn) is None
    with pytest.raises(MissingBlocks) as missing:
        await contract.commit("torn.bin", recipe)
    assert missing.value.missing == [torn]
    assert await contract.store.missing(list(pieces)) == [torn]
    await contract.put_all({torn: pieces[torn]})
    await contract.committed("torn.bin", data)


@pytest_twisted.ensureDeferred
async def test_a_block_torn_after_it_was_sent_is_found_out_by_the_commit(contract: Contract) -> None:
    """
    A block the store took (and checked) as it came, then changed where it
    is kept: the version it makes is refused as a whole, that block is
    named missing, and once sent again the version is made.
    """
    data = data_of(15, 6 * MiB)
    recipe, pieces = pieces_of(data)
    await contract.put_all(pieces)
    torn = recipe.blocks[1].sha256
    contract.tear(torn, data_of(16, len(pieces[torn])))
    with pytest.raises(MissingBlocks) as missing:
        await contract.commit("torn.bin", recipe)
    assert missing.value.missing == [torn]
    await contract.put_all({torn: pieces[torn]})
    await contract.committed("torn.bin", data)


@pytest_twisted.ensureDeferred
async def test_used_and_sweep_keep_what_is_referenced_or_young_and_delete_the_rest(contract: Contract) -> None:
    first_recipe, first = pieces_of(data_of(12, 3 * MiB))
    second_recipe, second = pieces_of(data_of(13, 3 * MiB))
    alone = data_of(14, 500_000)
    await contract.put_all(first)
    kept = await contract.commit("a.bin", first_recipe)
    await contract.put_all(second)
    await contract.commit("a.bin", second_recipe, base=kept.seq)
    await contract.put_all({sha(alone): alone})
    every = [*first, *second, sha(alone)]
    # The blocks of both versions are used; the lone one was sent ahead.
    assert await contract.readable(every) == set(every)
    assert await contract.store.sweep(time.time_ns() - HOUR_NS) == 0
    assert await contract.readable(every) == set(every)

    assert [version.seq for version in await contract.index.forget_versions(contract.account, [kept.seq])] == [
        kept.seq
    ]
    before = await contract.readable(every)
    swept = await contract.store.sweep(time.time_ns() + HOUR_NS)
    after = await contract.readable(every)
    assert after == set(second)
    assert swept == len(before - after) > 0
    assert await contract.store.missing(every) == [*first, sha(alone)]


# What only the bucket has.


@define
class Counting:
    """
    An S3 client, noting each call made through it: (name, key).
    """

    client: Any
    calls: list[tuple[str, str]] = field(factory=list)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs.get("Key", "")))
            return method(**kwargs)

        return call


@define
class Bucket:
    """
    A store of a new account in the session's SeaweedFS, its client
    counting calls.
    """

    store: S3BlockStore
    client: Counting

    def written(self, key: str) -> int | None:
        """
        When C{key} was written (ns, as the bucket says), or C{None}.
        """
        try:
            head = self.client.client.head_object(Bucket=self.store.bucket.name, Key=key)
        except Exception:
            return None
        return round(head["LastModified"].timestamp() * 1e9)


@pytest.fixture
def bucket(tmp_path: Path, reactor: Any, seaweedfs: SeaweedFS) -> Iterator[Bucket]:
    index = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    index.start()
    plain = stores_from_url(seaweedfs.url, reactor, index, seaweedfs.credentials)(f"acct-{os.urandom(6).hex()}")
    client = Counting(plain.bucket.client)
    try:
        yield Bucket(S3BlockStore(plain.account, index, S3Bucket(client, plain.bucket.name), reactor), client)
    finally:
        index.stop()


@pytest_twisted.ensureDeferred
async def test_the_store_signs_with_the_credentials_it_is_given(
    tmp_path: Path, reactor: Any, seaweedfs: SeaweedFS
) -> None:
    index = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    wrong = {**seaweedfs.credentials, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    refused = stores_from_url(seaweedfs.url, reactor, index, wrong)("acct")
    with pytest.raises(Exception) as error:
        await refused.read("0" * 64)
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403  # type: ignore[attr-defined]
    accepted = stores_from_url(seaweedfs.url, reactor, index, seaweedfs.credentials)("acct")
    assert await accepted.read("0" * 64) is None


@pytest_twisted.ensureDeferred
async def test_a_committed_version_s_blocks_leave_the_bucket(
    tmp_path: Path, reactor: Any, seaweedfs: SeaweedFS
) -> None:
    """
    With the bucket beside the box, the blocks sent for a version are in
    the bucket until it is committed, and then only in the box's file,
    from which the store reads them.
    """
    index = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    index.start()
    storage = BoxStorage(reactor, tmp_path / "box")
    account = f"acct-{os.urandom(6).hex()}"
    bucket = stores_from_url(seaweedfs.url, reactor, index, seaweedfs.credentials)(account)
    contract = Contract(reactor, account, index, storage, BucketedBlockStore(LocalBlockStore(account, index, storage), bucket))

    def in_bucket() -> set[str]:
        listed = bucket.bucket.client.list_objects_v2(Bucket=bucket.bucket.name, Prefix=f"blocks/{account}/")
        return {each["Key"].rsplit("/", 1)[1] for each in listed.get("Contents", [])}

    try:
        data = data_of(18, 3 * MiB)
        recipe, pieces = pieces_of(data)
        await contract.put_all(pieces)
        assert in_bucket() == set(pieces)
        await contract.committed("a.bin", data)
        assert in_bucket() == set()
        assert await contract.readable(list(pieces)) == set(pieces)
        assert await contract.store.missing(list(pieces)) == []
    finally:
        index.stop()


@pytest_twisted.ensureDeferred
async def test_a_bucket_out_of_reach_is_asked_again_later(tmp_path: Path, reactor: Any) -> None:
    """
    Nothing listens where the bucket should be: every call fails as one to
    ask again (the routes answer 503), in one line, and keeps nothing.
    """
    index = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    index.start()
    try:
        url = f"s3://nowhere?endpoint=http://127.0.0.1:{free_port()}"
        store = stores_from_url(url, reactor, index, {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})("acct")
        data = data_of(17, 1000)
        for call in (
            lambda: store.put(Block(sha(data), len(data)), data),
            lambda: store.read_many([sha(data)]),
            lambda: store.missing([sha(data)]),
            lambda: store.sweep(time.time_ns()),
        ):
            with pytest.raises(StoreUnavailable, match="^the bucket nowhere cannot be reached for now$"):
                await timed(ensureDeferred(call()), reactor, 60)
    finally:
        index.stop()


@pytest_twisted.ensureDeferred
async def test_a_block_is_written_once(bucket: Bucket) -> None:
    data = data_of(15, 200_000)
    block, key = Block(sha(data), len(data)), bucket.store.key(sha(data))
    await bucket.store.put(block, data)
    await bucket.store.put(block, data)
    writes = [what for what in bucket.client.calls if what[0] == "put_object"]
    # The second write is refused (If-None-Match): the block is claimed
    # instead, as young as if it were written now.
    assert writes == [("put_object", key), ("put_object", key), ("put_object", bucket.store.claim_key(sha(data)))]
    assert await bucket.store.read(block.sha256) == data


@pytest_twisted.ensureDeferred
async def test_a_claim_keeps_an_old_block_an_upload_asked_for(bucket: Bucket, reactor: Any) -> None:
    data = data_of(16, 100_000)
    store, block = bucket.store, Block(sha(data), len(data))
    await store.put(block, data)
    written = bucket.written(store.key(block.sha256))
    assert written is not None
    # The bucket's clock counts whole seconds: let two go by, so that the
    # claim is younger than the block.
    await deferLater(reactor, max(0.0, (written + 2 * 10**9 - time.time_ns()) / 1e9))
    assert await store.missing([block.sha256]) == []
    claimed = bucket.written(store.claim_key(block.sha256))
    assert claimed is not None and claimed > written
    assert await store.sweep(claimed) == 0
    assert await store.read(block.sha256) == data
    # Used by a commit, the block loses its claim; unreferenced and old,
    # it goes, and so do old claims.
    await store.used(Recipe(block.sha256, block.size, (block,)))
    assert bucket.written(store.claim_key(block.sha256)) is None
    assert await store.sweep(claimed) == 1
    assert await store.read(block.sha256) is None
    await store.put(block, data)
    assert await store.missing([block.sha256]) == []
    assert bucket.written(store.claim_key(block.sha256)) is not None
    assert await store.sweep(time.time_ns() + HOUR_NS) == 1
    assert bucket.written(store.claim_key(block.sha256)) is None


@pytest_twisted.ensureDeferred
async def test_a_sweep_goes_through_every_page_of_the_bucket(bucket: Bucket) -> None:
    store = bucket.store
    store.page = 2
    pieces = {sha(data): data for data in (data_of(200 + seed, 1000) for seed in range(5))}
    for sha256, data in pieces.items():
        await store.put(Block(sha256, len(data)), data)
    # Each is claimed, as an upload that finds it there would.
    assert await store.missing(list(pieces)) == []
    assert all(bucket.written(store.claim_key(sha256)) is not None for sha256 in pieces)
    assert await store.sweep(time.time_ns() + HOUR_NS) == len(pieces)
    assert await store.read_many(list(pieces)) == {}
    assert all(bucket.written(store.claim_key(sha256)) is None for sha256 in pieces)
    listings = [what for what in bucket.client.calls if what[0] == "list_objects_v2"]
    assert len(listings) > 3


@pytest_twisted.ensureDeferred
async def test_assembling_a_large_file_keeps_memory_flat(bucket: Bucket, tmp_path: Path) -> None:
    """
    64 MiB, from 64 blocks in the bucket: the process grows by a few
    blocks' worth at most, not by the file.
    """
    store, whole, blocks = bucket.store, hashlib.sha256(), []
    for seed in range(64):
        data = data_of(100 + seed, MiB)
        whole.update(data)
        blocks.append(Block(sha(data), len(data)))
        await store.put(blocks[-1], data)
        del data
    recipe = Recipe(whole.hexdigest(), 64 * MiB, tuple(blocks))
    storage = BoxStorage(store.reactor, tmp_path / "box")
    staged = storage.new_staging()
    try:
        before = psutil.Process().memory_info().rss
        with PeakRSS(lambda: [os.getpid()], every=0.005) as peak:
            assert await store.assemble(recipe, staged) == []
        grew = peak.peaks[os.getpid()] - before
        assert staged.sha256 == recipe.sha256 and staged.size == recipe.size
    finally:
        staged.discard()
    print(f"assembling 64 MiB from the bucket grew the process by {grew / MiB:.1f} MiB")
    assert grew < 24 * MiB, f"the process grew by {grew / MiB:.0f} MiB"
