"""
Batches of small files (C{POST /batch/upload}, C{POST /batch/download}):
the server's routes, the client's API calls and the L{Batcher} that gathers
the engine's small transfers, against a real server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import pytest_twisted
from attrs import define, evolve, field
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher

from boxsync.client.api import BoxsyncAPI
from boxsync.client.errors import APIError, BadRequest, DigestMismatch, NotFound, StaleBase, TooLarge, error_for
from boxsync.client.results import CommitResult, DownloadResult
from boxsync.client.batch import Batcher
from boxsync.wire import BATCH, BATCH_FILE_LIMIT, BatchFile, Delete, Download, Manifest, encode_part
from tests.conftest import KEY
from tests.helpers import RunningServer, http_client, open_stream, timed


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@define
class Env:
    reactor: Any
    server: RunningServer
    api: BoxsyncAPI
    tmp: Path

    def batcher(self) -> Batcher:
        return Batcher(self.api, self.reactor, deferToThread)

    def staged(self) -> list[str]:
        return os.listdir(self.server.box / ".boxsync" / "staging")


@define
class CountingAPI(BoxsyncAPI):
    """
    Counts the files of each batch upload.
    """

    sent: list[int] = field(factory=list)

    async def upload_batch(self, files: Any) -> Any:
        self.sent.append(len(files))
        return await super().upload_batch(files)


@define
class RecordingAPI(BoxsyncAPI):
    """
    Records the files of each batch upload and the paths of each batch
    download; C{before_upload} runs before each batch upload.
    """

    uploaded: list[tuple[BatchFile, bytes]] = field(factory=list)
    fetched: list[str] = field(factory=list)
    deleted: list[int] = field(factory=list)
    before_upload: Callable[[], None] = lambda: None

    async def upload_batch(self, files: Any) -> Any:
        self.uploaded.extend(files)
        self.before_upload()
        return await super().upload_batch(files)

    async def download_batch(self, paths: Any) -> Any:
        self.fetched.extend(paths)
        return await super().download_batch(paths)

    async def delete_batch(self, deletes: Any) -> Any:
        self.deleted.append(len(deletes))
        return await super().delete_batch(deletes)


@define
class OlderServerAPI(BoxsyncAPI):
    """
    Talks to a server that has no batches: it answers them 404.
    """

    async def upload_batch(self, files: Any) -> Any:
        raise error_for(404, b'{"error": "no such route"}')

    async def download_batch(self, paths: Any) -> Any:
        raise error_for(404, b'{"error": "no such route"}')

    async def delete_batch(self, deletes: Any) -> Any:
        raise error_for(404, b'{"error": "no such route"}')


@pytest_twisted.async_yield_fixture
async def env(tmp_path: Path, reactor: Any, server: RunningServer) -> AsyncIterator[Env]:
    client, pool = http_client(reactor)
    api = BoxsyncAPI(client, reactor, server.url, KEY, "tester")
    try:
        yield Env(reactor, server, api, tmp_path)
    finally:
        await pool.closeCachedConnections()


def _file(path: str, data: bytes, base: int | None = 0) -> tuple[BatchFile, bytes]:
    return BatchFile(path, len(data), sha(data), 1_700_000_000_000_000_000, base), data


@pytest_twisted.ensureDeferred
async def test_upload_batch_commits_each_file(env: Env, http: Any) -> None:
    """
    Every file of a batch is committed with its bytes, mtime and its own
    seq, and each is announced on other streams.
    """
    watcher = await open_stream(http, env.server, Manifest(client="watcher"))
    await watcher.ready()
    files = [_file(f"d{i % 3}/f{i}.txt", os.urandom(i * 100)) for i in range(20)]
    outcomes = await timed(Deferred.fromCoroutine(env.api.upload_batch(files)), env.reactor)
    assert [type(o) for o in outcomes] == [CommitResult] * 20
    assert sorted(o.seq for o in outcomes) == list(range(1, 21))  # type: ignore[union-attr]
    for (file, data), outcome in zip(files, outcomes):
        assert isinstance(outcome, CommitResult)
        assert (outcome.path, outcome.sha256, outcome.size) == (file.path, file.sha256, len(data))
        local = env.server.box / file.path
        assert local.read_bytes() == data
        assert local.stat().st_mtime_ns == file.mtime_ns
        assert local.stat().st_mode & 0o777 == 0o644
    events = await watcher.wait(lambda e: len([x for x in e if isinstance(x, Download)]) >= 20)
    announced = {e.path for e in events if isinstance(e, Download)}
    assert announced == {file.path for file, _ in files}
    assert env.staged() == []
    watcher.close()


@pytest_twisted.ensureDeferred
async def test_a_batch_is_logged_as_a_whole(env: Env) -> None:
    """
    A batch upload is one line in the server's log at info level (with
    what was refused); each file's own line is at debug level.
    """
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        taken = await env.api.upload_batch([_file("taken.txt", b"one")])
        outcomes = await timed(
            Deferred.fromCoroutine(
                env.api.upload_batch(
                    [_file(f"f{i}.txt", b"x" * i) for i in range(1, 5)] + [_file("taken.txt", b"two")]
                )
            ),
            env.reactor,
        )
    finally:
        globalLogPublisher.removeObserver(events.append)
    seqs = [o.seq for o in outcomes[:4]]  # type: ignore[union-attr]
    assert seqs == list(range(taken[0].seq + 1, taken[0].seq + 5))  # type: ignore[union-attr]
    info = [e for e in events if e.get("log_namespace") == "boxsync.server.batch"]
    assert [(e["log_level"], e["count"], e["size"], e["refused"]) for e in info] == [
        (LogLevel.info, 1, 3, 0),
        (LogLevel.info, 4, 10, 1),
    ]
    assert f"as seqs {seqs[0]} to {seqs[-1]}" in info[1]["seqs"]
    each = [e for e in events if "path" in e and e.get("log_namespace", "").startswith("boxsync.server.box")]
    assert sorted(e["path"] for e in each) == ["f1.txt", "f2.txt", "f3.txt", "f4.txt", "taken.txt"]
    assert {e["log_level"] for e in each} == {LogLevel.debug}


@pytest_twisted.ensureDeferred
async def test_upload_batch_files_fail_alone(env: Env) -> None:
    """
    A stale base or a body that does not match its sha256 fails that file
    only, with the error it would get alone.
    """
    first = await env.api.upload_batch([_file("taken.txt", b"one")])
    assert isinstance(first[0], CommitResult)
    bad = BatchFile("bad.txt", 3, sha(b"not this"), 1, 0), b"abc"
    outcomes = await timed(
        Deferred.fromCoroutine(
            env.api.upload_batch([_file("taken.txt", b"two", base=0), bad, _file("good.txt", b"ok")])
        ),
        env.reactor,
    )
    assert isinstance(outcomes[0], StaleBase) and outcomes[0].current_seq == first[0].seq  # type: ignore[union-attr]
    assert isinstance(outcomes[1], BadRequest) and "sha256" in outcomes[1].message
    assert isinstance(outcomes[2], CommitResult)
    assert (env.server.box / "taken.txt").read_bytes() == b"one"
    assert not (env.server.box / "bad.txt").exists()
    assert (env.server.box / "good.txt").read_bytes() == b"ok"
    assert env.staged() == []


@pytest_twisted.ensureDeferred
async def test_stored_parts_take_the_content_the_account_has(env: Env) -> None:
    """
    A stored part carries no bytes: the server takes its content from a
    file or a kept version of the account, and refuses it (409, that file
    only) when the account has it nowhere.
    """
    live, gone, unknown = os.urandom(3000), os.urandom(2000), os.urandom(1000)
    first = await env.api.upload_batch([_file("live.bin", live), _file("gone.bin", gone)])
    await env.api.delete("gone.bin", first[1].seq)  # type: ignore[union-attr]
    assert await env.api.missing_blocks([sha(live), sha(gone), sha(unknown)]) == {sha(unknown)}

    def stored(path: str, data: bytes) -> tuple[BatchFile, bytes]:
        return evolve(_file(path, data)[0], size=0, stored=True), b""

    outcomes = await timed(
        Deferred.fromCoroutine(
            env.api.upload_batch([stored("copy.bin", live), stored("back.bin", gone), stored("nowhere.bin", unknown)])
        ),
        env.reactor,
    )
    assert [type(o) for o in outcomes[:2]] == [CommitResult, CommitResult]
    assert isinstance(outcomes[2], APIError) and outcomes[2].status == 409
    assert (env.server.box / "copy.bin").read_bytes() == live
    assert (env.server.box / "back.bin").read_bytes() == gone
    assert (env.server.box / "copy.bin").stat().st_mtime_ns == 1_700_000_000_000_000_000
    assert not (env.server.box / "nowhere.bin").exists()
    assert env.staged() == []


@pytest_twisted.ensureDeferred
async def test_the_batcher_sends_only_content_the_server_lacks(env: Env) -> None:
    """
    A batch asks the server which of its contents it has, and sends those
    without their bytes; what it lacks goes with its bytes, and a content
    that went missing after the question is sent again with its bytes.
    """
    api = RecordingAPI(env.api.http, env.reactor, env.server.url, KEY, "tester")
    batcher = Batcher(api, env.reactor, deferToThread, blocks=True)
    source = env.tmp / "source"
    source.mkdir()
    old = {f"old{i}": os.urandom(4000) for i in range(10)}
    await env.api.upload_batch([_file(path, data) for path, data in old.items()])
    # One content goes from the server after the question (the index
    # still names the file).
    api.before_upload = lambda: (env.server.box / "old0").unlink(missing_ok=True)
    new = {f"new{i}": data for i, data in enumerate(old.values())} | {"fresh": os.urandom(4000)}
    for path, data in new.items():
        (source / path).write_bytes(data)
    outcomes = await timed(
        gatherResults(
            [batcher.upload(BatchFile(path, len(data), sha(data), 1, 0), source / path) for path, data in new.items()]
        ),
        env.reactor,
    )
    assert all(isinstance(outcome, CommitResult) for outcome in outcomes)
    stored = {file.path for file, data in api.uploaded if file.stored}
    assert stored == {f"new{i}" for i in range(10)}
    assert all(data == b"" for file, data in api.uploaded if file.stored)
    for path, data in new.items():
        assert (env.server.box / path).read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_content_known_to_the_server_is_sent_stored_without_asking(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Files whose content the server is known to have (renamed here) go as
    stored parts without the question; one it turns out to lack goes again
    with its bytes.
    """
    api = RecordingAPI(env.api.http, env.reactor, env.server.url, KEY, "tester")
    asked: list[list[str]] = []
    real = BoxsyncAPI.missing_blocks

    async def missing_blocks(self: BoxsyncAPI, hashes: list[str], incoming: Any = None) -> set[str]:
        asked.append(hashes)
        return await real(self, hashes, incoming)

    monkeypatch.setattr(BoxsyncAPI, "missing_blocks", missing_blocks)
    batcher = Batcher(api, env.reactor, deferToThread, blocks=True)
    source = env.tmp / "source"
    source.mkdir()
    old = {f"old{i}": os.urandom(4000) for i in range(5)}
    await env.api.upload_batch([_file(path, data) for path, data in old.items()])
    new = {f"new{i}": data for i, data in enumerate(old.values())} | {"lost": os.urandom(4000)}
    for path, data in new.items():
        (source / path).write_bytes(data)
    outcomes = await timed(
        gatherResults(
            [
                batcher.upload(BatchFile(path, len(data), sha(data), 1, 0), source / path, known=True)
                for path, data in new.items()
            ]
        ),
        env.reactor,
    )
    assert all(isinstance(outcome, CommitResult) for outcome in outcomes)
    assert asked == []
    # All went stored; the server refused the one it lacks, sent alone then.
    assert sorted(file.path for file, data in api.uploaded if file.stored) == sorted(new)
    for path, data in new.items():
        assert (env.server.box / path).read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_the_batcher_copies_content_it_has_here(env: Env) -> None:
    """
    A download whose content a local file has is copied from it (checked
    against its sha256) and not fetched; a source that no longer has it is
    passed over.
    """
    api = RecordingAPI(env.api.http, env.reactor, env.server.url, KEY, "tester")
    batcher = Batcher(api, env.reactor, deferToThread)
    here = env.tmp / "here"
    here.mkdir()
    files = {f"f{i}": os.urandom(3000) for i in range(4)}
    committed = await env.api.upload_batch([_file(path, data) for path, data in files.items()])
    (here / "f0").write_bytes(files["f0"])
    (here / "f1").write_bytes(b"changed since")
    os.mkfifo(here / "fifo")
    outcomes = await timed(
        gatherResults(
            [
                batcher.download(
                    path, env.tmp / f"t-{path}", sha(data), len(data), 7, [here / "fifo", here / path], result.seq  # type: ignore[union-attr]
                )
                for (path, data), result in zip(files.items(), committed)
            ]
        ),
        env.reactor,
    )
    assert sorted(api.fetched) == ["f1", "f2", "f3"]
    for path, data in files.items():
        assert (env.tmp / f"t-{path}").read_bytes() == data
    assert outcomes[0].seq == committed[0].seq and outcomes[0].placed.st_mtime_ns == 7  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [
        b'{"path": "a", "size": 10}\nshort',
        b"no header end",
        b'{"path": "../up", "size": 1, "sha256": "' + b"0" * 64 + b'", "mtime_ns": 1}\nx',
        b'{"path": "a", "size": 1, "sha256": "xyz", "mtime_ns": 1}\nx',
        b"[1]\n",
        b"".join(encode_part({**_file("stored", b"1")[0].to_json(), "stored": True}, b"1")),
        b"".join(encode_part(_file("twice", b"1")[0].to_json(), b"1") * 2),
        b"".join(
            encode_part(BatchFile("big", BATCH_FILE_LIMIT + 1, "0" * 64, 1).to_json(), b"x" * (BATCH_FILE_LIMIT + 1))
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_upload_batch_refused_whole(env: Env, http: Any, body: bytes) -> None:
    """
    A malformed batch is refused with 400 before anything is stored.
    """
    response = await http.post(
        env.server.url + "/batch/upload",
        data=body,
        headers=env.server.headers(**{"Content-Type": BATCH}),
    )
    answer = json.loads(await response.content())
    assert response.code == 400, answer
    assert answer["error"]
    assert [p for p in os.listdir(env.server.box) if p != ".boxsync"] == []
    assert env.staged() == []


@pytest_twisted.ensureDeferred
async def test_batches_need_credentials(env: Env, http: Any) -> None:
    file, data = _file("x", b"x")
    for route, body in (("upload", b"".join(encode_part(file.to_json(), data))), ("download", b'{"paths": ["x"]}')):
        response = await http.post(env.server.url + f"/batch/{route}", data=body)
        assert response.code == 401
        await response.content()
    assert not (env.server.box / "x").exists()


@pytest_twisted.ensureDeferred
async def test_download_batch(env: Env) -> None:
    """
    A batch download answers each path with the current version's bytes
    and seq, or 404.
    """
    files = [_file(f"f{i}", os.urandom(1000 + i)) for i in range(5)]
    committed = await env.api.upload_batch(files)
    parts = await timed(
        Deferred.fromCoroutine(env.api.download_batch(["f3", "missing", "f0", "f3"])), env.reactor
    )
    assert [header["path"] for header, _ in parts] == ["f3", "missing", "f0"]
    (h3, d3), (hm, dm), (h0, d0) = parts
    assert d3 == files[3][1] and h3["sha256"] == sha(d3) and h3["seq"] == committed[3].seq  # type: ignore[union-attr]
    assert h3["status"] == 200 and h3["mtime_ns"] == files[3][0].mtime_ns
    assert d0 == files[0][1]
    assert hm["status"] == 404 and dm == b""


@pytest_twisted.ensureDeferred
async def test_download_batch_bad_request(env: Env, http: Any) -> None:
    for body in (b"[]", b'{"paths": "a"}', b'{"paths": ["/etc/passwd"]}', b"{"):
        response = await http.post(
            env.server.url + "/batch/download", data=body, headers=env.server.headers()
        )
        assert response.code == 400, body
        assert json.loads(await response.content())["error"]


@pytest_twisted.ensureDeferred
async def test_batcher_gathers_many_files(env: Env) -> None:
    """
    Hundreds of small transfers asked for at once all succeed, in far fewer
    requests than files, and what comes back down is what went up.
    """
    api = CountingAPI(env.api.http, env.reactor, env.server.url, KEY, "tester")
    batcher = Batcher(api, env.reactor, deferToThread)
    source = env.tmp / "source"
    source.mkdir()
    contents = {f"n{i // 50}/f{i}": os.urandom(i % 700) for i in range(600)}
    for path, data in contents.items():
        (source / path).parent.mkdir(exist_ok=True)
        (source / path).write_bytes(data)
    uploads = [
        batcher.upload(
            BatchFile(path, len(data), sha(data), 1_600_000_000_000_000_000, 0, len(data) % 2 == 1), source / path
        )
        for path, data in contents.items()
    ]
    results = await timed(gatherResults(uploads), env.reactor)
    assert {r.path for r in results} == set(contents)
    assert sum(api.sent) == 600 and len(api.sent) < 20
    dest = env.tmp / "dest"
    dest.mkdir()
    downloads = [
        batcher.download(path, dest / f"t{i}", sha(data), len(data), 1_700_000_000_123_456_789)
        for i, (path, data) in enumerate(contents.items())
    ]
    got = await timed(gatherResults(downloads), env.reactor)
    for i, ((path, data), result) in enumerate(zip(contents.items(), got)):
        assert isinstance(result, DownloadResult)
        assert (dest / f"t{i}").read_bytes() == data
        assert result.sha256 == sha(data)
        assert result.executable is (len(data) % 2 == 1)
        # Those a batch wrote have their mtime, and the stat taken of them.
        written = (dest / f"t{i}").stat()
        if result.placed is not None:
            assert written.st_mtime_ns == 1_700_000_000_123_456_789
            assert (result.placed.st_ino, result.placed.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert sum(result.placed is not None for result in got) > 500
    assert batcher.supported is True


@pytest_twisted.ensureDeferred
async def test_batcher_outcomes_per_file(env: Env) -> None:
    """
    Through the batcher too each file gets its own outcome: a stale base,
    a file changed since it was hashed, a file gone from the server, a
    version replaced meanwhile.
    """
    batcher = env.batcher()
    local = env.tmp / "x"
    local.write_bytes(b"local")
    ok = batcher.upload(BatchFile("ok", 5, sha(b"local"), 1, 0), local)
    assert isinstance(await timed(ok, env.reactor), CommitResult)
    # The same bytes sent again from the same base are not a conflict: the
    # answer is the version that holds them.
    again = await timed(batcher.upload(BatchFile("ok", 5, sha(b"local"), 1, 0), local), env.reactor)
    assert isinstance(again, CommitResult)
    other = env.tmp / "y"
    other.write_bytes(b"other")
    stale = batcher.upload(BatchFile("ok", 5, sha(b"other"), 1, 0), other)
    changed = batcher.upload(BatchFile("changed", 5, sha(b"other"), 1, 0), local)
    with pytest.raises(StaleBase):
        await timed(stale, env.reactor)
    with pytest.raises(BadRequest, match="sha256"):
        await timed(changed, env.reactor)
    gone = batcher.download("nothing", env.tmp / "t1", sha(b""), 0, 1)
    replaced = batcher.download("ok", env.tmp / "t2", sha(b"an older version"), 5, 1)
    with pytest.raises(NotFound):
        await timed(gone, env.reactor)
    with pytest.raises(DigestMismatch):
        await timed(replaced, env.reactor)
    assert not (env.tmp / "t1").exists() and not (env.tmp / "t2").exists()


@pytest_twisted.ensureDeferred
async def test_batcher_without_batches(env: Env) -> None:
    """
    A server that has no batches (404, as an older server answers) gets
    each file on its own.
    """
    api = OlderServerAPI(env.api.http, env.reactor, env.server.url, KEY, "tester")
    batcher = Batcher(api, env.reactor, deferToThread)
    for name in ("one", "two"):
        (env.tmp / name).write_bytes(name.encode())
    uploads = [batcher.upload(BatchFile(name, 3, sha(name.encode()), 1, 0), env.tmp / name) for name in ("one", "two")]
    results = await timed(gatherResults(uploads), env.reactor)
    assert [r.path for r in results] == ["one", "two"] and batcher.supported is False
    downloads = [batcher.download(name, env.tmp / f"t-{name}", sha(name.encode()), 3, 1) for name in ("one", "two")]
    got = await timed(gatherResults(downloads), env.reactor)
    assert [g.sha256 for g in got] == [sha(b"one"), sha(b"two")]
    assert (env.tmp / "t-two").read_bytes() == b"two"
    deleted = await timed(gatherResults([batcher.delete(r.path, r.seq) for r in results]), env.reactor)
    assert [d.path for d in deleted] == ["one", "two"] and batcher.deletes_supported is False
    assert not (env.server.box / "one").exists() and not (env.server.box / "two").exists()


@pytest_twisted.ensureDeferred
async def test_a_lone_transfer_goes_in_a_request_of_its_own(env: Env) -> None:
    """
    With nothing else under way, a file goes as a plain PUT (and comes back
    as a GET): no batch, no wait.
    """
    api = CountingAPI(env.api.http, env.reactor, env.server.url, KEY, "tester")
    batcher = Batcher(api, env.reactor, deferToThread)
    (env.tmp / "lone").write_bytes(b"lone")
    result = await timed(batcher.upload(BatchFile("lone", 4, sha(b"lone"), 1, 0), env.tmp / "lone"), env.reactor)
    assert result.path == "lone" and api.sent == [] and batcher.supported is None
    got = await timed(batcher.download("lone", env.tmp / "t", sha(b"lone"), 4, 1), env.reactor)
    assert got.size == 4 and (env.tmp / "t").read_bytes() == b"lone"


@pytest_twisted.ensureDeferred
async def test_a_batch_sends_the_bytes_the_engine_hashed(env: Env) -> None:
    """
    Given the bytes of a file (those its look hashed), the batch sends them,
    whatever the file holds now; without them it reads the file.
    """
    api = CountingAPI(env.api.http, env.reactor, env.server.url, KEY, "tester")
    batcher = Batcher(api, env.reactor, deferToThread)
    (env.tmp / "kept").write_bytes(b"saved since the look")
    (env.tmp / "read").write_bytes(b"read now")
    outcomes = await timed(
        gatherResults(
            [
                batcher.upload(BatchFile("kept", 6, sha(b"hashed"), 1, 0), env.tmp / "kept", b"hashed"),
                batcher.upload(BatchFile("read", 8, sha(b"read now"), 1, 0), env.tmp / "read"),
            ]
        ),
        env.reactor,
    )
    assert api.sent == [2] and [o.sha256 for o in outcomes] == [sha(b"hashed"), sha(b"read now")]
    assert (env.server.box / "kept").read_bytes() == b"hashed"
    assert (env.server.box / "read").read_bytes() == b"read now"


@pytest_twisted.ensureDeferred
async def test_upload_batch_keeps_the_upload_limit(tmp_path: Path, reactor: Any) -> None:
    """
    A file of a batch over C{--max-upload} is refused (413) as it would be
    alone; the others of the batch are committed.
    """
    from tests.helpers import running_server

    async with running_server(reactor, tmp_path / "box", KEY, max_upload=100) as server:
        client, pool = http_client(reactor)
        try:
            api = BoxsyncAPI(client, reactor, server.url, KEY, "tester")
            outcomes = await timed(
                Deferred.fromCoroutine(api.upload_batch([_file("big", b"x" * 101), _file("ok", b"x" * 100)])),
                reactor,
            )
        finally:
            await pool.closeCachedConnections()
        assert isinstance(outcomes[0], TooLarge)
        assert isinstance(outcomes[1], CommitResult)
        assert not (server.box / "big").exists() and (server.box / "ok").read_bytes() == b"x" * 100
        assert os.listdir(server.box / ".boxsync" / "staging") == []


@pytest_twisted.ensureDeferred
async def test_a_file_left_out_of_a_batch_is_fetched_on_its_own(env: Env, http: Any) -> None:
    """
    A file that has grown past what a batch carries since its event (the
    server answers 413 for it) comes on its own, whole and checked.
    """
    from tests.helpers import put

    big = os.urandom(BATCH_FILE_LIMIT + 1)
    response = await put(http, env.server, "grown", big)
    assert response.code == 201
    await response.content()
    await env.api.upload_batch([_file("small", b"small")])
    batcher = env.batcher()
    downloads = [
        batcher.download("grown", env.tmp / "t-grown", sha(big), 10, 1),
        batcher.download("small", env.tmp / "t-small", sha(b"small"), 5, 1),
    ]
    got = await timed(gatherResults(downloads), env.reactor)
    assert [g.size for g in got] == [len(big), 5]
    assert (env.tmp / "t-grown").read_bytes() == big and batcher.supported is True


@pytest_twisted.ensureDeferred
async def test_a_full_download_batch_answers_ask_again(env: Env) -> None:
    """
    Past 16 MiB of files, the files of a batch download are answered 503
    (ask again) and carry no bytes; those before are whole.
    """
    from boxsync.wire import BATCH_MAX_BYTES

    count = BATCH_MAX_BYTES // BATCH_FILE_LIMIT + 2
    files = [_file(f"m{i}", os.urandom(BATCH_FILE_LIMIT)) for i in range(count)]
    for file in files:
        assert isinstance((await env.api.upload_batch([file]))[0], CommitResult)
    parts = await timed(Deferred.fromCoroutine(env.api.download_batch([f.path for f, _ in files])), env.reactor)
    statuses = [header["status"] for header, _ in parts]
    sent = BATCH_MAX_BYTES // BATCH_FILE_LIMIT
    assert statuses == [200] * sent + [503] * (count - sent)
    assert all(data == files[i][1] for i, (_, data) in enumerate(parts[:sent]))
    assert all(data == b"" for _, data in parts[sent:])


def test_a_full_disk_fails_the_files_it_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A file of a batch the disk has no room for fails with L{DiskFull} (507),
    leaving nothing in staging; the files written before it are staged, and
    a failure to make the batch durable fails them all.
    """
    import errno

    from boxsync.server import batch
    from boxsync.server.staging import DiskFull

    files = [_file(f"f{i}", bytes([i]) * 10) for i in range(3)]
    real = batch.write_small

    def full_at_second(fd: int, data: bytes, mtime_ns: int) -> None:
        if data == files[1][1]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, mtime_ns)

    monkeypatch.setattr(batch, "write_small", full_at_second)
    outcomes = batch._stage(tmp_path, files, None)
    assert isinstance(outcomes[1], DiskFull)
    assert [o.path.read_bytes() for o in (outcomes[0], outcomes[2])] == [files[0][1], files[2][1]]  # type: ignore[union-attr]
    assert sorted(tmp_path.iterdir()) == sorted(o.path for o in (outcomes[0], outcomes[2]))  # type: ignore[union-attr]

    def no_room(fds: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch, "_make_durable", no_room)
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    outcomes = batch._stage(tmp_path, files, None)
    assert all(isinstance(o, DiskFull) for o in outcomes) and list(tmp_path.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_delete_batch_deletes_each_file_alone(env: Env, http: Any) -> None:
    """
    Each file of a batch delete is deleted, or refused as a DELETE of it
    would be (a stale base, no such file), and each deletion is announced.
    """
    watcher = await open_stream(http, env.server, Manifest(client="watcher"))
    await watcher.ready()
    committed = await env.api.upload_batch([_file(f"d/f{i}", b"%d" % i) for i in range(4)] + [_file("keep", b"k")])
    seqs = [outcome.seq for outcome in committed]  # type: ignore[union-attr]
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        outcomes = await timed(
            Deferred.fromCoroutine(
                env.api.delete_batch([("d/f0", seqs[0]), ("d/f1", seqs[1] + 100), ("nothing", 0), ("d/f2", seqs[2])])
            ),
            env.reactor,
        )
    finally:
        globalLogPublisher.removeObserver(logged.append)
    # One line for the batch; each file's at debug level.
    summary = [
        (e["what"], e["count"], e["refused"], e["log_level"])
        for e in logged if e.get("log_namespace") == "boxsync.server.batch"
    ]
    assert summary == [("deleted", 2, 2, LogLevel.info)]
    box = [e for e in logged if e.get("log_namespace", "").startswith("boxsync.server.box")]
    assert [e for e in box if e["log_level"] == LogLevel.info] == []
    assert sorted((e["path"], e["log_level"]) for e in box if "path" in e) == [
        ("d/f0", LogLevel.debug), ("d/f2", LogLevel.debug)
    ]
    assert isinstance(outcomes[0], CommitResult) and isinstance(outcomes[3], CommitResult)
    assert isinstance(outcomes[1], StaleBase) and outcomes[1].current_seq == seqs[1]
    assert isinstance(outcomes[2], NotFound)
    assert sorted(p.name for p in (env.server.box / "d").iterdir()) == ["f1", "f3"]
    events = await watcher.wait(lambda e: len([x for x in e if isinstance(x, Delete)]) >= 2)
    assert sorted(e.path for e in events if isinstance(e, Delete)) == ["d/f0", "d/f2"]
    watcher.close()


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"files": "a"}', b'{"files": [{"path": "../x", "base": 1}]}', b'{"files": [{"path": "a"}]}',
     b'{"files": [{"path": "a", "base": 1}, {"path": "a", "base": 2}]}', b'{"files": [1]}'],
)
@pytest_twisted.ensureDeferred
async def test_delete_batch_refused_whole(env: Env, http: Any, body: bytes) -> None:
    (first,) = await env.api.upload_batch([_file("a", b"a")])
    response = await http.post(env.server.url + "/batch/delete", data=body, headers=env.server.headers())
    assert response.code == 400 and json.loads(await response.content())["error"]
    assert (env.server.box / "a").read_bytes() == b"a"


@pytest_twisted.ensureDeferred
async def test_the_batcher_gathers_deletes(env: Env) -> None:
    """
    Many deletes asked for at once go in far fewer requests than files.
    """
    api = RecordingAPI(env.api.http, env.reactor, env.server.url, KEY, "tester")
    batcher = Batcher(api, env.reactor, deferToThread)
    committed = await env.api.upload_batch([_file(f"f{i}", b"%d" % i) for i in range(300)])
    deleted = await timed(
        gatherResults([batcher.delete(c.path, c.seq) for c in committed]), env.reactor  # type: ignore[union-attr]
    )
    assert len(deleted) == 300 and batcher.deletes_supported is True
    assert api.deleted == [300]
    assert [p.name for p in env.server.box.iterdir()] == [".boxsync"]
