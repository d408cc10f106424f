"""
``twistd boxsync``: the server's options, the plugin that twistd finds, and
the service its maker builds (started here on a real loopback port).
"""

from __future__ import annotations

import socket
import subprocess
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.service import IService, IServiceMaker
from twisted.internet.endpoints import serverFromString
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError

from boxsync.server import tap
from boxsync.server.auth import Forbidden
from tests.helpers import timed

ENVIRONMENT = ("BOXSYNC_API_KEY", "API_KEY", "SERVER_ADDRESS", "BOXSYNC_LISTEN", "BOXSYNC_INDEX", tap.CONFIG_VARIABLE)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    # No configuration file of this machine's may change what is tested.
    monkeypatch.setattr(tap, "SYSTEM_CONFIG", tmp_path / "no-server.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_defaults() -> None:
    options = parse("--api-key", "k")
    assert options["box"] == "./box"
    assert options["api-key"] == "k"
    assert options["listen"] == [tap.DEFAULT_LISTEN]
    assert options["max-upload"] == 16 * 2**30
    assert options["status-interval"] == 60.0
    assert not options["insecure-no-auth"]


def test_short_options() -> None:
    options = parse("-k", "short", "-b", "/srv/box")
    assert options["api-key"] == "short"
    assert options["box"] == "/srv/box"


def test_listen_is_repeatable() -> None:
    listen = ["tcp:8080:interface=127.0.0.1", "unix:/run/boxsync.sock", "tcp6:8081:interface=\\:\\:1"]
    options = parse("--api-key", "k", *[arg for description in listen for arg in ("--listen", description)])
    assert options["listen"] == listen


def test_each_parse_starts_with_no_listen() -> None:
    parse("--api-key", "k", "--listen", "tcp:1")
    assert parse("--api-key", "k")["listen"] == [tap.DEFAULT_LISTEN]


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({"BOXSYNC_API_KEY": "from-boxsync"}, "from-boxsync"),
        ({"API_KEY": "from-api"}, "from-api"),
        ({"BOXSYNC_API_KEY": "first", "API_KEY": "second"}, "first"),
        ({"BOXSYNC_API_KEY": "", "API_KEY": "second"}, "second"),
    ],
)
def test_key_from_environment(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: str) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert parse()["api-key"] == expected


def test_key_option_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXSYNC_API_KEY", "from-env")
    assert parse("--api-key", "given")["api-key"] == "given"


@pytest.mark.parametrize("argv", [(), ("--api-key", "")])
def test_refuses_to_run_without_a_key(argv: tuple[str, ...]) -> None:
    with pytest.raises(UsageError, match="--insecure-no-auth"):
        parse(*argv)


def test_insecure_no_auth_runs_without_a_key() -> None:
    options = parse("--insecure-no-auth")
    assert options["insecure-no-auth"]
    assert not options["api-key"]


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.1:9000", "tcp:9000:interface=127.0.0.1:backlog=4096"),
        ("0.0.0.0:80", "tcp:80:interface=0.0.0.0:backlog=4096"),
        (":9000", "tcp:9000:backlog=4096"),
        ("9000", "tcp:9000:backlog=4096"),
        ("[::1]:9000", "tcp:9000:interface=\\:\\:1:backlog=4096"),
        (" localhost:9000 ", "tcp:9000:interface=localhost:backlog=4096"),
    ],
)
def test_server_address_without_listen(monkeypatch: pytest.MonkeyPatch, address: str, expected: str) -> None:
    from twisted.internet import reactor

    monkeypatch.setenv("SERVER_ADDRESS", address)
    listen = parse("--api-key", "k")["listen"]
    assert listen == [expected]
    # What it made is an endpoint Twisted can build.
    serverFromString(reactor, listen[0])


def test_listen_beats_server_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_ADDRESS", "0.0.0.0:9000")
    assert parse("--api-key", "k", "--listen", "tcp:1")["listen"] == ["tcp:1"]


def test_empty_server_address_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_ADDRESS", "")
    assert parse("--api-key", "k")["listen"] == [tap.DEFAULT_LISTEN]


