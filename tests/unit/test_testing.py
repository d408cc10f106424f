"""
The test helpers that read and remove a box walk paths deeper than
Python's recursion and longer than the system takes in one name; a
process that will not stop is killed, and said so unless asked not to.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from boxsync.testing import Process, free_ports, remove_tree, tree, wait_until

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


DEAF = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('deaf', flush=True); time.sleep(60)"


def deaf_process(tmp_path: Path) -> Process:
    """
    A process that ignores C{SIGTERM}, once it has said so.
    """
    process = Process([sys.executable, "-c", DEAF], tmp_path / "deaf.log").start()
    wait_until(lambda: "deaf" in process.output(), 20, what="the process to ignore SIGTERM")
    return process


def test_a_process_that_does_not_stop_is_killed_and_fails_the_test(tmp_path: Path) -> None:
    process = deaf_process(tmp_path)
    with pytest.raises(AssertionError, match="did not stop"):
        process.stop(timeout=0.2)
    assert not process.running


def test_a_process_that_may_be_killed_is_killed_without_failing(tmp_path: Path) -> None:
    process = deaf_process(tmp_path)
    assert process.stop(timeout=0.2, or_kill=True) == -signal.SIGKILL
    assert not process.running


def test_free_ports_are_different_and_none_of_those_taken() -> None:
    """
    Ports for a program that binds several (SeaweedFS binds ten): all
    different, none of those said to be taken, and each free to bind.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        mine = taken.getsockname()[1]
        ports = free_ports(50, {mine})
    assert len(set(ports)) == 50 and mine not in ports
    bound = []
    try:
        for port in ports:
            bound.append(socket.socket())
            bound[-1].bind(("127.0.0.1", port))
    finally:
        for each in bound:
            each.close()
