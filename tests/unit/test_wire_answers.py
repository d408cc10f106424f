"""
The answers of the protocol: what the server writes with C{to_json} and the
encoders, the client reads back as it was.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boxsync.wire import (
    CommitResult,
    ErrorAnswer,
    ProtocolError,
    Refusal,
    RemoteFile,
    encode_batch_results,
    encode_listing,
    health_json,
    parse_batch_results,
    parse_health,
    parse_listing,
)

SHA = "c" * 64
counts = st.integers(0, 2**63 - 1)
names = st.text(min_size=1, max_size=20)

commits = st.builds(
    CommitResult,
    path=names,
    seq=counts,
    sha256=st.just(SHA),
    size=counts,
    mtime_ns=st.one_of(st.none(), counts),
    deleted=st.booleans(),
)
listed = st.builds(
    RemoteFile, path=names, size=counts, sha256=st.just(SHA), seq=counts, mtime_ns=counts, origin=st.text(max_size=10)
)
refusals = st.builds(
    ErrorAnswer, status=st.sampled_from(list(Refusal)).map(int), message=st.text(max_size=50), seq=st.one_of(st.none(), counts)
)


def over_the_wire(value: object) -> object:
    return json.loads(json.dumps(value))


@given(commits)
def test_commit_round_trip(commit: CommitResult) -> None:
    assert CommitResult.from_json(over_the_wire(commit.to_json())) == commit


@given(st.lists(listed, max_size=5))
def test_listing_round_trip(files: list[RemoteFile]) -> None:
    assert parse_listing(encode_listing(files)) == files


@given(st.lists(st.one_of(commits, refusals), max_size=5))
def test_batch_results_round_trip(outcomes: list[CommitResult | ErrorAnswer]) -> None:
    assert parse_batch_results(over_the_wire(encode_batch_results(outcomes)), len(outcomes)) == outcomes


@given(refusals)
def test_error_round_trip(answer: ErrorAnswer) -> None:
    body = json.dumps(answer.to_json()).encode()
    assert ErrorAnswer.parse(answer.status, body) == answer


def test_error_answer_of_anything() -> None:
    """
    A body that is not the protocol's becomes the message as it is.
    """
    assert ErrorAnswer.parse(502, b"<h1>Bad gateway</h1>") == ErrorAnswer(502, "<h1>Bad gateway</h1>")
    assert ErrorAnswer.parse(500, b"") == ErrorAnswer(500, "HTTP 500")
    assert ErrorAnswer.parse(412, b'{"error": "x", "seq": true}') == ErrorAnswer(412, "x")
    assert ErrorAnswer.from_json(404, {"status": 404}) == ErrorAnswer(404, '{"status": 404}')


@pytest.mark.parametrize(
    "answer, count",
    [
        ({"results": []}, 1),
        ({"results": [{"status": "201"}]}, 1),
        ({"results": [{"status": 201, "path": "a"}]}, 1),
        ([], 0),
    ],
)
def test_bad_batch_results(answer: object, count: int) -> None:
    with pytest.raises(ProtocolError):
        parse_batch_results(answer, count)


@pytest.mark.parametrize("body", [b"{}", b"[1]", b"not json", b'[{"path": "a"}]'])
def test_bad_listings(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_listing(body)


def test_health() -> None:
    assert parse_health(over_the_wire(health_json(["a", "b"]))) == frozenset({"a", "b"})
    assert parse_health({"status": "ok"}) == frozenset()
    assert parse_health({"status": "down", "features": ["a"]}) is None
    assert parse_health([]) is None
