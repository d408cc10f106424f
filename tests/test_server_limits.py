"""
The server on its bad days: a full disk, uploads over the limit, large files,
and what it logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, AsyncIterator

import pytest_twisted
from treq import content
from twisted.logger import LogLevel, globalLogPublisher

from boxsync.server.storage import StagingFile
from tests.helpers import RunningServer, file_sha, json_of, put, random_file, timed
from tests.conftest import KEY


@pytest_twisted.ensureDeferred
async def test_disk_full_is_507_and_commits_nothing(server: RunningServer, http: Any, tmp_path: Path) -> None:
    assert server.service is not None
    site = server.service.site
    real = site.new_staging
    leftovers = tmp_path / "full-staging"

    def on_a_full_disk() -> StagingFile:
        # Writes to /dev/full fail with ENOSPC, as on a full file system.
        return StagingFile(leftovers, os.open("/dev/full", os.O_WRONLY))

    site.new_staging = on_a_full_disk
    try:
        response = await put(http, server, "big.bin", os.urandom(200_000), base=0)
        assert response.code == 507
        assert "no space" in (await json_of(response))["error"]
    finally:
        site.new_staging = real
    assert not (server.box / "big.bin").exists()
    assert (await http.get(server.file_url("big.bin"), headers=server.headers())).code == 404
    # The server keeps serving, and the same upload works once there is room.
    response = await put(http, server, "big.bin", b"fits now", base=0)
    assert response.code == 201 and (await json_of(response))["seq"] == 1


@pytest_twisted.async_yield_fixture
async def small_server(tmp_path: Path, reactor: Any) -> AsyncIterator[RunningServer]:
    running = RunningServer(reactor, tmp_path / "box", KEY, max_upload=1000)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_upload_over_the_limit_is_413(small_server: RunningServer, http: Any) -> None:
    assert (await put(http, small_server, "ok.bin", b"x" * 1000)).code == 201
    response = await put(http, small_server, "big.bin", b"x" * 1001)
    assert response.code == 413
    assert not (small_server.box / "big.bin").exists()
    assert list((small_server.box / ".boxsync/staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_300_mib_round_trip(server: RunningServer, http: Any, tmp_path: Path, reactor: Any) -> None:
    source = tmp_path / "source.bin"
    digest = random_file(source, 300 * 2**20)
    with open(source, "rb") as body:
        response = await timed(
            http.put(
                server.file_url("big/file.bin"),
                data=body,
                headers=server.headers(X_Boxsync_Base="0", X_Boxsync_Sha256=digest),
            ),
            reactor,
            120,
        )
    assert response.code == 201
    assert (await json_of(response))["size"] == 300 * 2**20
    assert file_sha(server.box / "big/file.bin") == digest
    response = await timed(
        http.get(server.file_url("big/file.bin"), headers=server.headers(), unbuffered=True),
        reactor,
    )
    target = tmp_path / "target.bin"
    with open(target, "wb") as f:
        from treq import collect

        await timed(collect(response, f.write), reactor, 120)
    assert file_sha(target) == digest


@pytest_twisted.ensureDeferred
async def test_status_line(tmp_path: Path, reactor: Any, http: Any) -> None:
    from boxsync.server.auth import ApiKeyAuth
    from boxsync.server.service import BoxsyncService, ServerConfig

    lines: list[dict[str, Any]] = []
    service = BoxsyncService(
        reactor,
        ServerConfig(tmp_path / "box", ["tcp:0:interface=127.0.0.1"], ApiKeyAuth(None), status_seconds=0.05),
    )
    from twisted.internet.defer import Deferred

    seen: Deferred[None] = Deferred()

    def observe(event: dict[str, Any]) -> None:
        if "status:" in event.get("log_format", "") and not seen.called:
            lines.append(event)
            seen.callback(None)

    globalLogPublisher.addObserver(observe)
    service.startService()
    try:
        await timed(service.ready, reactor)
        await timed(seen, reactor, 10)
    finally:
        globalLogPublisher.removeObserver(observe)
        await service.stopService()
    event = lines[0]
    assert event["log_level"] == LogLevel.info
    assert event["clients"] == 0 and event["files"] == 0 and event["rss_mib"] > 10


@pytest_twisted.ensureDeferred
async def test_no_key_means_open(tmp_path: Path, reactor: Any, http: Any) -> None:
    running = RunningServer(reactor, tmp_path / "box", None)
    await running.start()
    try:
        response = await http.put(running.file_url("a.txt"), data=b"a")
        assert response.code == 201
        assert await content(await http.get(running.file_url("a.txt"))) == b"a"
    finally:
        await running.stop()
