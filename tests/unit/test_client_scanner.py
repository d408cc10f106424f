"""
Tests for L{boxsync.client.scanner}.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boxsync.client import scanner
from boxsync.client.ignore import IGNORE_FILE, TEMP_PREFIX, IgnoreRules
from boxsync import fs
from boxsync.client.scanner import (
    FileChanging,
    ReadElsewhere,
    ScanResult,
    scan,
    scan_one,
)
from boxsync.blocks import recipe_of
from boxsync.fs import CHUNK_SIZE, hash_file
from boxsync.client.walk import NESTED_BOX, NESTED_FOLDER, NESTED_SAME_BOX
from boxsync.client.state import UNKNOWN_CTIME, Base, LocalState, Stamps, folder_base
from boxsync.wire import DeletedEntry, FolderEntry
from tests.helpers import count_hashing, edit_keeping_stamps, synced_with

NO_RULES = IgnoreRules()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(root: Path, path: str, data: bytes) -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def synced(result: ScanResult, seq: int = 1) -> dict[str, Base]:
    """
    The state after every file of C{result} was synced as version C{seq}.
    """
    return {path: f.as_base(seq) for path, f in result.files.items()}


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """
    Record every file the scanner hashes.
    """
    return count_hashing(monkeypatch, fs)


@pytest.fixture
def stamps_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The files a test writes count as written long before they are scanned:
    their stamps are never racy.
    """
    monkeypatch.setattr(scanner, "RACY_NS", 0)


