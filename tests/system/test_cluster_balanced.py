"""
Real servers of one box on a real PostgreSQL behind a real HAProxy, with
real clients that know only the balancer's address: they converge live,
an upload survives the kill -9 of the server it went through, and a
rolling restart of every server goes unnoticed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from boxsync.cluster import Cluster, PostgreSQL, haproxy_missing
from boxsync.testing import Client, Proxy, Server, wait_until
from tests.faults import Edits, a_big_file_flows_while_sent, sha, two_clients_converge


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """
    A cluster of 3 servers (or C{count} from the test's parameters) in
    C{tmp_path}, on a new database of the tests' PostgreSQL.
    """
    why = haproxy_missing()
    if why is not None:
        pytest.skip(why)
    postgres: PostgreSQL = request.getfixturevalue("postgres")
    running = Cluster(tmp_path, getattr(request, "param", 3), postgres=postgres).start()
    try:
        yield running
    finally:
        running.stop()


def through(cluster: Cluster, folder: Path, name: str) -> Client:
    """
    A live client of the cluster that knows only the balancer's address.
    """
    return Client(cluster.servers[0], folder, name, url=cluster.url)


def conflicts(*folders: Path) -> list[Path]:
    return [path for folder in folders for path in folder.rglob("*.conflict-*")]


def served(server: Server) -> int:
    """
    How many requests other than health checks C{server} answered, from its
    access log.
    """
    assert server.process is not None
    lines = server.process.output().splitlines()
    return sum(1 for line in lines if ' HTTP/1.1" 20' in line and "/healthz" not in line)


@pytest.mark.parametrize("cluster", [2], indirect=True)
def test_a_big_file_reaches_a_client_of_another_server_while_it_is_still_sent(
    tmp_path: Path, cluster: Cluster
) -> None:
    """
    A on one server, b on the other: the blocks a sends reach b through
    the bucket as they arrive, each told through PostgreSQL.
    """
    one, two = cluster.servers
    a_big_file_flows_while_sent(tmp_path, one, two, cluster.box)


@pytest.mark.parametrize("cluster", [2], indirect=True)
def test_clients_through_the_balancer_converge_live(tmp_path: Path, cluster: Cluster) -> None:
    two_clients_converge(through(cluster, tmp_path / "a", "a"), through(cluster, tmp_path / "b", "b"), cluster.box)
    # Round robin: both servers answered some of it.
    assert all(served(server) > 0 for server in cluster.servers)


@pytest.mark.slow
@pytest.mark.parametrize("cluster", [2], indirect=True)
def test_kill_9_of_a_server_an_upload_goes_through(tmp_path: Path, cluster: Cluster) -> None:
    """
    A 96 MiB upload, over a link held to 32 MiB/s so that it lasts 3 s: its
    requests go to both servers in turn. Once 16 MiB are on their way, one
    server is killed with SIGKILL. The client finishes the upload through
    the other, and the other client gets the file byte for byte.
    """
    assert cluster.balancer is not None
    link = Proxy(cluster.balancer.port, rate=32 * 2**20).start()
    a = Client(cluster.servers[0], tmp_path / "a", "a", url=link.url)
    b = through(cluster, tmp_path / "b", "b")
    a.start()
    b.start()
    try:
        (a.folder / "hello.txt").write_text("both live")
        wait_until(lambda: (b.folder / "hello.txt").exists(), timeout=30, what="hello.txt on b")
        data = os.urandom(96 * 2**20)
        staged = tmp_path / "staged.bin"
        staged.write_bytes(data)
        os.rename(staged, a.folder / "big.bin")
        wait_until(lambda: link.up >= 16 * 2**20, timeout=60, what="16 MiB of the upload on their way")
        cluster.servers[0].kill()
        assert not (cluster.box / "big.bin").exists(), "the upload was over before the kill"
        wait_until(lambda: (b.folder / "big.bin").exists(), timeout=90, what="big.bin on b")
        assert sha((b.folder / "big.bin").read_bytes()) == sha(data)
        assert sha((cluster.box / "big.bin").read_bytes()) == sha(data)
        assert (b.folder / "hello.txt").read_text() == "both live"
        assert not conflicts(a.folder, b.folder)
    finally:
        statuses = [a.stop(), b.stop()]
        link.stop()
    assert statuses == [0, 0]


def test_a_rolling_restart_goes_unnoticed(tmp_path: Path, cluster: Cluster) -> None:
    """
    Each server in turn is stopped and started again while three clients
    keep editing files of their own: every client ends with every edit, no
    conflict copy, and exits cleanly: a server stopped lets the requests
    under way end, so no answer to a commit it made is lost.
    """
    clients = [through(cluster, tmp_path / name, name) for name in ("a", "b", "c")]
    for client in clients:
        client.start()
    edits = Edits(clients, cluster.box)
    try:
        round_ = 0
        for server in cluster.servers:
            edits.make(round_ := round_ + 1)
            server.stop()
            edits.make(round_ := round_ + 1)
            wait_until(lambda: (cluster.box / f"c-round-{round_}.txt").exists(), timeout=30, what="a round's edits")
            server.start(timeout=60)
            edits.make(round_ := round_ + 1)
        edits.wait_everywhere(60)
    finally:
        statuses = [client.stop() for client in clients]
    assert statuses == [0, 0, 0]
    assert not conflicts(*(client.folder for client in clients), cluster.box)


@pytest.mark.slow
def test_the_demo_runs_a_cluster(tmp_path: Path) -> None:
    """
    C{python -m boxsync.demo --cluster 2 --info FILE}: the file says where
    the balancer and each server are; a file goes from alice to bob through
    it; SIGTERM stops every process it started.
    """
    why = haproxy_missing()
    if why is not None:
        pytest.skip(why)
    info_file = tmp_path / "info.json"
    demo = subprocess.Popen(
        [sys.executable, "-m", "boxsync.demo", "--cluster", "2", "--info", str(info_file), str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: info_file.exists() or demo.poll() is not None, timeout=90, what="the demo's info file")
        assert demo.poll() is None
        info = json.loads(info_file.read_text())
        assert len(info["instances"]) == 2
        for each in [info, *info["instances"]]:
            with urllib.request.urlopen(each["url"] + "/healthz", timeout=10) as answer:
                assert answer.status == 200
        request = urllib.request.Request(
            info["url"] + "/files/hello.txt", headers={"Authorization": f"Bearer {info['token']}"}
        )
        wait_until(lambda: (tmp_path / "demo/bob/hello.txt").exists(), timeout=30, what="hello.txt on bob")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.read().startswith(b"Hello from alice")
        demo.send_signal(signal.SIGTERM)
        output, _ = demo.communicate(timeout=60)
        assert demo.returncode == 0, output
        assert b"boxsync demo stopped." in output
        for each in info["instances"]:
            assert not Path(f"/proc/{each['pid']}").exists()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)


def test_a_cluster_that_cannot_start_stops_what_it_started(tmp_path: Path) -> None:
    """
    A server that will not start (here: an option it does not know) stops
    the start: its own PostgreSQL is stopped and removed, and nothing is
    left running.
    """
    why = haproxy_missing()
    if why is not None:
        pytest.skip(why)
    broken = Cluster(tmp_path, 2, options=["--no-such-option"])
    with pytest.raises(AssertionError, match="server exited"):
        broken.start()
    assert broken.postgres is not None and broken.postgres.process is None
    assert not broken.postgres.folder.exists()
    assert not any(process.running for process in broken.processes())


def test_a_cluster_needs_a_server(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one server"):
        Cluster(tmp_path, 0).start()


def test_without_haproxy_there_is_no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from boxsync import cluster, demo

    monkeypatch.setattr(cluster, "HAPROXY", str(tmp_path / "no-haproxy"))
    assert "HAProxy is not installed" in (haproxy_missing() or "")
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit, match="no cluster here: HAProxy is not installed"):
            demo.main(["--cluster", "2", str(tmp_path / "demo")])
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_demo_refuses_a_negative_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    from boxsync import demo

    with pytest.raises(SystemExit) as exited:
        demo.main(["--cluster", "-1"])
    assert exited.value.code == 2
    assert "--cluster takes a number of servers" in capsys.readouterr().err


@pytest.mark.parametrize("cluster", [2], indirect=True)
def test_a_browser_is_signed_in_on_every_server(cluster: Cluster) -> None:
    """
    Requests are balanced one by one, a browser's too: the session it
    signed in with on one server is taken by both, and once it signs out
    on one, both refuse it (the other once it has read the registry).
    """
    sign_in = urllib.request.Request(
        cluster.url + "/web/session", data=json.dumps({"token": cluster.key}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(sign_in, timeout=10) as answer:
        cookie = answer.headers["Set-Cookie"].split(";")[0]
        csrf = json.load(answer)["csrf"]
    counts = [served(server) for server in cluster.servers]
    whoami = urllib.request.Request(cluster.url + "/web/session", headers={"Cookie": cookie})
    for _ in range(4):
        with urllib.request.urlopen(whoami, timeout=10) as answer:
            assert json.load(answer)["csrf"] == csrf
    wait_until(lambda: all(served(server) > count for server, count in zip(cluster.servers, counts)), timeout=10,
               what="both servers to have answered the browser")
    sign_out = urllib.request.Request(
        cluster.servers[0].url + "/web/session", headers={"Cookie": cookie, "X-Boxsync-CSRF": csrf}, method="DELETE",
    )
    with urllib.request.urlopen(sign_out, timeout=10) as answer:
        assert answer.status == 200
    for server in cluster.servers:
        wait_until(lambda: _refused(server.url + "/web/session", cookie), timeout=30,
                   what=f"{server.url} to refuse a session signed out")


def _refused(url: str, cookie: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie}), timeout=10):
            return False
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
        return True
