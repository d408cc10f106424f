"""
Properties of the code that meets untrusted input, checked with hypothesis
on generated input: path normalisation, the mapping of paths to files,
manifest and header parsing, and the HTTP routes of a real server.

For every input: no path outside the box, no exception but the module's own
error type, no 5xx. The default run is small; the C{slow} runs try many more
inputs. With C{BOXSYNC_FUZZ_FIGURES=<file>}, each run appends a JSON line of
how many inputs it tried (a failing run raises instead).
"""

from __future__ import annotations

import http.client
import json
import os
import unicodedata
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

import pytest
import pytest_twisted
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from twisted.internet.threads import deferToThread

from boxsync.paths import HIDDEN_DIR, MAX_PATH_BYTES, BadPath, from_local, normalize, to_local
from boxsync.wire import (
    MAX_COUNT,
    ProtocolError,
    count_header,
    encode_manifest,
    parse_manifest,
    sha256_header,
)
from boxsync.wire.legacy import parse_files
from boxsync.server.limits import ConnectionLimits
from boxsync.testing import remove_tree, tree
from tests.helpers import running_server

FIGURES = os.environ.get("BOXSYNC_FUZZ_FIGURES")


def record(test: str, inputs: int, **more: int) -> None:
    """
    Note how many inputs a run tried (when figures are being collected).
    """
    if FIGURES:
        with open(FIGURES, "a") as f:
            f.write(json.dumps({"test": test, "inputs": inputs, "failures": 0, **more}) + "\n")


def runs(quick: int, big: int) -> Any:
    """
    Parametrize a property over a quick run and a big (slow) one.
    """
    return pytest.mark.parametrize(
        "examples", [quick, pytest.param(big, marks=pytest.mark.slow)], ids=["quick", "big"]
    )


def check(
    examples: int, name: str, prop: Callable[..., None], *strategies: Any, fixed: Sequence[tuple[Any, ...]] = ()
) -> int:
    """
    Run C{prop} on C{examples} generated inputs and the C{fixed} ones;
    return how many it was called with.
    """
    tried = 0

    def counted(args: tuple[Any, ...]) -> None:
        nonlocal tried
        tried += 1
        prop(*args)

    test = given(st.tuples(*strategies))(counted)
    for args in fixed:
        test = example(args)(test)
    settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(test)()
    record(name, tried)
    return tried


# Strategies

#: Any character, lone surrogates included.
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=300)

#: Pieces that path handling is known to trip on.
ATOMS = [
    "", ".", "..", "...", HIDDEN_DIR, "a", "é", "e\u0301", "A\u030a", "\u212b", "\x00", "\n", "\x7f",
    "\\", "/", "//", "~", "%2e%2e", "%2F", "%00", " ", "\ud800", "\udfff", "\u202e", "．．", "ｆ",
    "CON", "a:b", "*", "?", "#", "a" * 255, "é" * 128, "\U0001f600" * 64,
]
segment = st.one_of(st.sampled_from(ATOMS), st.text(any_char, max_size=20))
paths = st.one_of(
    st.lists(segment, max_size=12).map("/".join),
    any_text,
    # Long ones: one piece repeated up to the limits and past them.
    st.builds(lambda piece, n: "/".join([piece] * n), segment, st.integers(1, 700)),
)


# Paths


@runs(quick=600, big=20_000)
def test_a_normalised_path_stays_in_the_box(tmp_path: Path, examples: int) -> None:
    root = tmp_path / "box"
    root.mkdir()

    def prop(path: str) -> None:
        try:
            wire = normalize(path)
        except BadPath:
            return
        assert normalize(wire) == wire
        assert unicodedata.is_normalized("NFC", wire)
        segments = wire.split("/")
        assert all(s not in ("", ".", "..") for s in segments) and segments[0] != HIDDEN_DIR
        assert not any(ord(c) < 0x20 or c in "\\\x7f" for c in wire)
        assert len(wire.encode("utf-8")) <= MAX_PATH_BYTES
        try:
            local = to_local(root, wire)
        except BadPath:
            # Only when too long once below the root.
            assert len(os.fsencode(root / wire)) >= 4096
            return
        absolute = os.path.abspath(local)
        assert absolute.startswith(str(root) + os.sep)
        assert from_local(root, local) == wire

    check(examples, "normalize", prop, paths, fixed=[("a/../../b",), ("\ud800",), ("é" * 2049,)])


