"""
A cluster's shared parts failing under load: two real servers behind a real
HAProxy, on a real PostgreSQL of their own that is shut down and started
again while real clients keep editing.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.client.status import read_status
from boxsync.cluster import Cluster, PostgreSQL, haproxy_missing
from boxsync.testing import Client, Proxy, SeaweedFS, Server, wait_until
from tests.faults import Edits, output, sha
from tests.system.test_cluster_balanced import conflicts, through

#: How long PostgreSQL stays down, at least (s).
OUTAGE = 4.0


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """
    Two servers behind HAProxy on a PostgreSQL of their own (not the
    tests' shared one: it is shut down here).
    """
    why = haproxy_missing()
    if why is not None:
        pytest.skip(why)
    running = Cluster(tmp_path / "cluster", 2).start()
    try:
        yield running
    finally:
        running.stop()


def _relay_back(server: Server) -> bool:
    return "hearing the commits of other servers again" in output(server)


@pytest.mark.parametrize("immediate", [False, True], ids=["fast", "immediate"])
def test_postgresql_restarted_under_load(tmp_path: Path, own_cluster: Cluster, immediate: bool) -> None:
    """
    Three clients keep editing files of their own through the balancer
    while PostgreSQL is shut down (a fast or an immediate shutdown) for a
    few seconds and started again: the servers keep running and get their
    connections back (the one each announces its commits on too), every
    edit reaches every client and the box, no conflict copy is made, and
    each client ends in sync with no problem left to show, and exits
    cleanly; what the connection pool says of the outage is logged as the
    servers' own lines. (Commits made while it is down wait for a connection to the
    index, up to its pool's timeout, and then succeed; one cut off by the
    shutdown is answered 503, and its client asks again.)
    """
    postgres = own_cluster.postgres
    assert postgres is not None
    clients = [through(own_cluster, tmp_path / name, name) for name in ("a", "b", "c")]
    for client in clients:
        client.start()
    edits = Edits(clients, own_cluster.box)
    try:
        edits.make(1)
        edits.wait_everywhere(60)
        # Commits are under way as it goes down.
        edits.make(2)
        wait_until(lambda: any((own_cluster.box / f"{c.name}-round-2.txt").exists() for c in clients), timeout=30,
                   what="the first commit of a round")
        down = time.monotonic()
        postgres.halt(immediate=immediate)
        # Both servers noticed: their connection that listens is gone.
        for server in own_cluster.servers:
            wait_until(lambda: "lost the commits of other servers" in output(server), timeout=30,
                       what="a server to lose its connection to PostgreSQL")
        edits.make(3)
        time.sleep(max(0.0, down + OUTAGE - time.monotonic()))  # the outage itself, not a wait for something
        postgres.resume()
        for server in own_cluster.servers:
            wait_until(lambda: _relay_back(server), timeout=30, what="a server to listen to the others again")
        before = [len(output(server)) for server in own_cluster.servers]
        edits.make(4)
        edits.wait_everywhere(120)
        for client in clients:
            wait_until(lambda: _settled(client), timeout=30, what=f"{client.name} to show nothing left to do")
        assert all(process.running for process in own_cluster.processes())
        logs = [output(server) for server in own_cluster.servers]
        # Every commit made once the servers listened again was announced
        # to the other server (none was left to its catch-up): no
        # connection kept from before failed.
        assert not [log for log, start in zip(logs, before) if "cannot announce a commit" in log[start:]]
        # A commit cut off by the shutdown was refused as one to ask again.
        assert not [log for log in logs if "unhandled error" in log]
        # The pool's failures to connect are the server's own log lines, not
        # raw lines of standard error.
        assert not [log for log in logs if "[stderr#" in log]
    finally:
        statuses = [client.stop() for client in clients]
    assert statuses == [0, 0, 0]
    assert not conflicts(*(client.folder for client in clients), own_cluster.box)


def _settled(client: Client) -> bool:
    """
    Whether C{client} shows itself in sync, with nothing pending and no
    problem with any file.
    """
    status = read_status(client.folder) or {}
    return bool(status.get("in_sync")) and not status.get("pending") and not status.get("problems")


#: How long the bucket stays out of reach (s).
BUCKET_OUTAGE = 30.0


def _big(seed: int) -> bytes:
    """
    A file that travels by blocks, all of them new to the box.
    """
    return random.Random(seed).randbytes(3 * 2**20)


def _holds(folder: Path, name: str, data: bytes) -> bool:
    path = folder / name
    return path.exists() and sha(path.read_bytes()) == sha(data)


def test_the_bucket_out_of_reach_for_30_s(tmp_path: Path, postgres: PostgreSQL, seaweedfs: SeaweedFS) -> None:
    """
    Two servers keep the blocks sent to them in a real SeaweedFS, reached
    through a proxy that then refuses every connection for 30 s while a
    client sends a file by blocks: its blocks are answered 503 meanwhile
    and the client keeps the file to send again, by itself; once the
    bucket is back the file reaches the box and the other client, and what
    was committed before is all there, with no conflict copy and no
    problem left to show.
    """
    why = haproxy_missing()
    if why is not None:
        pytest.skip(why)
    proxy = Proxy(seaweedfs.port).start()
    store = f"s3://{seaweedfs.bucket}?endpoint={proxy.url}&region=us-east-1"
    cluster = Cluster(tmp_path / "cluster", 2, postgres=postgres, seaweedfs=seaweedfs, store=store)
    clients: list[Client] = []
    try:
        cluster.start()
        clients = [through(cluster, tmp_path / name, name).start() for name in ("a", "b")]
        a, b = clients
        before, during = _big(1), _big(2)
        (a.folder / "before.bin").write_bytes(before)
        wait_until(lambda: _holds(b.folder, "before.bin", before), timeout=60, what="before.bin on b")
        # Its blocks went to the bucket.
        assert proxy.carried()[0] > len(before)

        proxy.refusing = True
        proxy.sever()
        down = time.monotonic()
        (a.folder / "during.bin").write_bytes(during)
        wait_until(
            lambda: any('/blocks/' in line and '" 503 ' in line for s in cluster.servers for line in output(s).splitlines()),
            timeout=30, what="a server to answer 503 for a block it cannot keep",
        )
        assert not (cluster.box / "during.bin").exists()
        time.sleep(max(0.0, down + BUCKET_OUTAGE - time.monotonic()))  # the outage itself, not a wait for something
        proxy.refusing = False

        wait_until(lambda: _holds(b.folder, "during.bin", during), timeout=150, what="during.bin on b")
        for client in clients:
            wait_until(lambda: _settled(client), timeout=60, what=f"{client.name} to show nothing left to do")
        for folder in (cluster.box, a.folder, b.folder):
            assert _holds(folder, "before.bin", before) and _holds(folder, "during.bin", during)
        assert not [line for s in cluster.servers for line in output(s).splitlines() if "Traceback" in line]
        statuses = [client.stop() for client in clients]
        assert statuses == [0, 0]
        assert not conflicts(a.folder, b.folder, cluster.box)
    finally:
        for client in clients:
            client.stop()
        cluster.stop()
        proxy.stop()
