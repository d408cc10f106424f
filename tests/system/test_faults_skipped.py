"""
Nothing skipped in silence, on real processes: what a client cannot sync as
it is (a symbolic link, a FIFO, a name the wire cannot carry) is logged once
and listed, with why, by C{boxsync-client status}.
"""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import output, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


@pytest.mark.slow
def test_what_is_skipped_is_listed_and_logged_once(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a", rescan=0.5)
    a.folder.mkdir()
    (a.folder / "plain.txt").write_text("synced")
    (a.folder / "link").symlink_to(a.folder / "plain.txt")
    os.mkfifo(a.folder / "pipe")
    nfd = unicodedata.normalize("NFD", "café.txt")
    (a.folder / nfd).write_text("a Mac's name")
    a.start()
    try:
        wait_until(lambda: "plain.txt" in tree(server.box), what="plain.txt in the box")

        def shown() -> str:
            ran = subprocess.run(
                [sys.executable, "-m", "boxsync.client", "status", str(a.folder)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            return ran.stdout

        wait_until(lambda: "skipped:    3 paths" in shown(), what="the skipped paths in the status")
        lines = shown().splitlines()
        assert any(line.startswith("  link: symbolic link") for line in lines), lines
        assert any(line.startswith("  pipe: not a regular file") for line in lines), lines
        assert any(line.startswith(f"  {nfd}: ") and "NFC" in line for line in lines), lines
        # Several rescans later, each was logged once.
        wait_until(lambda: output(a).count("Scanned ") >= 4, what="a few rescans")
        assert output(a).count("not syncing link: symbolic link") == 1
    finally:
        a.kill()
    stop_and_check(server, "skipped paths listed", 3, a.folder)
