"""
Wire paths mapped below a folder with the folders checked in one turn of the
reactor checked once (L{boxsync.client.localpaths}).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from unittest import mock

import pytest
from twisted.internet.task import Clock

from boxsync.client.localpaths import LocalPaths
from boxsync.paths import BadPath, to_local
from tests.helpers import synced_with


def _lstats(paths: LocalPaths, *wires: str) -> tuple[list[Path], list[str]]:
    seen: list[str] = []
    real = os.lstat

    def counting(p: str | os.PathLike[str]) -> os.stat_result:
        seen.append(os.fspath(p))
        return real(p)

    with mock.patch("boxsync.paths.os.lstat", counting):
        return [paths(wire) for wire in wires], seen


def test_a_folder_is_checked_once_a_turn(tmp_path: Path) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    clock = Clock()
    paths = LocalPaths(tmp_path, clock)
    found, seen = _lstats(paths, "a/b/1.txt", "a/b/2.txt", "a/c.txt")
    assert found == [tmp_path / "a/b/1.txt", tmp_path / "a/b/2.txt", tmp_path / "a/c.txt"]
    # Each folder, and whether it has a hidden folder of its own.
    checked = [f"{tmp_path}/a", f"{tmp_path}/a/.boxsync", f"{tmp_path}/a/b", f"{tmp_path}/a/b/.boxsync"]
    assert seen == checked
    # The next turn checks them again.
    clock.advance(0)
    _, seen = _lstats(paths, "a/b/1.txt")
    assert seen == checked


def test_a_folder_made_a_link_is_found_out_the_next_turn(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "elsewhere").mkdir()
    clock = Clock()
    paths = LocalPaths(tmp_path, clock)
    assert paths("a/x") == tmp_path / "a/x"
    (tmp_path / "a").rmdir()
    (tmp_path / "a").symlink_to(tmp_path / "elsewhere")
    clock.advance(0)
    with pytest.raises(BadPath):
        paths("a/x")


def test_a_missing_folder_is_not_kept(tmp_path: Path) -> None:
    clock = Clock()
    paths = LocalPaths(tmp_path, clock)
    assert paths("new/x") == tmp_path / "new/x"
    # Made within the same turn (as a download makes a file's folder), in the
    # form the file system has: the next mapping finds it.
    nfd = unicodedata.normalize("NFD", "été")
    (tmp_path / nfd).mkdir()
    assert paths("été/x") == tmp_path / nfd / "x"
    (tmp_path / "new").symlink_to(tmp_path / nfd)
    with pytest.raises(BadPath):
        paths("new/x")


def test_the_same_answers_as_without_the_folders(tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "été")
    (tmp_path / nfd / "d").mkdir(parents=True)
    (tmp_path / "file").write_bytes(b"")
    folders: dict[str, str] = {}
    for wire in ("été/d/x", "été/d/x", "été/y", "été/new/z", "top"):
        assert to_local(tmp_path, wire, folders) == to_local(tmp_path, wire)
    assert folders == {"été": nfd, "été/d": f"{nfd}/d"}
    for wire in ("file/inside", "file/inside"):
        with pytest.raises(BadPath):
            to_local(tmp_path, wire, folders)


def test_nothing_is_placed_in_a_box_nor_a_folder_synced_with_the_same_box(tmp_path: Path) -> None:
    """
    A folder below the root that is a server's box, or a folder synced on
    its own with the root's box: no path goes into it (what is written
    there would be sent back up, deeper); one synced with another box is
    the root's as any folder. The folder itself may be named.
    """
    synced_with((tmp_path / "root", "box-1"), (tmp_path / "root/same", "box-1"), (tmp_path / "root/other", "box-2"))
    (tmp_path / "root/srv/.boxsync").mkdir(parents=True)
    (tmp_path / "root/srv/.boxsync/server.lock").write_bytes(b"")
    paths = LocalPaths(tmp_path / "root", Clock())
    for kept_out in ("same/y.txt", "same/sub/z.txt", "srv/f.txt"):
        for _ in range(2):  # found again in the same turn
            with pytest.raises(BadPath):
                paths(kept_out)
    assert paths("same") == tmp_path / "root/same"
    assert paths("other/y.txt") == tmp_path / "root/other/y.txt"
    # Without the root's state, only a box is kept out.
    with pytest.raises(BadPath):
        to_local(tmp_path / "root", "srv/f.txt")
    assert to_local(tmp_path / "root", "same/y.txt") == tmp_path / "root/same/y.txt"
