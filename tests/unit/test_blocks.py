"""
Blocks as pure logic: a recipe adds up to its file, a file cut twice is
cut the same, any sequence of edits leaves a new version that is made
byte for byte of the old version's blocks and the new ones, and an edit
changes only the blocks around it. Recipes and block commits on the wire,
and the content codings.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import tempfile
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from boxsync import coding
from boxsync.blocks import BLOCK_MAX, BLOCK_MIN, Block, Recipe, RunningDigest, holds, read_block, recipe_of, recipe_of_bytes
from boxsync.wire import ProtocolError
from boxsync.wire.blocks import BlockCommit, parse_missing, parse_recipe, recipe_json

KiB = 1024
MiB = 2**20

#: A random "file" to edit: random bytes, made once (hypothesis draws the edits).
BASE = random.Random(20261205).randbytes(6 * MiB)


def pieces(data: bytes, recipe: Recipe) -> dict[str, bytes]:
    return {block.sha256: data[offset : offset + block.size] for offset, block in recipe.placed()}


def test_a_recipe_adds_up_and_is_the_same_from_a_file(tmp_path: Path) -> None:
    for size in (0, 1, BLOCK_MIN, BLOCK_MIN + 1, 3 * MiB + 17):
        data = BASE[:size]
        recipe = recipe_of_bytes(data)
        assert sum(block.size for block in recipe.blocks) == size == recipe.size
        assert all(block.size <= BLOCK_MAX for block in recipe.blocks)
        assert all(block.size >= BLOCK_MIN for block in recipe.blocks[:-1])
        (tmp_path / "f").write_bytes(data)
        assert recipe_of(tmp_path / "f") == recipe
    # A file of one block: the block's sha256 is the file's.
    small = recipe_of_bytes(b"small")
    assert small.blocks == (Block(small.sha256, 5),)
    assert recipe_of_bytes(b"").blocks == ()


def test_a_limit_and_a_descriptor_read_from_where_they_stand(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(BASE)
    assert recipe_of(tmp_path / "f", limit=2 * MiB) == recipe_of_bytes(BASE[: 2 * MiB])
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        os.lseek(fd, MiB, os.SEEK_SET)
        assert recipe_of(fd) == recipe_of_bytes(BASE[MiB:])
    finally:
        os.close(fd)


def test_read_block_checks_what_it_reads(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(BASE[: 2 * MiB])
    recipe = recipe_of_bytes(BASE[: 2 * MiB])
    offset, block = next(recipe.placed())
    fd = os.open(tmp_path / "f", os.O_RDWR)
    try:
        assert read_block(fd, offset, block) == BASE[: block.size]
        os.pwrite(fd, b"X", offset)
        assert read_block(fd, offset, block) is None
        assert read_block(fd, offset, block, check=False) is not None
        assert read_block(fd, 2 * MiB, block, check=False) is None  # past the end
    finally:
        os.close(fd)


edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "overwrite"]),
        st.integers(min_value=0, max_value=len(BASE)),
        st.binary(min_size=1, max_size=8 * KiB),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(edits)
def test_any_edits_reassemble_from_old_and_new_blocks(changes: list[tuple[str, int, bytes]]) -> None:
    """
    After any edits, the new version is the old version's blocks and the
    new ones, byte for byte, and only blocks near an edit are new: a few
    per edit, never the whole file.
    """
    old = recipe_of_bytes(BASE)
    have = pieces(BASE, old)
    data = BASE
    for kind, at, chunk in changes:
        at = min(at, len(data))
        if kind == "insert":
            data = data[:at] + chunk + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + len(chunk) :]
        else:
            data = data[:at] + chunk + data[at + len(chunk) :]
    new = recipe_of_bytes(data)
    sent = {sha256: piece for sha256, piece in pieces(data, new).items() if sha256 not in have}
    available = {**have, **sent}
    assert b"".join(available[block.sha256] for block in new.blocks) == data
    assert len(sent) <= 3 * len(changes)
    assert sum(map(len, sent.values())) < len(data)


def test_recipes_and_commits_on_the_wire() -> None:
    recipe = recipe_of_bytes(BASE[: 3 * MiB])
    assert parse_recipe(recipe_json(recipe)) == recipe
    commit = BlockCommit("a/b.bin", 4, 123, recipe)
    assert BlockCommit.from_json(commit.to_json()) == commit
    assert BlockCommit.from_json({**commit.to_json(), "base": None}).base is None
    bad = [
        [],
        {**recipe_json(recipe), "size": recipe.size + 1},
        {**recipe_json(recipe), "blocks": [["0" * 64, 0]]},
        {**recipe_json(recipe), "blocks": [["0" * 64, BLOCK_MAX + 1]]},
        {**recipe_json(recipe), "blocks": [["nothex", 10]]},
        {**recipe_json(recipe), "blocks": [["0" * 64]]},
        {**recipe_json(recipe), "blocks": "many"},
    ]
    for data in bad:
        with pytest.raises(ProtocolError):
            parse_recipe(data)
    for data in ({**commit.to_json(), "path": "../x"}, {**commit.to_json(), "mtime_ns": -(2**63) - 1}, "x"):
        with pytest.raises(ProtocolError):
            BlockCommit.from_json(data)
    assert parse_missing({"missing": ["a" * 64]}) == ["a" * 64]
    for data in ({}, {"missing": "x"}, {"missing": ["short"]}):
        with pytest.raises(ProtocolError):
            parse_missing(data)


def test_codings_shrink_what_shrinks_and_refuse_bombs() -> None:
    text = b"".join(b"line %d of a log that repeats itself\n" % n for n in range(40000))
    noise = BASE[: MiB]
    used, packed = coding.encode(text, ["zstd", "gzip"])
    assert used == "zstd" and len(packed) < len(text) / 10
    assert coding.decode(packed, "zstd", len(text)) == text
    used, packed = coding.encode(text, ["gzip"])
    assert used == "gzip" and gzip.decompress(packed) == text
    assert coding.decode(packed, "gzip", len(text)) == text
    assert coding.encode(noise, ["zstd"]) == (None, noise)
    assert coding.encode(b"tiny", ["zstd"]) == (None, b"tiny")
    assert coding.encode(text, []) == (None, text)
    assert coding.decode(noise, None, len(noise)) == noise
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (8 * MiB))
    gzip_bomb = gzip.compress(b"\0" * (8 * MiB))
    for data, name in ((bomb, "zstd"), (gzip_bomb, "gzip"), (noise, "zstd"), (noise, "gzip"),
                       (gzip_bomb[:100], "gzip"), (b"x", "br")):
        with pytest.raises(coding.DecodeError):
            coding.decode(data, name, 4 * MiB)
    assert coding.accepted("gzip;q=0, zstd;q=0.5") == ["zstd"]
    assert coding.accepted("br, deflate") == []
    assert coding.accepted(None) == []


@given(
    st.lists(st.binary(max_size=300), max_size=30),
    st.integers(min_value=0, max_value=30),
    st.binary(min_size=0, max_size=2),
)
@settings(deadline=None)
def test_a_gzip_stream_decodes_write_by_write(writes: list[bytes], settled_after: int, filler: bytes) -> None:
    """
    Each write of a L{coding.GzipStream}, compressed or (once settled) as
    it is, decodes whole as soon as it is received, in order; a write
    larger than a stored block goes in several.
    """
    stream = coding.GzipStream()
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    writes = writes + [filler * 40_000]
    for n, data in enumerate(writes):
        if n == settled_after:
            stream.settle()
        assert inflater.decompress(stream.encode(data)) == data
    assert not inflater.eof and not inflater.unused_data


def test_a_gzip_stream_shrinks_alike_writes() -> None:
    events = [b'event: upload\ndata: {"path":"photos/%04d.txt","base":0}\n\n' % n for n in range(500)]
    stream = coding.GzipStream()
    compressed = sum(len(stream.encode(b"".join(events[n : n + 64]))) for n in range(0, 500, 64))
    assert compressed * 4 < sum(map(len, events))
    stream.settle()
    assert len(stream.encode(events[0])) == len(events[0]) + 5


def test_holds_checks_every_block_and_the_size(tmp_path: Path) -> None:
    data = BASE[: 6 * MiB]
    (tmp_path / "f").write_bytes(data)
    recipe = recipe_of_bytes(data)
    assert len(recipe.blocks) > 2
    fd = os.open(tmp_path / "f", os.O_RDWR)
    try:
        assert holds(fd, recipe)
        last_offset, last = list(recipe.placed())[-1]
        os.pwrite(fd, b"X" if data[last_offset] != ord("X") else b"Y", last_offset)
        assert not holds(fd, recipe)
        os.pwrite(fd, data[last_offset : last_offset + 1], last_offset)
        assert holds(fd, recipe)
        os.ftruncate(fd, 6 * MiB - 1)
        assert not holds(fd, recipe)
    finally:
        os.close(fd)


@settings(max_examples=50, deadline=None)
@given(order=st.randoms(use_true_random=False), waiting_max=st.sampled_from([0, 300_000, 64 * MiB]))
def test_a_running_digest_is_the_whole_files_in_any_order(order: random.Random, waiting_max: int) -> None:
    """
    Blocks written in any order, held in memory or read back from the file
    while they wait: the digest is the whole file's once every byte is in,
    and none before.
    """
    data = BASE[: 6 * MiB + 12345]
    placed = list(recipe_of_bytes(data).placed())
    order.shuffle(placed)
    with tempfile.TemporaryFile() as f:
        digest = RunningDigest(f.fileno(), len(data), waiting_max)
        for offset, block in placed:
            assert digest.hexdigest() is None
            piece = data[offset : offset + block.size]
            os.pwrite(f.fileno(), piece, offset)
            digest.wrote(offset, piece)
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_running_digest_vouches_for_nothing_written_over() -> None:
    data = BASE[: 3 * MiB]
    (first_offset, first), (second_offset, second), *rest = list(recipe_of_bytes(data).placed())
    with tempfile.TemporaryFile() as f:
        digest = RunningDigest(f.fileno(), len(data))
        for offset, block in [(first_offset, first), (second_offset, second), *rest]:
            digest.wrote(offset, data[offset : offset + block.size])
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
        digest.wrote(first_offset, b"X" * first.size)
        assert digest.hexdigest() is None
    with tempfile.TemporaryFile() as f:
        # Past the size announced, or twice at one place while waiting.
        digest = RunningDigest(f.fileno(), len(data))
        digest.wrote(second_offset, data[second_offset : second_offset + second.size])
        digest.wrote(second_offset, b"Y" * second.size)
        digest.wrote(first_offset, data[: first.size])
        for offset, block in rest:
            digest.wrote(offset, data[offset : offset + block.size])
        assert digest.hexdigest() is None
