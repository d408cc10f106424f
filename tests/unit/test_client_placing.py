"""
Tests for L{boxsync.client.placing} across two file systems: a disk mounted
inside the synced folder, which a rename from the client's hidden folder
cannot reach (here C{/dev/shm}, a tmpfs, beside the test's own folder).
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.client.ignore import is_temp_name
from boxsync.client.placing import copy_beside, set_aside, set_aside_path


@pytest.fixture
def other_disk(tmp_path: Path) -> Iterator[Path]:
    """
    A folder on another file system than C{tmp_path}.
    """
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        if os.stat(folder).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same file system as the test's folder here")
        yield Path(folder)


def test_a_download_is_copied_beside_its_place_on_another_disk(tmp_path: Path, other_disk: Path) -> None:
    temp = tmp_path / "dl-1"
    data = os.urandom(3 << 20)
    temp.write_bytes(data)
    temp.chmod(0o751)
    target = other_disk / "new/deeper/file.bin"
    with pytest.raises(OSError) as rename:
        os.rename(temp, other_disk / "x")
    assert rename.value.errno == errno.EXDEV
    copy = copy_beside(temp, target, other_disk)
    assert copy.parent == target.parent and is_temp_name(copy.name)
    assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert copy.stat().st_mode & 0o777 == 0o751
    assert not temp.exists()
    os.rename(copy, target)
    assert target.read_bytes() == data


def test_a_file_on_another_disk_deleted_is_removed_not_set_aside(tmp_path: Path, other_disk: Path) -> None:
    local = other_disk / "gone.txt"
    local.write_text("deleted elsewhere")
    assert not set_aside(local, tmp_path, "ab" * 32)
    assert not local.exists() and not set_aside_path(tmp_path, "ab" * 32).exists()
    # On the same disk, it is set aside.
    here = tmp_path / "here.txt"
    here.write_text("deleted elsewhere")
    assert set_aside(here, tmp_path, "cd" * 32)
    assert set_aside_path(tmp_path, "cd" * 32).read_text() == "deleted elsewhere"
