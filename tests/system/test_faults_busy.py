"""
A file written without pause (a log, a download in progress) is synced all
the same, at most every C{MAX_WAIT} seconds while it changes, and every
version that reaches the other client is one the file had: for an appended
file, a prefix of it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from boxsync.client.watcher import MAX_WAIT
from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


@pytest.mark.slow
def test_a_file_that_never_stops_changing_is_synced(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a", rescan=600)
    b = Client(server, tmp_path / "b", "b", rescan=600)
    a.start()
    b.start()
    log = a.folder / "app.log"
    stop = threading.Event()
    written: list[int] = []

    def append() -> None:
        with open(log, "ab") as f:
            for n in range(1000):  # at most 50 s
                if stop.is_set():
                    return
                f.write(b"line %06d of the log\n" % n)
                f.flush()
                written.append(n)
                time.sleep(0.05)

    writer = threading.Thread(target=append)
    try:
        wait_until(lambda: (a.folder / ".boxsync/client.lock").exists() and (b.folder / ".boxsync").exists())
        writer.start()
        started = time.monotonic()
        seen = b.folder / "app.log"
        wait_until(lambda: seen.exists() and seen.stat().st_size > 0, timeout=MAX_WAIT + 10, what="a first version on b")
        first = seen.read_bytes()
        wait_until(
            lambda: seen.stat().st_size > len(first), timeout=MAX_WAIT + 10, what="a later version on b"
        )
        assert writer.is_alive(), "the writer stopped first: nothing was synced while it wrote"
        assert time.monotonic() - started < 2 * MAX_WAIT + 10
        # Each version b got is one the file had: a prefix of what a wrote.
        assert log.read_bytes().startswith(first) and log.read_bytes().startswith(seen.read_bytes())
        stop.set()
        writer.join(10)
        wait_until(lambda: tree(b.folder) == tree(a.folder), timeout=MAX_WAIT + 10, what="the last version on b")
    finally:
        stop.set()
        writer.join(10) if writer.is_alive() else None
        a.kill()
        b.kill()
    stop_and_check(server, "a file that never stops changing", len(written), b.folder)
