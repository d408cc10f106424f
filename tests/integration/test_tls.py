"""
TLS: the server on an C{ssl:} endpoint with certificates from a test
certificate authority; the client checking them (against the system's
authorities by default, those of C{--cacert} if given, and the host name
always), and refusing plain C{http://} to another machine unless
C{--insecure}, before any connection.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import pytest_twisted
import trustme
from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived

from boxsync.client import cli, commands
from boxsync.client.connect import (
    Connection,
    ConnectionSettingsError,
    check_server,
    connect,
    describe_failure,
    is_loopback,
)
from boxsync.server.auth import ApiKeyAuth
from boxsync.server.service import BoxsyncService, ServerConfig
from boxsync.testing import KEY, Client, Process, Server, tree, wait_until
from tests.helpers import timed


@frozen
class Files:
    """
    A test certificate authority and the files a server and a client use.

    @ivar ca: the authority's certificate, for C{--cacert}.
    @ivar key: the server's private key.
    @ivar cert: the server's certificate, for 127.0.0.1 and localhost.
    @ivar other: a key and a certificate (one file) for another host name,
        from the same authority.
    """

    ca: Path
    key: Path
    cert: Path
    other: Path
    authority: trustme.CA

    def endpoint(self, port: int = 0, key: Path | None = None, cert: Path | None = None) -> str:
        """
        An C{ssl:} endpoint on 127.0.0.1 with the server's key and
        certificate, or with others (C{key} alone: a file holding both).
        """
        if key is None:
            key, cert = self.key, self.cert
        certificate = "" if cert is None else f":certKey={cert}"
        return f"ssl:{port}:interface=127.0.0.1:privateKey={key}{certificate}"


@pytest.fixture
def tls(tmp_path: Path) -> Files:
    folder = tmp_path / "tls"
    folder.mkdir()
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    files = Files(folder / "ca.pem", folder / "key.pem", folder / "cert.pem", folder / "other.pem", authority)
    authority.cert_pem.write_to_path(str(files.ca))
    issued.private_key_pem.write_to_path(str(files.key))
    issued.cert_chain_pems[0].write_to_path(str(files.cert))
    authority.issue_cert("other.example").private_key_and_cert_chain_pem.write_to_path(str(files.other))
    return files


@asynccontextmanager
async def tls_server(reactor: Any, box: Path, endpoint: str) -> AsyncIterator[str]:
    """
    A server in this process on C{endpoint} (port 0); its https:// URL on
    127.0.0.1.
    """
    service = BoxsyncService(
        reactor, ServerConfig(box=box, listen=[endpoint], auth=ApiKeyAuth(KEY), status_seconds=0)
    )
    service.startService()
    try:
        await timed(service.ready, reactor)
        address = service.ports[0].getHost()
        assert isinstance(address, IPv4Address)
        yield f"https://127.0.0.1:{address.port}"
    finally:
        await service.stopService()


def options(server: str, *argv: str) -> cli.Options:
    return cli.parse(["ls", "--server", server, "--token", KEY, *argv], {}, config=Path("/nonexistent"))


async def ls(reactor: Any, server: str, *argv: str) -> str:
    """
    What C{boxsync-client ls} prints, its errors turned into L{cli.UserError}s.
    """
    out = io.StringIO()
    work = cli._friendly(commands.ls(reactor, options(server, *argv), out), server, None, reactor)
    await timed(Deferred.fromCoroutine(work), reactor)
    return out.getvalue()


# What is refused before connecting


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("localhost", True), ("LOCALHOST", True), ("localhost.", True), ("127.0.0.1", True),
        ("127.8.9.10", True), ("::1", True), ("10.1.2.3", False), ("example.invalid", False),
        ("localhost.example.org", False), ("::2", False), ("128.0.0.1", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    "url", ["http://example.invalid", "http://10.1.2.3:8080", "http://[2001:db8::1]:80/", "HTTP://box.example.org"]
)
def test_plain_http_to_another_machine_needs_insecure(url: str) -> None:
    reactor = MemoryReactorClock()
    with pytest.raises(ConnectionSettingsError, match=r"refusing plain http:// to .*unencrypted.*--insecure") as raised:
        connect(reactor, url)
    assert "\n" not in str(raised.value)
    connection = connect(reactor, url, insecure=True)
    assert isinstance(connection, Connection)
    # Building the client connects nothing.
    assert reactor.tcpClients == [] and reactor.sslClients == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost", "http://[::1]:9/", "https://box.example.org"])
def test_allowed_without_insecure(url: str) -> None:
    check_server(url)


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://box.example.org", "must start with https://"),
        ("box.example.org:8443", "must start with https://"),
        ("https://", "names no host"),
        ("https://box.example.org:port", "is not valid"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConnectionSettingsError, match=message):
        connect(MemoryReactorClock(), url, insecure=True)


def test_bad_cacert_files(tmp_path: Path, tls: Files) -> None:
    reactor = MemoryReactorClock()
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    cases = {
        tmp_path / "absent.pem": "cannot read the --cacert file .*absent.pem: No such file",
        tmp_path: "cannot read the --cacert file .*: Is a directory",
        tmp_path / "garbage.pem": "garbage.pem holds no valid certificate",
        tls.key: "key.pem holds no valid certificate",
    }
    for path, message in cases.items():
        with pytest.raises(ConnectionSettingsError, match=message):
            connect(reactor, "https://127.0.0.1:1", path)
    assert reactor.tcpClients == [] and reactor.sslClients == []


def test_describe_failure() -> None:
    assert describe_failure(ValueError("first\nsecond")) == "first"
    assert describe_failure(ResponseNeverReceived([Failure(ConnectionResetError("reset"))])) == "reset"
    assert describe_failure(KeyError()) == "KeyError"


@pytest.mark.parametrize(
    "argv",
    [
        ["--once", "--server", "http://10.1.2.3:8080"],
        ["ls", "--server", "http://example.invalid"],
        ["--once", "--server", "https://127.0.0.1:1", "--cacert", "{tmp}/absent.pem"],
    ],
)
def test_the_client_refuses_before_connecting(tmp_path: Path, argv: list[str]) -> None:
    folder = tmp_path / "folder"
    command = [sys.executable, "-m", "boxsync.client", *(a.format(tmp=tmp_path) for a in argv), "--token", KEY]
    if argv[0] != "ls":
        command.append(str(folder))
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env={"PATH": "", "HOME": str(tmp_path)})
    # A connection to 10.1.2.3 would take much longer to fail.
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stderr
    error = result.stderr.strip()
    assert error.startswith("boxsync-client: ") and "\n" not in error and "Traceback" not in error
    assert ("--insecure" in error) if "http://" in argv[2] else ("--cacert file" in error)
    assert not folder.exists()


# Over TLS, in this process


@pytest_twisted.ensureDeferred
async def test_ls_over_tls(reactor: Any, tmp_path: Path, tls: Files) -> None:
    async with tls_server(reactor, tmp_path / "box", tls.endpoint()) as url:
        connection = connect(reactor, url, tls.ca)
        headers: dict[bytes | str, bytes | str] = {"Authorization": f"Bearer {KEY}", "X-Boxsync-Base": "0"}
        try:
            response = await timed(
                connection.http.put(f"{url}/files/notes.txt", data=b"over TLS", headers=headers), reactor
            )
            assert response.code == 201, await response.text()
            await response.text()
        finally:
            await connection.close()
        assert "notes.txt" in await ls(reactor, url, "--cacert", str(tls.ca))
        local = url.replace("127.0.0.1", "localhost")
        assert (await ls(reactor, local, "--cacert", str(tls.ca))).endswith("1 files, 8 B\n")
        # Without the authority: the system's do not know it.
        with pytest.raises(cli.UserError, match="certificate verify failed.*--cacert FILE"):
            await ls(reactor, url)
    assert [p.name for p in (tmp_path / "box").iterdir() if not p.name.startswith(".")] == ["notes.txt"]


@pytest_twisted.ensureDeferred
async def test_a_certificate_for_another_host_is_refused(reactor: Any, tmp_path: Path, tls: Files) -> None:
    async with tls_server(reactor, tmp_path / "box", tls.endpoint(key=tls.other)) as url:
        with pytest.raises(cli.UserError, match=r"certificate is not for the host in the server URL"):
            await ls(reactor, url, "--cacert", str(tls.ca))


@pytest_twisted.ensureDeferred
async def test_a_chain_and_a_bundle(reactor: Any, tmp_path: Path, tls: Files) -> None:
    # A certificate from an intermediate authority, which the server sends
    # along (extraCertChain=, as for Let's Encrypt's chain.pem); the client
    # trusts the root, given in a file with another authority first.
    intermediate = tls.authority.create_child_ca()
    issued = intermediate.issue_cert("127.0.0.1")
    issued.private_key_pem.write_to_path(str(tmp_path / "leaf-key.pem"))
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "leaf.pem"))
    issued.cert_chain_pems[1].write_to_path(str(tmp_path / "chain.pem"))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(trustme.CA().cert_pem.bytes() + tls.ca.read_bytes())
    endpoint = tls.endpoint(key=tmp_path / "leaf-key.pem", cert=tmp_path / "leaf.pem")
    async with tls_server(reactor, tmp_path / "box", f"{endpoint}:extraCertChain={tmp_path / 'chain.pem'}") as url:
        assert (await ls(reactor, url, "--cacert", str(bundle))).endswith("0 files, 0 B\n")
        # Trusting only the other authority of the bundle fails.
        bundle.write_bytes(trustme.CA().cert_pem.bytes())
        with pytest.raises(cli.UserError, match="certificate verify failed"):
            await ls(reactor, url, "--cacert", str(bundle))


@asynccontextmanager
async def listening(reactor: Any, protocol: type[Protocol]) -> AsyncIterator[int]:
    """
    A server of C{protocol} on a port of 127.0.0.1, while in the block: its
    port.
    """
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Factory.forProtocol(protocol))
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    try:
        yield address.port
    finally:
        await port.stopListening()


class PlainHTTP(Protocol):
    """
    Answers anything with a plain HTTP error, as a server without TLS does.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_https_to_a_plain_server(reactor: Any, tmp_path: Path, tls: Files) -> None:
    """
    C{https://} to a port that does not speak TLS (boxsync's server on a
    C{tcp:} endpoint, another HTTP server) is one line saying so.
    """
    async with tls_server(reactor, tmp_path / "box", "tcp:0:interface=127.0.0.1") as url:
        # It waits for the end of a line that the ClientHello does not have:
        # the request is given up as silent, then the probe tells why.
        with pytest.raises(cli.UserError, match=rf"^the server at {url} does not speak TLS: use http://$"):
            await ls(reactor, url, "--cacert", str(tls.ca), "--idle-timeout", "1")
        # Over http://, all is well.
        assert (await ls(reactor, url.replace("https://", "http://"))).endswith("0 files, 0 B\n")
    async with listening(reactor, PlainHTTP) as port:
        with pytest.raises(cli.UserError, match=r"does not speak TLS: use http://$"):
            await ls(reactor, f"https://127.0.0.1:{port}", "--cacert", str(tls.ca))


