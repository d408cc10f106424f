"""
Pausing and resuming a running client, on real processes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import output, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boxsync.client", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_pause_and_resume(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a").start()
    b = Client(server, tmp_path / "b", "b").start()
    try:
        (a.folder / "first.txt").write_text("first")
        wait_until(lambda: "first.txt" in tree(b.folder), what="the first sync")
        paused = command("pause", str(b.folder))
        assert paused.returncode == 0 and "paused (client pid" in paused.stdout, paused
        wait_until(lambda: "paused" in command("status", str(b.folder)).stdout, what="b to say it is paused")
        (a.folder / "while-paused.txt").write_text("not for b yet")
        (b.folder / "from-b.txt").write_text("stays here while paused")
        (a.folder / "later.txt").write_text("later")
        wait_until(lambda: {"while-paused.txt", "later.txt"} <= set(tree(server.box)), what="a's files in the box")
        assert "while-paused.txt" not in tree(b.folder) and "from-b.txt" not in tree(server.box)
        resumed = command("resume", str(b.folder))
        assert resumed.returncode == 0 and "resumed" in resumed.stdout
        wait_until(lambda: tree(b.folder) == tree(a.folder) == tree(server.box), what="everything synced again")
        assert "resumed" in output(b)
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "pause and resume", 1, a.folder, b.folder)


@pytest.mark.slow
def test_a_paused_folder_starts_paused(tmp_path: Path, server: Server) -> None:
    b = Client(server, tmp_path / "b", "b")
    (b.folder / ".boxsync").mkdir(parents=True)
    assert "no client is running" in command("pause", str(b.folder)).stdout
    (b.folder / "waiting.txt").write_text("waits for resume")
    b.start()
    try:
        wait_until(lambda: "paused" in output(b), what="b to start paused")
        assert "waiting.txt" not in tree(server.box)
        command("resume", str(b.folder))
        wait_until(lambda: "waiting.txt" in tree(server.box), what="the upload after resume")
    finally:
        b.kill()
