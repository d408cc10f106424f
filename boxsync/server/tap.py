"""
``twistd boxsync``: the server's command-line options and service maker.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any, Mapping, cast

from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from ..config import (
    ConfigError,
    Setting,
    config_home,
    find_config,
    folder,
    load,
    resolve,
    seconds,
    size,
    usage_flags,
    whole,
)
from ..paths import CLIENT_STATE_FILE, HIDDEN_DIR, SERVER_LOCK_FILE, marked_above
from .adopt import LOOK_SECONDS
from .auth import ApiKeyAuth
from .hub import MAX_STREAMS_PER_TOKEN
from .retention import KEEP_VERSIONS, THIN_VERSIONS, HistoryMax, Retention, Thinning, parse_duration
from .limits import (
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_ENTRIES,
    MAX_UPLOAD,
    ConnectionLimits,
)
from .tokens import SecretError, load_secret, secret_path

__all__ = ["Options", "index_url", "makeService"]

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1:backlog=4096"


def _count(value: str) -> int:
    return whole(value, least=0)


def index_url(url: str) -> str:
    """
    C{url} if it names a PostgreSQL database the index can be in.
    """
    try:
        from .pgindex import check_url
    except ImportError:
        raise ValueError("an index in PostgreSQL needs psycopg: pip install 'boxsync[cluster]'") from None
    return check_url(url)


def store_url(url: str) -> str:
    """
    C{url} if it names an S3 bucket the blocks can be kept in.
    """
    from .s3store import parse_store_url

    parse_store_url(url)
    return url


def _listen_on(address: str) -> str:
    """
    The endpoint for C{SERVER_ADDRESS}, as the old server read it:
    C{host:port}, C{[v6 address]:port} or C{:port} (every interface).
    """
    host, _, port = address.strip().rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise usage.UsageError(f"SERVER_ADDRESS={address!r} is not host:port") from None
    host = host.removeprefix("[").removesuffix("]")
    interface = f":interface={quoteStringArgument(host)}" if host else ""
    return f"tcp:{number}{interface}:backlog=4096"


#: The server's configuration file, if it exists and none is named.
SYSTEM_CONFIG = Path("/etc/boxsync/server.toml")

#: The environment variable that names the configuration file.
CONFIG_VARIABLE = "BOXSYNC_SERVER_CONFIG"

SETTINGS = [
    Setting("box", "./box", "The folder with the shared files.", lambda text: str(folder(text)), short="b"),
    Setting(
        "api-key",
        None,
        "The key clients must present (Authorization: Bearer KEY).",
        env=("BOXSYNC_API_KEY", "API_KEY"),
        short="k",
    ),
    Setting("max-upload", MAX_UPLOAD, "Largest upload accepted, e.g. 50G.", size),
    Setting("status-interval", 60.0, "Seconds between status lines in the log (0: none).", float),
    Setting(
        "look-interval",
        LOOK_SECONDS,
        "Seconds between looks at the box for files a person changed in it by hand (0: only at start-up).",
        float,
    ),
    Setting("keepalive", 15.0, "Seconds between keep-alive comments on idle event streams.", seconds),
    Setting("max-manifest", MAX_MANIFEST_BYTES, "Largest POST /sync body (manifest) accepted, e.g. 64M.", size),
    Setting("max-manifest-entries", MAX_MANIFEST_ENTRIES, "Most files one manifest may list.", size),
    Setting(
        "idle-timeout",
        ConnectionLimits().idle_timeout,
        "Seconds a connection may send nothing before or inside a request.",
        seconds,
    ),
    Setting(
        "min-rate",
        ConnectionLimits().min_rate,
        f"Bytes per second a request must arrive at, over each {ConnectionLimits().window:g} s "
        "(0: no minimum).",
        _count,
    ),
    Setting(
        "progress-interval",
        ConnectionLimits().progress_interval,
        "Seconds between the 102 Processing answers that tell a client its upload is still arriving.",
        seconds,
    ),
    Setting(
        "keep-versions",
        KEEP_VERSIONS,
        "How long an overwritten or deleted version is kept, e.g. 30d, 12h (0: not kept).",
        parse_duration,
    ),
    Setting(
        "thin-versions",
        Thinning.parse(THIN_VERSIONS),
        f"How kept versions thin out as they age: AGE:EVERY steps, e.g. {THIN_VERSIONS} (one per 30 s "
        "for an hour, one per hour for a day, then one per day); off: keep every one.",
        Thinning.parse,
    ),
    Setting(
        "history-max",
        HistoryMax(),
        "The most the kept versions may take, as a size (50G) or a share of the disk (10%); "
        "the oldest go first. Default: no limit but --keep-versions (and a full disk, on which "
        "the oldest go until 5% of it is free).",
        HistoryMax.parse,
    ),
    Setting(
        "index",
        None,
        "Keep the index in PostgreSQL, shared by several servers: postgresql://USER@HOST:PORT/DATABASE "
        "(what the URL leaves out comes from the PG* environment variables and ~/.pgpass; needs "
        "boxsync[cluster]). Default: SQLite, in the box.",
        index_url,
    ),
    Setting(
        "store",
        None,
        "Keep the blocks clients send in an S3 bucket every server reads: "
        "s3://BUCKET?endpoint=http://HOST:PORT&region=REGION (credentials from AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, or where boto3 finds them; needs boxsync[cluster]). Default: in the box.",
        store_url,
    ),
    Setting("insecure-no-auth", False, "Serve without any key: everyone gets in.", flag=True),
    Setting(
        "tokens",
        False,
        "Serve several accounts, one folder each in the box, to clients with signed "
        "tokens made by boxsync-admin (instead of one key).",
        flag=True,
    ),
    Setting(
        "max-streams-per-token",
        MAX_STREAMS_PER_TOKEN,
        "Most event streams one token may hold open at once.",
        size,
    ),
    Setting(
        "listen",
        [DEFAULT_LISTEN],
        "An endpoint to listen on, e.g. tcp:8080:interface=127.0.0.1, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem or unix:/run/boxsync.sock "
        "(repeatable; several in the environment are separated by spaces; "
        "without it SERVER_ADDRESS=host:port is honoured).",
        multiple=True,
    ),
]
_BY_NAME = {setting.name: setting for setting in SETTINGS}


def config_candidates(environ: Mapping[str, str]) -> list[Path]:
    """
    Where the server looks for its configuration file when none is named.
    """
    return [SYSTEM_CONFIG, config_home(environ) / "boxsync" / "server.toml"]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve a boxsync box. Every option can also come from the environment "
        "(BOXSYNC_<OPTION>, e.g. BOXSYNC_API_KEY, or API_KEY for the key) or "
        f"from a TOML file ({SYSTEM_CONFIG}, else $XDG_CONFIG_HOME/boxsync/server.toml, "
        "or --config), in that order after the command line. Without --listen, "
        "SERVER_ADDRESS=host:port is honoured."
    )
    optParameters = [
        [setting.name, setting.short, None, setting.describe()]
        for setting in SETTINGS
        if not (setting.flag or setting.multiple)
    ] + [
        [
            "config",
            None,
            None,
            f"A TOML file of options [default: {SYSTEM_CONFIG} if it exists, else "
            f"$XDG_CONFIG_HOME/boxsync/server.toml if it exists; env {CONFIG_VARIABLE}]",
        ],
    ]
    optFlags = usage_flags(SETTINGS)

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        self["listen"].append(description)

    opt_listen.__doc__ = _BY_NAME["listen"].describe()

    def postOptions(self) -> None:
        environ: dict[str, str] = dict(os.environ)
        address = environ.get("SERVER_ADDRESS")
        if address and not self["listen"] and not environ.get("BOXSYNC_LISTEN"):
            # The old server's variable, after BOXSYNC_LISTEN.
            environ["BOXSYNC_LISTEN"] = _listen_on(address)
        try:
            path = find_config(self["config"], CONFIG_VARIABLE, environ, config_candidates(environ))
            file = {} if path is None else load(path, SETTINGS)
            values = resolve(SETTINGS, self, environ, file, path)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self.update(values)
        self["config"] = path
        box = Path(self["box"])
        if box.exists() and not box.is_dir():
            raise usage.UsageError(f"--box {box}: not a folder")
        if (box / HIDDEN_DIR / CLIENT_STATE_FILE).exists():
            raise usage.UsageError(f"--box {box}: a folder a boxsync client syncs, not a box: give another folder")
        for marker, what in ((CLIENT_STATE_FILE, "a folder a boxsync client syncs"), (SERVER_LOCK_FILE, "another box")):
            above = marked_above(box, marker)
            if above is not None:
                raise usage.UsageError(f"--box {box}: inside {what}, {above}: give a folder outside it")
        for description in self["listen"]:
            _check_endpoint(description)
        if self["tokens"]:
            _check_token_mode(self)
        elif not self["api-key"] and not self["insecure-no-auth"]:
            raise usage.UsageError(
                "no key: give --api-key KEY (or set BOXSYNC_API_KEY), --tokens for "
                "accounts with tokens, or --insecure-no-auth to let everyone in"
            )
        if self["store"]:
            from .s3store import BadStore, S3Bucket, parse_store_url

            try:
                S3Bucket.connect(parse_store_url(self["store"]), environ)
            except BadStore as e:
                raise usage.UsageError(f"--store: {e}") from None
        # Last: nothing is made before every other option is found good.
        try:
            (box / HIDDEN_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise usage.UsageError(f"--box {box}: cannot make its {HIDDEN_DIR}/ there: {e.strerror or e}") from None


def _check_endpoint(description: str) -> None:
    """
    Refuse a C{--listen} endpoint string that cannot be used (a bad port,
    an unknown kind, a certificate that cannot be read), before anything
    starts.
    """
    try:
        # Parsing needs no reactor: only listening does.
        serverFromString(None, description)  # type: ignore[arg-type]
    except OSError:
        # TLS files that cannot be read (here, perhaps, but not where the
        # server will run): said in one line when the server starts.
        pass
    except Exception as e:
        raise usage.UsageError(f"--listen {description}: {e}") from None


def _check_token_mode(options: Options) -> None:
    """
    Refuse what cannot go with C{--tokens}: a key, no authentication, or a
    secret file that others could read.
    """
    if options["api-key"] or options["insecure-no-auth"]:
        raise usage.UsageError(
            "--tokens cannot be combined with --api-key (or BOXSYNC_API_KEY) "
            "or --insecure-no-auth: choose one way to authenticate"
        )
    hidden = Path(options["box"]) / HIDDEN_DIR
    if os.path.lexists(secret_path(hidden)):
        try:
            load_secret(hidden)
        except (SecretError, OSError) as e:
            raise usage.UsageError(f"cannot use the server secret: {e}") from None


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from ..garbage import collect_less_often
    from ..reactors import IServerReactor
    from .service import BoxsyncService, ServerConfig

    auth = None
    if not options["tokens"]:
        # postOptions made sure there is a key unless --insecure-no-auth.
        auth = ApiKeyAuth(options["api-key"] or None)
    config = ServerConfig(
        box=Path(options["box"]),
        listen=list(options["listen"]),
        auth=auth,
        tokens=options["tokens"],
        index=options["index"],
        store=options["store"],
        max_streams_per_token=options["max-streams-per-token"],
        max_upload=options["max-upload"],
        status_seconds=options["status-interval"],
        look_seconds=options["look-interval"],
        keepalive_seconds=options["keepalive"],
        max_manifest=options["max-manifest"],
        max_manifest_entries=options["max-manifest-entries"],
        connections=ConnectionLimits(
            idle_timeout=options["idle-timeout"],
            min_rate=options["min-rate"],
            progress_interval=options["progress-interval"],
        ),
        retention=Retention(options["keep-versions"], options["thin-versions"], options["history-max"]),
    )
    # Twisted types the global reactor by its common interfaces only; it has
    # all those the server uses (its thread pool too).
    service = BoxsyncService(cast(IServerReactor, reactor), config)
    service.ready.addErrback(lambda failure: exit_failed(reactor))
    collect_less_often()
    return service


#: The exit status of a server that could not start (EX_SOFTWARE).
START_FAILED = 70


def exit_failed(reactor: IReactorCore, status: int = START_FAILED) -> None:
    """
    End a server that cannot start (a port in use, an unreadable key or box)
    with a failing exit status, so a supervisor such as systemd sees the
    failure. C{twistd} and C{twist} exit 0 once the reactor stops and offer
    no exit status of their own, so the status is set at interpreter exit,
    after they have cleaned up (log, pid file).
    """
    atexit.register(_exit, status)
    # The failure may come before the reactor runs (the box is checked as
    # the service starts): stop it as soon as it does.
    reactor.callWhenRunning(reactor.stop)


def _exit(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
