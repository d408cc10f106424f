"""
The server's block routes over real HTTP: a commit by recipe names the
blocks it lacks, takes them, assembles the file and commits it as any
upload; blocks are found in live files, kept versions and blocks sent
ahead; a block that is not what its name says is refused; blocks travel
compressed where that pays.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import random
import time
from typing import Any

import pytest
import pytest_twisted
import zstandard
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from boxsync.blocks import BLOCK_MIN, Block, recipe_of_bytes
from boxsync.server.blockstore import PENDING_HOURS
from boxsync.server.retention import HistoryMax, Retention, Thinning, Tidied, only_copies, parse_duration, tidy
from boxsync.wire import INCOMING_FEATURE, Download, Hello, Incoming, Manifest
from boxsync.wire.blocks import BlockCommit, blocks_json, parse_recipe
from tests.helpers import RunningServer, eventually, json_of, look_later, open_stream, put, sha, timed

MiB = 2**20


async def commit(http: Any, server: RunningServer, path: str, data: bytes, base: int | None = 0) -> Any:
    body = BlockCommit(path, base, 1_700_000_000 * 10**9, recipe_of_bytes(data)).to_json()
    return await timed(
        http.post(f"{server.url}/blocks/commit", data=json.dumps(body).encode(), headers=server.headers()),
        server.reactor,
    )


async def put_block(http: Any, server: RunningServer, data: bytes, name: str | None = None, **headers: str) -> Any:
    return await timed(
        http.put(f"{server.url}/blocks/{name or sha(data)}", data=data, headers=server.headers(**headers)),
        server.reactor,
    )


def blocks_of(data: bytes) -> dict[str, bytes]:
    recipe = recipe_of_bytes(data)
    return {block.sha256: data[offset : offset + block.size] for offset, block in recipe.placed()}


@pytest_twisted.ensureDeferred
async def test_a_commit_names_the_missing_blocks_then_takes_them(server: RunningServer, http: Any) -> None:
    data = os.urandom(6 * MiB)
    pieces = blocks_of(data)
    assert len(pieces) > 1
    response = await commit(http, server, "big.bin", data)
    assert response.code == 409
    missing = (await json_of(response))["missing"]
    assert sorted(missing) == sorted(pieces)
    first, *rest = missing
    assert (await put_block(http, server, pieces[first])).code == 201
    response = await commit(http, server, "big.bin", data)
    assert response.code == 409 and sorted((await json_of(response))["missing"]) == sorted(rest)
    for name in rest:
        assert (await put_block(http, server, pieces[name])).code == 201
    response = await commit(http, server, "big.bin", data)
    assert response.code == 201, await response.text()
    answer = await json_of(response)
    assert answer["sha256"] == sha(data) and answer["seq"] == 1
    assert (server.box / "big.bin").read_bytes() == data
    # The blocks sent ahead are gone: the box file holds them now.
    assert list((server.box / ".boxsync/blocks").iterdir()) == []
    assert list((server.box / ".boxsync/staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_which_blocks_are_missing(server: RunningServer, http: Any) -> None:
    data = os.urandom(3 * MiB)
    pieces = blocks_of(data)
    first, *rest = pieces
    assert (await put_block(http, server, pieces[first])).code == 201

    async def missing(body: Any) -> Any:
        return await timed(
            http.post(f"{server.url}/blocks/missing", data=json.dumps(body).encode(), headers=server.headers()),
            server.reactor,
        )

    response = await missing({"blocks": list(pieces)})
    assert response.code == 200 and sorted((await json_of(response))["missing"]) == sorted(rest)
    for bad in ({"blocks": ["nothex"]}, {"blocks": "x"}, [], {"blocks": ["0" * 64] * 16385}):
        assert (await missing(bad)).code == 400


@pytest_twisted.ensureDeferred
async def test_a_copy_and_an_edit_need_only_new_blocks(server: RunningServer, http: Any) -> None:
    data = os.urandom(8 * MiB)
    assert (await put(http, server, "a.bin", data, base=0)).code == 201
    # A whole-file upload's recipe is cut when first asked for.
    response = await timed(http.get(f"{server.url}/blocks/of/a.bin", headers=server.headers()), server.reactor)
    assert response.code == 200
    listed = await json_of(response)
    assert parse_recipe(listed) == recipe_of_bytes(data) and listed["seq"] == 1
    # A copy: nothing is missing.
    assert (await commit(http, server, "copy.bin", data)).code == 201
    assert (server.box / "copy.bin").read_bytes() == data
    # An insert in the middle: one or two blocks.
    edited = data[: 4 * MiB] + b"inserted" + data[4 * MiB :]
    response = await commit(http, server, "copy.bin", edited, base=2)
    assert response.code == 409
    missing = (await json_of(response))["missing"]
    assert 1 <= len(missing) <= 2
    for name in missing:
        assert (await put_block(http, server, blocks_of(edited)[name])).code == 201
    assert (await commit(http, server, "copy.bin", edited, base=2)).code == 201
    assert (server.box / "copy.bin").read_bytes() == edited


@pytest_twisted.ensureDeferred
async def test_blocks_of_a_deleted_file_are_kept_for_a_rename(server: RunningServer, http: Any) -> None:
    data = os.urandom(3 * MiB)
    pieces = blocks_of(data)
    for piece in pieces.values():
        await put_block(http, server, piece)
    assert (await commit(http, server, "old.bin", data)).code == 201
    response = await timed(
        http.delete(f"{server.url}/files/old.bin", headers=server.headers(**{"X-Boxsync-Base": "1"})), server.reactor
    )
    assert response.code == 200
    # The delete came first (as a rename may): its blocks are in the kept version.
    assert (await commit(http, server, "new.bin", data)).code == 201
    assert (server.box / "new.bin").read_bytes() == data
    for name, piece in pieces.items():
        got = await timed(http.get(f"{server.url}/blocks/{name}", headers=server.headers()), server.reactor)
        assert got.code == 200 and await got.content() == piece


@pytest_twisted.ensureDeferred
async def test_the_recipe_of_a_version_live_or_kept(server: RunningServer, http: Any) -> None:
    """
    C{?seq=} asks for the recipe of one version of a path: the live one,
    or a kept one whose recipe is known (a renamed file's client takes it
    from there instead of cutting its file); any other is not found.
    """
    first, second = os.urandom(2 * MiB), os.urandom(2 * MiB)
    for data in (first, second):
        for piece in blocks_of(data).values():
            await put_block(http, server, piece)
    assert (await commit(http, server, "a.bin", first)).code == 201
    assert (await commit(http, server, "a.bin", second, base=1)).code == 201
    assert (await put(http, server, "whole.bin", first, base=0)).code == 201

    async def recipe_at(path: str, seq: int | str) -> tuple[int, Any]:
        response = await timed(
            http.get(f"{server.url}/blocks/of/{path}?seq={seq}", headers=server.headers()), server.reactor
        )
        return response.code, await json_of(response)

    for seq, data in ((1, first), (2, second)):
        code, answer = await recipe_at("a.bin", seq)
        assert (code, answer["path"], answer["seq"], parse_recipe(answer)) == (200, "a.bin", seq, recipe_of_bytes(data))
    # Not a version of this path, none at all, and not a number.
    assert (await recipe_at("whole.bin", 1))[0] == 404
    assert (await recipe_at("a.bin", 3))[0] == 404
    assert (await recipe_at("a.bin", 99))[0] == 404
    assert (await recipe_at("a.bin", "one"))[0] == 400
    # A whole-file upload overwritten before its recipe was asked for: its
    # kept version has none.
    assert (await put(http, server, "whole.bin", second, base=3)).code == 201
    assert (await recipe_at("whole.bin", 3))[0] == 404


@pytest_twisted.ensureDeferred
async def test_a_small_file_is_its_own_block(server: RunningServer, http: Any) -> None:
    data = b"small" * 1000
    assert len(data) <= BLOCK_MIN
    assert (await put(http, server, "s.txt", data, base=0)).code == 201
    assert (await commit(http, server, "t.txt", data)).code == 201
    assert (server.box / "t.txt").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_a_block_that_is_not_its_name_is_refused(server: RunningServer, http: Any) -> None:
    data = os.urandom(1000)
    response = await put_block(http, server, data, name=sha(b"something else"))
    assert response.code == 400
    assert list((server.box / ".boxsync/blocks").iterdir()) == []
    assert (await put_block(http, server, data, name="not-a-sha")).code == 400
    # A block that decodes to more than the largest block is refused.
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (5 * MiB))
    response = await put_block(http, server, bomb, name=sha(b"\0" * (5 * MiB)), **{"Content-Encoding": "zstd"})
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_blocks_travel_compressed_where_it_pays(server: RunningServer, http: Any) -> None:
    text = b"".join(b"2026-12-05 12:00:%02d INFO line %d of the log\n" % (n % 60, n) for n in range(20000))
    noise = os.urandom(500_000)
    for data in (text, noise):
        gz = gzip.compress(data)
        assert (await put_block(http, server, gz, name=sha(data), **{"Content-Encoding": "gzip"})).code == 201
    for data, shrinks in ((text, True), (noise, False)):
        # treq asks for gzip on every request, and decodes it on the way.
        for accept, expected in (("zstd, gzip", "zstd"), ("gzip", None)):
            response = await timed(
                http.get(
                    f"{server.url}/blocks/{sha(data)}",
                    headers=server.headers(**{"Accept-Encoding": accept}),
                ),
                server.reactor,
            )
            assert response.code == 200
            body = await response.content()
            used = response.headers.getRawHeaders("Content-Encoding", [""])[0] or None
            assert used == (expected if shrinks else None)
            if used == "zstd":
                assert zstandard.ZstdDecompressor().decompress(body) == data and len(body) < len(data) / 10
            else:
                assert body == data
    missing = await timed(http.get(f"{server.url}/blocks/{sha(b'none')}", headers=server.headers()), server.reactor)
    assert missing.code == 404


@pytest_twisted.ensureDeferred
async def test_a_stale_commit_is_refused_before_anything_is_read(server: RunningServer, http: Any) -> None:
    assert (await put(http, server, "x.bin", b"one", base=0)).code == 201
    response = await commit(http, server, "x.bin", os.urandom(2 * MiB), base=0)
    assert response.code == 412
    # The same bytes again (an answer lost on the way) are not a conflict.
    response = await commit(http, server, "x.bin", b"one", base=0)
    assert response.code == 201 and (await json_of(response))["seq"] == 1


@pytest_twisted.ensureDeferred
async def test_old_versions_and_unused_blocks_are_tidied_away(server: RunningServer, http: Any) -> None:
    """
    Versions are kept for --keep-versions after they end, blocks sent for a
    commit that never came for a day; then both are removed, and what the
    box shows is never touched.
    """
    assert server.service is not None and server.service.box is not None
    box = server.service.box
    for content, base in ((b"one", 0), (b"two", 1), (b"three", 2)):
        assert (await put(http, server, "f.txt", content, base=base)).code == 201
    assert await put_block(http, server, os.urandom(1000)) is not None
    versions = server.box / ".boxsync/versions"
    assert sorted(p.name for p in versions.iterdir()) == ["1", "2"]
    kept = await box.index.versions(box.account, "f.txt")
    assert [(v.seq, v.ended_seq) for v in kept] == [(2, 3), (1, 2)]
    now = time.time()
    hour = Retention(keep_seconds=3600, thinning=Thinning())
    assert await tidy([box], hour, now=now) == Tidied(0, 0)
    assert await tidy([box], hour, now=now + 3601) == Tidied(2, 0)
    assert list(versions.iterdir()) == [] and await box.index.versions(box.account, "f.txt") == []
    assert await tidy([box], hour, now=now + PENDING_HOURS * 3600 + 1) == Tidied(0, 1)
    assert list((server.box / ".boxsync/blocks").iterdir()) == []
    assert (server.box / "f.txt").read_bytes() == b"three"


def test_durations() -> None:
    assert [parse_duration(text) for text in ("30d", "12h", "90m", "45s", "3600", "1.5h", "2w")] == [
        30 * 86400, 12 * 3600, 90 * 60, 45, 3600, 5400, 14 * 86400,
    ]
    for bad in ("", "d", "-1d", "3y", "1 d 2h"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest_twisted.ensureDeferred
async def test_a_block_still_being_sent_can_be_waited_for(server: RunningServer, http: Any) -> None:
    """
    C{GET /blocks/<sha256>?wait=S} answers once the block arrives, or 404
    after the wait (at once without one).
    """
    assert server.service is not None and server.service.box is not None
    arrivals = server.service.box.arrivals
    data = os.urandom(1000)
    url = f"{server.url}/blocks/{sha(data)}"
    for query in ("", "?wait=0.1", "?wait=nonsense", "?wait=-5"):
        response = await timed(http.get(url + query, headers=server.headers()), server.reactor)
        assert response.code == 404, query
        await response.content()
    waiting = http.get(url + "?wait=20", headers=server.headers())
    await eventually(server.reactor, lambda: sha(data) in arrivals.waited_for())
    assert (await put_block(http, server, data)).code == 201
    response = await timed(waiting, server.reactor)
    assert response.code == 200 and await response.content() == data
    assert arrivals.waited_for() == []
    # Put where the server would not hear of it (as when the news of its
    # arrival on another server is lost): found at the end of the wait.
    other = os.urandom(1000)
    other_url = f"{server.url}/blocks/{sha(other)}"
    waiting = http.get(other_url + "?wait=0.5", headers=server.headers())
    await eventually(server.reactor, lambda: sha(other) in arrivals.waited_for())
    await server.service.box.blocks.put(Block(sha(other), len(other)), other)
    response = await timed(waiting, server.reactor)
    assert response.code == 200 and await response.content() == other
    # Held already: answered at once, and nothing is left waiting (nor a
    # wait given up and left unhandled, which is logged as an error).
    unhandled: list[str] = []

    def observe(event: Any) -> None:
        if event.get("log_level") == LogLevel.critical:
            unhandled.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        response = await timed(http.get(url + "?wait=20", headers=server.headers()), server.reactor)
        assert response.code == 200 and await response.content() == data
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert arrivals.waited_for() == [] and unhandled == []


@pytest_twisted.ensureDeferred
async def test_the_blocks_of_a_file_being_sent_are_told_to_the_other_clients(
    server: RunningServer, http: Any
) -> None:
    """
    A question about missing blocks that says they make a file being sent
    reaches the account's other clients that read it, as an incoming event
    for each run of the blocks the account lacks (one it has is not on its
    way), and not the sender's own stream.
    """
    sender = await open_stream(http, server, Manifest(client="sender", features=[INCOMING_FEATURE]))
    other = await open_stream(http, server, Manifest(client="other", features=[INCOMING_FEATURE]))
    older = await open_stream(http, server, Manifest(client="older"))
    for stream in (sender, other, older):
        await stream.ready()
    hello = next(event for event in sender.events if isinstance(event, Hello))
    # Past twice the largest block: three blocks at least.
    data = os.urandom(9 * MiB)
    recipe = recipe_of_bytes(data)
    incoming = Incoming("big.bin", len(data), 0, [(block.sha256, block.size) for block in recipe.blocks])
    [(offset, held)] = [placed for placed in recipe.placed() if placed[1] == recipe.blocks[1]]
    assert (await put_block(http, server, data[offset : offset + held.size])).code == 201
    response = await timed(
        http.post(
            f"{server.url}/blocks/missing",
            data=json.dumps(blocks_json([block.sha256 for block in recipe.blocks], incoming)).encode(),
            headers=server.headers(X_Boxsync_Stream=hello.stream),
        ),
        server.reactor,
    )
    assert response.code == 200 and len((await json_of(response))["missing"]) == len(recipe.blocks) - 1
    told = await other.wait(lambda events: len([event for event in events if isinstance(event, Incoming)]) == 2)
    first, second = recipe.blocks[0], recipe.blocks[1]
    assert [event for event in told if isinstance(event, Incoming)] == [
        Incoming("big.bin", len(data), 0, [(first.sha256, first.size)]),
        Incoming(
            "big.bin",
            len(data),
            first.size + second.size,
            [(block.sha256, block.size) for block in recipe.blocks[2:]],
        ),
    ]
    # The sender's stream had it no more than a client that does not read it.
    await put(http, server, "after.txt", b"after", base=0)
    for stream in (sender, older):
        events = await stream.wait(lambda events: any(isinstance(event, Download) for event in events))
        assert not any(isinstance(event, Incoming) for event in events)
    for stream in (sender, other, older):
        stream.close()


@pytest.mark.parametrize(
    "incoming",
    [
        "no",
        {"path": "../out", "size": 1, "offset": 0, "blocks": []},
        {"path": "a", "size": 1, "offset": 0, "blocks": [["0" * 64, 2]]},
        {"path": "a", "size": 5, "offset": 0, "blocks": [["zz", 2]]},
        {"path": "a", "size": 5, "offset": 0, "blocks": [["0" * 64]]},
        {"path": "a", "size": 5, "offset": -1, "blocks": []},
        {"path": "a", "size": 5, "blocks": []},
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_bad_announcement_is_refused(server: RunningServer, http: Any, incoming: Any) -> None:
    response = await timed(
        http.post(
            f"{server.url}/blocks/missing",
            data=json.dumps({"blocks": [], "incoming": incoming}).encode(),
            headers=server.headers(),
        ),
        server.reactor,
    )
    assert response.code == 400 and (await json_of(response))["error"]


async def commit_whole(http: Any, server: RunningServer, path: str, data: bytes, base: int) -> int:
    """
    Commit C{data} as C{path} by its recipe, sending the blocks the server
    names as missing; its seq.
    """
    response = await commit(http, server, path, data, base)
    if response.code == 409:
        pieces = blocks_of(data)
        for name in (await json_of(response))["missing"]:
            assert (await put_block(http, server, pieces[name])).code == 201
        response = await commit(http, server, path, data, base)
    assert response.code == 201, await response.text()
    return int((await json_of(response))["seq"])


async def edits(http: Any, server: RunningServer, count: int) -> list[tuple[int, bytes]]:
    """
    Commit C{count} versions of an 8 MiB C{image.bin}, each the one before
    with 4 KiB changed a MiB further on: their seqs and contents.

    The same bytes every run, so the same blocks: with random ones, now and
    then one block holds two edits, and the versions share less than the
    tests rely on.
    """
    chosen = random.Random(20261207)
    data = chosen.randbytes(8 * MiB)
    committed: list[tuple[int, bytes]] = []
    seq = 0
    for n in range(count):
        data = data[: n * MiB] + chosen.randbytes(4096) + data[n * MiB + 4096 :]
        seq = await commit_whole(http, server, "image.bin", data, seq)
        committed.append((seq, data))
    return committed


def on_disk(path: Any) -> int:
    return int(path.stat().st_blocks) * 512


@pytest_twisted.ensureDeferred
async def test_kept_versions_share_the_blocks_they_have_in_common(server: RunningServer, http: Any) -> None:
    """
    Six versions of a file, each an edit of the one before: once tidied,
    the kept versions take little more than what changed, and each is still
    read, restored and kept whole when a version it shares blocks with is
    forgotten.
    """
    assert server.service is not None and server.service.box is not None
    box = server.service.box
    seqs, contents = map(list, zip(*await edits(http, server, 6)))
    versions = server.box / ".boxsync/versions"
    before = sum(on_disk(versions / str(seq)) for seq in seqs[:-1])
    assert before >= 5 * 8 * MiB
    freed = await box.shared.share()
    after = sum(on_disk(versions / str(seq)) for seq in seqs[:-1])
    assert freed == before - after and after < 8 * MiB + 4 * 2 * 4 * MiB, (before, after)
    # Read: each version whole, as it was.
    for seq, content in zip(seqs[:-1], contents):
        response = await timed(http.get(f"{server.url}/versions/{seq}", headers=server.headers()), server.reactor)
        assert response.code == 200 and sha(await response.content()) == sha(content), seq
    await box.shared.share()
    # Forgotten: the newest kept versions go, the oldest stays readable.
    assert len(await box.shared.forget(seqs[1:-1])) == 4
    await box.shared.share()
    response = await timed(http.get(f"{server.url}/versions/{seqs[0]}", headers=server.headers()), server.reactor)
    assert response.code == 200 and sha(await response.content()) == sha(contents[0])
    # Restored: the live file is the version, whole.
    response = await timed(
        http.post(
            f"{server.url}/restore",
            data=json.dumps({"path": "image.bin", "seq": seqs[0], "base": seqs[-1]}).encode(),
            headers=server.headers(),
        ),
        server.reactor,
    )
    assert response.code == 201, await response.text()
    assert sha((server.box / "image.bin").read_bytes()) == sha(contents[0])
    await box.shared.share()
    assert sha((server.box / "image.bin").read_bytes()) == sha(contents[0])


@pytest_twisted.ensureDeferred
async def test_a_version_is_made_whole_by_the_kernel_from_kept_versions(
    server: RunningServer, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The holes of a kept version are copied back from the other kept
    versions' files, even where the live file holds the same blocks: no
    block is read and hashed.
    """
    assert server.service is not None and server.service.box is not None
    box = server.service.box
    seqs, contents = map(list, zip(*await edits(http, server, 3)))
    assert await box.shared.share() > 4 * MiB
    read: list[str] = []
    store = type(box.blocks)
    real_read_many = store.read_many

    def reading(self: Any, hashes: Any) -> Any:
        read.extend(hashes)
        return real_read_many(self, hashes)

    monkeypatch.setattr(store, "read_many", reading)
    response = await timed(http.get(f"{server.url}/versions/{seqs[0]}", headers=server.headers()), server.reactor)
    assert response.code == 200 and sha(await response.content()) == sha(contents[0])
    assert read == []
    assert on_disk(server.box / ".boxsync/versions" / str(seqs[0])) >= len(contents[0])


