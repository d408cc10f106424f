"""
The shared protocol: paths, manifests, events and the SSE framing.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boxsync.paths import BadPath, child, from_local, normalize, to_local
from boxsync.wire import (
    EXECUTABLE_FEATURE,
    FOLDERS_FEATURE,
    BatchFile,
    Conflict,
    Delete,
    DeletedEntry,
    Download,
    FileEntry,
    Folder,
    FolderEntry,
    Held,
    Hello,
    Incoming,
    InSync,
    Manifest,
    ProtocolError,
    Ready,
    Remove,
    SSEParser,
    SSEMessage,
    Upload,
    as_read_by,
    count_header,
    decode_event,
    encode_comment,
    encode_event,
    encode_manifest,
    encode_part,
    flag_header,
    mtime_header,
    parse_manifest,
    parse_upload_batch,
    sha256_header,
)

SHA = "c" * 64


@pytest.mark.parametrize(
    "path",
    ["", "/abs", "a//b", "a/./b", "../x", "a/..", "a\x00b", "a\nb", "a\\b", ".boxsync", ".boxsync/x",
     "x" * 256, "/".join(["abcdefgh"] * 500)],
)
def test_bad_paths(path: str) -> None:
    with pytest.raises(BadPath):
        normalize(path)


def test_paths_are_nfc(tmp_path) -> None:  # type: ignore[no-untyped-def]
    decomposed = "e\u0301t\u00e9.txt"
    assert normalize(decomposed) == "\u00e9t\u00e9.txt"
    assert normalize("dir/.boxsync/ok") == "dir/.boxsync/ok"
    assert to_local(tmp_path, "a/b.txt") == tmp_path / "a/b.txt"
    assert from_local(tmp_path, tmp_path / "a/b.txt") == "a/b.txt"
    with pytest.raises(BadPath):
        from_local(tmp_path / "sub", tmp_path / "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(BadPath):
        to_local(tmp_path, "file/inside")
    (tmp_path / "link").symlink_to(tmp_path)
    with pytest.raises(BadPath):
        to_local(tmp_path, "link/x")
    # Every parent is checked, however deep; missing ones are fine.
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "up").symlink_to(tmp_path.parent)
    (tmp_path / "d" / "e" / "f").write_text("")
    with pytest.raises(BadPath, match="symbolic link"):
        to_local(tmp_path, "d/e/up/x")
    with pytest.raises(BadPath, match="goes through a file"):
        to_local(tmp_path, "d/e/f/x")
    assert to_local(tmp_path, "d/new/deeper/x") == tmp_path / "d/new/deeper/x"
    assert to_local(tmp_path, "d/e/up") == tmp_path / "d/e/up"



def test_local_names_keep_their_form(tmp_path: Path) -> None:
    """
    A wire path maps to the names the folder has, whatever their Unicode
    form (a folder in NFD, a file in NFD, a KELVIN SIGN for a K); a name
    not there yet takes the wire's form; of two forms, the NFC one wins.
    """
    nfd = unicodedata.normalize("NFD", "été")
    (tmp_path / nfd).mkdir()
    (tmp_path / nfd / f"{nfd}.txt").write_text("")
    (tmp_path / "\u212a.txt").write_text("")
    assert to_local(tmp_path, "été/été.txt") == tmp_path / nfd / f"{nfd}.txt"
    assert to_local(tmp_path, "été/new/été.txt") == tmp_path / nfd / "new/été.txt"
    assert to_local(tmp_path, "été") == tmp_path / nfd
    assert to_local(tmp_path, "K.txt") == tmp_path / "\u212a.txt"
    assert from_local(tmp_path, tmp_path / nfd / f"{nfd}.txt") == "été/été.txt"
    (tmp_path / nfd / "link").symlink_to(tmp_path)
    with pytest.raises(BadPath, match="symbolic link"):
        to_local(tmp_path, "été/link/x")
    (tmp_path / "été").mkdir()
    assert to_local(tmp_path, "été/x") == tmp_path / "été/x"

@given(st.text(max_size=300))
@settings(max_examples=500, deadline=None)
def test_no_path_leaves_the_root(text: str) -> None:
    try:
        path = normalize(text)
    except BadPath:
        return
    parts = path.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts
    assert not path.startswith("/") and parts[0] != ".boxsync"
    assert normalize(path) == path


_SEGMENTS = st.one_of(
    st.sampled_from(["", ".", "..", ".boxsync", "a/b", "e\u0301", "\u0301x", "K", "\u212a", "x" * 256, "a\\b", "a\x00"]),
    st.text(max_size=40),
)


@given(st.lists(_SEGMENTS.filter(lambda s: "/" not in s), max_size=4), _SEGMENTS)
@settings(max_examples=500, deadline=None)
def test_a_child_is_checked_as_the_whole_path_is(parents: list[str], name: str) -> None:
    """
    The wire path of a name below a checked folder, found by checking the
    name alone, is the one the whole path's check finds, and each refuses
    what the other refuses (a name with a slash in it is never one name).
    """
    try:
        parent = normalize("/".join(parents)) if parents else ""
    except BadPath:
        return
    joined = f"{parent}/{name}" if parent else name
    try:
        expected: str | None = normalize(joined) if "/" not in name else None
    except BadPath:
        expected = None
    try:
        found: str | None = child(parent, name)
    except BadPath:
        found = None
    assert found == expected


@pytest.mark.parametrize("total", [4095, 4096, 4097])
def test_a_child_at_the_longest_path_is_checked_as_the_whole_path_is(total: int) -> None:
    parent = "/".join(["p" * 200] * 20)  # 4,019 characters
    name = "n" * (total - len(parent) - 1)
    if total <= 4096:
        assert child(parent, name) == normalize(f"{parent}/{name}")
    else:
        with pytest.raises(BadPath):
            child(parent, name)
        with pytest.raises(BadPath):
            normalize(f"{parent}/{name}")


EVENTS = [
    Hello("s1", 3),
    Hello("s2", 4, "b" * 32, True),
    Upload("a b/ü.txt", 0),
    Download("d.bin", SHA, 10, 5, 7),
    Delete("x", 8),
    Remove("y", 2),
    Conflict("c", SHA, 1, 2, 9),
    Download("x", SHA, 1, 2, 10, True),
    Folder("empty/folder", 12),
    Conflict("y", SHA, 1, 2, 11, False),
    InSync("i", 4),
    Ready(9),
]


@given(st.lists(st.sampled_from(EVENTS), max_size=20), st.lists(st.integers(1, 50), max_size=30))
@settings(max_examples=200, deadline=None)
def test_sse_round_trip_in_any_chunks(events: list, cuts: list[int]) -> None:  # type: ignore[type-arg]
    wire = b"retry: 1000\n\n" + b"".join(encode_event(e) + encode_comment("k") for e in events)
    wire = wire.replace(b"\n", b"\r\n") if len(cuts) % 2 else wire
    parser = SSEParser()
    got = []
    position = 0
    for cut in cuts + [len(wire)]:
        got += parser.feed(wire[position : position + cut])
        position += cut
    got += parser.feed(wire[position:])
    assert [decode_event(m) for m in got] == events
    assert parser.retry == 1000


def test_sse_details() -> None:
    parser = SSEParser()
    messages = parser.feed(b"event: nope\ndata: {}\n\nid: 4\ndata: a\ndata: b\n\n: c\n\nid\n\n")
    assert decode_event(messages[0]) is None
    assert messages[1].data == "a\nb" and messages[1].event == "message" and messages[1].id == "4"
    # An empty id resets the last event id, as the standard says.
    assert parser.last_id == ""
    with pytest.raises(ProtocolError):
        decode_event(parser.feed(b"event: ready\ndata: [1]\n\n")[0])
    with pytest.raises(ProtocolError):
        decode_event(parser.feed(b'event: upload\ndata: {"path": "../x", "base": 0}\n\n')[0])
    assert encode_event(Upload("p", 0), with_id=True).startswith(b"event: upload\n")
    assert encode_event(Download("p", SHA, 1, 1, 7)).startswith(b"id: 7\n")
    assert encode_event(Download("p", SHA, 1, 1, 7), with_id=False).startswith(b"event:")


def test_manifest_round_trip() -> None:
    manifest = Manifest(
        "laptop", 12, [FileEntry("a", SHA, 1, 2, 3, False)], [DeletedEntry("b", 4)]
    )
    assert parse_manifest(encode_manifest(manifest)) == manifest
    assert parse_manifest(b"") == Manifest()
    unhashed = Manifest("laptop", 0, [FileEntry("big", None, 2**30, 2, 0, True)])
    assert parse_manifest(encode_manifest(unhashed)) == unhashed
    moded = Manifest(
        "laptop",
        1,
        [FileEntry("run.sh", SHA, 1, 2, 3, True, True), FileEntry("a", SHA, 1, 2, 3, False, False)],
        features={EXECUTABLE_FEATURE, "some-later-feature"},
    )
    assert parse_manifest(encode_manifest(moded)) == moded
    with_folders = Manifest(
        "laptop", 3, deleted=[DeletedEntry("gone", 2)], folders=[FolderEntry("new", 0), FolderEntry("old/one", 2)]
    )
    assert parse_manifest(encode_manifest(with_folders)) == with_folders
    # A file may be dated before 1970, and as late as nanoseconds go.
    dated = Manifest("laptop", 1, [FileEntry("old", SHA, 1, -(2**63), 3, False), FileEntry("late", SHA, 1, 2**63 - 1, 3)])
    assert parse_manifest(encode_manifest(dated)) == dated
    holding = Manifest("laptop", 9, held=Held(7, "docs/a b.txt", SHA))
    assert parse_manifest(encode_manifest(holding)) == holding
    assert json.loads(encode_manifest(holding))["held"] == {"seq": 7, "path": "docs/a b.txt", "sha256": SHA}
    # A client that does not say leaves both out.
    said = json.loads(encode_manifest(manifest))
    assert "features" not in said and "executable" not in said["files"][0]


def test_the_executable_bit_goes_only_to_clients_that_read_it() -> None:
    download = Download("run.sh", SHA, 1, 2, 7, True)
    assert as_read_by(download, {EXECUTABLE_FEATURE}) == download
    assert as_read_by(download, ()) == Download("run.sh", SHA, 1, 2, 7)
    assert b"executable" not in encode_event(Download("run.sh", SHA, 1, 2, 7))
    assert as_read_by(Conflict("c", SHA, 1, 2, 9, False), ()) == Conflict("c", SHA, 1, 2, 9)
    assert as_read_by(Upload("u", 0), ()) == Upload("u", 0)


def test_folders_go_only_to_clients_that_read_them() -> None:
    assert as_read_by(Folder("f", 3), {FOLDERS_FEATURE}) == Folder("f", 3)
    assert as_read_by(Folder("f", 3), {EXECUTABLE_FEATURE}) is None
    assert encode_event(Folder("f", 3)) == b'id: 3\nevent: folder\ndata: {"path":"f","seq":3}\n\n'


def test_fields_a_client_does_not_know_are_left_out() -> None:
    # What a later server may add does not make this client refuse the event.
    data = '{"path": "p", "sha256": "%s", "size": 1, "mtime_ns": 2, "seq": 3, "later": [1]}' % SHA
    assert decode_event(SSEMessage("download", data, "3")) == Download("p", SHA, 1, 2, 3)
    with pytest.raises(ProtocolError):
        decode_event(SSEMessage("download", data.replace('"later"', '"executable": 1, "x"'), "3"))
    with pytest.raises(ProtocolError):
        decode_event(SSEMessage("hello", '{"stream": "s", "seq": 1, "other_history": "yes"}', None))
    # A hello says other_history only when it is so.
    assert b"other_history" not in encode_event(Hello("s", 1, "b" * 32))


def test_a_batch_file_says_whether_it_is_executable() -> None:
    files = [BatchFile("a", 1, SHA, 2, 0, True), BatchFile("b", 1, SHA, 2, None, False), BatchFile("c", 1, SHA, 2)]
    body = b"".join(piece for file in files for piece in encode_part(file.to_json(), b"x"))
    assert [file for file, _ in parse_upload_batch(body)] == files
    with pytest.raises(ProtocolError):
        parse_upload_batch(b"".join(encode_part({**files[0].to_json(), "executable": "yes"}, b"x")))


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"client": 3}',
        b'{"files": {}}',
        b'{"files": [1]}',
        b'{"deleted": [1]}',
        b'{"files": [{"path": "a", "sha256": "xyz", "size": 1}]}',
        # Only a changed file may come without its sha256.
        b'{"files": [{"path": "a", "sha256": null, "size": 1, "changed": false}]}',
        b'{"files": [{"path": "a", "sha256": "' + SHA.encode() + b'", "size": -1}]}',
        b'{"files": [{"path": "a", "sha256": "' + SHA.encode() + b'", "size": true}]}',
        b'{"files": [{"path": "a", "sha256": "' + SHA.encode() + b'", "size": 1, "changed": 1}]}',
        b'{"files": [{"path": "a", "sha256": "' + SHA.encode() + b'", "size": 1}], "deleted": [{"path": "a"}]}',
        b'{"files": [{"path": 5, "sha256": "' + SHA.encode() + b'", "size": 1}]}',
        b'{"cursor": "1"}',
        b'{"features": "executable"}',
        b'{"features": [1]}',
        b'{"folders": {}}',
        b'{"folders": [{"path": "a", "base": -1}]}',
        b'{"folders": [{"path": "a"}], "deleted": [{"path": "a", "base": 1}]}',
        b'{"files": [{"path": "a", "sha256": "' + SHA.encode() + b'", "size": 1, "executable": 1}]}',
        b'{"held": 7}',
        b'{"files": [{"path": "a", "sha256": "' + SHA.encode() + b'", "size": 1, "mtime_ns": %d}]}' % -(2**63 + 1),
        b'{"files": [{"path": "a", "sha256": "' + SHA.encode() + b'", "size": 1, "mtime_ns": %d}]}' % 2**63,
        b'{"files": [{"path": "a", "sha256": "' + SHA.encode() + b'", "size": 1, "mtime_ns": 1.5}]}',
        b'{"held": {"seq": 0, "path": "a", "sha256": "' + SHA.encode() + b'"}}',
        b'{"held": {"seq": 1, "path": "../a", "sha256": "' + SHA.encode() + b'"}}',
        b'{"held": {"seq": 1, "path": "a", "sha256": "xyz"}}',
        b'{"held": {"path": "a", "sha256": "' + SHA.encode() + b'"}}',
        b"\xff\xfe",
    ],
)
def test_bad_manifests(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_manifest(body)


def test_manifest_entry_limit() -> None:
    body = json.dumps({"deleted": [{"path": f"p{i}", "base": 1} for i in range(11)]}).encode()
    with pytest.raises(ProtocolError, match="over 10"):
        parse_manifest(body, max_entries=10)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))
@settings(max_examples=300, deadline=None)
def test_any_json_parses_or_is_refused_cleanly(value: object) -> None:
    body = json.dumps({"files": value, "deleted": value, "cursor": value, "client": value}).encode()
    try:
        parse_manifest(body)
    except ProtocolError:
        pass


def test_headers() -> None:
    assert sha256_header(None) is None and count_header(None, "x") is None
    assert sha256_header(" " + SHA.upper() + " ") == SHA
    assert count_header("12", "x") == 12
    for bad in ["-1", "a", "1.5"]:
        with pytest.raises(ProtocolError):
            count_header(bad, "x")
    with pytest.raises(ProtocolError):
        sha256_header("abc")
    assert (mtime_header(" -5 ", "x"), mtime_header("0", "x"), mtime_header(None, "x")) == (-5, 0, None)
    for bad in ["1e9", "", str(2**63), str(-(2**63) - 1)]:
        with pytest.raises(ProtocolError, match="x must be an integer"):
            mtime_header(bad, "x")
    assert (flag_header("1", "x"), flag_header(" 0 ", "x"), flag_header(None, "x")) == (True, False, None)
    for bad in ["true", "2", ""]:
        with pytest.raises(ProtocolError):
            flag_header(bad, "x")


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(1, 9)), max_size=12), st.sets(st.sampled_from("abcdef")))
def test_what_is_still_to_come_of_an_announcement(blocks: list[tuple[str, int]], missing: set[str]) -> None:
    """
    The runs of an announcement's blocks that are missing: each block
    missing is in exactly one run, at its own offset, and consecutive ones
    share a run; the others are in none.
    """
    named = [(letter * 64, size) for letter, size in blocks]
    lacking = {letter * 64 for letter in missing}
    announced = Incoming("big.bin", 10_000, 100, named)
    runs = announced.lacking(lacking)
    assert [placed for run in runs for placed in run.placed()] == [
        placed for placed in announced.placed() if placed[1] in lacking
    ]
    for before, after in zip(runs, runs[1:]):
        end = before.placed()[-1]
        # Something not missing lies between two runs.
        assert end[0] + end[2] < after.offset
    assert all(run.blocks and (run.path, run.size) == ("big.bin", 10_000) for run in runs)