@pytest_twisted.ensureDeferred
async def test_http_to_a_tls_server(reactor: Any, tmp_path: Path, tls: Files) -> None:
    """
    C{http://} to a port that speaks TLS (boxsync's server on an C{ssl:}
    endpoint) is one line saying so, whatever that server does with plain
    HTTP (close at once, or answer with a TLS alert).
    """
    async with tls_server(reactor, tmp_path / "box", tls.endpoint()) as url:
        plain = url.replace("https://", "http://")
        with pytest.raises(cli.UserError, match=rf"^the server at {plain} speaks TLS: use https://$"):
            await ls(reactor, plain)
    async with listening(reactor, TLSAlert) as port:
        with pytest.raises(cli.UserError, match=r"speaks TLS: use https://$"):
            await ls(reactor, f"http://127.0.0.1:{port}")


@pytest_twisted.ensureDeferred
async def test_a_failure_of_the_right_scheme_is_told_as_it_is(reactor: Any, tmp_path: Path, tls: Files) -> None:
    """
    A TLS server whose certificate is not trusted, a plain server that
    closes without an answer: the probe finds the scheme right, and the
    error is the one that happened.
    """
    async with tls_server(reactor, tmp_path / "box", tls.endpoint()) as url:
        with pytest.raises(cli.UserError, match="certificate verify failed"):
            await ls(reactor, url)
    async with listening(reactor, Closing) as port:
        with pytest.raises(cli.UserError, match=r"^cannot talk to http://127.0.0.1:\d+: "):
            await ls(reactor, f"http://127.0.0.1:{port}")


