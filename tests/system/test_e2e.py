"""
End to end: a real server process and real client processes on temporary
folders, talking over 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import converged
from tests.faults import server  # noqa: F401 (the fixture)


@pytest.fixture
def clients(tmp_path: Path, server: Server) -> Iterator[dict[str, Client]]:
    made: dict[str, Client] = {}

    class Clients(dict[str, Client]):
        def __missing__(self, name: str) -> Client:
            made[name] = self[name] = Client(server, tmp_path / name, name)
            return self[name]

    try:
        yield Clients()
    finally:
        for client in made.values():
            client.kill()


def test_initial_merge_of_two_folders(tmp_path: Path, server: Server, clients: dict[str, Client]) -> None:
    a, b = clients["a"], clients["b"]
    (a.folder / "docs").mkdir(parents=True)
    (a.folder / "docs/a.txt").write_text("from a")
    (a.folder / "same.txt").write_text("same on both")
    (b.folder / "deep/er/still").mkdir(parents=True)
    (b.folder / "deep/er/still/b.bin").write_bytes(os.urandom(100_000))
    (b.folder / "same.txt").write_text("same on both")
    a.once()
    b.once()
    a.once()
    assert converged(a.folder, b.folder, server.box)
    assert set(tree(a.folder)) == {"docs/a.txt", "same.txt", "deep/er/still/b.bin"}
    # Running again changes nothing and transfers nothing.
    again = a.once()
    assert "uploaded" not in again.stderr and "downloaded" not in again.stderr


def test_live_changes_both_ways(server: Server, clients: dict[str, Client]) -> None:
    a, b = clients["a"].start(), clients["b"].start()
    try:
        steps = [
            (a, lambda f: (f / "new.txt").write_text("created on a")),
            (b, lambda f: (f / "new.txt").write_text("edited on b")),
            (a, lambda f: (f / "new.txt").rename(f / "renamed.txt")),
            (b, lambda f: (f / "renamed.txt").unlink()),
            (b, lambda f: _nested(f / "n1", "from b")),
            (a, lambda f: _nested(f / "n2", "from a")),
            (a, lambda f: (f / "n1/x/y/file.txt").write_text("edited on a")),
        ]
        for who, change in steps:
            change(who.folder)
            wait_until(lambda: converged(a.folder, b.folder, server.box), what=f"sync after a step by {who.name}")
        final = tree(a.folder)
        assert set(final) == {"n1/x/y/file.txt", "n2/x/y/file.txt"}
        assert (b.folder / "n1/x/y/file.txt").read_text() == "edited on a"
        assert not list(a.folder.glob("*.conflict-*"))
    finally:
        assert a.stop() == 0 and b.stop() == 0


def _nested(folder: Path, text: str) -> None:
    # A whole tree appears at once: made elsewhere, then moved in.
    staging = folder.parent / ".." / f"{folder.name}-staging"
    (staging / "x/y").mkdir(parents=True)
    (staging / "x/y/file.txt").write_text(text)
    staging.rename(folder)


# The second stem is as long as a name with its extension may be: its
# conflict copy's name is cut short to fit.
@pytest.mark.parametrize("stem", ["notes", "n" * 251])
def test_offline_edits_on_both_sides_keep_both(server: Server, clients: dict[str, Client], stem: str) -> None:
    a, b = clients["a"], clients["b"]
    name = f"{stem}.txt"
    a.folder.mkdir()
    (a.folder / name).write_text("v1")
    (a.folder / "doomed.txt").write_text("delete me")
    a.once()
    b.once()
    # Both edit the same file while the other is not running; b also deletes.
    (a.folder / name).write_text("v2 from a")
    a.once()
    (b.folder / name).write_text("v2 from b")
    (b.folder / "doomed.txt").unlink()
    b.once()
    a.once()
    assert converged(a.folder, b.folder, server.box)
    files = tree(a.folder)
    assert "doomed.txt" not in files
    conflicts = [p for p in files if p.startswith(stem[:200]) and ".conflict-b-" in p]
    assert len(conflicts) == 1 and conflicts[0].endswith(".txt")
    texts = {(a.folder / p).read_text() for p in [name, conflicts[0]]}
    assert texts == {"v2 from a", "v2 from b"}


def test_reconnects_after_server_restart(server: Server, clients: dict[str, Client]) -> None:
    a, b = clients["a"].start(), clients["b"].start()
    try:
        (a.folder / "before.txt").write_text("before")
        wait_until(lambda: converged(a.folder, b.folder, server.box) and "before.txt" in tree(b.folder))
        server.stop()
        (a.folder / "while-down.txt").write_text("written while the server was down")
        server.start()
        wait_until(
            lambda: "while-down.txt" in tree(b.folder) and converged(a.folder, b.folder, server.box),
            timeout=60,
            what="sync after the restart",
        )
        (b.folder / "after.txt").write_text("after")
        wait_until(lambda: "after.txt" in tree(a.folder), what="live sync after the restart")
    finally:
        a.stop()
        b.stop()


def test_sigterm_leaves_no_partial_file(server: Server, clients: dict[str, Client], tmp_path: Path) -> None:
    a = clients["a"]
    a.folder.mkdir()
    big = a.folder / "big.bin"
    with open(big, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(2**20))
    a.once()
    b = clients["b"].start()
    wait_until(lambda: b.process is not None and b.process.output().count("connecting") >= 1)
    assert b.stop(signal.SIGTERM) == 0
    # Whatever b got so far, nothing half-written is visible.
    for name, digest in tree(b.folder).items():
        assert digest == tree(a.folder)[name]
    b.once()
    assert converged(a.folder, b.folder)


def test_a_once_stopped_by_a_signal_says_it_is_not_in_sync(
    server: Server, clients: dict[str, Client], tmp_path: Path
) -> None:
    """
    A C{--once} stopped (SIGTERM) while a large file goes up ends with a
    non-zero status and one line saying so: neither "in sync" on the
    terminal nor in its status, and no error of its own stop.
    """
    a = clients["a"]
    a.folder.mkdir()
    with open(a.folder / "big.bin", "wb") as f:
        for _ in range(256):
            f.write(os.urandom(2**20))
    log = tmp_path / "once.log"
    with open(log, "w") as out:
        once = subprocess.Popen(a.args("--once"), stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: "plan received" in log.read_text(), what="the plan")
            once.send_signal(signal.SIGTERM)
            assert once.wait(timeout=60) != 0
        finally:
            once.kill()
    said = log.read_text()
    assert "stopped before the folder was in sync" in said and "is in sync" not in said
    assert "Traceback" not in said and "Unhandled" not in said and "#warn" not in said, said
    status = subprocess.run(
        [sys.executable, "-m", "boxsync.client", "status", str(a.folder)], capture_output=True, text=True, timeout=60
    )
    assert "in sync:    yes" not in status.stdout
    assert "big.bin" not in tree(server.box)


def test_clear_errors(tmp_path: Path, server: Server) -> None:
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "boxsync.client", "--once", *args],
            capture_output=True, text=True, timeout=60,
        )

    bad_token = run("--server", server.url, "--token", "wrong", str(tmp_path / "f1"))
    assert bad_token.returncode == 1
    assert "boxsync-client: the server refused the token" in bad_token.stderr
    down = run("--server", "http://127.0.0.1:1", "--token", "x", str(tmp_path / "f2"))
    assert down.returncode == 1 and "cannot reach" in down.stderr
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    not_a_folder = run("--server", server.url, "--token", server.key, str(blocked))
    assert not_a_folder.returncode == 1 and "is a file, not a folder" in not_a_folder.stderr


@pytest.mark.slow
def test_one_gib_file(server: Server, clients: dict[str, Client]) -> None:
    a, b = clients["a"], clients["b"]
    a.folder.mkdir()
    block = os.urandom(2**20)
    with open(a.folder / "gig.bin", "wb") as f:
        for i in range(1024):
            f.write(block[:-8] + i.to_bytes(8, "big"))
    a.once(timeout=300)
    b.once(timeout=300)
    assert converged(a.folder, b.folder, server.box)


def test_demo_moves_a_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "boxsync.demo", "--seconds", "15", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "went from alice to bob" in result.stdout
    assert (tmp_path / "demo/bob/hello.txt").read_text().startswith("Hello from alice")


def test_a_key_that_starts_with_a_dash(tmp_path: Path) -> None:
    """
    A random key can start with C{-} (the demo's does, one time in 64): the
    client is given it as C{--token=KEY}, never as an option of its own.
    """
    server = Server(tmp_path / "box", key="-starts-with-a-dash").start()
    try:
        a = Client(server, tmp_path / "a", "a")
        a.folder.mkdir()
        (a.folder / "f.txt").write_text("across")
        a.once()
        assert (server.box / "f.txt").read_text() == "across"
    finally:
        server.kill()
