"""
The JSON answers of the protocol besides errors: a commit (C{PUT} and
C{DELETE} of C{/files/<path>}, each file of a batch upload), the listing of
C{GET /files}, and the liveness probe.

The server writes them with C{to_json} and the encoders here; the client
reads them with C{from_json} and the parsers, which take what is missing
or extra in stride but refuse what is not an answer at all.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence, Union

from attrs import asdict, frozen

from .errors import ErrorAnswer
from .values import ProtocolError

__all__ = [
    "CommitResult",
    "RemoteFile",
    "encode_listing",
    "parse_listing",
    "BatchOutcome",
    "encode_batch_results",
    "parse_batch_results",
    "health_json",
    "parse_health",
]


@frozen
class CommitResult:
    """
    The version a C{PUT}, C{PATCH} or C{DELETE} committed.

    @ivar executable: whether it is executable (C{None}: the server does not
        say).
    @ivar folder: whether it is a folder (C{PUT} or C{DELETE} of
        C{/folders/<path>}).
    """

    path: str
    seq: int
    sha256: str | None
    size: int
    mtime_ns: int | None
    deleted: bool
    executable: bool | None = None
    folder: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> CommitResult:
        """
        Read the server's answer to a commit.

        @raise ProtocolError: if it is not one.
        """
        if not isinstance(data, dict):
            raise ProtocolError("a commit answer must be a JSON object")
        sha256 = data.get("sha256")
        mtime_ns = data.get("mtime_ns")
        executable = data.get("executable")
        try:
            return cls(
                path=str(data["path"]),
                seq=int(data["seq"]),
                sha256=sha256 if isinstance(sha256, str) and sha256 else None,
                size=int(data.get("size") or 0),
                mtime_ns=None if mtime_ns is None else int(mtime_ns),
                deleted=bool(data.get("deleted", False)),
                executable=executable if isinstance(executable, bool) else None,
                folder=data.get("folder") is True,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"bad commit answer: {e!r}") from None


@frozen
class RemoteFile:
    """
    A live file in the box, as C{GET /files} lists it.

    @ivar origin: the name of the client that committed this version.
    @ivar executable: whether it is executable.
    """

    path: str
    size: int
    sha256: str
    seq: int
    mtime_ns: int | None
    origin: str
    executable: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> RemoteFile:
        """
        @raise ProtocolError: if C{data} is not a listed file.
        """
        try:
            assert isinstance(data, dict)
            mtime_ns = data.get("mtime_ns")
            return cls(
                path=str(data["path"]),
                size=int(data["size"]),
                sha256=str(data["sha256"]),
                seq=int(data["seq"]),
                mtime_ns=None if mtime_ns is None else int(mtime_ns),
                origin=str(data.get("origin") or ""),
                executable=data.get("executable") is True,
            )
        except (AssertionError, KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"bad file entry: {data!r:.200}") from e


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as e:
        raise ProtocolError(f"answer is not JSON: {e}") from None


def encode_listing(files: Iterable[RemoteFile]) -> bytes:
    """
    The answer to C{GET /files}: a JSON array of the files.
    """
    return json.dumps([file.to_json() for file in files]).encode("utf-8") + b"\n"


def parse_listing(body: bytes) -> list[RemoteFile]:
    """
    @raise ProtocolError: if C{body} is not a listing.
    """
    entries = _json(body)
    if not isinstance(entries, list):
        raise ProtocolError("a file list must be a JSON array")
    return [RemoteFile.from_json(entry) for entry in entries]


#: What became of one file of a batch upload.
BatchOutcome = Union[CommitResult, ErrorAnswer]


def encode_batch_results(outcomes: Sequence[BatchOutcome]) -> dict[str, Any]:
    """
    The answer to a batch upload: each file's commit (status 201) or why it
    was refused, in order.
    """
    return {
        "results": [
            {"status": 201 if isinstance(outcome, CommitResult) else outcome.status, **outcome.to_json()}
            for outcome in outcomes
        ]
    }


def parse_batch_results(answer: object, count: int) -> list[BatchOutcome]:
    """
    The outcomes the answer to a batch upload of C{count} files lists.

    @raise ProtocolError: if it does not list one for each file.
    """
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != count:
        raise ProtocolError("a batch answer must list one result per file")
    outcomes: list[BatchOutcome] = []
    for result in results:
        status = result.get("status") if isinstance(result, dict) else None
        if not isinstance(status, int):
            raise ProtocolError("each result of a batch must have a status")
        if status == 201:
            outcomes.append(CommitResult.from_json(result))
        else:
            outcomes.append(ErrorAnswer.from_json(status, result))
    return outcomes


def health_json(features: Iterable[str]) -> dict[str, Any]:
    """
    The answer to C{GET /healthz} of a live server with C{features}.
    """
    return {"status": "ok", "features": list(features)}


def parse_health(answer: object) -> frozenset[str] | None:
    """
    The features a server's liveness probe lists; C{None} if it does not say
    it is live.
    """
    if not isinstance(answer, dict) or answer.get("status") != "ok":
        return None
    features = answer.get("features")
    if not isinstance(features, list):
        return frozenset()
    return frozenset(name for name in features if isinstance(name, str))
