"""
What is synced besides a file's bytes, on real processes: whether a file is
executable (a change of that alone too, without sending the bytes again),
empty folders (made and removed on the other side, never removed there
while something not synced is in them), and a file that becomes a folder
or the other way round.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import converged, output, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


def mode(path: Path) -> int | None:
    """
    The permission bits of the file at C{path}, or C{None} if there is none.
    """
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_the_executable_bit_travels_and_a_chmod_alone_too(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a").start()
    b = Client(server, tmp_path / "b", "b").start()
    try:
        script = a.folder / "run.sh"
        script.write_bytes(b"#!/bin/sh\necho synced\n")
        script.chmod(0o755)
        (a.folder / "notes.txt").write_text("not a program")
        (a.folder / "notes.txt").chmod(0o644)
        wait_until(
            lambda: mode(b.folder / "run.sh") == 0o755 and mode(b.folder / "notes.txt") == 0o644,
            what="run.sh executable on b",
        )
        assert (mode(server.box / "run.sh"), mode(server.box / "notes.txt")) == (0o755, 0o644)
        in_box = (server.box / "run.sh").stat().st_ino

        script.chmod(0o644)
        wait_until(lambda: mode(b.folder / "run.sh") == 0o644, what="b's run.sh to lose its x bits")
        assert mode(server.box / "run.sh") == 0o644
        # The bytes were not sent again: the box changed the mode of its file.
        assert (server.box / "run.sh").stat().st_ino == in_box
        assert tree(a.folder) == tree(b.folder) == tree(server.box)
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "executable bits", 2, a.folder, b.folder)


def test_files_dated_before_1970_at_it_and_far_ahead_are_synced_with_their_dates(
    tmp_path: Path, server: Server
) -> None:
    """
    A file's mtime goes with it, whatever its date: before 1970 (negative),
    1970 itself, tomorrow, and past 2262, which the wire's nanoseconds do not
    reach (taken as of then). None of them stops the others, or the folder.
    """
    a = Client(server, tmp_path / "a", "a").start()
    b = Client(server, tmp_path / "b", "b").start()
    try:
        late = 2**63 - 1
        dated = {
            "1969.txt": -365 * 86400 * 10**9,
            "1970.txt": 0,
            "tomorrow.txt": time.time_ns() + 86400 * 10**9,
            "2300.txt": 10_500_000_000 * 10**9,
        }
        for name, mtime_ns in dated.items():
            (a.folder / name).write_text(name)
            os.utime(a.folder / name, ns=(mtime_ns, mtime_ns))
        (a.folder / "now.txt").write_text("now")
        wait_until(lambda: len(tree(b.folder)) == 5, what="every file on b")
        expected = {**dated, "2300.txt": late}
        for side in (server.box, b.folder):
            assert {name: (side / name).stat().st_mtime_ns for name in dated} == expected
        assert tree(a.folder) == tree(b.folder) == tree(server.box)
        assert refused(server) == []
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "files of any date", 0, a.folder, b.folder)


@pytest.mark.slow
def test_empty_folders_come_and_go_but_never_with_what_is_in_them(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a").start()
    b = Client(server, tmp_path / "b", "b")
    (b.folder / ".boxsync").mkdir(parents=True)
    (b.folder / ".boxsync/ignore").write_text("*.tmp\n")
    b.start()
    names = ["empty/deeper", "holds-new", "holds-ignored"]
    try:
        for name in names:
            (a.folder / name).mkdir(parents=True)
        wait_until(lambda: all((b.folder / name).is_dir() for name in names), what="the empty folders on b")
        assert all((server.box / name).is_dir() for name in names)

        # While b is away, what it does not sync yet goes into two of them,
        # and a removes them all.
        b.stop()
        (b.folder / "holds-new/new.txt").write_text("not synced yet")
        (b.folder / "holds-ignored/x.tmp").write_text("ignored")
        for name in names:
            (a.folder / name).rmdir()
        wait_until(
            lambda: not any((server.box / name).exists() for name in names), what="the folders gone from the box"
        )
        b = Client(server, b.folder, "b").start()
        wait_until(lambda: not (b.folder / "empty/deeper").exists(), what="empty/deeper gone from b")
        wait_until(lambda: (a.folder / "holds-new/new.txt").exists(), what="b's new file on a")
        # The folder a left empty is one of its own now, on every side.
        wait_until(lambda: (b.folder / "empty").is_dir(), what="empty on b")
        assert (a.folder / "empty").is_dir() and (server.box / "empty").is_dir()
        assert (b.folder / "holds-new/new.txt").read_text() == "not synced yet"
        assert (b.folder / "holds-ignored/x.tmp").read_text() == "ignored"
        assert not (a.folder / "holds-ignored").exists() and not (server.box / "holds-ignored").exists()
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "empty folders", 2, a.folder, b.folder)


def refused(server: Server) -> list[str]:
    """
    The requests the server answered with a 4xx, from its access log.
    """
    return re.findall(r'"[A-Z]+ [^"]*" 4\d\d ', output(server))


@pytest.mark.slow
def test_a_file_that_becomes_a_folder_and_back_is_synced_without_a_refusal(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a").start()
    b = Client(server, tmp_path / "b", "b").start()
    try:
        place = a.folder / "place"
        place.write_text("a file")
        wait_until(lambda: (b.folder / "place").is_file(), what="the file on b")
        for round in range(3):
            place.unlink()
            (place / "deeper").mkdir(parents=True)
            (place / "deeper/inside.txt").write_text(f"in a folder, {round}")
            wait_until(
                lambda: (b.folder / "place/deeper/inside.txt").is_file(), what=f"the folder on b, round {round}"
            )
            shutil.rmtree(place)
            place.write_text(f"a file again, {round}")
            wait_until(
                lambda: (b.folder / "place").is_file()
                and (b.folder / "place").read_text() == f"a file again, {round}",
                what=f"the file again on b, round {round}",
            )
        assert tree(a.folder) == tree(b.folder) == tree(server.box)
        # Each change went up after what it replaced was gone from the box:
        # none was refused, none ended a session.
        assert refused(server) == []
        assert "resyncing" not in output(a)
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "a file that becomes a folder", 0, a.folder, b.folder)


@pytest.mark.slow
def test_an_edit_made_away_where_the_other_side_swapped_a_file_and_a_folder_is_kept_both_ways(
    tmp_path: Path, server: Server
) -> None:
    a = Client(server, tmp_path / "a", "a").start()
    b = Client(server, tmp_path / "b", "b").start()
    try:
        (a.folder / "f").write_text("a file")
        (a.folder / "d").mkdir()
        (a.folder / "d/x").write_text("in a folder")
        (a.folder / "g").write_text("a file b makes a folder")
        wait_until(lambda: converged(a.folder, b.folder, server.box), what="the first sync")
        b.stop()
        (b.folder / "f").write_text("edited on b")
        (b.folder / "d/x").write_text("edited on b too")
        (b.folder / "g").unlink()
        (b.folder / "g").mkdir()
        (b.folder / "g/new").write_text("b's folder")
        (a.folder / "f").unlink()
        (a.folder / "f").mkdir()
        (a.folder / "f/inside").write_text("a's folder")
        shutil.rmtree(a.folder / "d")
        (a.folder / "d").write_text("a's file")
        wait_until(lambda: converged(a.folder, server.box), what="a's changes in the box")
        # No rescan comes to make up for what a session leaves out.
        b = Client(server, b.folder, "b", rescan=None).start()
        wait_until(
            lambda: converged(a.folder, b.folder, server.box) and len(tree(server.box)) == 5,
            timeout=60,
            what="both sides with both edits",
        )
        files = {path: (server.box / path).read_text() for path in tree(server.box)}
        assert {files["f/inside"], files["d"], files["g/new"]} == {"a's folder", "a's file", "b's folder"}
        # B's edits are kept beside them, under conflict names.
        kept = {path.split("/")[0].split(".conflict-b-")[0]: data for path, data in files.items() if ".conflict-b-" in path}
        assert kept == {"f": "edited on b", "d": "edited on b too"}
        # B's file where the box has a folder, and B's folder where the box
        # has a file, were made conflict copies at once, and B's folder
        # where it had a file went up after that file's delete: no upload
        # was refused.
        assert refused(server) == []
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "an edit away where a file and a folder swapped", 3, a.folder, b.folder)


def test_a_folder_synced_on_its_own_inside_is_synced_but_its_client_s_data(tmp_path: Path, server: Server) -> None:
    """
    A folder inside A's that another client keeps in sync with another box
    (here another server): its files are A's too, the other client's own
    data (its state, written all the time) is not: it never reaches A's box,
    nor so the copies of that folder elsewhere, over their own client's
    state. A says once that it leaves it out.
    """
    other = Server(tmp_path / "other-box").start()
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    (work / "report.txt").write_text("the report")
    inner = Client(other, work, "inner")
    a = Client(server, tmp_path / "a", "a")
    try:
        inner.once()
        assert (work / ".boxsync" / "state.sqlite").exists()
        a.once()
        b = Client(server, tmp_path / "b", "b")
        b.folder.mkdir()
        b.once()
        assert sorted(tree(b.folder)) == ["work/report.txt"]
        assert not (b.folder / "work" / ".boxsync").exists()
        assert not (server.box / "work" / ".boxsync").exists()
        status = Client(server, tmp_path / "a", "a")
        assert "work/.boxsync" in status.once().stderr
    finally:
        other.kill()


@pytest.mark.slow
def test_a_file_written_through_one_of_its_hard_links_is_synced_under_every_name(
    tmp_path: Path, server: Server
) -> None:
    """
    Two names of one file (a hard link, as ``cp -al`` or a backup tool
    makes): written in place through one, both names have the new bytes,
    and both reach B at once, though the watcher hears of one name only (no
    rescan: before, the other waited for the next one, an hour by default).
    """
    a = Client(server, tmp_path / "a", "a", rescan=None)
    b = Client(server, tmp_path / "b", "b", rescan=None)
    a.folder.mkdir()
    (a.folder / "notes.txt").write_text("first draft")
    (a.folder / "backup").mkdir()
    os.link(a.folder / "notes.txt", a.folder / "backup/notes.txt")
    a.start()
    b.start()
    try:
        wait_until(lambda: len(tree(b.folder)) == 2 and converged(a.folder, b.folder), what="the first sync")
        with open(a.folder / "notes.txt", "r+") as f:
            f.write("FINAL")
        wait_until(
            lambda: [(b.folder / p).read_text() for p in ("notes.txt", "backup/notes.txt")] == ["FINAL draft"] * 2,
            what="both names' new bytes on b",
        )
        # On b they are two files: an edit of one stays in that one.
        (b.folder / "backup/notes.txt").write_text("b's own")
        wait_until(lambda: (a.folder / "backup/notes.txt").read_text() == "b's own", what="b's edit on a")
        assert (a.folder / "notes.txt").read_text() == (b.folder / "notes.txt").read_text() == "FINAL draft"
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "hard links", 1, a.folder, b.folder)


@contextmanager
def mounted_disk(folder: Path) -> Iterator[None]:
    """
    A file system of its own (a tmpfs) mounted at C{folder}, as a disk
    mounted inside a synced folder is; the test is skipped where this
    machine does not let it mount one.
    """
    folder.mkdir(parents=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.slow
def test_files_on_a_disk_mounted_inside_the_folder_are_placed_kept_and_deleted(
    tmp_path: Path, server: Server
) -> None:
    """
    B's folder has a disk mounted in it (a file system of its own), which
    the client's hidden folder is not on. Downloads, a delete, a rename and
    a conflict there all happen as anywhere else (before, no download
    could be moved there: each was tried again, forever).
    """
    a = Client(server, tmp_path / "a", "a", rescan=None)
    b = Client(server, tmp_path / "b", "b", rescan=None)
    (a.folder / "disk/sub").mkdir(parents=True)
    (a.folder / "disk/small.txt").write_text("small")
    (a.folder / "disk/gone.txt").write_text("to be deleted")
    (a.folder / "disk/big.bin").write_bytes(os.urandom(3 << 20))
    (a.folder / "disk/sub/run.sh").write_text("#!/bin/sh\n")
    (a.folder / "disk/sub/run.sh").chmod(0o755)
    with mounted_disk(b.folder / "disk"):
        a.start()
        b.start()
        try:
            wait_until(lambda: len(tree(b.folder)) == 4 and converged(a.folder, b.folder), what="the first sync")
            assert mode(b.folder / "disk/sub/run.sh") == 0o755
            os.unlink(a.folder / "disk/gone.txt")
            os.rename(a.folder / "disk/big.bin", a.folder / "disk/sub/big.bin")
            wait_until(lambda: len(tree(b.folder)) == 3 and converged(a.folder, b.folder), what="the delete and rename")
            b.kill()
            (b.folder / "disk/small.txt").write_text("b's edit")
            (a.folder / "disk/small.txt").write_text("a's edit")
            b = Client(server, tmp_path / "b", "b", rescan=None).start()
            wait_until(lambda: len(tree(b.folder)) == 4 and converged(a.folder, b.folder), what="both edits kept")
            assert (b.folder / "disk/small.txt").read_text() == "a's edit"
            assert [p for p in os.listdir(b.folder / "disk") if p.startswith(".boxsync")] == []
            assert "Invalid cross-device" not in output(b)
        finally:
            a.kill()
            b.kill()
        stop_and_check(server, "a disk mounted inside the folder", 0, a.folder, b.folder)


def allocated(path: Path) -> int:
    """
    How many bytes of its disk the file at C{path} takes.
    """
    return path.stat().st_blocks * 512


@pytest.mark.slow
def test_a_sparse_file_stays_sparse_in_the_box_and_on_the_other_side(tmp_path: Path, server: Server) -> None:
    """
    A disk image of 256 MiB with 2 MiB written in it (the rest holes) takes
    a few MiB in the box and on B, not 256 (before, it took its whole size
    on both, and B fetched the block of zeros 60 times); so does the next
    version, edited in place on A, which B makes of the blocks it has.
    """
    size = 256 << 20
    a = Client(server, tmp_path / "a", "a", rescan=None).start()
    b = Client(server, tmp_path / "b", "b", rescan=None).start()
    try:
        image = tmp_path / "disk.img"
        with image.open("wb") as f:
            f.truncate(size)
            f.seek(100 << 20)
            f.write(os.urandom(1 << 20))
            f.seek(200 << 20)
            f.write(b"text " * 200_000)
        os.rename(image, a.folder / "disk.img")
        wait_until(lambda: len(tree(b.folder)) == 1 and converged(a.folder, b.folder), what="the image on b")
        assert (b.folder / "disk.img").stat().st_size == size
        assert allocated(server.box / "disk.img") < 16 << 20
        assert allocated(b.folder / "disk.img") < 16 << 20
        before = tree(b.folder)

        with (a.folder / "disk.img").open("r+b") as f:
            f.seek(150 << 20)
            f.write(os.urandom(1 << 20))
        wait_until(
            lambda: tree(b.folder) != before and converged(a.folder, b.folder, server.box), what="the edit on b"
        )
        assert allocated(server.box / "disk.img") < 24 << 20
        assert allocated(b.folder / "disk.img") < 24 << 20
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "a sparse file", 0, a.folder, b.folder)


@pytest.mark.slow
def test_a_file_or_a_folder_replaced_by_a_link_is_not_deleted_from_the_box(tmp_path: Path, server: Server) -> None:
    """
    On A, a synced file and a synced folder are moved out of the folder and
    a link to each is put in its place (as a dotfiles manager does). Links
    are not synced: A lists both as skipped, and the box and B keep the
    file and the folder, while A runs and after a restart (a whole scan).
    Before, both were deleted from the box and from B. An edit of the file
    on B then reaches A, its link kept beside it under a conflict name.
    """
    a = Client(server, tmp_path / "a", "a").start()
    b = Client(server, tmp_path / "b", "b").start()
    try:
        (a.folder / "d").mkdir()
        (a.folder / "d/in.txt").write_text("in a folder")
        (a.folder / "f.txt").write_text("a file")
        wait_until(lambda: converged(a.folder, b.folder, server.box) and len(tree(b.folder)) == 2, what="the files on b")
        outside = tmp_path / "dotfiles"
        outside.mkdir()
        for name in ("f.txt", "d"):
            (a.folder / name).rename(outside / name)
            (a.folder / name).symlink_to(outside / name)
        (a.folder / "after.txt").write_text("after the links")
        wait_until(lambda: (b.folder / "after.txt").exists(), what="a change made after the links on b")
        a.stop()
        ran = Client(server, a.folder, "a").once()
        assert "not syncing d: symbolic link" in ran.stdout + ran.stderr
        assert tree(server.box) == tree(b.folder)
        assert sorted(tree(b.folder)) == ["after.txt", "d/in.txt", "f.txt"]
        a.start()
        (b.folder / "f.txt").write_text("edited on b")
        wait_until(lambda: (a.folder / "f.txt").is_file() and not (a.folder / "f.txt").is_symlink(), what="the edit on a")
        assert (a.folder / "f.txt").read_text() == "edited on b"
        [kept] = [p for p in a.folder.iterdir() if p.name.startswith("f.conflict-")]
        assert kept.is_symlink() and kept.resolve() == outside / "f.txt"
        assert (outside / "f.txt").read_text() == "a file" and (a.folder / "d").is_symlink()
    finally:
        a.kill()
        b.kill()