@pytest_twisted.ensureDeferred
async def test_a_block_no_kept_version_has_any_more_is_read_from_a_live_file(
    server: RunningServer, http: Any
) -> None:
    """
    Where the kept version that held a block has lost it (its file cut
    short by hand), the hole is filled from a live file that has it, read
    and checked.
    """
    assert server.service is not None and server.service.box is not None
    box = server.service.box
    # The same bytes every run, so the same blocks: random ones may make a
    # block that both edits fall in, and share less.
    chosen = random.Random(20261206)
    first = chosen.randbytes(8 * MiB)
    seqs = [await commit_whole(http, server, "image.bin", first, 0)]
    # A copy, made while the first version was live: a file of its own.
    await commit_whole(http, server, "copy.bin", first, 0)
    for n in (1, 2):
        edited = first[: n * MiB] + chosen.randbytes(4096) + first[n * MiB + 4096 :]
        seqs.append(await commit_whole(http, server, "image.bin", edited, seqs[-1]))
    assert await box.shared.share() > 4 * MiB
    os.truncate(server.box / ".boxsync/versions" / str(seqs[1]), 0)
    response = await timed(http.get(f"{server.url}/versions/{seqs[0]}", headers=server.headers()), server.reactor)
    assert response.code == 200 and sha(await response.content()) == sha(first)


