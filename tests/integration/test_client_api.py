"""
Tests for L{boxsync.client.api}: the real client against the real server's
resource, in memory (see L{tests.memory}), time moved by hand. What needs a
misbehaving server or a socket is in L{tests.integration.test_client_api_faults}.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from twisted.internet.defer import CancelledError

from boxsync.client.errors import (
    APIError,
    AuthError,
    BadRequest,
    DigestMismatch,
    NotFound,
    ServerFull,
    StaleBase,
    StreamIdle,
    TooLarge,
    error_for,
)
from boxsync.client.results import CommitResult, DownloadResult
from boxsync.wire import (
    SHA256_TRAILER_FEATURE,
    Download,
    Event,
    FileEntry,
    Held,
    Hello,
    InSync,
    Manifest,
    Ready,
    RemoteFile,
    Upload,
)
from boxsync.writer import BATCH_SIZE
from tests.memory import KEY, MemoryServer, result_of
from tests.memory import server  # noqa: F401 (the fixture)

DATA = bytes(range(256)) * 2000  # 512,000 bytes

#: Larger than two batches, not a whole number of them.
BIG = os.urandom(2**16) * (2 * BATCH_SIZE // 2**16 + 3)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commit(server: MemoryServer, tmp_path: Path, path: str, data: bytes, base: int | None = None) -> CommitResult:
    """
    Commit C{data} as C{path}, as another client.
    """
    local = tmp_path / "other-client-file"
    local.write_bytes(data)
    return server.run(server.api(name="desktop").upload(path, local, base, sha256(data), 7))


def header(server: MemoryServer, index: int, name: str) -> str | None:
    """
    The value of the header C{name} of the C{index}th request served.
    """
    value = server.requests[index].getHeader(name)
    return None if value is None else value.decode() if isinstance(value, bytes) else value


def test_healthz(server: MemoryServer) -> None:
    api = server.api(token=None)
    assert server.run(api.healthz()) is True
    assert SHA256_TRAILER_FEATURE in server.run(api.features())


def test_stream_plan_then_live_events(server: MemoryServer, tmp_path: Path) -> None:
    """
    The stream sends the manifest and delivers the plan, then the commits of
    other clients as they happen; C{last_event_id} follows their seqs.
    """
    first = commit(server, tmp_path, "docs/a.pdf", DATA)
    manifest = Manifest(
        client="laptop",
        files=(FileEntry(path="docs/mine.txt", sha256="0" * 64, size=12, mtime_ns=1),),
    )
    events: list[Event] = []
    stream = server.run(server.api().open_stream(manifest, None, events.append))
    [hello, *plan, ready] = events
    assert hello == Hello(stream=hello.stream, seq=1, box=server.run(server.index.box_id(server.box.account)))  # type: ignore[union-attr]
    assert sorted(plan, key=lambda e: e.name) == [
        Download("docs/a.pdf", sha256(DATA), len(DATA), 7, first.seq),
        Upload("docs/mine.txt", 0),
    ]
    assert ready == Ready(seq=1)
    assert (header(server, 1, "Accept"), header(server, 1, "X-Boxsync-Client")) == ("text/event-stream", "laptop")
    assert header(server, 1, "Authorization") == f"Bearer {KEY}"

    second = commit(server, tmp_path, "b.txt", b"more")
    assert events[-1] == Download("b.txt", sha256(b"more"), 4, 7, second.seq)
    assert stream.last_event_id == str(second.seq)
    stream.cancel()
    with pytest.raises(CancelledError):
        result_of(stream.done)


def test_the_hello_says_whether_the_box_committed_another_version_at_the_seq_a_client_holds(
    server: MemoryServer, tmp_path: Path
) -> None:
    """
    A client names the version it holds with the highest seq (C{held}); the
    hello tells it whether the box committed another at that seq (the box
    went back, restored from a backup, and on from there). Where the box
    cannot tell (nothing at that seq yet), it says nothing.
    """
    commit(server, tmp_path, "a.txt", b"first")
    second = commit(server, tmp_path, "b.txt", b"second")

    def hello_for(held: Held) -> Hello:
        events: list[Event] = []
        stream = server.run(server.api().open_stream(Manifest(client="laptop", held=held), None, events.append))
        stream.cancel()
        hello = events[0]
        assert isinstance(hello, Hello)
        return hello

    assert hello_for(Held(second.seq, "b.txt", sha256(b"second"))).other_history is None
    assert hello_for(Held(second.seq, "elsewhere.txt", sha256(b"second"))).other_history is True
    assert hello_for(Held(second.seq, "b.txt", sha256(b"other bytes"))).other_history is True
    assert hello_for(Held(second.seq + 5, "c.txt", sha256(b"later"))).other_history is None
    # An overwritten version is still known by its seq while it is kept.
    commit(server, tmp_path, "b.txt", b"third", base=second.seq)
    assert hello_for(Held(second.seq, "b.txt", sha256(b"second"))).other_history is None


def test_stream_resumes_from_last_event_id(server: MemoryServer, tmp_path: Path) -> None:
    """
    The cursor goes as C{Last-Event-ID}: what the client already has is not
    planned again.
    """
    seen = commit(server, tmp_path, "seen.txt", b"old")
    commit(server, tmp_path, "new.txt", b"new")
    events: list[Event] = []
    server.run(server.api().open_stream(Manifest(client="laptop"), seen.seq, events.append))
    assert header(server, -1, "Last-Event-ID") == str(seen.seq)
    assert [e.path for e in events if isinstance(e, Download)] == ["new.txt"]


def test_stream_own_commits_not_echoed(server: MemoryServer, tmp_path: Path) -> None:
    """
    With C{stream_id} set, the client's commits carry it and are not sent
    back on its own stream.
    """
    events: list[Event] = []
    api = server.api()
    server.run(api.open_stream(Manifest(client="laptop"), None, events.append))
    hello = events[0]
    assert isinstance(hello, Hello)
    api.stream_id = hello.stream
    local = tmp_path / "local"
    local.write_bytes(b"mine")
    server.run(api.upload("mine.txt", local, 0, None, None))
    assert header(server, -1, "X-Boxsync-Stream") == hello.stream
    theirs = commit(server, tmp_path, "theirs.txt", b"theirs")
    assert [e for e in events if isinstance(e, Download)] == [
        Download("theirs.txt", sha256(b"theirs"), 6, 7, theirs.seq)
    ]


def test_stream_idle(server: MemoryServer) -> None:
    """
    A stream on which nothing arrives for C{idle_timeout} seconds is closed
    and fails with L{StreamIdle}; the server lets go of it.
    """
    events: list[Event] = []
    stream = server.run(server.api(idle_timeout=5).open_stream(Manifest(), None, events.append))
    assert server.hub.count() == 1
    server.advance(4)
    assert not stream.done.called
    server.advance(1)
    with pytest.raises(StreamIdle):
        result_of(stream.done)
    assert server.hub.count() == 0
    assert [e.name for e in events] == ["hello", "ready"]


def test_stream_keepalives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The server's keep-alives keep a stream open past C{idle_timeout}.
    """
    server = MemoryServer(tmp_path / "box", keepalive_seconds=2)
    server.patch(monkeypatch)
    stream = server.run(server.api(idle_timeout=5).open_stream(Manifest(), None, lambda event: None))
    server.advance(30)
    assert not stream.done.called
    stream.cancel()
    server.close()