@pytest.mark.parametrize("address", ["host:", "host:port", "127.0.0.1"])
def test_bad_server_address(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("SERVER_ADDRESS", address)
    with pytest.raises(UsageError, match="SERVER_ADDRESS"):
        parse("--api-key", "k")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("100", 100),
        ("10k", 10 * 2**10),
        ("10K", 10 * 2**10),
        ("1.5M", int(1.5 * 2**20)),
        ("10G", 10 * 2**30),
        ("10GB", 10 * 2**30),
        ("10GiB", 10 * 2**30),
        ("2T", 2 * 2**40),
        (" 7 ", 7),
    ],
)
def test_max_upload_sizes(value: str, expected: int) -> None:
    assert parse("--api-key", "k", "--max-upload", value)["max-upload"] == expected


@pytest.mark.parametrize("value", ["", "G", "ten", "10X", "10 G G", "1e", "0", "-5", "-1G"])
def test_bad_max_upload(value: str) -> None:
    with pytest.raises(UsageError):
        parse("--api-key", "k", "--max-upload", value)


@pytest.mark.parametrize("value, expected", [("0", 0.0), ("2.5", 2.5)])
def test_status_interval(value: str, expected: float) -> None:
    assert parse("--api-key", "k", "--status-interval", value)["status-interval"] == expected


def test_bad_status_interval() -> None:
    with pytest.raises(UsageError):
        parse("--api-key", "k", "--status-interval", "often")


@pytest.mark.parametrize("argv", [("--no-such-option",), ("--api-key", "k", "extra-argument")])
def test_bad_arguments(argv: tuple[str, ...]) -> None:
    with pytest.raises(UsageError):
        parse(*argv)


def test_usage_names_every_option() -> None:
    usage = str(tap.Options())
    for option in ("--listen", "--box", "--api-key", "--max-upload", "--status-interval", "--insecure-no-auth"):
        assert option in usage
    assert "BOXSYNC_API_KEY" in usage and "SERVER_ADDRESS" in usage


def test_twistd_finds_the_plugin() -> None:
    found = [maker for maker in getPlugins(IServiceMaker) if maker.tapname == "boxsync"]
    assert len(found) == 1
    maker = found[0]
    assert maker.options is tap.Options
    assert maker.makeService is tap.makeService
    assert maker.description


def _service(tmp_path: Path, *argv: str) -> Any:
    options = parse(
        "--box", str(tmp_path / "box"), "--listen", "tcp:0:interface=127.0.0.1", "--status-interval", "0.05", *argv
    )
    service = tap.makeService(options)
    assert IService.providedBy(service)
    return service


@pytest_twisted.ensureDeferred
async def test_make_service_serves(tmp_path: Path, reactor: Any, http: Any) -> None:
    service = _service(tmp_path, "--api-key", "secret", "--max-upload", "1k", "--listen", "tcp:0:interface=127.0.0.1")
    assert service.config.max_upload == 1024
    assert service.config.status_seconds == 0.05
    service.startService()
    try:
        await timed(service.ready, reactor)
        assert len(service.ports) == 2
        for port in service.ports:
            url = f"http://127.0.0.1:{port.getHost().port}"
            response = await timed(http.get(f"{url}/healthz"), reactor)
            assert response.code == 200
            await response.text()
        response = await timed(http.get(f"{url}/files/a.txt"), reactor)
        assert response.code == 401
        await response.text()
        response = await timed(
            http.put(f"{url}/files/big.bin", data=b"x" * 2000, headers={"Authorization": "Bearer secret"}), reactor
        )
        assert response.code == 413
        await response.text()
        # Let the status line run at least once.
        await timed(_sleep(reactor, 0.1), reactor)
    finally:
        await timed(service.stopService(), reactor)
    assert (tmp_path / "box" / ".boxsync").is_dir()


def test_make_service_without_auth(tmp_path: Path) -> None:
    service = _service(tmp_path, "--insecure-no-auth")
    assert service.config.auth.key is None
    assert service.config.auth.authenticate(None).account


def test_make_service_with_key_checks_it(tmp_path: Path) -> None:
    service = _service(tmp_path, "--insecure-no-auth", "--api-key", "still-checked")
    assert service.config.auth.key == "still-checked"
    with pytest.raises(Forbidden):
        service.config.auth.authenticate(b"Bearer wrong")


