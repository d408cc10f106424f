"""
Configuration: every option from the command line, the environment and a TOML
file, in that order (boxsync.config, shared by the client and the server), the
help that lists them, the example files, and the systemd units.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python.usage import UsageError

from boxsync.client import cli
from boxsync.config import ConfigError, Setting, load, resolve, seconds, size, usage_flags, whole
from boxsync.server import tap

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib"

SETTINGS = [
    Setting("size", 1, "a number", int),
    Setting("word", "w", "a word", env=("FIRST", "SECOND")),
    Setting("switch", False, "a flag", flag=True),
    Setting("many", ["a"], "a list", multiple=True),
    Setting("loud", 0, "a count", int, count=True),
]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# boxsync.config


def test_precedence(tmp_path: Path) -> None:
    file = load(write(tmp_path / "c.toml", 'size = 3\nword = "file"\nswitch = true\nmany = ["f1", "f2"]\n'), SETTINGS)
    assert resolve(SETTINGS, {}, {}, {}) == {"size": 1, "word": "w", "switch": False, "many": ["a"], "loud": 0}
    assert resolve(SETTINGS, {}, {}, file) == {"size": 3, "word": "file", "switch": True, "many": ["f1", "f2"], "loud": 0}
    environ = {"BOXSYNC_SIZE": "4", "SECOND": "env2", "BOXSYNC_SWITCH": "no", "BOXSYNC_MANY": "e1 e2"}
    assert resolve(SETTINGS, {}, environ, file) == {"size": 4, "word": "env2", "switch": False, "many": ["e1", "e2"], "loud": 0}
    assert resolve(SETTINGS, {}, {**environ, "FIRST": "env1"}, file)["word"] == "env1"
    given = {"size": "5", "word": "cli", "switch": True, "many": ["c"], "loud": 0}
    assert resolve(SETTINGS, given, environ, file) == {"size": 5, "word": "cli", "switch": True, "many": ["c"], "loud": 0}


def test_negations_switch_off_what_the_environment_or_a_file_turned_on(tmp_path: Path) -> None:
    file = load(write(tmp_path / "c.toml", "switch = true\nloud = 2\n"), SETTINGS)
    environ = {"BOXSYNC_SWITCH": "yes", "BOXSYNC_LOUD": "3"}
    assert [resolve(SETTINGS, {}, {}, file)[n] for n in ("switch", "loud")] == [True, 2]
    assert [resolve(SETTINGS, {}, environ, file)[n] for n in ("switch", "loud")] == [True, 3]
    off = {"no-switch": True, "no-loud": True}
    assert [resolve(SETTINGS, off, environ, file)[n] for n in ("switch", "loud")] == [False, 0]
    assert [resolve(SETTINGS, off, {}, file)[n] for n in ("switch", "loud")] == [False, 0]
    # Unset negations (argparse's None, usage's 0) change nothing.
    assert resolve(SETTINGS, {"no-switch": 0, "no-loud": None}, environ, {})["switch"] is True
    assert resolve(SETTINGS, {"loud": 1, "no-switch": False}, environ, {})["loud"] == 1


@pytest.mark.parametrize("given", [{"switch": True, "no-switch": True}, {"loud": 2, "no-loud": True}])
def test_a_switch_and_its_negation_contradict(given: dict) -> None:
    name = next(iter(given))
    with pytest.raises(ConfigError, match=f"--{name} and --no-{name} contradict each other"):
        resolve(SETTINGS, given, {}, {})


def test_negations_are_only_for_switches_and_counts() -> None:
    assert [s.negation for s in SETTINGS] == [None, None, "no-switch", None, "no-loud"]
    assert SETTINGS[2].describe_negation() == "turn --switch off, whatever BOXSYNC_SWITCH or a file says"
    capital = Setting("quiet-mode", False, "Say less.", env=("A", "B"), flag=True, short="Q")
    assert capital.describe_negation() == "Turn --quiet-mode off, whatever A or B or a file says."
    assert usage_flags([*SETTINGS, capital]) == [
        ["switch", None, SETTINGS[2].describe()],
        ["no-switch", None, SETTINGS[2].describe_negation()],
        ["quiet-mode", "Q", capital.describe()],
        ["no-quiet-mode", None, capital.describe_negation()],
    ]


def test_empty_environment_variables_are_unset() -> None:
    assert resolve(SETTINGS, {}, {"BOXSYNC_SIZE": "", "FIRST": "", "SECOND": "x"}, {}) == {
        "size": 1, "word": "x", "switch": False, "many": ["a"], "loud": 0,
    }


def test_underscores_and_numbers_in_files(tmp_path: Path) -> None:
    settings = [Setting("max-upload", None, "x"), Setting("rate", 1.0, "x", float)]
    values = load(write(tmp_path / "c.toml", "max_upload = 1024\nrate = 2.5\n"), settings)
    assert values == {"max-upload": "1024", "rate": "2.5"}
    assert resolve(settings, {}, {}, values)["rate"] == 2.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("size = ", "is not valid TOML"),
        ("colour = 1", "unknown key 'colour'"),
        ("switch = 1", "switch must be true or false"),
        ("many = [1]", "many must be a string or a list of strings"),
        ("size = true", "size must be a string or a number"),
        ("word = {a = 1}", "word must be a string or a number"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError, match=message) as raised:
        load(path, SETTINGS)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file .*missing.toml"):
        load(tmp_path / "missing.toml", SETTINGS)
    write(tmp_path / "bin.toml", "").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path / "bin.toml", SETTINGS)


@pytest.mark.parametrize(
    "given, environ, file, message",
    [
        ({"size": "x"}, {}, {}, "--size: invalid literal"),
        ({}, {"BOXSYNC_SIZE": "x"}, {}, "BOXSYNC_SIZE: invalid literal"),
        ({}, {}, {"size": "x"}, "c.toml: size: invalid literal"),
        ({}, {"BOXSYNC_SWITCH": "maybe"}, {}, "BOXSYNC_SWITCH: expected 1/0"),
    ],
)
def test_bad_values_name_their_source(given: dict, environ: dict, file: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(SETTINGS, given, environ, file, "c.toml")


# The client


def test_client_precedence(tmp_path: Path) -> None:
    home = tmp_path / "xdg"
    write(home / "boxsync/client.toml", 'server = "http://file:1/"\ntoken = "file"\nname = "file"\nfolder = "~/f"\ntransfers = 2\nonce = true\n')
    environ = {"XDG_CONFIG_HOME": str(home), "HOME": str(tmp_path)}
    options = cli.parse([], environ)
    assert (options.server, options.token, options.name, options.transfers, options.once) == (
        "http://file:1", "file", "file", 2, True,
    )
    assert options.folder == Path("~/f").expanduser() and options.config == home / "boxsync/client.toml"
    options = cli.parse([], {**environ, "BOXSYNC_TOKEN": "env", "BOXSYNC_TRANSFERS": "3"})
    assert (options.token, options.transfers, options.server) == ("env", 3, "http://file:1")
    options = cli.parse(["--token", "cli", "--transfers", "5", "here"], {**environ, "BOXSYNC_TOKEN": "env"})
    assert (options.token, options.transfers, options.folder) == ("cli", 5, Path("here"))


def test_a_configuration_file_that_cannot_be_looked_for_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """
    The default file is in a home folder that cannot be looked into (here,
    a name too long; as a user, another user's home, which root, running
    the tests, can look into): one line that says which file and what to
    do, not a traceback.
    """
    with pytest.raises(SystemExit) as exited:
        cli.parse(["--server", "http://s:1", "--token", "t", "f"], {"HOME": "/" + "h" * 300})
    assert exited.value.code == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"cannot look for the configuration file /h+/\.config/boxsync/client\.toml: .*--config", said)


def test_client_bandwidth_limits(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    options = cli.parse([], {}, config=absent)
    assert (options.limit_up, options.limit_down) == (None, None)
    options = cli.parse(["--limit-up", "500K"], {"BOXSYNC_LIMIT_DOWN": "2MiB"}, config=absent)
    assert (options.limit_up, options.limit_down) == (500 * 1024, 2 * 2**20)
    file = write(tmp_path / "client.toml", 'limit-up = "1.5M"\nlimit_down = 300000\n')
    options = cli.parse([], {}, config=file)
    assert (options.limit_up, options.limit_down) == (int(1.5 * 2**20), 300_000)
    # 0 turns off a limit the environment or a file sets.
    assert cli.parse(["--limit-up", "0"], {}, config=file).limit_up is None

def test_client_switches_off_on_the_command_line(tmp_path: Path) -> None:
    config = write(tmp_path / "client.toml", "once = true\ninsecure = true\nquiet = 1\n")
    environ = {"BOXSYNC_VERBOSE": "1", "BOXSYNC_ONCE": "1"}
    options = cli.parse([], environ, config=config)
    assert (options.once, options.insecure, options.verbosity) == (True, True, 0)
    options = cli.parse(["--no-verbose", "--no-once", "--no-insecure"], environ, config=config)
    assert (options.once, options.insecure, options.verbosity) == (False, False, -1)
    assert cli.parse(["--no-quiet", "-vv"], environ, config=config).verbosity == 2
    options = cli.parse(["ls", "--no-insecure", "--no-verbose"], {"BOXSYNC_INSECURE": "on", **environ}, config=config)
    assert (options.insecure, options.verbosity) == (False, -1)
    assert cli.parse(["status", "--no-quiet"], environ, config=config).verbosity == 1


@pytest.mark.parametrize("argv", [["--once", "--no-once"], ["-v", "--no-verbose"], ["ls", "--insecure", "--no-insecure"]])
def test_client_switch_and_negation_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parse(argv, {}, config=tmp_path / "absent.toml")
    assert exited.value.code == 2
    assert "contradict each other" in capsys.readouterr().err


def test_client_tls_settings(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    options = cli.parse([], {}, config=absent)
    assert (options.cacert, options.insecure) == (None, False)
    options = cli.parse([], {"BOXSYNC_CACERT": "~/ca.pem", "BOXSYNC_INSECURE": "yes"}, config=absent)
    assert (options.cacert, options.insecure) == (Path("~/ca.pem").expanduser(), True)
    file = write(tmp_path / "client.toml", 'cacert = "/etc/ca.pem"\n')
    options = cli.parse(["ls", "--cacert", "mine.pem", "--insecure"], {}, config=file)
    assert (options.cacert, options.insecure) == (Path("mine.pem"), True)
    assert cli.parse(["ls"], {}, config=file).cacert == Path("/etc/ca.pem")


def test_client_config_named(tmp_path: Path) -> None:
    named = write(tmp_path / "other.toml", 'token = "other"\nrescan = 7\n')
    injected = write(tmp_path / "injected.toml", 'token = "injected"\n')
    assert cli.parse([], {}, config=injected).token == "injected"
    assert cli.parse([], {"BOXSYNC_CONFIG": str(named)}, config=injected).token == "other"
    options = cli.parse(["--config", str(named)], {}, config=injected)
    assert (options.token, options.rescan_seconds, options.config) == ("other", 7.0, named)
    assert cli.parse([], {}, config=tmp_path / "absent.toml").config is None


@pytest.mark.parametrize(
    "argv, text, message",
    [
        (["--config", "{tmp}/absent.toml"], None, "cannot read the configuration file"),
        ([], "transfers = 0", "transfers: must be at least 1"),
        ([], "rescan = -1", "rescan: a number of seconds must be positive"),
        ([], "speed = 1", "unknown key 'speed'"),
        (["--idle-timeout", "inf"], "", "--idle-timeout: a number of seconds must be positive"),
        (["--limit-up", "fast"], "", "--limit-up: "),
        ([], 'limit-down = "-1K"', "limit-down: a size must be positive"),
    ],
)
def test_client_bad_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], text: str | None, message: str
) -> None:
    config = tmp_path / "client.toml"
    if text is not None:
        write(config, text)
    with pytest.raises(SystemExit) as exited:
        cli.parse([arg.format(tmp=tmp_path) for arg in argv], {}, config=config)
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error and error.startswith("boxsync-client: error:")


def test_client_commands_and_folders_named_like_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    absent = tmp_path / "absent.toml"
    assert cli.parse(["status", "here"], {}, config=absent).command == "status"
    assert cli.parse(["ls", "--server", "http://s"], {}, config=absent).server == "http://s"
    options = cli.parse(["./status"], {}, config=absent)
    assert (options.command, options.folder) == ("sync", Path("status"))
    with pytest.raises(SystemExit):
        cli.parse(["--once", "ls"], {}, config=absent)
    assert "give it as ./ls" in capsys.readouterr().err
    # ls takes a path in the box, not a folder here.
    assert cli.parse(["ls", "somewhere"], {}, config=absent).path == "somewhere"
    assert cli.parse(["ls"], {}, config=absent).path is None
    with pytest.raises(SystemExit):
        cli.parse(["ls", "one", "two"], {}, config=absent)


@pytest.mark.parametrize("command", ["", "status", "ls"])
def test_client_help_lists_every_option(command: str) -> None:
    argv = [sys.executable, "-m", "boxsync.client", *([command] if command else []), "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split()).replace("- ", "-")
    taken = cli._TAKES[command or "sync"]
    for setting in cli.SETTINGS:
        if setting.name not in taken:
            assert f"--{setting.name}" not in text
            continue
        assert f"; env {setting.variables[0]}; config key {setting.name}]" in text
        before = text.split(f"; env {setting.variables[0]}; config key {setting.name}]")[0]
        assert "[default: " in before.rsplit("]", 1)[-1]
        if setting.negation is not None:
            assert f"--{setting.negation} {setting.describe_negation()}" in text
    assert "--config FILE" in text and "BOXSYNC_CONFIG" in text


# The server


@pytest.fixture
def server_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("BOXSYNC_API_KEY", "API_KEY", "SERVER_ADDRESS", "BOXSYNC_LISTEN", "BOXSYNC_BOX", tap.CONFIG_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tap, "SYSTEM_CONFIG", tmp_path / "etc/server.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


def server_options(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_a_server_configuration_file_that_cannot_be_looked_for_is_one_line(
    server_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "/" + "x" * 300)
    with pytest.raises(UsageError, match=r"cannot look for the configuration file /x+/boxsync/server\.toml"):
        server_options("--box", "b")


def test_server_precedence(server_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = write(server_environment / "etc/server.toml", 'api-key = "system"\nbox = "/srv/box"\nlisten = "tcp:1"\nkeepalive = 5\n')
    options = server_options()
    assert (options["api-key"], options["box"], options["listen"], options["keepalive"]) == ("system", "/srv/box", ["tcp:1"], 5.0)
    assert options["config"] == system
    monkeypatch.setenv("BOXSYNC_BOX", "/env/box")
    monkeypatch.setenv("SERVER_ADDRESS", "127.0.0.1:9000")
    options = server_options("--api-key", "cli")
    assert (options["api-key"], options["box"]) == ("cli", "/env/box")
    assert options["listen"] == ["tcp:9000:interface=127.0.0.1:backlog=4096"]
    monkeypatch.setenv("BOXSYNC_LISTEN", "tcp:2 unix:/run/b.sock")
    assert server_options()["listen"] == ["tcp:2", "unix:/run/b.sock"]
    assert server_options("--listen", "tcp:3")["listen"] == ["tcp:3"]


def test_server_switches_off_on_the_command_line(server_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(server_environment / "xdg/boxsync/server.toml", "insecure-no-auth = true\n")
    assert server_options()["insecure-no-auth"] is True
    with pytest.raises(UsageError, match="no key"):
        server_options("--no-insecure-no-auth")
    monkeypatch.setenv("BOXSYNC_INSECURE_NO_AUTH", "1")
    options = server_options("--no-insecure-no-auth", "--api-key", "k")
    assert (options["insecure-no-auth"], options["api-key"]) == (False, "k")
    with pytest.raises(UsageError, match="--insecure-no-auth and --no-insecure-no-auth contradict each other"):
        server_options("--insecure-no-auth", "--no-insecure-no-auth")


def test_server_config_lookup(server_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="no key"):
        server_options()
    user = write(server_environment / "xdg/boxsync/server.toml", 'api-key = "user"\ninsecure_no_auth = true\n')
    options = server_options()
    assert (options["api-key"], options["insecure-no-auth"], options["config"]) == ("user", True, user)
    named = write(server_environment / "named.toml", "max-upload = '1k'\ninsecure-no-auth = true\n")
    monkeypatch.setenv(tap.CONFIG_VARIABLE, str(named))
    assert server_options()["max-upload"] == 1024
    assert server_options("--config", str(user))["api-key"] == "user"


@pytest.mark.parametrize(
    "text, message",
    [
        ("api-key = 'k'\nmax-upload = 'lots'", "max-upload: 'lots' is not a size"),
        ("api-key = 'k'\nport = 1", "unknown key 'port'"),
        ("api-key = ", "is not valid TOML"),
    ],
)
def test_server_bad_configuration(server_environment: Path, text: str, message: str) -> None:
    path = write(server_environment / "bad.toml", text)
    with pytest.raises(UsageError, match=message) as raised:
        server_options("--config", str(path))
    assert "\n" not in str(raised.value)
    with pytest.raises(UsageError, match="cannot read"):
        server_options("--config", str(server_environment / "absent.toml"))


def test_server_help_lists_every_option() -> None:
    # Long names are broken after a hyphen to fit the lines.
    usage = " ".join(str(tap.Options()).split()).replace("- ", "-")
    for setting in tap.SETTINGS:
        assert f"--{setting.name}" in usage
        assert f"env {' or '.join(setting.variables)}; config key {setting.name}]" in usage
        if setting.negation is not None:
            assert f"--{setting.negation} {setting.describe_negation()}" in usage
    assert "--config" in usage and tap.CONFIG_VARIABLE in usage and str(tap.SYSTEM_CONFIG) in usage


def test_twistd_reports_a_bad_file_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "server.toml", "api-key = 'k'\nspeed = 'fast'\n")
    twistd = Path(sys.executable).parent / "twistd"
    result = subprocess.run(
        [str(twistd), "-n", "--pidfile=", "boxsync", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert f"{path}: unknown key 'speed'" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# The example files and the systemd units


def test_example_configurations_load(server_environment: Path) -> None:
    server = load(CONTRIB / "config/server.toml", tap.SETTINGS)
    assert server["box"] == "/var/lib/boxsync/box" and server["listen"][0].startswith("ssl:")
    options = server_options("--config", str(CONTRIB / "config/server.toml"))
    assert options["max-upload"] == 50 * 2**30
    client = cli.parse([], {}, config=CONTRIB / "config/client.toml")
    assert client.server == "https://box.example.org:8443"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((CONTRIB / "systemd" / name).read_text(encoding="utf-8"))
    return parser


def test_server_unit() -> None:
    service = unit("boxsync-server.service")["Service"]
    assert service["User"] == "boxsync" and service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/boxsync"
    for key in ("ProtectHome", "NoNewPrivileges", "PrivateTmp"):
        assert service[key] == "yes"
    assert "twistd -n --pidfile= boxsync --config /etc/boxsync/server.toml" in service["ExecStart"]
    assert unit("boxsync-server.service")["Install"]["WantedBy"] == "multi-user.target"


def test_client_unit() -> None:
    parsed = unit("boxsync-client@.service")
    assert parsed["Service"]["ExecStart"] == "%h/.local/bin/boxsync-client %h/%I"
    assert parsed["Service"]["EnvironmentFile"] == "-%h/.config/boxsync/%i.env"
    assert parsed["Install"]["WantedBy"] == "default.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize(
    "name, instance, executable",
    [
        ("boxsync-server.service", "boxsync-server.service", ("/opt/boxsync/bin/twistd", "twistd")),
        ("boxsync-client@.service", "boxsync-client@Documents.service", ("%h/.local/bin/boxsync-client", "boxsync-client")),
    ],
)
def test_units_verify(tmp_path: Path, name: str, instance: str, executable: tuple[str, str]) -> None:
    # The programs installed beside this Python stand in for the ones the
    # units name, which systemd-analyze checks exist.
    text = (CONTRIB / "systemd" / name).read_text(encoding="utf-8")
    text = text.replace(executable[0], str(Path(sys.executable).parent / executable[1]))
    write(tmp_path / instance, text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / instance)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize(
    "given, expected",
    [("500", 500), ("500K", 500 * 1024), ("1.5M", 3 * 2**19), ("2GiB", 2 * 2**30), (" 1kb ", 1024)],
)
def test_a_size_is_read_in_multiples_of_1024(given: str, expected: int) -> None:
    assert size(given) == expected


@pytest.mark.parametrize("given", ["5Q", "", "K", "fast", "1.5"])
def test_what_is_not_a_size_is_said_in_one_line_with_an_example(given: str) -> None:
    with pytest.raises(ValueError) as raised:
        size(given)
    message = str(raised.value)
    assert repr(given) in message and "500K" in message and "\n" not in message


@pytest.mark.parametrize("given", ["0", "-5K"])
def test_a_size_must_be_positive(given: str) -> None:
    with pytest.raises(ValueError, match="positive"):
        size(given)


def test_seconds_and_whole_numbers_are_read_or_refused_in_one_line() -> None:
    assert seconds("30") == 30.0 and seconds("0.5") == 0.5
    assert whole("4", least=1) == 4 and whole("0") == 0
    for bad, parse, words in [
        ("x", seconds, "'x' is not a number of seconds"),
        ("0", seconds, "must be positive, not '0'"),
        ("inf", seconds, "must be positive, not 'inf'"),
        ("abc", whole, "must be a whole number, not 'abc'"),
        ("1.5", whole, "must be a whole number, not '1.5'"),
        ("-1", whole, "must be at least 0, not '-1'"),
    ]:
        with pytest.raises(ValueError) as raised:
            parse(bad)  # type: ignore[operator]
        assert words in str(raised.value)