@pytest.mark.parametrize("token, status", [(None, 401), ("wrong", 403)])
def test_auth_errors(server: MemoryServer, token: str | None, status: int) -> None:
    with pytest.raises(AuthError) as info:
        server.run(server.api(token=token).open_stream(Manifest(), None, lambda event: None))
    assert info.value.status == status


def test_upload(server: MemoryServer, tmp_path: Path) -> None:
    """
    An upload streams the file with its headers and gives back the commit;
    the server keeps its bytes, mtime and origin.
    """
    data = os.urandom(300_000)
    local = tmp_path / "local"
    local.write_bytes(data)
    progress: list[int] = []
    path = "dir one/naïve 100%.txt"
    result = server.run(server.api().upload(path, local, 0, sha256(data), 17, progress.append))
    assert result == CommitResult(
        path=path, seq=1, sha256=sha256(data), size=len(data), mtime_ns=17, deleted=False, executable=False
    )
    assert sum(progress) == len(data)
    assert len(progress) > 1
    assert server.requests[0].uri == b"/files/dir%20one/na%C3%AFve%20100%25.txt"
    assert header(server, 0, "Content-Length") == str(len(data))
    assert (server.storage.root / "dir one" / "naïve 100%.txt").read_bytes() == data
    listed = server.run(server.api().list_files())
    assert listed == [RemoteFile(path, len(data), sha256(data), 1, 17, "laptop")]