def test_links_and_files_in_the_way_never_lead_out(tmp_path: Path) -> None:
    root = tmp_path / "box"
    outside = tmp_path / "outside"
    (root / "dir").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "dir" / "up").symlink_to("../../outside")
    (root / "file").write_text("")
    (root / "dir" / "loop").symlink_to("loop")

    def prop(path: str) -> None:
        try:
            local = to_local(root, path)
        except BadPath:
            return
        parent = os.path.realpath(local.parent)
        assert parent == str(root) or parent.startswith(str(root) + os.sep)

    pieces = st.sampled_from(["link", "dir", "up", "file", "loop", "x", "..", "."])
    check(500, "to_local", prop, st.lists(pieces, min_size=1, max_size=6).map("/".join))


# Manifests and headers


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(any_char, max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
counts = st.one_of(st.integers(-5, 5), st.integers(MAX_COUNT - 2, MAX_COUNT + 2), st.integers(), st.floats(), st.text(max_size=5), st.none(), st.booleans())
entries = st.fixed_dictionaries(
    {},
    optional={
        "path": paths | json_values,
        "sha256": st.sampled_from(["a" * 64, "A" * 64, "g" * 64, "a" * 63]) | json_values,
        "size": counts,
        "mtime_ns": counts,
        "base": counts,
        "changed": st.booleans() | json_values,
    },
)
manifests = st.fixed_dictionaries(
    {},
    optional={
        "client": st.text(any_char, max_size=250) | json_values,
        "cursor": counts,
        "files": st.lists(entries | json_values, max_size=6) | json_values,
        "deleted": st.lists(entries | json_values, max_size=6) | json_values,
    },
)


def encoded(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def manifest_prop(body: bytes) -> None:
    try:
        manifest = parse_manifest(body, max_entries=8)
    except ProtocolError:
        return
    listed = [entry.path for entry in manifest.files + manifest.deleted]
    assert len(listed) == len(set(listed)) <= 8
    assert all(normalize(path) == path for path in listed)
    assert all(0 <= n <= MAX_COUNT for n in [manifest.cursor] + [f.size for f in manifest.files])
    assert parse_manifest(encode_manifest(manifest)) == manifest


DEEP = [(b"[" * 100_000,), (b"{" * 50_000,), (b'{"cursor": 18446744073709551616}',), (b'{"cursor": 1e400}',),
        (b"\xef\xbb\xbf{}",), (b"\xff\xfe{\x00}\x00",), (b'{"files": [{"path": "a", "size": NaN}]}',)]


@runs(quick=400, big=10_000)
def test_manifest_bytes(examples: int) -> None:
    bodies = st.binary(max_size=400) | json_values.map(encoded) | manifests.map(encoded)
    check(examples, "parse_manifest", manifest_prop, bodies, fixed=DEEP)


@runs(quick=300, big=10_000)
def test_legacy_bodies(examples: int) -> None:
    legacy = st.fixed_dictionaries(
        {}, optional={"files": st.lists(st.fixed_dictionaries({}, optional={"path": paths | json_values, "lastUpdate": counts}), max_size=6) | json_values}
    )

    def prop(body: bytes) -> None:
        try:
            entries, refused = parse_files(body, max_entries=8)
        except ProtocolError:
            return
        assert all(normalize(entry.path) == entry.path for entry in entries)
        assert len(entries) + refused <= 8

    bodies = st.binary(max_size=400) | json_values.map(encoded) | legacy.map(encoded)
    check(examples, "parse_files", prop, bodies, fixed=DEEP)


def test_headers() -> None:
    def prop(value: str) -> None:
        for parse in (lambda v: count_header(v, "X"), sha256_header):
            try:
                parsed = parse(value)
            except ProtocolError:
                continue
            assert parsed is not None

    check(500, "headers", prop, any_text | st.integers().map(str), fixed=[("9" * 5000,), ("-0",), (" 1 ",)])


# The HTTP routes of a real server, driven from a thread (the reactor serves
# in the main one).


def request(port: int, method: str, target: bytes, headers: dict[str, bytes], body: bytes | None) -> int:
    """
    The status of one request; an error must come as JSON.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, target.decode("latin-1"), skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        try:
            connection.endheaders(body)
            response = connection.getresponse()
        except (BrokenPipeError, ConnectionResetError):
            # The server answered 431 and closed while the request was
            # still going out; the answer may be lost with the connection.
            head = len(target) + sum(len(name) + len(value) for name, value in headers.items())
            assert head > ConnectionLimits().max_header_bytes - 200, target[:100]
            return 431
        response.read()
        if response.status >= 400:
            assert response.getheader("Content-Type") == "application/json", (response.status, target[:100])
        return response.status
    finally:
        connection.close()


ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "all": lambda raw: quote(raw, safe="").encode(),
    "slashes kept": lambda raw: quote(raw, safe="/").encode(),
    "dots and slashes kept": lambda raw: quote(raw, safe="/.~").encode(),
}
METHODS = ["PUT", "GET", "HEAD", "DELETE", "legacy upload", "legacy download"]


@runs(quick=300, big=3000)
@pytest_twisted.ensureDeferred
async def test_http_routes(tmp_path: Path, reactor: Any, examples: int) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_text("canary")
    statuses: dict[int, int] = {}
    auth = {"Authorization": b"Bearer key"}
    try:
        async with running_server(reactor, tmp_path / "box", "key") as server:

            def prop(path: str, method: str, encoding: str, base: int | None, body: bytes) -> None:
                raw = path.encode("utf-8", "surrogatepass")
                headers = dict(auth)
                if base is not None:
                    headers["X-Boxsync-Base"] = str(base).encode()
                if method == "legacy upload":
                    # http.client refuses CR, LF and NUL in a header; so would any proxy.
                    assume(not any(c in raw for c in b"\r\n\x00") and raw.strip() == raw)
                    headers["File-Path"] = raw
                    status = request(server.port, "POST", b"/upload", headers, body)
                elif method == "legacy download":
                    status = request(server.port, "GET", b"/download/" + ENCODINGS[encoding](raw), headers, None)
                else:
                    target = b"/files/" + ENCODINGS[encoding](raw)
                    status = request(server.port, method, target, headers, body if method == "PUT" else None)
                statuses[status] = statuses.get(status, 0) + 1
                assert status < 500, (method, path)

            await deferToThread(
                check,
                examples,
                "http",
                prop,
                paths,
                st.sampled_from(METHODS),
                st.sampled_from(list(ENCODINGS)),
                st.none() | st.integers(0, 3),
                st.binary(max_size=64),
            )
            # Nothing outside the box; nothing half done inside it.
            assert sorted(p.name for p in tmp_path.iterdir()) == ["box", "outside"]
            assert [p.name for p in outside.iterdir()] == ["canary"]
            assert list((server.box / ".boxsync" / "staging").iterdir()) == []
            listing = await deferToThread(_listing, server.port)
            assert set(tree(server.box)) == {entry["path"] for entry in listing}
    finally:
        # The box may hold a path deeper than pytest's own clean-up can
        # remove (it recurses).
        remove_tree(tmp_path / "box")
    assert sum(statuses.values()) >= examples // 2
    assert any(200 <= status < 300 for status in statuses) and 400 in statuses


def _listing(port: int) -> list[dict[str, Any]]:
    """
    Every live file the server lists, page by page.
    """
    listed: list[dict[str, Any]] = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        while True:
            after = quote(listed[-1]["path"], safe="") if listed else ""
            connection.request("GET", f"/files?after={after}", headers={"Authorization": "Bearer key"})
            page = json.loads(connection.getresponse().read())
            listed += page
            if len(page) < 1000:
                return listed
    finally:
        connection.close()
