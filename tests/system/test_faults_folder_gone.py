"""
A running client's folder stops being the folder it synced: moved away
with an empty folder made in its place, or unmounted (its mount point is
left, empty). To a scan of its path every file looks deleted. The client
stops with one line saying why and deletes nothing: the box and the other
client keep every file, and so does the folder moved away.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import output, sha
from tests.faults import server  # noqa: F401 (the fixture)

CONTENT = {f"docs/f{n}.txt": f"file {n}\n".encode() for n in range(20)}
LATER = {"later.txt": b"later\n"}


def hashed(files: dict[str, bytes]) -> dict[str, str]:
    return {path: sha(data) for path, data in sorted(files.items())}


FILES = hashed(CONTENT)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """
    The mounts the test makes, undone at its end.
    """
    made: list[Path] = []
    yield made
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], check=False)


def _mount_tmpfs(point: Path, made: list[Path]) -> None:
    point.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a file system here (needs root): {done.stderr.strip()}")
    made.append(point)


@pytest.mark.parametrize("how", ["replaced", "unmounted"])
def test_a_folder_that_is_not_the_one_synced_any_more_deletes_nothing(
    tmp_path: Path, server: Server, mounts: list[Path], how: str
) -> None:
    a, b = Client(server, tmp_path / "a", "a"), Client(server, tmp_path / "b", "b")
    if how == "unmounted":
        _mount_tmpfs(a.folder, mounts)
    for path, data in CONTENT.items():
        (a.folder / path).parent.mkdir(parents=True, exist_ok=True)
        (a.folder / path).write_bytes(data)
    a.start()
    b.start()
    try:
        wait_until(lambda: tree(b.folder) == FILES, timeout=30, what="b to have the files")
        if how == "replaced":
            os.rename(a.folder, tmp_path / "a-moved")
            a.folder.mkdir()
        else:
            subprocess.run(["umount", "-l", str(a.folder)], check=True)
            mounts.remove(a.folder)
        assert a.process is not None
        assert a.process.wait(timeout=30) == 1
        assert "is no longer the folder that was being synced" in output(a).splitlines()[-1]
        assert "LogReporter#info] deleted" not in output(a)
        # Nothing was deleted. A file sent after A stopped reaches B after
        # anything A sent (B follows the commits in order): once B has it,
        # B would have had any delete of A's.
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "later.txt").write_bytes(b"later\n")
        assert Client(server, tmp_path / "c", "c").once().returncode == 0
        everything = hashed({**CONTENT, **LATER})
        assert tree(tmp_path / "c") == everything
        wait_until(lambda: (b.folder / "later.txt").exists(), timeout=30, what="b to have the later file")
        assert tree(b.folder) == everything
        if how == "replaced":
            assert tree(tmp_path / "a-moved") == FILES
    finally:
        a.kill()
        b.stop()
