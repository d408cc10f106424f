"""
What the tests of the client's engine share: folders, each with its own
engine and state, synced against the test's server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import pytest_twisted

from tests.helpers import Folder, RunningServer


@pytest_twisted.async_yield_fixture
async def folders(tmp_path: Path, reactor: Any, server: RunningServer) -> AsyncIterator[Any]:
    made: list[Folder] = []

    def make(name: str) -> Folder:
        folder = Folder(reactor, server, tmp_path / name, name)
        made.append(folder)
        return folder

    try:
        yield make
    finally:
        for folder in made:
            await folder.close()
