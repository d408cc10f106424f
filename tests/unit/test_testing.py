"""
The test helpers that read and remove a box walk paths deeper than
Python's recursion and longer than the system takes in one name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from boxsync.testing import remove_tree, tree

DEPTH = 2_000


def deep(root: Path) -> str:
    """
    Make a file at the end of a path of C{DEPTH} folders under C{root}, one
    folder at a time from a descriptor; its box path.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEPTH):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        opened = os.open("end", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(opened, b"end")
        os.close(opened)
    finally:
        os.close(fd)
    return "/".join(["d"] * DEPTH + ["end"])


def test_tree_and_remove_tree_go_deeper_than_recursion(tmp_path: Path) -> None:
    root = tmp_path / "box"
    root.mkdir()
    path = deep(root)
    (root / "top").write_bytes(b"top")
    (root / ".boxsync").mkdir()
    (root / ".boxsync/hidden").write_bytes(b"hidden")
    os.symlink("top", root / "link")
    assert tree(root) == {path: hashlib.sha256(b"end").hexdigest(), "top": hashlib.sha256(b"top").hexdigest()}
    remove_tree(root)
    assert list(tmp_path.iterdir()) == []