class TLSAlert(Protocol):
    """
    Answers anything with a TLS alert (a fatal "protocol version"), then
    closes, as some TLS servers answer plain HTTP.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"\x15\x03\x01\x00\x02\x02\x46")
        self.transport.loseConnection()


class Closing(Protocol):
    """
    Closes every connection at once, saying nothing.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


# Real processes: twistd on an ssl: endpoint, clients syncing through it


@pytest.fixture
def tls_twistd(tmp_path: Path, tls: Files) -> Iterator[Server]:
    server = Server(tmp_path / "box")
    args = [
        sys.executable, "-m", "twisted", "--log-format=text", "boxsync",
        "--listen", tls.endpoint(server.port), "--box", str(server.box), "--api-key", server.key,
    ]
    server.process = Process(args, tmp_path / "server.log").start()

    def listening() -> bool:
        assert server.process is not None and server.process.running, server.process and server.process.output()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", server.port)) == 0

    try:
        wait_until(listening, what="the TLS server to listen")
        yield server
    finally:
        server.stop()


def test_sync_over_tls(tmp_path: Path, tls: Files, tls_twistd: Server) -> None:
    port = tls_twistd.port
    alice = Client(tls_twistd, tmp_path / "alice", "alice", url=f"https://127.0.0.1:{port}", options=["--cacert", str(tls.ca)])
    bob = Client(tls_twistd, tmp_path / "bob", "bob", url=f"https://localhost:{port}")
    alice.folder.mkdir()
    (alice.folder / "hello.txt").write_text("sent over TLS\n")
    alice.once()
    # The authority from the environment, as a systemd unit's file gives it.
    result = subprocess.run(
        bob.args("--once"), capture_output=True, text=True, timeout=60, env={"BOXSYNC_CACERT": str(tls.ca), "HOME": str(tmp_path), "PATH": ""}
    )
    assert result.returncode == 0, result.stderr
    assert tree(bob.folder) == tree(alice.folder) and (bob.folder / "hello.txt").read_text() == "sent over TLS\n"
    listed = subprocess.run(
        [sys.executable, "-m", "boxsync.client", "ls", "--server", bob.url or "", "--token", KEY, "--cacert", str(tls.ca)],
        capture_output=True, text=True, timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "hello.txt" in listed.stdout and "alice" in listed.stdout
    status = subprocess.run(
        [sys.executable, "-m", "boxsync.client", "status", str(bob.folder)], capture_output=True, text=True, timeout=60
    )
    # Not running, so not known to be in sync; but all of it came over TLS.
    assert status.returncode == 1, status.stdout + status.stderr
    assert "tracked:    1 files" in status.stdout and "last error: none" in status.stdout
    # Without the authority: refused, in one line, and nothing moves.
    eve = Client(tls_twistd, tmp_path / "eve", "eve", url=f"https://127.0.0.1:{port}")
    eve.folder.mkdir()
    (eve.folder / "eve.txt").write_text("never sent\n")
    refused = subprocess.run(eve.args("--once"), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("boxsync-client: cannot talk to https://127.0.0.1:")
    assert "certificate verify failed" in error and "--cacert FILE" in error and "Traceback" not in refused.stderr
    assert sorted(tree(eve.folder)) == ["eve.txt"]
    assert sorted(p.name for p in tls_twistd.box.iterdir() if not p.name.startswith(".")) == ["hello.txt"]


def test_a_client_given_http_for_a_tls_port_stops_saying_so(tmp_path: Path, tls_twistd: Server) -> None:
    port = tls_twistd.port
    for extra in (["--once"], []):
        client = Client(tls_twistd, tmp_path / "folder", "c", url=f"http://127.0.0.1:{port}")
        # A live client stops too: retrying would not help.
        ran = subprocess.run(client.args(*extra), capture_output=True, text=True, timeout=60)
        assert ran.returncode == 1, ran.stderr
        error = ran.stderr.strip().splitlines()[-1]
        assert error == f"boxsync-client: the server at http://127.0.0.1:{port} speaks TLS: use https://"
        assert "Traceback" not in ran.stderr
