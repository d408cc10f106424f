"""
Test helpers: a real server in this process, an HTTP client for it, and a
reader for its event streams.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from io import BytesIO
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

from attrs import define, field
from treq.client import HTTPClient
from twisted.internet.task import deferLater
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers

from boxsync.client.api import BoxsyncAPI
from boxsync.client.engine import Engine
from boxsync.client.ignore import IgnoreRules
from boxsync.client.progress import LogReporter
from boxsync.client.state import LocalState
from boxsync.wire import (
    EVENT_STREAM,
    Event,
    Manifest,
    SSEParser,
    decode_event,
    encode_manifest,
)
from boxsync.server.auth import ApiKeyAuth
from boxsync.server.service import BoxsyncService, ServerConfig

TIMEOUT = 30.0


def http_client(reactor: Any) -> tuple[HTTPClient, HTTPConnectionPool]:
    pool = HTTPConnectionPool(reactor, persistent=True)
    return HTTPClient(Agent(reactor, pool=pool)), pool


def timed(d: Deferred[Any], reactor: Any, seconds: float = TIMEOUT) -> Deferred[Any]:
    """
    C{d}, failing with a timeout after C{seconds}: nothing a test awaits may
    hang the run.
    """
    return d.addTimeout(seconds, reactor)


@define
class RunningServer:
    """
    A boxsync server in this process, on a loopback port.
    """

    reactor: Any
    box: Path
    key: str | None
    port: int = 0
    service: BoxsyncService | None = None
    max_upload: int | None = None
    keepalive_seconds: float = 15.0
    #: more L{ServerConfig} fields, e.g. C{max_manifest}
    config: dict[str, Any] = field(factory=dict)

    async def start(self) -> None:
        config = ServerConfig(
            box=self.box,
            listen=[f"tcp:{self.port}:interface=127.0.0.1"],
            auth=ApiKeyAuth(self.key),
            max_upload=self.max_upload,
            status_seconds=0,
            keepalive_seconds=self.keepalive_seconds,
            **self.config,
        )
        self.service = BoxsyncService(self.reactor, config)
        self.service.startService()
        await timed(self.service.ready, self.reactor)
        self.port = self.service.ports[0].getHost().port

    async def stop(self) -> None:
        if self.service is not None:
            service, self.service = self.service, None
            await service.stopService()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        headers.update({k.replace("_", "-"): v for k, v in extra.items()})
        return headers

    def file_url(self, path: str) -> str:
        return f"{self.url}/files/" + "/".join(quote(s, safe="") for s in path.split("/"))


@asynccontextmanager
async def running_server(
    reactor: Any, box: Path, key: str | None, **options: Any
) -> AsyncIterator[RunningServer]:
    """
    A L{RunningServer} with C{options}, stopped on the way out.
    """
    running = RunningServer(reactor, box, key, **options)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


class StreamReader(Protocol):
    """
    Reads an SSE response as it arrives; tests wait for the events they
    expect, each wait bounded.
    """

    def __init__(self, reactor: Any, unzip: Any = None) -> None:
        self.reactor = reactor
        #: A C{zlib} decompressor of the stream, if it comes in gzip.
        self.unzip = unzip
        #: The bytes received, as they came.
        self.received = 0
        self.parser = SSEParser()
        self.events: list[Event] = []
        self.comments = 0
        self.done: Deferred[None] = Deferred()
        self._waiters: list[tuple[Callable[[list[Event]], bool], Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.unzip is not None:
            data = self.unzip.decompress(data)
        self.comments += data.count(b"\n: ")
        for message in self.parser.feed(data):
            event = decode_event(message)
            if event is not None:
                self.events.append(event)
        self._check()

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(None)
        self._check()

    def _check(self) -> None:
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(self.events) or self.done.called:
                self._waiters.remove(waiter)
                d.callback(None)

    async def wait(self, predicate: Callable[[list[Event]], bool], seconds: float = TIMEOUT) -> list[Event]:
        if not predicate(self.events):
            d: Deferred[None] = Deferred()
            self._waiters.append((predicate, d))
            await timed(d, self.reactor, seconds)
        assert predicate(self.events), f"stream ended first: {self.events}"
        return self.events

    async def ready(self) -> list[Event]:
        return await self.wait(lambda events: any(e.name == "ready" for e in events))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()


async def open_stream(
    http: HTTPClient, server: RunningServer, manifest: Manifest, **headers: str
) -> StreamReader:
    response = await timed(
        http.post(
            f"{server.url}/sync",
            data=encode_manifest(manifest),
            headers=server.headers(**{"Accept": EVENT_STREAM, **headers}),
            unbuffered=True,
        ),
        server.reactor,
    )
    assert response.code == 200, await response.text()
    return _read_stream(server, response)


async def open_raw_stream(server: RunningServer, manifest: Manifest, **headers: str) -> StreamReader:
    """
    L{open_stream}, through Twisted's own agent: its bytes as they came on
    the wire (treq asks for gzip, and decodes it, itself).
    """
    fields = server.headers(**{"Accept": EVENT_STREAM, **headers})
    response = await timed(
        Agent(server.reactor).request(
            b"POST",
            f"{server.url}/sync".encode("ascii"),
            Headers({name: [value] for name, value in fields.items()}),
            FileBodyProducer(BytesIO(encode_manifest(manifest))),
        ),
        server.reactor,
    )
    assert response.code == 200
    return _read_stream(server, response)


def _read_stream(server: RunningServer, response: Any) -> StreamReader:
    gzipped = response.headers.getRawHeaders("Content-Encoding") == ["gzip"]
    reader = StreamReader(server.reactor, zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None)
    response.deliverBody(reader)
    return reader


async def put(
    http: HTTPClient,
    server: RunningServer,
    path: str,
    data: bytes,
    base: int | None = None,
    sha256: str | None = None,
    **headers: str,
) -> Any:
    extra = dict(headers)
    if base is not None:
        extra["X_Boxsync_Base"] = str(base)
    if sha256 is not None:
        extra["X_Boxsync_Sha256"] = sha256
    return await timed(
        http.put(server.file_url(path), data=data, headers=server.headers(**extra)),
        server.reactor,
    )


async def json_of(response: Any) -> Any:
    return json.loads(await response.text())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_file(path: Path, size: int, chunk: int = 4 * 2**20) -> str:
    """
    Write C{size} random bytes to C{path}; return their sha256.
    """
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(chunk, left))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**20):
            h.update(block)
    return h.hexdigest()


async def eventually(reactor: Any, condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """
    Wait, in steps of 50 ms up to C{seconds}, until C{condition} holds.
    """
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await deferLater(reactor, 0.05)
    assert condition()


class Folder:
    """
    A synced folder with its own engine, run in --once mode on demand.
    """

    def __init__(self, reactor: Any, server: RunningServer, root: Path, name: str) -> None:
        self.reactor, self.server, self.root, self.name = reactor, server, root, name
        root.mkdir(parents=True, exist_ok=True)
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.api = BoxsyncAPI(HTTPClient(Agent(reactor, pool=self.pool)), reactor, server.url, server.key, name)
        self.state = LocalState.open(root)

    def engine(self, **kwargs: Any) -> Engine:
        return Engine(
            self.reactor, self.root, self.api, self.state, IgnoreRules.load(self.root),
            LogReporter(), self.name, **kwargs,
        )

    async def sync(self, engine: Engine | None = None) -> Engine:
        """
        Run an engine (by default a new --once one) until it returns.
        """
        engine = engine or self.engine(once=True)
        await timed(Deferred.fromCoroutine(engine.run()), self.reactor)
        return engine

    async def close(self) -> None:
        self.state.close()
        await self.pool.closeCachedConnections()


def count_hashing(monkeypatch: Any, module: Any) -> list[Path]:
    """
    Record every file C{module}'s C{hash_file} hashes (C{monkeypatch} is
    pytest's), from now on.
    """
    calls: list[Path] = []
    real = module.hash_file

    def counting(path: Path) -> tuple[str, int]:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(module, "hash_file", counting)
    return calls


def edit_keeping_stamps(target: Path, data: bytes) -> None:
    """
    Rewrite C{target} in place with C{data} (of its own length) and set
    its mtime back: size, mtime and inode are as before.
    """
    before = target.stat()
    assert len(data) == before.st_size
    with open(target, "r+b") as f:
        f.write(data)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )


@define
class Recorder:
    """
    An event stream that keeps what it is sent.
    """

    stream_id: str = "recorder"
    client: str = "recorder"
    events: list[Event] = field(factory=list)

    def send(self, event: Event) -> None:
        self.events.append(event)

    def keepalive(self) -> None:
        pass

    def disconnect(self) -> None:
        pass


def synced_with(*folders: tuple[Path, str]) -> None:
    """
    Give each folder of C{folders} a client's state, as after a sync with
    the box whose id is paired with it.
    """
    for folder, box in folders:
        (folder / ".boxsync").mkdir(parents=True, exist_ok=True)
        state = LocalState.open(folder)
        state.box = box
        state.close()


def look_later(box: Any) -> Any:
    """
    Look at C{box} for changes made by hand as a look would a while after
    them: past L{QUIET_SECONDS}, when a file written then is taken for
    whole.
    """
    import time

    from boxsync.server.adopt import QUIET_SECONDS, look_for_hand_changes

    return look_for_hand_changes(box, now_ns=lambda: time.time_ns() + int(2 * QUIET_SECONDS * 1e9))
