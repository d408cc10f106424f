"""
Tests for L{boxsync.client.room}: what a download may take of a disk, with
the disk's figures and the clock given by the test.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from boxsync.client.cli import Options, parse
from boxsync.client.room import CEILING, FLOOR, LOOK_SECONDS, KeepFree, NoRoom, Room, reserve

MiB = 1024 * 1024


class Disk:
    """
    A disk of C{total} bytes with C{free} of them free, as C{statvfs} tells.
    """

    def __init__(self, total: int, free: int) -> None:
        self.total, self.free, self.looks = total, free, 0

    def __call__(self, folder: Path) -> os.statvfs_result:
        self.looks += 1
        return os.statvfs_result((4096, 4096, self.total // 4096, self.free // 4096, self.free // 4096, 0, 0, 0, 0, 255))


def test_one_percent_is_kept_free_within_a_floor_and_a_ceiling() -> None:
    assert reserve(1000 * MiB) == 10 * MiB
    assert reserve(10 * MiB) == FLOOR
    assert reserve(2 * 1000**4) == CEILING == 1024 * MiB


def test_a_download_is_granted_while_it_leaves_the_reserve() -> None:
    disk = Disk(100 * MiB, 10 * MiB)
    room = Room(Path("/"), Clock(), disk)
    room.take(4 * MiB)
    room.take(4 * MiB)
    # 2 MiB left, 1 MiB kept: the next 4 MiB do not fit, 1 MiB does.
    with pytest.raises(NoRoom) as refused:
        room.take(4 * MiB)
    assert refused.value.errno == errno.ENOSPC
    assert refused.value.strerror == "4.0 MiB to download, 2.0 MiB free, 1.0 MiB kept free"
    room.take(MiB)
    assert not room.fits(1)


def test_what_was_given_back_stays_counted_until_the_next_look() -> None:
    clock = Clock()
    disk = Disk(100 * MiB, 10 * MiB)
    room = Room(Path("/"), clock, disk)
    room.take(8 * MiB)
    # The download wrote its 8 MiB and ended, before the disk is looked at
    # again: they are not free again.
    room.give_back(8 * MiB)
    disk.free = 2 * MiB
    assert not room.fits(2 * MiB) and disk.looks == 2
    # Another program freed room; it is seen at once, a look being asked
    # for by a download that does not fit.
    disk.free = 50 * MiB
    assert room.fits(40 * MiB)
    assert disk.looks == 3


def test_the_disk_is_looked_at_once_a_second_at_most() -> None:
    clock = Clock()
    disk = Disk(1000 * MiB, 500 * MiB)
    room = Room(Path("/"), clock, disk)
    for _ in range(100):
        room.take(1024)
    assert disk.looks == 1
    clock.advance(LOOK_SECONDS)
    room.take(1024)
    assert disk.looks == 2
    room.look_again()
    room.take(1024)
    assert disk.looks == 3


def test_a_real_disk_can_be_looked_at(tmp_path: Path) -> None:
    room = Room(tmp_path, Clock())
    assert room.fits(1)
    st = os.statvfs(tmp_path)
    assert not room.fits(st.f_bavail * st.f_frsize)


def test_the_room_kept_free_may_be_a_share_or_a_size() -> None:
    """
    C{--keep-free}: a share of the disk, a size, or nothing; anything else
    is refused with a line that says what is taken.
    """
    assert KeepFree.parse("5%").of(1000 * MiB) == 50 * MiB
    assert KeepFree.parse("2G").of(1000 * MiB) == 2 * 1024 * MiB
    assert KeepFree.parse("0").of(1000 * MiB) == 0
    assert KeepFree().of(1000 * MiB) == reserve(1000 * MiB)
    for wrong in ("100%", "-1%", "x%", "lots", "-5M"):
        with pytest.raises(ValueError):
            KeepFree.parse(wrong)


def test_a_room_keeps_what_it_is_told_to() -> None:
    disk = Disk(100 * MiB, 10 * MiB)
    room = Room(Path("/"), Clock(), disk, keep=KeepFree.parse("5%"))
    with pytest.raises(NoRoom) as refused:
        room.take(6 * MiB)
    assert refused.value.strerror == "6.0 MiB to download, 10.0 MiB free, 5.0 MiB kept free"
    room.take(5 * MiB)
    nothing = Room(Path("/"), Clock(), Disk(100 * MiB, 10 * MiB), keep=KeepFree.parse("0"))
    nothing.take(10 * MiB)
    assert not nothing.fits(1)


def test_the_command_line_takes_the_room_to_keep_free() -> None:
    def parsed(*argv: str) -> KeepFree:
        options = parse(["--once", *argv, "/tmp/folder"], {}, config=Path("/nonexistent"))
        assert isinstance(options, Options)
        return options.keep_free

    assert parsed() == KeepFree()
    assert parsed("--keep-free", "10%") == KeepFree(share=0.1)
    assert parsed("--keep-free", "500M") == KeepFree(size=500 * MiB)
    environ = {"BOXSYNC_KEEP_FREE": "1G"}
    options = parse(["--once", "/tmp/folder"], environ, config=Path("/nonexistent"))
    assert isinstance(options, Options) and options.keep_free == KeepFree(size=1024 * MiB)
    with pytest.raises(SystemExit):
        parse(["--keep-free", "100%", "/tmp/folder"], {}, config=Path("/nonexistent"))
