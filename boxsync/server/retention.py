"""
How long what a box no longer shows is kept: the versions overwritten or
deleted (C{--keep-versions}, 30 days by default), and the blocks sent
ahead of a commit that never came (a day). Both are tidied away once an
hour while the server runs.
"""

from __future__ import annotations

import re
from typing import Iterable

from attrs import frozen
from twisted.logger import Logger

from .blockstore import pending_deadline
from .box import Box
from .index import VersionRecord

__all__ = ["KEEP_VERSIONS", "TIDY_SECONDS", "Tidied", "parse_duration", "tidy"]

#: How long an overwritten or deleted version is kept by default: 30 days.
KEEP_VERSIONS = 30 * 86400.0

#: How often the boxes are tidied.
TIDY_SECONDS = 3600.0

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

log = Logger()


def parse_duration(text: str) -> float:
    """
    A duration such as C{30d}, C{12h}, C{90m}, C{45s} or C{3600} (seconds),
    in seconds.

    @raise ValueError: if C{text} is not one.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h, 90m or 45s")
    return float(match.group(1)) * _UNITS[match.group(2)]


@frozen
class Tidied:
    versions: int
    blocks: int


async def tidy(boxes: Iterable[Box], keep_seconds: float, now: float) -> Tidied:
    """
    Forget the versions of C{boxes} that ended more than C{keep_seconds}
    before C{now}, remove their files, and sweep the blocks sent ahead of
    commits that never came.
    """
    versions = blocks = 0
    for box in boxes:
        forgotten: list[VersionRecord] = await box.index.forget_versions(
            box.account, int((now - keep_seconds) * 1e9)
        )
        await box.storage.drop_versions([version.seq for version in forgotten])
        versions += len(forgotten)
        blocks += await box.blocks.sweep(pending_deadline(now))
    if versions or blocks:
        log.info(
            "tidied the box: {versions} old versions and {blocks} unused blocks removed",
            versions=versions,
            blocks=blocks,
        )
    return Tidied(versions, blocks)
