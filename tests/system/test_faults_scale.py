"""
The server killed (kill -9) and started again with 100 clients connected:
every client reconnects by itself and misses no change, neither one made
while the server was down nor one made after it came back.

The 100 clients are real engines with their own folders, connections and
state, in this process (100 client processes would not fit on a small CI
machine); the server is a real twistd process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from boxsync.client.engine import Engine
from boxsync.testing import Server, tree
from tests.faults import put, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)
from tests.helpers import Folder, timed

CLIENTS = 100


async def until(reactor: Any, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Wait, with the reactor running, until C{condition} holds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await deferLater(reactor, 0.1, lambda: None)


def everyone_has(folders: list[Folder], name: str) -> Callable[[], bool]:
    return lambda: all((folder.root / name).exists() for folder in folders)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_100_clients_through_a_server_restart(tmp_path: Path, reactor: Any, server: Server) -> None:
    # tests.helpers.Folder takes anything with a url and a key.
    folders = [Folder(reactor, server, tmp_path / f"c{n:03d}", f"c{n:03d}") for n in range(CLIENTS)]  # type: ignore[arg-type]
    engines: list[Engine] = [folder.engine() for folder in folders]
    running = [Deferred.fromCoroutine(engine.run()) for engine in engines]
    try:
        (folders[0].root / "before.txt").write_text("before the restart")
        engines[0].changed("before.txt")  # as its watcher would
        await until(reactor, everyone_has(folders, "before.txt"), 60, "everyone to connect and sync")
        seqs_before = max(folder.state.cursor for folder in folders)

        server.kill()
        # A change while the server is down: client 0 has it; no one else can.
        (folders[0].root / "while-down.txt").write_text("written while the server was down")
        await deferToThread(server.start)
        await until(reactor, everyone_has(folders, "while-down.txt"), 60, "everyone to reconnect")

        # A change after the restart, by someone else, reaches every client live.
        status, answer = await deferToThread(put, server, "after.txt", b"after the restart", 0)
        assert status == 201 and int(answer["seq"]) > seqs_before  # type: ignore[call-overload]
        await until(reactor, everyone_has(folders, "after.txt"), 60, "the live change after the restart")
        expected = tree(server.box)
        for folder in folders:
            assert tree(folder.root) == expected
            assert not list((folder.root / ".boxsync/tmp").iterdir())
    finally:
        for engine in engines:
            engine.stop()
        await timed(gatherResults(running, consumeErrors=True), reactor)
        for folder in folders:
            await folder.close()
    stop_and_check(server, "server restart, 100 clients", 1, *(folder.root for folder in folders))