@pytest_twisted.ensureDeferred
async def test_the_history_limit_counts_what_shared_versions_take(server: RunningServer, http: Any) -> None:
    """
    Five kept versions of an 8 MiB file that differ by a few blocks take
    little more than one of them once they share their blocks: a history
    limit a little over what they take on disk keeps them all, one below
    it forgets the oldest first.
    """
    assert server.service is not None and server.service.box is not None
    box = server.service.box
    seqs = [seq for seq, _ in await edits(http, server, 6)]
    kept = seqs[:-1]
    await box.shared.share()
    versions = server.box / ".boxsync/versions"
    taken = sum(on_disk(versions / str(seq)) for seq in kept)
    assert taken + MiB < len(kept) * 8 * MiB // 2
    now = time.time()
    roomy = Retention(keep_seconds=3600, thinning=Thinning(), history_max=HistoryMax(size=taken + MiB))
    assert await tidy([box], roomy, now) == Tidied(0, 0)
    assert sorted(int(name) for name in os.listdir(versions)) == kept
    oldest = on_disk(versions / str(kept[0]))
    tight = Retention(keep_seconds=3600, thinning=Thinning(), history_max=HistoryMax(size=taken - oldest // 2))
    assert (await tidy([box], tight, now)).versions >= 1
    left = sorted(int(name) for name in os.listdir(versions))
    assert kept[0] not in left and left == kept[len(kept) - len(left) :] and kept[-1] in left


@pytest_twisted.ensureDeferred
async def test_the_history_limit_counts_versions_as_they_will_share(server: RunningServer, http: Any) -> None:
    """
    Versions not shared yet (the tidying shares them after it has
    forgotten those over the limit) are counted as they will take: a limit
    a little over one version and the edits keeps them all, and they fit
    in it once shared.
    """
    assert server.service is not None and server.service.box is not None
    box = server.service.box
    seqs = [seq for seq, _ in await edits(http, server, 6)]
    kept, versions = seqs[:-1], server.box / ".boxsync/versions"
    assert sum(on_disk(versions / str(seq)) for seq in kept) >= len(kept) * 8 * MiB
    # Each older version keeps the block it changed (at most 4 MiB).
    limit = 8 * MiB + (len(kept) - 1) * 4 * MiB
    roomy = Retention(keep_seconds=3600, thinning=Thinning(), history_max=HistoryMax(size=limit))
    assert (await tidy([box], roomy, time.time())).versions == 0
    assert sorted(int(name) for name in os.listdir(versions)) == kept
    assert sum(on_disk(versions / str(seq)) for seq in kept) <= limit



@pytest_twisted.ensureDeferred
async def test_a_version_overwritten_by_hand_is_not_listed_as_kept_nor_taken_for_its_blocks(
    server: RunningServer, http: Any
) -> None:
    """
    The live file of a path overwritten in the box by hand: its bytes are
    gone, so its version is no longer kept. Before, the look recorded it as
    kept, with its blocks: the history listed a version no restore could
    bring back, and the older kept versions had the blocks they share with
    it punched out, as if it held them, so they could no longer be read.
    """
    assert server.service is not None and server.service.box is not None
    box = server.service.box
    seqs, contents = map(list, zip(*await edits(http, server, 3)))
    (server.box / "image.bin").write_bytes(b"written over by hand")
    taken = await look_later(box)
    assert taken.changed == 1
    history = await timed(http.get(f"{server.url}/history/image.bin", headers=server.headers()), server.reactor)
    listed = [v["seq"] for v in (await json_of(history))["versions"]]
    assert seqs[-1] not in listed and seqs[0] in listed
    await box.shared.share()
    for seq, data in zip(seqs[:-1], contents):
        response = await timed(http.get(f"{server.url}/versions/{seq}", headers=server.headers()), server.reactor)
        assert response.code == 200 and sha(await response.content()) == sha(data), seq


@pytest_twisted.ensureDeferred
async def test_a_file_removed_by_hand_is_not_in_the_trash(server: RunningServer, http: Any) -> None:
    """
    A file removed from the box by hand is deleted, and its bytes are gone:
    the trash does not list it as a file to bring back.
    """
    assert server.service is not None and server.service.box is not None
    await put(http, server, "kept.txt", b"deleted the usual way", base=0)
    await put(http, server, "gone.txt", b"removed by hand", base=0)
    response = await timed(
        http.delete(server.file_url("kept.txt"), headers=server.headers(X_Boxsync_Base="1")), server.reactor
    )
    assert response.code == 200
    (server.box / "gone.txt").unlink()
    assert (await look_later(server.service.box)).removed == 1
    trash = await json_of(await timed(http.get(f"{server.url}/trash", headers=server.headers()), server.reactor))
    assert [entry["path"] for entry in trash["files"]] == ["kept.txt"]


@pytest_twisted.ensureDeferred
async def test_a_kept_version_whose_file_is_gone_is_forgotten_before_the_others_share(
    server: RunningServer, http: Any
) -> None:
    """
    The file of a kept version removed from C{.boxsync/versions} by hand
    (or a version an earlier server recorded as kept when the box file was
    written over by hand): the tidying forgets it before the kept versions
    share their blocks, so none gives up a block for it, and it is no
    longer listed. One that ended a moment ago is left alone: its file may
    be on its way.
    """
    assert server.service is not None and server.service.box is not None
    box = server.service.box
    seqs, contents = map(list, zip(*await edits(http, server, 4)))
    (server.box / ".boxsync/versions" / str(seqs[2])).unlink()
    keep_all = Retention(keep_seconds=3600, thinning=Thinning(), history_max=HistoryMax())
    await tidy([box], keep_all, time.time())
    assert seqs[2] in [v.seq for v in await box.index.versions(box.account, "image.bin")]
    await tidy([box], keep_all, time.time() + 120)
    assert [v.seq for v in await box.index.versions(box.account, "image.bin")] == [seqs[1], seqs[0]]
    for seq, data in zip(seqs[:2], contents):
        response = await timed(http.get(f"{server.url}/versions/{seq}", headers=server.headers()), server.reactor)
        assert response.code == 200 and sha(await response.content()) == sha(data), seq


@pytest_twisted.ensureDeferred
async def test_over_the_history_limit_the_only_copy_of_a_deleted_file_stays_longest(
    server: RunningServer, http: Any
) -> None:
    """
    A file deleted first, then another overwritten: over the history
    limit, the overwritten file's old version goes, though younger; the
    deleted file's last version (its only copy) stays. A file deleted and
    made again is no longer only in the history: its old version goes as
    any other.
    """
    assert server.service is not None and server.service.box is not None
    box = server.service.box
    gone = await json_of(await put(http, server, "gone.txt", b"g" * 1000))
    response = await http.delete(server.file_url("gone.txt"), headers=server.headers(X_Boxsync_Base=str(gone["seq"])))
    assert response.code == 200
    back = await json_of(await put(http, server, "back.txt", b"b" * 1000))
    response = await http.delete(server.file_url("back.txt"), headers=server.headers(X_Boxsync_Base=str(back["seq"])))
    assert response.code == 200
    assert (await put(http, server, "back.txt", b"made again", base=0)).code == 201
    doc = await json_of(await put(http, server, "doc.txt", b"d" * 1000))
    assert (await put(http, server, "doc.txt", b"the new doc", base=doc["seq"])).code == 201
    kept = await box.index.kept_versions(box.account)
    assert sorted(v.seq for v in kept) == sorted([gone["seq"], back["seq"], doc["seq"]])
    assert await only_copies(box, kept) == {gone["seq"]}
    tight = Retention(keep_seconds=3600, thinning=Thinning(), history_max=HistoryMax(size=1000))
    assert (await tidy([box], tight, time.time())).versions == 2
    assert [v.seq for v in await box.index.kept_versions(box.account)] == [gone["seq"]]
