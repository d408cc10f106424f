"""
Which kept versions stay: the age limit, the thinning as they age and the
size limit, on made-up histories with the time given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boxsync.server.index import VersionRecord
from boxsync.server.retention import THIN_VERSIONS, HistoryMax, Retention, Thinning, shared_sizes

NOW = 2_000_000_000.0
HOUR = 3600.0
DAY = 86400.0


def ended(path: str, seq: int, ago: float, size: int = 10) -> VersionRecord:
    """
    Version C{seq} of C{path}, overwritten C{ago} seconds before L{NOW}.
    """
    return VersionRecord(path, size, "0" * 64, 0, seq, "a", seq + 1, int((NOW - ago) * 1e9))


def kept(retention: Retention, versions: list[VersionRecord], disk: Path = Path("/")) -> list[int]:
    doomed = retention.doomed({"acct": versions}, NOW, disk)["acct"]
    return sorted(version.seq for version in versions if version.seq not in doomed)


def test_every_version_of_the_last_minutes_stays_apart_from_those_seconds_apart() -> None:
    # Saved every 10 s for 5 minutes: one per 30 s stays, and the newest.
    versions = [ended("doc", seq, ago=300 - 10 * seq) for seq in range(30)]
    stays = kept(Retention(), versions)
    assert 29 in stays
    buckets = {int((NOW - 300 + 10 * seq) // 30) for seq in range(30)}
    assert len(stays) == len(buckets)


def test_older_versions_thin_to_one_an_hour_then_one_a_day() -> None:
    # One version every 10 minutes for three days.
    versions = [ended("doc", seq, ago=seq * 600 + 1) for seq in range(3 * 144)]
    stays = kept(Retention(), versions)
    assert 0 in stays  # the newest, whatever the thinning
    hours_ago = {int((NOW - (seq * 600 + 1)) // HOUR) for seq in stays if HOUR < seq * 600 + 1 <= DAY}
    assert len(hours_ago) == len([seq for seq in stays if HOUR < seq * 600 + 1 <= DAY])
    days_ago = [seq for seq in stays if seq * 600 + 1 > DAY]
    assert 2 <= len(days_ago) <= 3
    assert len(stays) < 40


def test_thinning_is_per_path_and_the_newest_of_each_stays() -> None:
    versions = [ended("a", 1, ago=5 * DAY), ended("a", 2, ago=5 * DAY - 60), ended("b", 3, ago=5 * DAY - 30)]
    assert kept(Retention(), versions) == [2, 3]


def test_past_the_age_limit_nothing_stays() -> None:
    versions = [ended("a", 1, ago=31 * DAY), ended("a", 2, ago=29 * DAY), ended("gone", 3, ago=40 * DAY)]
    assert kept(Retention(), versions) == [2]
    assert kept(Retention(keep_seconds=0), versions) == []


def test_without_thinning_every_version_stays() -> None:
    versions = [ended("doc", seq, ago=seq + 1) for seq in range(50)]
    assert kept(Retention(thinning=Thinning.parse("off")), versions) == list(range(50))


def test_over_the_history_limit_the_oldest_go_first_across_accounts(tmp_path: Path) -> None:
    retention = Retention(thinning=Thinning(), history_max=HistoryMax.parse("25"))
    doomed = retention.doomed(
        {
            "one": [ended("a", 1, ago=300, size=10), ended("a", 2, ago=100, size=10)],
            "two": [ended("b", 1, ago=200, size=10)],
        },
        NOW,
        tmp_path,
    )
    assert doomed == {"one": {1}, "two": set()}


def test_the_only_copies_of_deleted_files_go_last_for_room() -> None:
    """
    For room (a full disk, the size limit) the last versions of files
    deleted since go only once every other version has gone, however old:
    each is the only copy of its file left. Their age still ends them.
    """
    retention = Retention(thinning=Thinning())
    versions = {
        "a": [ended("gone", 1, ago=90, size=100), ended("doc", 2, ago=40, size=100), ended("doc", 3, ago=30, size=100)],
        "b": [ended("pic", 4, ago=80, size=100)],
    }
    last = {"a": {1}, "b": {4}}
    assert retention.doomed(versions, NOW, Path("/"), wanted=150, only_copies=last) == {"a": {2, 3}, "b": set()}
    assert retention.doomed(versions, NOW, Path("/"), wanted=250, only_copies=last) == {"a": {1, 2, 3}, "b": set()}
    assert retention.doomed(versions, NOW, Path("/"), wanted=150) == {"a": {1}, "b": {4}}
    limited = Retention(thinning=Thinning(), history_max=HistoryMax(size=200))
    assert limited.doomed(versions, NOW, Path("/"), only_copies=last) == {"a": {2, 3}, "b": set()}
    short = Retention(keep_seconds=60, thinning=Thinning())
    assert short.doomed(versions, NOW, Path("/"), only_copies=last) == {"a": {1}, "b": {4}}


def test_a_share_of_the_disk(tmp_path: Path) -> None:
    limit = HistoryMax.parse("50%").bytes_for(tmp_path)
    assert limit is not None and limit > 0
    assert HistoryMax.parse("100%").bytes_for(tmp_path) == pytest.approx(2 * limit, abs=1)


def test_parsing() -> None:
    assert Thinning.parse(THIN_VERSIONS).steps == ((HOUR, 30.0), (DAY, HOUR), (30 * DAY, DAY))
    assert str(Thinning.parse(THIN_VERSIONS)) == THIN_VERSIONS
    assert Thinning.parse("off") == Thinning()
    assert HistoryMax.parse("2G") == HistoryMax(size=2 * 2**30)
    assert HistoryMax.parse("10%") == HistoryMax(share=0.1)
    assert HistoryMax.parse("none") == HistoryMax() == HistoryMax.parse("0")
    for bad in ("1d", "1d:0s", "1d:1h,1h:1m", "x:1h"):
        with pytest.raises(ValueError):
            Thinning.parse(bad)
    for bad in ("lots", "0%", "150%", "-5G"):
        with pytest.raises(ValueError):
            HistoryMax.parse(bad)


def test_the_history_limit_counts_what_shared_versions_take_on_disk(tmp_path: Path) -> None:
    # Three versions of a 100-byte file of ten 10-byte blocks, each the one
    # before with one block edited: shared, the older two take the one
    # block they do not share with a newer one, 120 bytes in all, not 300.
    versions = {"acct": [ended("a", seq, ago=400 - 100 * seq, size=100) for seq in (1, 2, 3)]}
    edited = {1: set(), 2: {2}, 3: {2, 3}}
    blocks = {"acct": {seq: [(f"edit-{n}" if n in edited[seq] else f"base-{n}", 10) for n in range(10)] for seq in edited}}
    assert shared_sizes(versions["acct"], blocks["acct"]) == {1: 10, 2: 10, 3: 100}
    retention = Retention(thinning=Thinning(), history_max=HistoryMax.parse("150"))
    assert retention.doomed(versions, NOW, tmp_path, blocks)["acct"] == set()
    # Counted whole, the two oldest would go.
    assert retention.doomed(versions, NOW, tmp_path)["acct"] == {1, 2}
    # Over the limit still, the oldest go first, each freeing what it takes.
    tighter = Retention(thinning=Thinning(), history_max=HistoryMax.parse("105"))
    assert tighter.doomed(versions, NOW, tmp_path, blocks)["acct"] == {1, 2}
    assert Retention(thinning=Thinning(), history_max=HistoryMax.parse("110")).doomed(
        versions, NOW, tmp_path, blocks
    )["acct"] == {1}


def test_the_history_limit_counts_what_those_that_stay_share() -> None:
    # The same block x in versions 1 and 2 of a path and in version 3 of
    # another: only the newest holding it takes it. A version with no
    # blocks known (a small file) is taken whole.
    versions = [ended("a", 1, ago=50, size=30), ended("a", 2, ago=40, size=30), ended("b", 3, ago=30, size=20)]
    blocks = {1: [("x", 10), ("y", 20)], 2: [("x", 10), ("y", 20)], 3: [("x", 10), ("w", 10)]}
    assert shared_sizes(versions, blocks) == {1: 0, 2: 20, 3: 20}
    assert shared_sizes(versions, {}) == {1: 30, 2: 30, 3: 20}
    # Without version 2, 1 takes y again.
    assert shared_sizes([versions[0], versions[2]], blocks) == {1: 20, 3: 20}
    # The limit counts the versions that stay as they will share: thinned
    # to one an hour, version 1 goes (the newer of the same hour stays),
    # and 2 and 3 take 40 bytes in all.
    thinning = Retention(thinning=Thinning.parse("1d:1h"), history_max=HistoryMax(size=40))
    assert thinning.doomed({"acct": versions}, NOW, Path("/"), {"acct": blocks})["acct"] == {1}
    tighter = Retention(thinning=Thinning.parse("1d:1h"), history_max=HistoryMax(size=39))
    assert tighter.doomed({"acct": versions}, NOW, Path("/"), {"acct": blocks})["acct"] == {1, 2}


def test_a_full_disk_takes_the_oldest_versions_until_the_room_wanted_is_made() -> None:
    """
    However young and whatever the limits, the oldest kept versions of
    every account go, one after the other, until they free what a full
    disk wants (counted as the size limit counts them); no more.
    """
    retention = Retention(thinning=Thinning())
    versions = {
        "a": [ended("doc", 1, ago=50, size=100), ended("doc", 2, ago=40, size=100), ended("x", 5, ago=10, size=100)],
        "b": [ended("pic", 3, ago=45, size=300), ended("pic", 4, ago=20, size=100)],
    }
    assert retention.doomed(versions, NOW, Path("/")) == {"a": set(), "b": set()}
    # 350 bytes: doc 1 (100), then pic 3 (300).
    assert retention.doomed(versions, NOW, Path("/"), wanted=350) == {"a": {1}, "b": {3}}
    assert retention.doomed(versions, NOW, Path("/"), wanted=401) == {"a": {1, 2}, "b": {3}}
    # More than there is: every one.
    assert retention.doomed(versions, NOW, Path("/"), wanted=10_000) == {"a": {1, 2, 5}, "b": {3, 4}}
    # With a size limit too, the stricter wins.
    limited = Retention(thinning=Thinning(), history_max=HistoryMax(size=650))
    assert limited.doomed(versions, NOW, Path("/"), wanted=20) == {"a": {1}, "b": set()}
    assert limited.doomed(versions, NOW, Path("/"), wanted=150) == {"a": {1}, "b": {3}}