@pytest.fixture
def stamps_racy(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Every file counts as written in the clock tick it is scanned in.
    """
    monkeypatch.setattr(scanner, "RACY_NS", 1 << 62)


def refuse(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, denied: str
) -> None:
    """
    Make the function C{owner.name} fail with a permission error for a path
    whose last segment is C{denied}.
    """
    real = getattr(owner, name)

    def refusing(path: os.PathLike[str]) -> Any:
        if Path(path).name == denied:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(owner, name, refusing)


@pytest.mark.parametrize(
    "mode, executable, expected",
    [
        (0o644, True, 0o755),
        (0o600, True, 0o700),
        (0o640, True, 0o750),
        (0o755, True, 0o755),
        (0o755, False, 0o644),
        (0o711, False, 0o600),
        (0o100644, True, 0o755),  # the file type is dropped
        (0o4755, False, 0o4644),  # other bits are kept
    ],
)
def test_mode_for(mode: int, executable: bool, expected: int) -> None:
    assert fs.mode_for(mode, executable) == expected
    assert fs.is_executable(expected) is executable


def test_hash_file(tmp_path: Path) -> None:
    data = os.urandom(CHUNK_SIZE * 2 + 123)
    path = write(tmp_path, "big", data)
    assert hash_file(path) == (sha(data), len(data))
    assert hash_file(write(tmp_path, "empty", b"")) == (sha(b""), 0)


def test_first_scan(tmp_path: Path) -> None:
    """
    With no state, every file is new: base 0, changed. The hidden folder is
    left out; the ignore file is synced.
    """
    write(tmp_path, "a.txt", b"a")
    write(tmp_path, "d/e/f.bin", b"f")
    write(tmp_path, IGNORE_FILE, b"*.log\n")
    write(tmp_path, ".boxsync/state.sqlite", b"x")
    (tmp_path / "empty-dir").mkdir()
    result = scan(tmp_path, {}, NO_RULES)
    assert sorted(result.files) == [IGNORE_FILE, "a.txt", "d/e/f.bin"]
    f = result.files["d/e/f.bin"]
    st = (tmp_path / "d/e/f.bin").stat()
    assert (f.sha256, f.size, f.mtime_ns, f.inode) == (
        sha(b"f"),
        1,
        st.st_mtime_ns,
        st.st_ino,
    )
    assert (f.base, f.changed) == (0, True)
    assert result.deleted == ()
    assert result.skipped == ()


@pytest.mark.usefixtures("stamps_trusted")
def test_unchanged_files_are_not_read(tmp_path: Path, hashed: list[Path]) -> None:
    """
    A file whose size, mtime and inode match its base is not read again:
    its recorded sha256 is used, and it is unchanged.
    """
    for i in range(5):
        write(tmp_path, f"d/f{i}", b"%d" % i)
    state = synced(scan(tmp_path, {}, NO_RULES), seq=7)
    assert len(hashed) == 5
    hashed.clear()

    result = scan(tmp_path, state, NO_RULES)
    assert hashed == []
    for path, f in result.files.items():
        assert (f.sha256, f.base, f.changed) == (state[path].sha256, 7, False)
    assert result.refreshed == ()


@pytest.mark.usefixtures("stamps_trusted")
def test_files_of_any_date_are_listed_and_known_again(tmp_path: Path, hashed: list[Path]) -> None:
    """
    A file dated before 1970 is listed with its date; one dated past what
    the wire's nanoseconds reach (2262; a file system may allow 2446) as of
    then. Either is known again by its stamps at the next scan: not read.
    """
    write(tmp_path, "old", b"old")
    write(tmp_path, "late", b"late")
    os.utime(tmp_path / "old", ns=(0, -(10**18)))
    os.utime(tmp_path / "late", ns=(0, 10**19))
    assert (tmp_path / "late").stat().st_mtime_ns == 10**19
    result = scan(tmp_path, {}, NO_RULES)
    assert {path: f.mtime_ns for path, f in result.files.items()} == {"late": 2**63 - 1, "old": -(10**18)}
    state = synced(result, seq=3)
    hashed.clear()
    again = scan(tmp_path, state, NO_RULES)
    assert hashed == [] and not any(f.changed for f in again.files.values())


@pytest.mark.usefixtures("stamps_trusted")
def test_changed_content(tmp_path: Path, hashed: list[Path]) -> None:
    """
    A file rewritten with other bytes of the same size (and a new mtime) is
    read again and found changed; the others are not read.
    """
    target = write(tmp_path, "a", b"one")
    write(tmp_path, "b", b"two")
    state = synced(scan(tmp_path, {}, NO_RULES), seq=3)
    hashed.clear()

    target.write_bytes(b"ONE")
    os.utime(target, ns=(1, state["a"].mtime_ns + 1))
    result = scan(tmp_path, state, NO_RULES)
    assert hashed == [target]
    a = result.files["a"]
    assert (a.sha256, a.base, a.changed) == (sha(b"ONE"), 3, True)
    assert result.files["b"].changed is False


@pytest.mark.usefixtures("stamps_trusted")
def test_touched_but_identical(tmp_path: Path, hashed: list[Path]) -> None:
    """
    A file whose stat changed but whose bytes did not is read, found
    unchanged, and listed in C{refreshed} with its new stat.
    """
    target = write(tmp_path, "a", b"same")
    state = synced(scan(tmp_path, {}, NO_RULES), seq=4)
    hashed.clear()

    # Same bytes, new inode and mtime (as an editor's save-by-rename does).
    write(tmp_path, "a.new", b"same").rename(target)
    result = scan(tmp_path, state, NO_RULES)
    assert hashed == [target]
    a = result.files["a"]
    assert (a.changed, a.base) == (False, 4)
    assert a.inode == target.stat().st_ino
    assert result.refreshed == (a.as_base(4),)
    hashed.clear()
    scan(tmp_path, {**state, "a": result.refreshed[0]}, NO_RULES)
    assert hashed == []


@pytest.mark.usefixtures("stamps_trusted")
def test_a_change_of_mode_alone_is_a_change(tmp_path: Path, hashed: list[Path]) -> None:
    """
    A file made executable (or not), its bytes unchanged, is a change: its
    ctime moved, so it is read, found to be the same bytes, and listed as
    changed and executable; synced, it is not read again.
    """
    target = write(tmp_path, "run.sh", b"#!/bin/sh\n")
    target.chmod(0o644)
    state = synced(scan(tmp_path, {}, NO_RULES), seq=2)
    assert state["run.sh"].executable is False
    hashed.clear()

    target.chmod(0o755)
    result = scan(tmp_path, state, NO_RULES)
    assert hashed == [target]
    found = result.files["run.sh"]
    assert (found.sha256, found.changed, found.executable) == (sha(b"#!/bin/sh\n"), True, True)
    assert found.to_entry().executable is True
    assert result.refreshed == ()
    hashed.clear()
    state = synced(result, seq=3)
    assert state["run.sh"].executable is True
    assert scan(tmp_path, state, NO_RULES).files["run.sh"].changed is False
    assert hashed == []
    # Any x bit makes a file executable; taking them all away is a change back.
    target.chmod(0o744)
    assert scan(tmp_path, state, NO_RULES).files["run.sh"].changed is False
    target.chmod(0o644)
    assert scan(tmp_path, state, NO_RULES).files["run.sh"].changed is True


@pytest.mark.usefixtures("stamps_trusted")
def test_edit_with_its_mtime_set_back(tmp_path: Path, hashed: list[Path]) -> None:
    """
    A same-size edit in place whose mtime is set back (as C{cp -p},
    C{rsync -t} or C{tar x} do) keeps size, mtime and inode: its ctime moved,
    so it is read and found changed.
    """
    target = write(tmp_path, "a", b"A000")
    state = synced(scan(tmp_path, {}, NO_RULES), seq=2)
    hashed.clear()

    edit_keeping_stamps(target, b"B000")
    result = scan(tmp_path, state, NO_RULES)
    assert hashed == [target]
    a = result.files["a"]
    assert (a.sha256, a.base, a.changed) == (sha(b"B000"), 2, True)
    found = scan_one(tmp_path, "a", state["a"])
    assert found is not None and found.changed
    assert not scanner.unchanged(tmp_path, "a", state["a"])


@pytest.mark.usefixtures("stamps_racy")
def test_racy_stamps_are_not_trusted(tmp_path: Path, hashed: list[Path]) -> None:
    """
    A file read in the clock tick of its last write could be written again
    in that tick with no stamp moving: its base is recorded with an unknown
    ctime, so the next look reads it again; found identical, it is not
    taken as refreshed either.
    """
    target = write(tmp_path, "a", b"same")
    first = scan(tmp_path, {}, NO_RULES).files["a"]
    assert first.racy
    base = first.as_base(5)
    assert base.ctime_ns == UNKNOWN_CTIME
    assert not scanner.unchanged(tmp_path, "a", base)
    hashed.clear()

    again = scan(tmp_path, {"a": base}, NO_RULES)
    assert hashed == [target]
    assert (again.files["a"].changed, again.refreshed) == (False, ())


@pytest.mark.usefixtures("stamps_trusted")
def test_a_rename_is_known_by_its_stamps(tmp_path: Path, hashed: list[Path]) -> None:
    """
    A file with no base whose size, mtime, inode and mode a vanished path's
    trusted base recorded, and whose bytes hash to that base's sha256, is
    that path renamed: hashed, not cut, it says where it came from (the
    old path is reported deleted all the same). A hard link (the old path
    still there), a renamed file whose mtime or size changed, or one
    renamed from a base with an unknown ctime is read (and, found to have a
    vanished path's content, said to come from there too). One edited in
    place with its size and mtime put back before it was renamed is not
    taken for the old content.
    """
    for name in ("a", "b", "c", "d", "e"):
        write(tmp_path, f"{name}.bin", name.encode() * 4096)
    state = synced(scan(tmp_path, {}, NO_RULES), seq=3)
    state["d.bin"] = state["d.bin"]._replace(ctime_ns=UNKNOWN_CTIME)
    hashed.clear()

    (tmp_path / "x").mkdir()
    os.rename(tmp_path / "a.bin", tmp_path / "x/a.bin")
    os.link(tmp_path / "b.bin", tmp_path / "linked.bin")
    os.rename(tmp_path / "c.bin", tmp_path / "later.bin")
    os.utime(tmp_path / "later.bin", ns=(1, 1))
    os.rename(tmp_path / "d.bin", tmp_path / "unknown.bin")
    edit_keeping_stamps(tmp_path / "e.bin", b"E" * 4096)
    os.rename(tmp_path / "e.bin", tmp_path / "edited.bin")
    result = scan(tmp_path, state, NO_RULES, cut_over=1024)

    moved = result.files["x/a.bin"]
    assert (moved.sha256, moved.base, moved.changed, moved.moved_from) == (
        state["a.bin"].sha256, 0, True, state["a.bin"]
    )
    assert moved.recipe is None
    # The two renames by their stamps are hashed to be sure; what is read
    # otherwise is cut (and hashed in the same read).
    assert sorted(path.name for path in hashed) == ["a.bin", "edited.bin"]
    assert all(result.files[name].recipe is not None for name in ("linked.bin", "later.bin", "unknown.bin", "edited.bin"))
    edited = result.files["edited.bin"]
    assert edited.moved_from is None and edited.sha256 == sha(b"E" * 4096) != state["e.bin"].sha256
    assert result.files["linked.bin"].moved_from is None
    assert result.files["later.bin"].moved_from == state["c.bin"]
    assert result.files["unknown.bin"].moved_from == state["d.bin"]
    assert {entry.path for entry in result.deleted} == {"a.bin", "c.bin", "d.bin", "e.bin"}
    assert moved.as_base(9) == state["a.bin"]._replace(path="x/a.bin", seq=9, ctime_ns=moved.ctime_ns)


@pytest.mark.usefixtures("stamps_trusted")
def test_large_files_read_are_cut_as_they_are_hashed(tmp_path: Path) -> None:
    """
    With C{cut_over}, a file over it that must be read is cut into its
    blocks in the same read (its recipe kept for its upload); one under it,
    or one whose stamps are its base's, is not.
    """
    big = write(tmp_path, "big.bin", os.urandom(6 * 2**20))
    write(tmp_path, "small.txt", b"small")
    result = scan(tmp_path, {}, NO_RULES, cut_over=1024)
    cut = result.files["big.bin"]
    assert cut.recipe == recipe_of(big) and cut.sha256 == cut.recipe.sha256 and len(cut.recipe.blocks) > 1
    assert result.files["small.txt"].recipe is None
    assert scan(tmp_path, {}, NO_RULES).files["big.bin"].recipe is None
    assert scan(tmp_path, synced(result), NO_RULES, cut_over=1024).files["big.bin"].recipe is None


def test_deleted(tmp_path: Path) -> None:
    """
    Paths with a base and no file are reported deleted with their base's
    seq; a file replaced by a directory is deleted too. One replaced by a
    link (or a FIFO), which is not synced, is not: the box keeps it, and
    so do the other clients; and nor are the files of a folder replaced
    by a link to a folder.
    """
    for path in ["keep", "gone", "dir/x", "dir/y", "became-dir", "became-link", "linked/z", "piped"]:
        write(tmp_path, path, b"data")
    state = synced(scan(tmp_path, {}, NO_RULES), seq=9)
    state["gone"] = Base("gone", "0" * 64, 4, 1, 2, 5)

    (tmp_path / "gone").unlink()
    for path in ["dir/x", "dir/y"]:
        (tmp_path / path).unlink()
    (tmp_path / "dir").rmdir()
    (tmp_path / "became-dir").unlink()
    (tmp_path / "became-dir").mkdir()
    (tmp_path / "became-link").unlink()
    (tmp_path / "became-link").symlink_to("keep")
    (tmp_path / "linked").rename(tmp_path / "became-dir" / "elsewhere")
    (tmp_path / "linked").symlink_to("became-dir/elsewhere")
    (tmp_path / "piped").unlink()
    os.mkfifo(tmp_path / "piped")
    result = scan(tmp_path, state, NO_RULES)
    assert sorted(result.files) == ["became-dir/elsewhere/z", "keep"]
    assert set(result.deleted) == {
        DeletedEntry("gone", 5),
        DeletedEntry("dir/x", 9),
        DeletedEntry("dir/y", 9),
        DeletedEntry("became-dir", 9),
    }
    assert {(s.path, s.covers) for s in result.skipped} == {("became-link", True), ("linked", True), ("piped", True)}


def test_folders_of_their_own(tmp_path: Path) -> None:
    """
    A new folder is synced as a folder of its own while nothing at all is
    in it (a folder with files comes with them; one that holds only what is
    not synced is not synced); once synced, it stays one whatever comes
    into it, until it is gone or something else is at its path.
    """
    (tmp_path / "empty").mkdir()
    (tmp_path / "a/b/c").mkdir(parents=True)
    write(tmp_path, "full/f", b"f")
    (tmp_path / "only-a-link").mkdir()
    (tmp_path / "only-a-link/link").symlink_to("/")
    rules = IgnoreRules.from_lines(["*.tmp"])
    write(tmp_path, "only-ignored/x.tmp", b"")
    result = scan(tmp_path, {}, rules)
    assert result.folders == {"empty": 0, "a/b/c": 0}
    manifest = result.to_manifest("c", 0, only_changed=False)
    assert set(manifest.folders) == {FolderEntry("a/b/c", 0), FolderEntry("empty", 0)}

    state = {**synced(result), "empty": folder_base("empty", 5), "a/b/c": folder_base("a/b/c", 6)}
    write(tmp_path, "empty/new", b"x")
    result = scan(tmp_path, {**state, "empty/new": synced(scan(tmp_path, {}, rules))["empty/new"]}, rules)
    assert result.folders == {"empty": 5, "a/b/c": 6}
    assert result.to_manifest("c", 9, only_changed=True).folders == ()
    assert set(result.to_manifest("c", 0, only_changed=False).folders) == {
        FolderEntry("empty", 5),
        FolderEntry("a/b/c", 6),
    }

    # Removed, it is deleted (and the folder it leaves empty is new); a
    # file in its place is new once the folder's delete is committed.
    (tmp_path / "a/b/c").rmdir()
    (tmp_path / "empty/new").unlink()
    (tmp_path / "empty").rmdir()
    write(tmp_path, "empty", b"a file now")
    result = scan(tmp_path, state, rules)
    assert result.folders == {"a/b": 0}
    assert set(result.deleted) == {DeletedEntry("a/b/c", 6), DeletedEntry("empty", 5)}
    assert "empty" not in result.files
    # An ignored folder with a base is not deleted.
    ignoring = IgnoreRules.from_lines(["b/"])
    assert scan(tmp_path, {"a/b": folder_base("a/b", 7)}, ignoring).deleted == ()


def test_look_here(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path, "full/f", b"f")
    (tmp_path / "link").symlink_to("full")
    assert [scanner.look_here(tmp_path, path) for path in ["empty", "full", "full/f", "link", "link/f", "no"]] == [
        scanner.Here.EMPTY,
        scanner.Here.FOLDER,
        scanner.Here.FILE,
        scanner.Here.OTHER,
        scanner.Here.NOTHING,  # never through a link
        scanner.Here.NOTHING,
    ]


def test_ignored(tmp_path: Path) -> None:
    """
    Ignored files and directories are neither listed nor, if they have a
    base, reported deleted.
    """
    write(tmp_path, "a.log", b"1")
    write(tmp_path, "build/out.o", b"2")
    write(tmp_path, "src/main.c", b"3")
    write(tmp_path, f"src/{TEMP_PREFIX}x", b"4")
    state = synced(scan(tmp_path, {}, NO_RULES))
    assert f"src/{TEMP_PREFIX}x" not in state

    rules = IgnoreRules.from_lines(["*.log", "build/"])
    result = scan(tmp_path, state, rules)
    assert sorted(result.files) == ["src/main.c"]
    assert result.deleted == ()
    assert result.skipped == ()


def test_the_data_of_a_folder_synced_inside_is_not_synced(tmp_path: Path) -> None:
    """
    A folder synced on its own inside this one: its files are this
    folder's, its hidden folder (that client's state, written all the
    time) is not, and it is said so. A base of a file in it, from before,
    does not make it look deleted.
    """
    write(tmp_path, "work/report.txt", b"r")
    write(tmp_path, "work/.boxsync/state.sqlite", b"s")
    write(tmp_path, "deep/er/.boxsync/tmp/x", b"t")
    write(tmp_path, "deep/er/notes.boxsync", b"n")
    old = {"work/.boxsync/status.json": Base("work/.boxsync/status.json", "0" * 64, 1, 1, 1, 1)}
    result = scan(tmp_path, old, NO_RULES)
    assert sorted(result.files) == ["deep/er/notes.boxsync", "work/report.txt"]
    assert result.deleted == ()
    assert {s.path: s.reason for s in result.skipped} == {
        "work/.boxsync": NESTED_FOLDER,
        "deep/er/.boxsync": NESTED_FOLDER,
    }
    assert IgnoreRules.from_lines([]).ignored("work/.boxsync/state.sqlite")


def test_a_folder_synced_inside_with_the_same_box_is_not_synced(tmp_path: Path) -> None:
    """
    A folder synced on its own inside this one with this folder's box: none
    of its files is this folder's (they would come back into it, deeper,
    again and again), it is said so, and a base of a file in it, from
    before, does not make it look deleted.
    """
    synced_with((tmp_path, "box-1"), (tmp_path / "same", "box-1"), (tmp_path / "other", "box-2"))
    write(tmp_path, "same/x.txt", b"x")
    write(tmp_path, "other/x.txt", b"x")
    old = {"same/x.txt": Base("same/x.txt", sha(b"x"), 1, 1, 1, 1)}
    result = scan(tmp_path, old, NO_RULES)
    assert sorted(result.files) == ["other/x.txt"]
    assert result.deleted == ()
    assert {(s.path, s.reason, s.covers) for s in result.skipped} == {
        ("same", NESTED_SAME_BOX, True),
        ("other/.boxsync", NESTED_FOLDER, False),
    }


def test_a_server_s_box_inside_is_not_synced_nor_its_files_taken_for_deleted(tmp_path: Path) -> None:
    """
    A server's box inside the folder: its files are its server's (synced
    back into it, they would come back one level deeper at each turn).
    Nothing below it is listed, it is said so, and the bases of files in it
    from before it was a box do not make them look deleted.
    """
    write(tmp_path, "srv/box/.boxsync/server.lock", b"")
    write(tmp_path, "srv/box/in-box.txt", b"b")
    write(tmp_path, "srv/box/deeper/more.txt", b"m")
    write(tmp_path, "srv/notes.txt", b"n")
    old = {"srv/box/in-box.txt": Base("srv/box/in-box.txt", sha(b"b"), 1, 1, 1, 1)}
    result = scan(tmp_path, old, NO_RULES)
    assert sorted(result.files) == ["srv/notes.txt"]
    assert result.deleted == ()
    assert {s.path: s.reason for s in result.skipped} == {"srv/box": NESTED_BOX}


def test_a_file_read_tells_how_many_names_it_has(tmp_path: Path) -> None:
    """
    A file with hard links tells so when it is read (a write through one
    name is news for the others).
    """
    write(tmp_path, "one.txt", b"shared")
    write(tmp_path, "alone.txt", b"alone")
    os.link(tmp_path / "one.txt", tmp_path / "two.txt")
    found = [scan_one(tmp_path, path, None) for path in ("one.txt", "two.txt", "alone.txt")]
    assert [f.links for f in found if f is not None] == [2, 2, 1]


def test_other_programs_lock_and_swap_files_are_listed_not_synced(tmp_path: Path) -> None:
    """
    What a default rule leaves out (a lock file, a swap file, a trash
    folder) is not synced, but listed with why; what the folder's own rules
    leave out is not listed.
    """
    write(tmp_path, "report.odt", b"r")
    write(tmp_path, ".~lock.report.odt#", b"l")
    write(tmp_path, "docs/.notes.txt.swp", b"s")
    write(tmp_path, ".Trash-1000/files/old.txt", b"o")
    write(tmp_path, "build/.x.swp", b"b")
    result = scan(tmp_path, {}, IgnoreRules.from_lines(["build/"]))
    assert sorted(result.files) == ["report.odt"]
    reasons = {s.path: s.reason for s in result.skipped}
    assert sorted(reasons) == [".Trash-1000", ".~lock.report.odt#", "docs/.notes.txt.swp"]
    assert reasons[".~lock.report.odt#"].startswith("a LibreOffice lock file, not synced by default")
    assert not any(s.covers for s in result.skipped)


def test_bad_names_skipped(tmp_path: Path) -> None:
    """
    Names the wire cannot carry, links and special files are skipped and
    reported; they never make a synced file look deleted.
    """
    write(tmp_path, "ok", b"ok")
    write(tmp_path, "ctl\x01", b"c")
    write(tmp_path, "back\\slash", b"b")
    write(tmp_path, "sub/x", b"x")
    os.symlink(tmp_path / "ok", tmp_path / "link")
    os.symlink(tmp_path / "sub", tmp_path / "dirlink")
    os.mkfifo(tmp_path / "fifo")
    bad = os.fsencode(tmp_path) + b"/bad\xff"
    os.mkdir(bad)
    with open(bad + b"/inside", "wb") as f:
        f.write(b"i")

    result = scan(tmp_path, {}, NO_RULES)
    assert sorted(result.files) == ["ok", "sub/x"]
    reasons = {s.path: s.reason for s in result.skipped}
    assert set(reasons) == {
        "ctl\x01",
        "back\\slash",
        "link",
        "dirlink",
        "fifo",
        os.fsdecode(b"bad\xff"),
    }
    assert reasons["link"] == "symbolic link"
    assert reasons["fifo"] == "not a regular file"


def test_names_by_their_nfc_form(tmp_path: Path) -> None:
    """
    A name in another form than NFC (a Mac's NFD) is synced under its NFC
    form, and read where it is, folders included.
    """
    nfd = unicodedata.normalize("NFD", "café")
    write(tmp_path, f"{nfd}/{nfd}.txt", b"nfd")
    result = scan(tmp_path, {}, NO_RULES)
    assert list(result.files) == ["café/café.txt"]
    assert result.files["café/café.txt"].sha256 == sha(b"nfd")
    assert result.skipped == ()
    # Looked at alone, by its wire path, it is the same file.
    one = scan_one(tmp_path, "café/café.txt", None)
    assert one is not None and one.sha256 == sha(b"nfd")
    # And it is not deleted once synced.
    again = scan(tmp_path, synced(result), NO_RULES)
    assert again.deleted == () and not again.files["café/café.txt"].changed


@pytest.mark.parametrize("nfc_too", [True, False])
def test_names_that_normalise_alike_are_a_conflict(tmp_path: Path, nfc_too: bool) -> None:
    """
    Of two names in a folder with the same NFC form, the one in NFC form (or
    else the first) is synced; the other is skipped as a conflict, and
    neither is merged into the other.
    """
    nfd = unicodedata.normalize("NFD", "é.txt")
    # Another form: the acute accent as U+0341, which NFC makes U+0301.
    other = "e\u0341.txt"
    write(tmp_path, nfd, b"nfd")
    write(tmp_path, "é.txt" if nfc_too else other, b"second")
    result = scan(tmp_path, {}, NO_RULES)
    assert list(result.files) == ["é.txt"]
    kept, passed = ("é.txt", nfd) if nfc_too else (nfd, other)
    assert result.files["é.txt"].sha256 == sha((tmp_path / kept).read_bytes())
    assert [s.path for s in result.skipped] == [passed]
    assert result.skipped[0].reason.startswith(f"conflict: {kept} ")
    assert scan_one(tmp_path, "é.txt", None) == result.files["é.txt"]


def test_unreadable_file_is_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A file that cannot be read is skipped, not reported deleted.
    """
    write(tmp_path, "secret", b"s")
    write(tmp_path, "plain", b"p")
    state = {"secret": Base("secret", "0" * 64, 9, 9, 9, 2)}
    refuse(monkeypatch, fs, "hash_file", "secret")
    result = scan(tmp_path, state, NO_RULES)
    assert sorted(result.files) == ["plain"]
    assert result.deleted == ()
    assert [(s.path, s.reason, s.covers) for s in result.skipped] == [
        ("secret", "cannot read: Permission denied", True)
    ]


def test_file_changing_while_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A file that changes each time it is read is skipped by L{scan} (and not
    deleted); L{scan_one} raises L{FileChanging}.
    """
    target = write(tmp_path, "busy", b"0")
    real = fs.hash_file
    writes = iter(range(1, 100))

    def growing(path: Path) -> tuple[str, int]:
        result = real(path)
        with open(path, "ab") as f:
            f.write(b"%d" % next(writes))
        return result

    monkeypatch.setattr(fs, "hash_file", growing)
    state = {"busy": Base("busy", "0" * 64, 9, 9, 9, 2)}
    result = scan(tmp_path, state, NO_RULES)
    assert result.files == {}
    assert result.deleted == ()
    assert [s.path for s in result.skipped] == ["busy"]
    with pytest.raises(FileChanging):
        scan_one(tmp_path, "busy", None)
    assert target.stat().st_size > 1


@pytest.mark.usefixtures("stamps_trusted")
def test_scan_one(tmp_path: Path, hashed: list[Path]) -> None:
    target = write(tmp_path, "d/a", b"a")
    write(tmp_path, "d/sub/x", b"x")
    os.symlink(target, tmp_path / "link")
    assert scan_one(tmp_path, "missing", None) is None
    assert scan_one(tmp_path, "d/a/below-a-file", None) is None
    assert scan_one(tmp_path, "d/sub", None) is None
    assert scan_one(tmp_path, "link", None) is None
    assert scan_one(tmp_path, "../escape", None) is None

    new = scan_one(tmp_path, "d/a", None)
    assert new is not None
    assert (new.sha256, new.base, new.changed) == (sha(b"a"), 0, True)
    hashed.clear()
    same = scan_one(tmp_path, "d/a", new.as_base(6))
    assert same is not None
    assert (same.base, same.changed) == (6, False)
    assert hashed == []

    target.write_bytes(b"b")
    os.utime(target, ns=(1, new.mtime_ns + 1))
    changed = scan_one(tmp_path, "d/a", new.as_base(6))
    assert changed is not None
    assert (changed.sha256, changed.base, changed.changed) == (sha(b"b"), 6, True)


@pytest.mark.usefixtures("stamps_trusted")
def test_scan_one_reads_only_up_to_max_read(tmp_path: Path, hashed: list[Path]) -> None:
    big = write(tmp_path, "big", b"b" * 1000)
    write(tmp_path, "small", b"s" * 10)
    with pytest.raises(ReadElsewhere):
        scan_one(tmp_path, "big", None, max_read=999)
    assert hashed == []
    small = scan_one(tmp_path, "small", None, max_read=999)
    # Read whole on the reactor's thread: its bytes are kept for the upload.
    assert small is not None and small.sha256 == sha(b"s" * 10) and small.data == b"s" * 10
    # An unchanged file of any size needs no reading at all.
    found = scan_one(tmp_path, "big", None)
    assert found is not None and found.data is None
    hashed.clear()
    same = scan_one(tmp_path, "big", found.as_base(3), max_read=10)
    assert same is not None and not same.changed and hashed == [] and same.data is None
    big.write_bytes(b"c" * 1000)
    os.utime(big, ns=(1, found.mtime_ns + 1))
    with pytest.raises(ReadElsewhere):
        scan_one(tmp_path, "big", found.as_base(3), max_read=10)


def test_to_manifest(tmp_path: Path) -> None:
    """
    The manifest lists every file, or with C{only_changed} only the changed
    and never synced ones; deleted paths are always listed.
    """
    write(tmp_path, "same", b"s")
    write(tmp_path, "edited", b"e")
    write(tmp_path, "gone", b"g")
    state = synced(scan(tmp_path, {}, NO_RULES), seq=2)
    write(tmp_path, "edited", b"E!")
    write(tmp_path, "new", b"n")
    (tmp_path / "gone").unlink()
    result = scan(tmp_path, state, NO_RULES)

    full = result.to_manifest("laptop", 2, only_changed=False)
    assert (full.client, full.cursor) == ("laptop", 2)
    assert sorted(f.path for f in full.files) == ["edited", "new", "same"]
    assert full.deleted == (DeletedEntry("gone", 2),)

    short = result.to_manifest("laptop", 2, only_changed=True)
    assert {f.path: (f.base, f.changed) for f in short.files} == {
        "edited": (2, True),
        "new": (0, True),
    }
    assert short.deleted == (DeletedEntry("gone", 2),)


def test_unlistable_directory_is_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    What has a base below a directory that cannot be listed is not reported
    deleted.
    """
    write(tmp_path, "locked/a", b"a")
    write(tmp_path, "open/b", b"b")
    state = synced(scan(tmp_path, {}, NO_RULES))
    refuse(monkeypatch, os, "scandir", "locked")
    result = scan(tmp_path, state, NO_RULES)
    assert sorted(result.files) == ["open/b"]
    assert result.deleted == ()
    assert [(s.path, s.covers) for s in result.skipped] == [("locked", True)]


def test_missing_root(tmp_path: Path) -> None:
    """
    A folder that is not there is not an empty folder: the scan fails rather
    than report every synced file deleted.
    """
    state = {"a": Base("a", "0" * 64, 1, 1, 1, 1)}
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "missing", state, NO_RULES)


