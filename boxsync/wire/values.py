"""
The checks every message of the protocol makes of its values: paths, counts
(seqs, sizes, mtimes), sha256 digests and JSON objects, and the error a
message that fails them raises.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence, cast

from ..paths import BadPath, normalize, normalize_all

__all__ = [
    "ProtocolError",
    "MAX_COUNT",
    "check_path",
    "check_count",
    "check_mtime",
    "MIN_MTIME_NS",
    "check_sha256",
    "check_counts",
    "check_paths",
    "check_sha256s",
    "check_flag",
    "json_object",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")

#: The largest count (seq, size, mtime) on the wire: SQLite's largest integer.
MAX_COUNT = 2**63 - 1

#: The earliest mtime on the wire (1677), as SQLite's smallest integer: a
#: file may be dated before 1970. The latest is L{MAX_COUNT} (2262).
MIN_MTIME_NS = -(2**63)


class ProtocolError(ValueError):
    """
    A message that does not follow the protocol.
    """


def check_path(value: object) -> str:
    """
    C{value} as a normalized wire path.

    @raise ProtocolError: if it is not a string or not an acceptable path.
    """
    if not isinstance(value, str):
        raise ProtocolError("path must be a string")
    try:
        return normalize(value)
    except BadPath as e:
        raise ProtocolError(str(e)) from None


def check_count(value: object, what: str, least: int = 0) -> int:
    """
    C{value}, which must be an integer from C{least} to L{MAX_COUNT}.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_COUNT:
        raise ProtocolError(f"{what} must be an integer from {least} to {MAX_COUNT}")
    return value


def check_mtime(value: object, what: str = "mtime_ns") -> int:
    """
    C{value}, an mtime in nanoseconds since 1970, which must be an integer
    from L{MIN_MTIME_NS} to L{MAX_COUNT}.
    """
    return check_count(value, what, MIN_MTIME_NS)


def check_sha256(value: object) -> str:
    """
    C{value}, which must be a sha256 in 64 lowercase hex digits.
    """
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ProtocolError("sha256 must be 64 lowercase hex digits")
    return value


def check_paths(values: Sequence[object]) -> list[str]:
    """
    L{check_path} of each of C{values} (a whole column at once).
    """
    if set(map(type, values)) - {str}:
        raise ProtocolError("path must be a string")
    try:
        return normalize_all(cast("list[str]", values))
    except BadPath as e:
        raise ProtocolError(str(e)) from None


def check_counts(values: Sequence[object], what: str) -> list[int]:
    """
    C{values}, each of which must be an integer from 0 to L{MAX_COUNT}:
    L{check_count} of a whole column at once (100,000 take a few ms).
    """
    counts = cast("list[int]", list(values))
    if set(map(type, counts)) - {int} or (counts and (min(counts) < 0 or max(counts) > MAX_COUNT)):
        raise ProtocolError(f"each {what} must be an integer from 0 to {MAX_COUNT}")
    return counts


def check_sha256s(values: Sequence[object]) -> list[str]:
    """
    C{values}, each of which must be a sha256 in 64 lowercase hex digits:
    L{check_sha256} of a whole column at once.
    """
    digests = cast("list[str]", list(values))
    if set(map(type, digests)) - {str} or set(map(len, digests)) - {64} or not _all_hex("".join(digests)):
        raise ProtocolError("each sha256 must be 64 lowercase hex digits")
    return digests


def _all_hex(text: str) -> bool:
    """
    Whether C{text} is lowercase hex digits only: C{bytes.fromhex} reads
    all of them (skipping no blank: it would read fewer bytes) and no
    capital is found, five times quicker than a regular expression over
    100,000 digests.
    """
    try:
        read = len(bytes.fromhex(text))
    except ValueError:
        return False
    return 2 * read == len(text) and not any(capital in text for capital in "ABCDEF")


def check_flag(value: object, what: str) -> bool:
    """
    C{value}, which must be C{true} or C{false}.
    """
    if not isinstance(value, bool):
        raise ProtocolError(f"{what} must be true or false")
    return value


def json_object(text: bytes, what: str) -> dict[str, Any]:
    """
    C{text} parsed as a JSON object.

    @raise ProtocolError: if it is not one.
    """
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        # RecursionError: nested too deep (e.g. a body of 100,000 "[").
        raise ProtocolError(f"{what} is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return raw
