"""
The trash on the wire: its rows read back as they were written, checked a
column at a time, the versions' form of an older server read the same, and
times and paths checked as one at a time would.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boxsync.paths import MAX_PATH_BYTES, MAX_SEGMENT_BYTES, BadPath, normalize, normalize_all
from boxsync.wire import ProtocolError
from boxsync.wire.values import check_sha256, check_sha256s
from boxsync.wire.history import Deleted, VersionEntry, iso_time, json_lines, parse_trash, trash_rows

SHA = "ab" * 32
counts = st.integers(0, 2**63 - 1)
segments = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8).filter(
    lambda s: "/" not in s and "\\" not in s and s not in (".", "..", ".boxsync")
)
#: Times that often share a millisecond with another (or are 0, not known).
times = st.one_of(counts, st.sampled_from([0, 1, 999_999, 1_000_000, 1_764_000_000_123_456_789, 1_764_000_000_123_999_999]))
paths = st.lists(segments, min_size=1, max_size=3).map("/".join)
deleted = st.builds(
    Deleted,
    path=paths.map(normalize),
    seq=counts,
    time_ns=times,
    size=counts,
    sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
    client=st.text(max_size=10),
    deleted_seq=counts,
    deleted_ns=times,
)


def rows_answer(files: list[Deleted]) -> object:
    return json.loads(trash_rows(json.dumps([list(f) for f in files])))


@given(st.lists(deleted, max_size=5))
def test_rows_round_trip(files: list[Deleted]) -> None:
    assert parse_trash(rows_answer(files)) == files


@given(st.lists(deleted, max_size=8))
def test_json_lines_are_the_documented_objects(files: list[Deleted]) -> None:
    for line, f in zip(json_lines(files), files, strict=True):
        assert "\n" not in line
        assert json.loads(line) == {
            "path": f.path,
            "seq": f.seq,
            "time": iso_time(f.time_ns),
            "size": f.size,
            "sha256": f.sha256,
            "client": f.client,
            "deleted_seq": f.deleted_seq,
            "deleted_time": iso_time(f.deleted_ns),
        }


def test_an_older_server_s_versions_read_as_rows() -> None:
    version = VersionEntry(
        "a/b.txt", 3, "2026-12-01T09:00:00.250+00:00", 6, SHA, 17, "laptop", 9, "2026-12-01T10:00:00.500+00:00"
    )
    answer = {"files": [{**version.to_json(), "deleted": True, "deleted_seq": 9}]}
    (read,) = parse_trash(answer)
    assert read == Deleted("a/b.txt", 3, read.time_ns, 6, SHA, "laptop", 9, read.deleted_ns)
    assert (iso_time(read.time_ns), iso_time(read.deleted_ns)) == (version.time, version.ended_time)
    with pytest.raises(ProtocolError):
        parse_trash({"rows": []})


good = ["a/b.txt", 1, 2, 3, SHA, "c", 4, 5]


@pytest.mark.parametrize(
    "row",
    [
        ["a/b.txt", 1, 2, 3, SHA, "c", 4],  # a field short
        ("a/b.txt", 1, 2, 3, SHA, "c", 4, 5),  # not a JSON array
        ["/a", 1, 2, 3, SHA, "c", 4, 5],
        ["a//b", 1, 2, 3, SHA, "c", 4, 5],
        [".boxsync/x", 1, 2, 3, SHA, "c", 4, 5],
        [7, 1, 2, 3, SHA, "c", 4, 5],
        ["a", -1, 2, 3, SHA, "c", 4, 5],
        ["a", 1, True, 3, SHA, "c", 4, 5],
        ["a", 1, 2, 2**63, SHA, "c", 4, 5],
        ["a", 1, 2, 3, SHA.upper(), "c", 4, 5],
        ["a", 1, 2, 3, SHA[:-1], "c", 4, 5],
        ["a", 1, 2, 3, SHA[:-1] + "g", "c", 4, 5],
        ["a", 1, 2, 3, SHA, None, 4, 5],
        ["a", 1, 2, 3, SHA, "c", 4.0, 5],
        ["a", 1, 2, 3, SHA, "c", 4, "5"],
    ],
)
def test_a_bad_row_is_refused_among_good_ones(row: list[object]) -> None:
    answer = {"columns": list(Deleted._fields), "rows": [good, row, good]}
    with pytest.raises(ProtocolError):
        parse_trash(answer)
    assert len(parse_trash({**answer, "rows": [good, good]})) == 2


@given(st.integers(1, 2**62))
def test_iso_time_is_utc_to_the_millisecond(ns: int) -> None:
    ms = ns // 1_000_000
    expected = datetime.fromtimestamp(ms // 1000, timezone.utc).replace(microsecond=ms % 1000 * 1000)
    assert iso_time(ns) == expected.isoformat(timespec="milliseconds")
    assert iso_time(0) is None


@given(st.text(st.characters(max_codepoint=127), max_size=12).filter(lambda s: s.split("/")[0] != ".boxsync"))
def test_an_ascii_path_is_checked_as_any_other(text: str) -> None:
    # Below a non-ASCII folder, the same segments go the long way.
    short, longer = normalize_or_none(text), normalize_or_none("é/" + text)
    assert short in (None, text)
    assert (short is None) == (longer is None)


def normalize_or_none(path: str) -> str | None:
    try:
        return normalize(path)
    except BadPath:
        return None


@given(st.lists(st.text(st.characters(max_codepoint=300), max_size=8), min_size=1, max_size=4))
def test_paths_checked_together_as_one_by_one(texts: list[str]) -> None:
    paths_checked_as_one_by_one(texts)


def paths_checked_as_one_by_one(texts: list[str]) -> None:
    checked_together_as_one_by_one(texts, normalize, normalize_all, BadPath)


def checked_together_as_one_by_one(
    values: list[str],
    one: Callable[[str], str],
    together: Callable[[list[str]], list[str]],
    error: type[Exception],
) -> None:
    """
    C{together} refuses C{values} (with C{error}) if C{one} refuses any of
    them, and else answers what C{one} answers for each.
    """
    one_by_one: list[str | None] = []
    for value in values:
        try:
            one_by_one.append(one(value))
        except error:
            one_by_one.append(None)
    if None in one_by_one:
        with pytest.raises(error):
            together(values)
    else:
        assert together(values) == one_by_one


@pytest.mark.parametrize(
    "texts",
    [
        ["a/" + "b" * MAX_SEGMENT_BYTES, "c"],  # long, but each segment within bounds
        ["a/" + "b" * (MAX_SEGMENT_BYTES + 1)],  # a segment too long
        ["c", "b" * (MAX_PATH_BYTES + 1)],
        ["/".join(["d" * 200] * 30)],  # too long a path, of short segments
    ],
)
def test_long_paths_checked_together_as_one_by_one(texts: list[str]) -> None:
    paths_checked_as_one_by_one(texts)


@given(st.lists(st.text("0123456789abcdefABCDEF \t\ng", min_size=64, max_size=64) | st.just("a" * 64), max_size=4))
def test_sha256s_checked_together_as_one_by_one(digests: list[str]) -> None:
    checked_together_as_one_by_one(digests, check_sha256, check_sha256s, ProtocolError)