def stamps_of(root: Path, bases: dict[str, Base]) -> Stamps:
    """
    The stamps of C{bases}, as a real state database below C{root} gives
    them.
    """
    state = LocalState.open(root)
    try:
        state.put_many(list(bases.values()))
        return state.stamps()
    finally:
        state.close()


def not_read() -> dict[str, Base]:
    raise AssertionError("the bases were read")


@pytest.mark.usefixtures("stamps_trusted")
def test_with_stamps_unchanged_files_are_only_counted(tmp_path: Path, hashed: list[Path]) -> None:
    """
    Given the bases' stamps, a scan that finds every file as its base
    recorded it lists none, counts them, and never reads the bases
    themselves; folders come out as without them.
    """
    for i in range(5):
        write(tmp_path, f"d/f{i}", b"%d" % i)
    (tmp_path / "kept").mkdir()
    state = {**synced(scan(tmp_path, {}, NO_RULES), seq=3), "kept": folder_base("kept", 4)}
    (tmp_path / "new-and-empty").mkdir()
    stamps = stamps_of(tmp_path, state)
    hashed.clear()

    result = scan(tmp_path, not_read, NO_RULES, stamps=lambda: stamps)
    assert (result.files, result.unchanged, result.deleted, result.refreshed) == ({}, 5, (), ())
    assert result.folders == scan(tmp_path, state, NO_RULES).folders == {"kept": 4, "new-and-empty": 0}
    assert hashed == []
    assert result.to_manifest("c", 9, only_changed=True) == scan(tmp_path, state, NO_RULES).to_manifest(
        "c", 9, only_changed=True
    )
    with pytest.raises(ValueError):
        result.to_manifest("c", 9, only_changed=False)