def test_executable(server: MemoryServer, tmp_path: Path) -> None:
    """
    An upload says whether the file is executable; a change of that alone
    goes up without the bytes (C{PATCH}); a download and the listing say it.
    """
    data = b"#!/bin/sh\n"
    local = tmp_path / "run.sh"
    local.write_bytes(data)
    api = server.api()
    first = server.run(api.upload("run.sh", local, 0, sha256(data), 17, executable=True))
    assert first.executable is True and header(server, -1, "X-Boxsync-Executable") == "1"
    assert server.run(api.list_files())[0].executable is True
    second = server.run(api.set_executable("run.sh", first.seq, sha256(data), False))
    assert (second.seq, second.sha256, second.size, second.executable) == (2, sha256(data), len(data), False)
    assert server.requests[-1].method == b"PATCH"
    assert header(server, -1, "X-Boxsync-Base") == "1" and header(server, -1, "X-Boxsync-Executable") == "0"
    result = server.run(api.download("run.sh", tmp_path / "down", sha256(data)))
    assert (result.seq, result.executable) == (2, False)
    with pytest.raises(StaleBase):
        server.run(api.set_executable("run.sh", first.seq, sha256(data), True))
    with pytest.raises(NotFound):
        server.run(api.set_executable("nothing", 0, sha256(data), True))


def test_upload_hashed_as_sent(server: MemoryServer, tmp_path: Path) -> None:
    """
    Without a sha256, an upload can send it after the file's bytes; a file
    that changed meanwhile is refused.
    """
    local = tmp_path / "local"
    local.write_bytes(DATA)
    api = server.api()
    result = server.run(api.upload("a", local, 0, None, None, hash_as_sent=True))
    assert (result.sha256, result.size) == (sha256(DATA), len(DATA))
    assert header(server, 0, "X-Boxsync-Trailer") == "sha256"
    with pytest.raises(BadRequest):
        server.run(api.upload("a", local, 1, None, None, hash_as_sent=True, unchanged=lambda: False))


def test_upload_last_writer_wins(server: MemoryServer, tmp_path: Path) -> None:
    """
    Without a base, sha256 or mtime, those headers are left out and the
    upload replaces whatever is there.
    """
    commit(server, tmp_path, "a", b"old")
    local = tmp_path / "local"
    local.write_bytes(b"")
    result = server.run(server.api().upload("a", local, None, None, None))
    assert (result.seq, result.size) == (2, 0)
    for name in ("X-Boxsync-Base", "X-Boxsync-Sha256", "X-Boxsync-Mtime", "X-Boxsync-Stream"):
        assert header(server, -1, name) is None


def test_upload_stale_base(server: MemoryServer, tmp_path: Path) -> None:
    for _ in range(5):
        commit(server, tmp_path, "a.txt", b"theirs")
    local = tmp_path / "local"
    local.write_bytes(b"mine")
    with pytest.raises(StaleBase) as info:
        server.run(server.api().upload("a.txt", local, 3, None, None))
    assert (info.value.status, info.value.current_seq) == (412, 5)


