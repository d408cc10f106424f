"""
One path of a client's folder that it cannot write (here: a folder made
read-only by a read-only bind mount, which stops root too) while the other
client changes files in it and elsewhere: the client reports that path,
keeps syncing every other one, and tries the path again by itself until it
can be written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import output, sha, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


@pytest.fixture
def read_only() -> Iterator[list[Path]]:
    """
    Make folders read-only (a read-only bind mount of each on itself) for
    the test, and writable again at its end.
    """
    mounted: list[Path] = []
    yield mounted
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=False)


def make_read_only(folder: Path, mounted: list[Path]) -> None:
    for args in (["--bind", str(folder), str(folder)], ["-o", "remount,ro,bind", str(folder)]):
        done = subprocess.run(["mount", *args], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder read-only here (needs root): {done.stderr.strip()}")
        if args[0] == "--bind":
            mounted.append(folder)


def status(client: Client) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((client.folder / ".boxsync/status.json").read_text())
    return found


@pytest.mark.slow
def test_a_path_that_cannot_be_written_holds_up_no_other(
    tmp_path: Path, server: Server, read_only: list[Path]
) -> None:
    a = Client(server, tmp_path / "a", "a")
    b = Client(server, tmp_path / "b", "b")
    (a.folder / "locked").mkdir(parents=True)
    (a.folder / "locked/old.txt").write_text("before")
    a.start()
    b.start()
    try:
        wait_until(lambda: tree(b.folder) == tree(a.folder) != {}, what="the first sync")
        make_read_only(b.folder / "locked", read_only)
        (a.folder / "locked/old.txt").write_text("changed while b cannot write")
        others = {f"free/{i}.txt": f"file {i}" for i in range(6)}
        for name, text in others.items():
            (a.folder / name).parent.mkdir(exist_ok=True)
            (a.folder / name).write_text(text)
        wait_until(
            lambda: all(tree(b.folder).get(name) == sha(text.encode()) for name, text in others.items()),
            timeout=30,
            what="the other files on b",
        )
        assert (b.folder / "locked/old.txt").read_text() == "before"
        # The status file (written twice a second) names the path.
        wait_until(
            lambda: list(status(b)["problems"]) == ["locked/old.txt"] and not status(b)["in_sync"],
            what="the path in b's status",
        )
        shown = subprocess.run(
            [sys.executable, "-m", "boxsync.client", "status", str(b.folder)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 1 and "not synced: 1 path," in shown.stdout
        assert "  locked/old.txt: " in shown.stdout
        # Writable again: the path is tried again by itself, and arrives.
        subprocess.run(["umount", str(b.folder / "locked")], check=True)
        read_only.clear()
        wait_until(
            lambda: (b.folder / "locked/old.txt").read_text() == "changed while b cannot write",
            timeout=60,
            what="the locked path once it can be written",
        )
        wait_until(lambda: tree(b.folder) == tree(a.folder), what="b in sync")
        assert "resyncing in" not in output(b)
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "one path cannot be written", 1, b.folder)