_NAMES = ["a", "b", "d/c", "d/e", "f/g"]

_CHANGES = st.lists(
    st.tuples(st.sampled_from(["edit", "touch", "delete", "create", "chmod", "to-folder", "rmdir", "ignore"]), st.sampled_from(_NAMES)),
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(changes=_CHANGES)
def test_with_stamps_the_manifest_is_the_same(changes: list[tuple[str, str]]) -> None:
    """
    Whatever changed since the bases were recorded, a scan given their
    stamps makes the same manifest of changes as one given the bases.
    """
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        # The stamps are trusted (as those of files written long before).
        patch.setattr(scanner, "RACY_NS", 0)
        root = Path(tmp)
        for name in _NAMES[:4]:
            write(root, name, name.encode())
        (root / "f").mkdir()
        old = time.time_ns() - 10**10
        state = synced(scan(root, {}, NO_RULES), seq=2)
        state["f"] = folder_base("f", 3)
        rules = NO_RULES
        for change, name in changes:
            target = root / name
            if change == "edit" and target.is_file():
                target.write_bytes(b"edited " + name.encode())
            elif change == "touch" and target.is_file():
                os.utime(target, ns=(old + 10**9, old + 10**9))
            elif change == "delete" and target.is_file():
                target.unlink()
            elif change == "create" and not target.exists() and not target.parent.is_file():
                write(root, name, b"new " + name.encode())
            elif change == "chmod" and target.is_file():
                target.chmod(0o755)
            elif change == "to-folder" and target.is_file():
                target.unlink()
                target.mkdir()
            elif change == "rmdir" and target.parent != root:
                shutil.rmtree(target.parent, ignore_errors=True)
            elif change == "ignore":
                rules = IgnoreRules.from_lines([name.rpartition("/")[2]])
        stamps = stamps_of(root, state)
        with_stamps = scan(root, state, rules, stamps=stamps)
        without = scan(root, state, rules)
        assert with_stamps.to_manifest("c", 2, only_changed=True) == without.to_manifest("c", 2, only_changed=True)
        assert (with_stamps.refreshed, with_stamps.folders, with_stamps.skipped) == (
            without.refreshed,
            without.folders,
            without.skipped,
        )
        assert with_stamps.files == {path: f for path, f in without.files.items() if path in with_stamps.files}
        assert len(with_stamps.files) + with_stamps.unchanged == len(without.files)