def test_upload_wrong_sha256(server: MemoryServer, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.write_bytes(b"x" * 100_000)
    with pytest.raises(BadRequest) as info:
        server.run(server.api().upload("a", local, 0, "0" * 64, None))
    assert info.value.status == 400


def test_upload_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = MemoryServer(tmp_path / "box", max_upload=1000)
    server.patch(monkeypatch)
    local = tmp_path / "local"
    local.write_bytes(b"x" * 100_000)
    with pytest.raises(TooLarge) as info:
        server.run(server.api().upload("a", local, 0, None, None))
    assert info.value.status == 413
    server.close()


@pytest.mark.parametrize(
    "status, error",
    [
        (400, BadRequest),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (413, TooLarge),
        (507, ServerFull),
        (500, APIError),
        (418, APIError),
    ],
)
def test_error_for(status: int, error: type[APIError]) -> None:
    """
    Each refusal has its exception, with the body's C{error} as its message
    (or the body itself, if it is not the protocol's JSON).
    """
    raised = error_for(status, b'{"error": "no"}')
    assert (type(raised), raised.status, raised.message) == (error, status, "no")
    assert error_for(status, b"<html>").message == "<html>"
    assert error_for(status, b"").message == f"HTTP {status}"


def test_error_for_stale_base() -> None:
    stale = error_for(412, b'{"error": "stale", "seq": 9}')
    assert isinstance(stale, StaleBase) and stale.current_seq == 9
    for body in (b'{"error": "stale"}', b'{"error": "stale", "seq": true}', b"junk"):
        stale = error_for(412, body)
        assert isinstance(stale, StaleBase) and stale.current_seq is None


def test_delete(server: MemoryServer, tmp_path: Path) -> None:
    commit(server, tmp_path, "a", b"data")
    commit(server, tmp_path, "a", b"data 2")
    api = server.api()
    with pytest.raises(StaleBase) as info:
        server.run(api.delete("a", 1))
    assert info.value.current_seq == 2
    result = server.run(api.delete("a", 2))
    assert (result.path, result.seq, result.deleted) == ("a", 3, True)
    assert header(server, -1, "X-Boxsync-Base") == "2"
    assert not (server.storage.root / "a").exists()
    with pytest.raises(NotFound):
        server.run(api.delete("a", 3))


@pytest.mark.parametrize(
    "path, data, uri",
    [
        ("dir/ä b", DATA, b"/files/dir/%C3%A4%20b"),
        # Several batches: they arrive whole and in order. (How the body is
        # cut into batches depends on the socket: see the same test over one.)
        ("big", BIG, b"/files/big"),
    ],
)
def test_download(server: MemoryServer, tmp_path: Path, path: str, data: bytes, uri: bytes) -> None:
    commit(server, tmp_path, path, data)
    dest = tmp_path / "dest"
    progress: list[int] = []
    result = server.run(server.api().download(path, dest, sha256(data), progress.append))
    assert result == DownloadResult(sha256=sha256(data), size=len(data), seq=1, executable=False)
    assert dest.read_bytes() == data
    assert sum(progress) == len(data)
    assert server.requests[-1].uri == uri
    assert header(server, -1, "Range") is None


def test_download_resume(server: MemoryServer, tmp_path: Path) -> None:
    """
    A partial C{dest} is completed with a C{Range} request, on condition
    that the server still has the expected version.
    """
    commit(server, tmp_path, "a", DATA)
    dest = tmp_path / "dest"
    dest.write_bytes(DATA[:100_000])
    progress: list[int] = []
    result = server.run(server.api().download("a", dest, sha256(DATA), progress.append))
    assert result == DownloadResult(sha256=sha256(DATA), size=len(DATA), seq=1, executable=False)
    assert dest.read_bytes() == DATA
    assert progress[0] == 100_000
    assert sum(progress) == len(DATA)
    assert header(server, -1, "Range") == "bytes=100000-"
    assert header(server, -1, "If-Range") == f'"{sha256(DATA)}"'
    assert server.requests[-1].code == 206


def test_download_resume_past_the_end(server: MemoryServer, tmp_path: Path) -> None:
    """
    A C{dest} already as long as the file or longer gets C{416}: it starts
    over.
    """
    commit(server, tmp_path, "a", DATA)
    dest = tmp_path / "dest"
    dest.write_bytes(DATA + b"more")
    result = server.run(server.api().download("a", dest, sha256(DATA), None))
    assert (result.size, dest.read_bytes()) == (len(DATA), DATA)
    first, second = server.requests[-2:]
    assert (first.code, first.getHeader("Range")) == (416, f"bytes={len(DATA) + 4}-")
    assert (second.code, second.getHeader("Range")) == (200, None)


def test_a_download_that_is_whole_already_is_not_fetched_again(server: MemoryServer, tmp_path: Path) -> None:
    """
    A C{dest} already whole (a download that could not be placed, tried
    again): the C{416} says the file is that long and has that sha256, and
    the bytes there are checked; nothing is fetched again. Bytes as long
    as the file but not it are fetched again whole.
    """
    commit(server, tmp_path, "a", DATA)
    dest = tmp_path / "dest"
    dest.write_bytes(DATA)
    progress: list[int] = []
    result = server.run(server.api().download("a", dest, sha256(DATA), progress.append))
    assert result == DownloadResult(sha256=sha256(DATA), size=len(DATA), seq=1, executable=False)
    assert progress == [len(DATA)]
    assert (server.requests[-1].code, dest.read_bytes()) == (416, DATA)
    dest.write_bytes(bytes(len(DATA)))
    result = server.run(server.api().download("a", dest, sha256(DATA), None))
    assert (result.size, dest.read_bytes()) == (len(DATA), DATA)
    assert [request.code for request in server.requests[-2:]] == [416, 200]


def test_download_without_expected_sha256(server: MemoryServer, tmp_path: Path) -> None:
    """
    Without an expected sha256 nothing can be resumed safely: C{dest} is
    overwritten.
    """
    commit(server, tmp_path, "a", DATA)
    dest = tmp_path / "dest"
    dest.write_bytes(DATA[:100])
    result = server.run(server.api().download("a", dest, None, None))
    assert (result.sha256, dest.read_bytes()) == (sha256(DATA), DATA)
    assert header(server, -1, "Range") is None


def test_download_other_version(server: MemoryServer, tmp_path: Path) -> None:
    """
    When the server has another version than the one expected, the download
    stops at the headers and C{dest} is deleted.
    """
    commit(server, tmp_path, "a", DATA)
    dest = tmp_path / "dest"
    dest.write_bytes(DATA[:100])
    with pytest.raises(DigestMismatch) as info:
        server.run(server.api().download("a", dest, "b" * 64, None))
    assert (info.value.path, info.value.expected, info.value.actual) == ("a", "b" * 64, sha256(DATA))
    assert not dest.exists()
    assert server.requests[-1].code == 200  # If-Range did not match


def test_download_not_found(server: MemoryServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(NotFound):
        server.run(server.api().download("nothing", dest, None, None))
    assert not dest.exists()


def test_download_disk_full(server: MemoryServer, tmp_path: Path) -> None:
    """
    A download that cannot be written fails with the write's error, and the
    next one works.
    """
    commit(server, tmp_path, "big", BIG)
    with pytest.raises(OSError) as info:
        server.run(server.api().download("big", Path("/dev/full"), None, None))
    assert "No space left" in str(info.value)
    result = server.run(server.api().download("big", tmp_path / "dest", None, None))
    assert result.size == len(BIG)


def test_list_files(server: MemoryServer, tmp_path: Path) -> None:
    """
    Live files in path order, a page at a time; deleted ones are left out.
    """
    for name in ("c", "a", "b", "d"):
        commit(server, tmp_path, name, name.encode())
    server.run(server.api().delete("d", 4))
    api = server.api()
    assert [f.path for f in server.run(api.list_files(limit=2))] == ["a", "b"]
    assert [f.path for f in server.run(api.list_files(after="b"))] == ["c"]
    [c] = server.run(api.list_files(after="b"))
    assert c == RemoteFile("c", 1, sha256(b"c"), 1, 7, "desktop")


def test_insync_needs_no_transfer(server: MemoryServer, tmp_path: Path) -> None:
    """
    A file the client lists as the server has it is only recorded.
    """
    done = commit(server, tmp_path, "same.txt", b"same")
    manifest = Manifest(
        client="laptop",
        files=(FileEntry("same.txt", sha256(b"same"), 4, 7, base=0, changed=True),),
    )
    events: list[Event] = []
    server.run(server.api().open_stream(manifest, None, events.append))
    assert InSync("same.txt", done.seq) in events
