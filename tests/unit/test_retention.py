"""
Which kept versions stay: the age limit, the thinning as they age and the
size limit, on made-up histories with the time given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boxsync.server.index import VersionRecord
from boxsync.server.retention import THIN_VERSIONS, HistoryMax, Retention, Thinning

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
    # Three versions of a 100-byte file, the older two punched down to the
    # 10 bytes they do not share with the newest: 120 bytes on disk, not 300.
    retention = Retention(thinning=Thinning(), history_max=HistoryMax.parse("150"))
    versions = {"acct": [ended("a", seq, ago=400 - 100 * seq, size=100) for seq in (1, 2, 3)]}
    punched = {"acct": {1: 90, 2: 90}}
    assert retention.doomed(versions, NOW, tmp_path, punched)["acct"] == set()
    # Counted whole, the two oldest would go.
    assert retention.doomed(versions, NOW, tmp_path)["acct"] == {1, 2}
    # Over the limit still, the oldest go first, each freeing what it takes.
    tighter = Retention(thinning=Thinning(), history_max=HistoryMax.parse("105"))
    assert tighter.doomed(versions, NOW, tmp_path, punched)["acct"] == {1, 2}
    assert Retention(thinning=Thinning(), history_max=HistoryMax.parse("110")).doomed(
        versions, NOW, tmp_path, punched
    )["acct"] == {1}