def _sleep(reactor: Any, seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


@pytest.mark.parametrize("program", ["twistd", "twist"])
def test_a_server_that_cannot_start_exits_with_a_failure(tmp_path: Path, program: str) -> None:
    """
    A port already taken (or a missing TLS key) ends the process with
    status 70, so systemd's Restart=on-failure and scripts see it.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = {
            "twistd": [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n"],
            "twist": [sys.executable, "-m", "twisted"],
        }[program]
        ran = subprocess.run(
            [*command, "boxsync", "--box", str(tmp_path / "box"), "--api-key", "k",
             "--listen", f"tcp:{port}:interface=127.0.0.1"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )
    assert ran.returncode == tap.START_FAILED, ran.stdout + ran.stderr
    assert "the server could not start" in ran.stdout + ran.stderr


def test_index_defaults_to_sqlite_in_the_box(tmp_path: Path) -> None:
    service = _service(tmp_path, "--api-key", "k")
    assert service.config.index is None
    assert service.index.path == tmp_path / "box" / ".boxsync" / "index.sqlite"


def test_index_in_postgresql(tmp_path: Path) -> None:
    from boxsync.server.pgindex import PostgresIndex

    url = "postgresql://boxsync@db.example:5433/boxsync"
    service = _service(tmp_path, "--api-key", "k", "--index", url)
    assert isinstance(service.index, PostgresIndex) and service.index.url == url


def test_index_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXSYNC_INDEX", "postgres:///boxsync")
    assert parse("--api-key", "k")["index"] == "postgres:///boxsync"


@pytest.mark.parametrize(
    "url, why",
    [
        ("sqlite:///srv/index", "not a postgresql:// URL"),
        ("postgresql://db/boxsync?nonsense=1", "nonsense"),
        ("postgresql://us%zzer:secret@db/boxsync", "percent"),
    ],
)
def test_bad_index(url: str, why: str) -> None:
    with pytest.raises(UsageError, match=f"^--index: .*{why}") as raised:
        parse("--api-key", "k", "--index", url)
    # A password in it is not repeated.
    assert "secret" not in str(raised.value) and "\n" not in str(raised.value)


def test_index_in_postgresql_without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boxsync.server.pgindex", None)
    with pytest.raises(UsageError, match=r"needs psycopg: pip install 'boxsync\[cluster\]'"):
        parse("--api-key", "k", "--index", "postgresql://db/boxsync")


def test_a_client_s_synced_folder_is_not_a_box(tmp_path: Path) -> None:
    """
    The box given is a folder a client syncs: refused before anything is
    written in it (the client's own check refuses a server's box likewise).
    """
    folder = tmp_path / "laptop"
    (folder / ".boxsync").mkdir(parents=True)
    (folder / ".boxsync" / "state.sqlite").write_bytes(b"")
    with pytest.raises(UsageError, match="a folder a boxsync client syncs, not a box"):
        parse("--api-key", "k", "--box", str(folder))
    assert sorted(p.name for p in (folder / ".boxsync").iterdir()) == ["state.sqlite"]


@pytest.mark.parametrize("marker, what", [("state.sqlite", "a folder a boxsync client syncs"), ("server.lock", "another box")])
def test_a_box_inside_a_synced_folder_or_another_box_is_refused(tmp_path: Path, marker: str, what: str) -> None:
    """
    A box below a client's folder, or below another box, would have its
    files synced back into itself: refused, naming the folder above, before
    anything is made. A folder beside one is a box as any.
    """
    (tmp_path / "above" / ".boxsync").mkdir(parents=True)
    (tmp_path / "above" / ".boxsync" / marker).write_bytes(b"")
    box = tmp_path / "above" / "deeper" / "box"
    with pytest.raises(UsageError, match=f"^--box {box}: inside {what}, {tmp_path / 'above'}: give a folder outside it$"):
        parse("--api-key", "k", "--box", str(box))
    assert not (tmp_path / "above" / "deeper").exists()
    assert parse("--api-key", "k", "--box", str(tmp_path / "beside"))["box"] == str(tmp_path / "beside")


@pytest.mark.parametrize(
    "box, says",
    [
        # "$BOX" with BOX unset: not the current folder.
        ("", "an empty name (is a variable that names it unset?)"),
        ("/", "/ is the root of the file system: give a folder of its own"),
        ("/tmp/..", "/tmp/.. is the root of the file system: give a folder of its own"),
    ],
)
def test_an_empty_name_or_the_root_is_no_box(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, box: str, says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=f"^--box: {re.escape(says)}$"):
        parse("--api-key", "k", "--box", box)
    assert list(tmp_path.iterdir()) == [] and not Path("/.boxsync").exists()
