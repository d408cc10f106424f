"""
``boxsync-client``: keep a folder in sync with a boxsync server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Awaitable, Callable, Mapping, Sequence, TypeVar

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogBeginner,
)
from twisted.web.client import RequestTransmissionFailed, ResponseFailed

from .. import __version__
from ..config import ConfigError, Setting, config_home, find_config, folder, load, resolve, seconds, size, whole
from ..garbage import collect_less_often
from ..lock import FolderLock, Locked
from ..logs import text_observer
from ..output import escape_unencodable, reader_gone
from ..paths import HIDDEN_DIR, SERVER_LOCK_FILE, marked_above
from ..reactors import IClientReactor
from . import commands, history
from .connect import ConnectionSettingsError, connect, describe_failure
from .errors import APIError, AuthError, WrongScheme
from .expiry import ExpiryWarning, expired_note, token_expires
from .identity import FolderReplaced, InsideSameBox
from .ignore import IgnoreRules
from .progress import reporter_for
from .room import KeepFree
from .session import NotInSync
from .state import LocalState
from .status import StatusFile, paths_are, status_path
from .transport import DEFAULT_IDLE_TIMEOUT

__all__ = ["main", "parse", "Options", "run"]

log = Logger()


class UserError(Exception):
    """
    A problem to tell the user in one line, then exit 1.
    """


_T = TypeVar("_T")

#: What C{boxsync-client COMMAND ...} can do besides syncing.
COMMANDS = {
    "status": "Show whether a folder is in sync, what is pending and the last error.",
    "ls": (
        "List the files in the box (or in one of its folders, or one file), with their "
        "sizes and who changed them last."
    ),
    "pause": "Pause syncing a folder (its running client stops moving files until resumed).",
    "resume": "Resume syncing a folder paused with 'pause'.",
    "history": "List the versions of a file the server keeps (overwritten or deleted ones too).",
    "trash": "List the files deleted in the box (or in one of its folders), newest first.",
    "restore": (
        "Make a version current again: --seq N of a file, the last version of a deleted file, "
        "or a whole folder as it was --at a time."
    ),
}

#: The server and how to reach it: what every command that asks the server
#: takes.
_REMOTE = ["server", "token", "cacert", "insecure", "name", "idle-timeout", "json", "verbose", "quiet"]

#: The environment variable that names the configuration file.
CONFIG_VARIABLE = "BOXSYNC_CONFIG"


def _transfers(value: str) -> int:
    return whole(value, least=1)


def _limit(value: str) -> int | None:
    """
    A bandwidth limit in bytes a second, such as C{500K} (C{0}: none).
    """
    if value.strip() == "0":
        return None
    return size(value)


def _keep_free(value: str) -> KeepFree:
    return KeepFree.parse(value)


def _seq(value: str) -> int:
    try:
        return whole(value, least=1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


SETTINGS = [
    Setting(
        "server",
        "http://127.0.0.1:8080",
        "the server's URL: https://HOST:PORT, or http:// to this machine (see --insecure)",
        lambda url: url.rstrip("/"),
    ),
    Setting("token", None, "the key or token"),
    Setting(
        "cacert",
        None,
        "a PEM file of the certificate authorities to trust for the https:// server "
        "instead of the system's (for a private one); the certificate must still name "
        "the server's host",
        lambda path: Path(path).expanduser(),
    ),
    Setting(
        "insecure",
        False,
        "allow plain http:// to a server on another machine (the token and the files "
        "then travel unencrypted); it never turns off the checks of an https:// "
        "server's certificate",
        flag=True,
    ),
    Setting("name", None, "this client's name, shown in conflict copies and server logs"),
    Setting("folder", "./box", "the folder to keep in sync", folder),
    Setting("once", False, "sync until the folder and the box agree, then exit", flag=True),
    Setting("transfers", 4, "transfers at once", _transfers),
    Setting("rescan", 300.0, "seconds between full rescans of the folder", seconds),
    Setting(
        "limit-up",
        None,
        "the most bytes a second the files sent may take, all together, e.g. 500K or 2M "
        "(K, M, G: multiples of 1024; 0: no limit)",
        _limit,
    ),
    Setting(
        "limit-down",
        None,
        "the most bytes a second the files received may take, all together, e.g. 500K or 2M "
        "(K, M, G: multiples of 1024; 0: no limit)",
        _limit,
    ),
    Setting(
        "keep-free",
        None,
        "the room downloads leave free on the folder's disk: a share of it (5%%) or a size (500M, 2G); "
        "0: none",
        _keep_free,
    ),
    Setting(
        "idle-timeout",
        DEFAULT_IDLE_TIMEOUT,
        "seconds a connection may stay silent (no event, no keep-alive, no byte) "
        "before it is dropped and opened again",
        seconds,
    ),
    Setting("json", False, "print one JSON document, for scripts (status, ls)", flag=True),
    Setting("verbose", 0, "more output (repeatable)", int, short="v", count=True),
    Setting("quiet", 0, "less output (repeatable)", int, short="q", count=True),
]
_BY_NAME = {setting.name: setting for setting in SETTINGS}

#: The settings each command takes (every command reads them all from the
#: environment and the file, but shows and takes only these).
_TAKES = {
    "sync": [s.name for s in SETTINGS if s.name != "json"],
    "status": ["folder", "json", "verbose", "quiet"],
    "pause": ["folder", "verbose", "quiet"],
    "resume": ["folder", "verbose", "quiet"],
    "ls": _REMOTE,
    "history": _REMOTE,
    "trash": _REMOTE,
    "restore": _REMOTE,
}


@frozen
class Options:
    server: str
    token: str | None
    name: str
    folder: Path
    once: bool
    verbosity: int
    transfers: int
    rescan_seconds: float
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    command: str = "sync"
    config: Path | None = None
    cacert: Path | None = None
    insecure: bool = False
    json: bool = False
    #: What C{ls} lists: a folder or a file of the box (C{None}: all of it).
    path: str | None = None
    #: The bandwidth limits, in bytes a second (C{None}: none).
    limit_up: int | None = None
    limit_down: int | None = None
    #: What downloads leave free on the folder's disk.
    keep_free: KeepFree = KeepFree()
    #: What C{restore} brings back: version C{seq}, or everything as it
    #: was C{at} a time (C{exact}: deleting what was made since); and where
    #: to, if not where it was (C{to}).
    seq: int | None = None
    at: str | None = None
    exact: bool = False
    to: str | None = None


def default_config(environ: Mapping[str, str]) -> Path:
    """
    C{$XDG_CONFIG_HOME/boxsync/client.toml} (C{~/.config/...} by default).
    """
    return config_home(environ) / "boxsync" / "client.toml"


def _parser(command: str, environ: Mapping[str, str], config: Path) -> argparse.ArgumentParser:
    sync = command == "sync"
    parser = argparse.ArgumentParser(
        prog="boxsync-client" if sync else f"boxsync-client {command}",
        description=(
            "Keep a local folder in sync with a boxsync server."
            if sync
            else COMMANDS[command]
        ),
        epilog=(
            "Every option can also come from the environment (the variable named) or from "
            f"a TOML file ({config}, or --config) under the key named, in that order after "
            "the command line."
            + (
                " Other commands: "
                + "; ".join(f"boxsync-client {name} --help" for name in COMMANDS)
                + ". A folder named like a command is given as ./NAME."
                if sync
                else ""
            )
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"a TOML file of options [default: {config} if it exists; env {CONFIG_VARIABLE}]",
    )
    hostname = socket.gethostname()
    for name in _TAKES[command]:
        setting = _BY_NAME[name]
        flag = f"--{name}"
        if name == "folder":
            parser.add_argument("folder", nargs="?", help=setting.describe())
        elif setting.flag:
            parser.add_argument(flag, action="store_true", default=None, help=setting.describe())
        elif setting.count:
            parser.add_argument(f"-{setting.short}", flag, action="count", help=setting.describe())
        else:
            shown = {"name": hostname, "keep-free": "1%% of the disk, 1 MiB to 1 GiB"}.get(name)
            metavar = "FILE" if name == "cacert" else None
            parser.add_argument(flag, metavar=metavar, help=setting.describe(shown))
        if setting.negation is not None:
            parser.add_argument(
                f"--{setting.negation}", action="store_true", default=None, help=setting.describe_negation()
            )
    if command in ("ls", "trash"):
        parser.add_argument("path", nargs="?", help="a folder or a file in the box [default: all of it]")
    elif command in ("history", "restore"):
        parser.add_argument("path", help="a file (or, with --at, a folder) in the box")
    if command == "restore":
        parser.add_argument("--seq", type=_seq, help="the version to restore (see boxsync-client history PATH)")
        parser.add_argument(
            "--at", metavar="TIME",
            help="restore what PATH held at TIME: ISO 8601, e.g. '2026-12-01 09:00' (this machine's time zone) "
            "or 2026-12-01T08:00Z",
        )
        parser.add_argument(
            "--exact", action="store_true", default=False,
            help="with --at: also delete what was made under PATH since (it stays in the history)",
        )
        parser.add_argument(
            "--as", metavar="NEW", dest="to",
            help="restore to NEW instead, beside what PATH holds now: a file (or, with --at, a folder) "
            "not in the box yet",
        )
    if sync:
        parser.add_argument("--version", action="version", version=f"boxsync {__version__}")
    return parser


def parse(
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
    config: Path | None = None,
) -> Options:
    """
    The options of C{boxsync-client ARGV}: from C{argv}, else from C{environ}
    (C{os.environ} by default), else from the configuration file (C{--config},
    C{$BOXSYNC_CONFIG}, else C{config} if given, else the one in
    C{$XDG_CONFIG_HOME/boxsync/}, if it exists), else the defaults.
    A first argument C{status} or C{ls} names a command; syncing is the
    default.
    """
    env = os.environ if environ is None else environ
    args = list(argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "sync"
    default = config or default_config(env)
    parser = _parser(command, env, default)
    given = {name.replace("_", "-"): value for name, value in vars(parser.parse_args(args)).items()}
    path = given.pop("path", None)
    seq, at, exact = given.pop("seq", None), given.pop("at", None), bool(given.pop("exact", False))
    to = given.pop("to", None)
    if command == "sync" and given.get("folder") in COMMANDS:
        parser.error(
            f"to sync a folder named {given['folder']!r}, give it as ./{given['folder']}; "
            f"for the command, put it first: boxsync-client {given['folder']} ..."
        )
    try:
        config_file = find_config(given.pop("config"), CONFIG_VARIABLE, env, [default])
        file = {} if config_file is None else load(config_file, SETTINGS)
        values = resolve(SETTINGS, given, env, file, config_file)
    except ConfigError as e:
        parser.error(str(e))
    return Options(
        server=values["server"],
        token=values["token"],
        name=values["name"] or socket.gethostname(),
        folder=Path(values["folder"]),
        once=values["once"],
        verbosity=values["verbose"] - values["quiet"],
        transfers=values["transfers"],
        rescan_seconds=values["rescan"],
        idle_timeout=values["idle-timeout"],
        command=command,
        config=config_file,
        cacert=values["cacert"],
        insecure=values["insecure"],
        json=values["json"],
        path=path,
        limit_up=values["limit-up"],
        limit_down=values["limit-down"],
        keep_free=values["keep-free"] or KeepFree(),
        seq=seq,
        at=at,
        exact=exact,
        to=to,
    )


def _start_logging(verbosity: int) -> None:
    level = {-1: LogLevel.warn, 0: LogLevel.info}.get(
        verbosity, LogLevel.debug if verbosity > 0 else LogLevel.error
    )
    levels = LogLevelFilterPredicate(defaultLogLevel=level)
    # Every new connection of the HTTP client would log a line at info.
    levels.setLogLevelForNamespace("twisted.web.client", max(level, LogLevel.warn))
    levels.setLogLevelForNamespace("twisted.internet.base", max(level, LogLevel.warn))
    # Nor should each "102 Processing" a long upload hears (see transport).
    levels.setLogLevelForNamespace("twisted.web._newclient", max(level, LogLevel.warn))
    observer = FilteringLogObserver(text_observer(sys.stderr), [levels])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)



def _open_folder(folder: Path) -> tuple[LocalState, FolderLock, bool]:
    """
    The folder's state, the lock that makes this the only client syncing
    it, and whether its hidden folder is new (made by this run).

    @raise UserError: if the folder cannot be used, is a server's box, or
        another client syncs it.
    """
    hidden = folder / HIDDEN_DIR
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder")
    if not folder.parent.is_dir():
        why = "is not a folder" if folder.parent.exists() else "does not exist"
        raise UserError(f"cannot use {folder} as the synced folder: {folder.parent} {why}")
    if (hidden / SERVER_LOCK_FILE).exists():
        raise UserError(f"{folder} is a boxsync server's box, not a folder to sync: give another folder")
    box = marked_above(folder, SERVER_LOCK_FILE)
    if box is not None:
        raise UserError(f"{folder} is inside the boxsync server's box {box}: give a folder outside it")
    own = _own_output_in(folder)
    if own:
        raise UserError(
            f"this client's output goes to {own[0]}, inside the folder it syncs: each line it wrote would be "
            f"a change to sync, without end; write it outside the folder (or in {hidden}), or ignore it"
        )
    new = not hidden.exists()
    try:
        hidden.mkdir(parents=True, exist_ok=True)
        lock = FolderLock.acquire(hidden / commands.LOCK_FILE)
    except Locked as e:
        raise UserError(f"{folder} is already synced by another boxsync-client (pid {e.pid})") from None
    except OSError as e:
        raise UserError(f"cannot use {folder} as the synced folder: {e.strerror or e}") from e
    try:
        state = LocalState.open_or_anew(folder)
        probe = hidden / "write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except (OSError, sqlite3.Error, RuntimeError) as e:
        lock.release()
        raise UserError(f"cannot use {folder} as the synced folder: {getattr(e, 'strerror', None) or e}") from e
    return state, lock, new


def _own_output_in(folder: Path) -> list[Path]:
    """
    The files this process's output and errors go to (C{>> FILE}) that are
    synced files of C{folder}: neither in its hidden folder nor ignored.
    """
    found: list[Path] = []
    for fd in (1, 2):
        try:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
            relative = target.relative_to(folder.resolve())
        except (OSError, ValueError):
            continue
        if relative.parts[0] != HIDDEN_DIR and target not in found:
            if not IgnoreRules.load(folder).ignored("/".join(relative.parts)):
                found.append(target)
    return found


async def _friendly(work: Awaitable[_T], server: str, token: str | None, clock: IReactorTime) -> _T:
    """
    Await C{work}, turning the errors a user can do something about into
    L{UserError}s.
    """
    try:
        return await work
    except BrokenPipeError:
        raise  # standard output's reader, not the server, went away
    except AuthError as e:
        raise UserError(f"the server refused the token: {e.message}{expired_note(token, clock.seconds())}") from e
    except NotInSync as e:
        raise UserError(f"could not sync everything: {e}") from e
    except (commands.NotInBox, WrongScheme, FolderReplaced, InsideSameBox) as e:
        raise UserError(str(e)) from e
    except APIError as e:
        raise UserError(f"the server said: {e.message} ({e.status})") from e
    except (ConnectError, DNSLookupError, ConnectionError) as e:
        raise UserError(f"cannot reach {server}: {e}") from e
    except (ResponseFailed, RequestTransmissionFailed) as e:
        raise UserError(f"cannot talk to {server}: {describe_failure(e)}") from e


async def run(reactor: IClientReactor, options: Options) -> None:
    """
    Sync C{options.folder} until stopped (or until in sync, with C{once}).

    @raise ConnectionSettingsError: before anything is written, if the
        server's URL or C{options.cacert} cannot be used.
    """
    # Here, not above: the other commands start without them.
    from .engine import Engine
    from .service import sync_service
    from .watcher import FolderWatcher

    connection = connect(reactor, options.server, options.cacert, options.insecure)
    root = options.folder.resolve()
    # Told to look at whether it is paused only once it can (below).
    signal.signal(commands.PAUSE_SIGNAL, signal.SIG_IGN)
    state, lock, new = _open_folder(root)
    api = commands.client_api(reactor, connection, options)
    reporter = StatusFile(
        reporter_for(sys.stderr, options.verbosity < 0, reactor, every_file=options.verbosity > 0),
        status_path(root),
        reactor,
    )
    engine = Engine(
        reactor,
        root,
        api,
        state,
        IgnoreRules.load(root),
        reporter,
        options.name,
        once=options.once,
        transfers=options.transfers,
        keep_free=options.keep_free,
    )
    reporter.engine = engine
    reporter.token_expires = token_expires(options.token)
    watcher = None
    if not options.once:
        watcher = FolderWatcher(reactor, root, engine.ignore, engine, delay=0.03)
        engine.held = watcher.holds
    top, running = sync_service(
        engine, reporter, watcher, options.rescan_seconds, state.close, lock.release, connection.close
    )
    if reporter.token_expires is not None:
        ExpiryWarning(reactor, reporter.token_expires).setServiceParent(top)

    def follow_pause() -> None:
        if commands.paused(root):
            engine.pause()
        else:
            engine.resume()

    follow_pause()
    signal.signal(commands.PAUSE_SIGNAL, lambda *_: reactor.callFromThread(follow_pause))
    top.startService()
    # On a signal the reactor waits for the whole tree to stop.
    trigger = reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    refused_inside = False
    try:
        await _friendly(running.done, options.server, options.token, reactor)
        if options.once:
            reporter.ended_in_sync = True
    except UserError as e:
        # Stopped by what it met (a token refused, say), maybe as it was
        # sending a change: not in sync, whatever the status last said.
        reporter.ended_in_sync = False
        refused_inside = isinstance(e.__cause__, InsideSameBox)
        raise
    finally:
        if top.running:
            reactor.removeSystemEventTrigger(trigger)
            await top.stopService()
        if new and refused_inside:
            # Refused at its first hello, before it synced anything: what
            # it made would be taken by the folder's own client for a
            # folder synced on its own inside.
            shutil.rmtree(root / HIDDEN_DIR, ignore_errors=True)
    if options.once:
        passed_over = len(engine.skipped)
        but = ", but {skipped} skipped (boxsync-client status lists them)" if passed_over else ""
        log.info("{folder} is in sync" + but, folder=str(root), skipped=paths_are(passed_over))


async def _history(reactor: IClientReactor, options: Options) -> int:
    """
    Run C{history}, C{trash} or C{restore}; their exit code.
    """
    path = options.path or ""
    if options.command == "history":
        await history.history(reactor, options, path, sys.stdout)
        return 0
    if options.command == "trash":
        await history.trash(reactor, options, path, sys.stdout)
        return 0
    return await history.restore(
        reactor, options, path, options.seq, options.at, options.exact, sys.stdout, to=options.to
    )


def main(argv: Sequence[str] | None = None) -> None:
    escape_unencodable(sys.stdout, sys.stderr)
    options = parse(sys.argv[1:] if argv is None else argv)
    if options.command in ("status", "pause", "resume"):
        try:
            if options.command == "status":
                raise SystemExit(commands.status(options, sys.stdout))
            raise SystemExit(commands.pause(options.folder.resolve(), options.command == "pause", sys.stdout))
        except BrokenPipeError:
            reader_gone()
        except (FileNotFoundError, RuntimeError, sqlite3.Error) as e:
            print(f"boxsync-client: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    _start_logging(options.verbosity)
    work: Callable[[IClientReactor], Awaitable[object]]
    if options.command == "ls":
        work = lambda reactor: _friendly(
            commands.ls(reactor, options, sys.stdout), options.server, options.token, reactor
        )
    elif options.command in ("history", "trash", "restore"):
        work = lambda reactor: _friendly(_history(reactor, options), options.server, options.token, reactor)
    else:
        work = lambda reactor: run(reactor, options)

    async def _main(reactor: IClientReactor) -> None:
        try:
            code = await work(reactor)
            sys.stdout.flush()
        except BrokenPipeError:
            reader_gone()
        except (UserError, history.UserError, ConnectionSettingsError) as e:
            print(f"boxsync-client: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        if code:
            raise SystemExit(code)

    collect_less_often()
    react(lambda reactor: Deferred.fromCoroutine(_main(reactor)))
