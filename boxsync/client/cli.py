"""
``boxsync-client``: keep a folder in sync with a boxsync server.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from attrs import frozen
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.task import LoopingCall, react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.web.client import Agent, HTTPConnectionPool

from .. import __version__
from .api import APIError, AuthError, BoxsyncAPI
from .engine import Engine, NotInSync
from .ignore import IgnoreRules
from .progress import reporter_for
from .state import LocalState
from .watcher import FolderWatcher

__all__ = ["main", "parse", "Options", "run"]

log = Logger()


class UserError(Exception):
    """
    A problem to tell the user in one line, then exit 1.
    """


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


def parse(argv: Sequence[str], environ: dict[str, str] | None = None) -> Options:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="boxsync-client",
        description="Keep a local folder in sync with a boxsync server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--server",
        default=env.get("BOXSYNC_SERVER", "http://127.0.0.1:8080"),
        help="the server's URL (env BOXSYNC_SERVER)",
    )
    parser.add_argument(
        "--token", default=env.get("BOXSYNC_TOKEN"), help="the key or token (env BOXSYNC_TOKEN)"
    )
    parser.add_argument(
        "--name",
        default=env.get("BOXSYNC_NAME", socket.gethostname()),
        help="this client's name, shown in conflict copies and server logs (env BOXSYNC_NAME)",
    )
    parser.add_argument(
        "--once", action="store_true", help="sync until the folder and the box agree, then exit"
    )
    parser.add_argument("--transfers", type=int, default=4, help="transfers at once")
    parser.add_argument(
        "--rescan", type=float, default=300.0, help="seconds between full rescans of the folder"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less output")
    parser.add_argument("--version", action="version", version=f"boxsync {__version__}")
    parser.add_argument("folder", nargs="?", default="./box", help="the folder to keep in sync")
    args = parser.parse_args(list(argv))
    if args.transfers < 1:
        parser.error("--transfers must be at least 1")
    return Options(
        server=args.server.rstrip("/"),
        token=args.token,
        name=args.name,
        folder=Path(args.folder).expanduser(),
        once=args.once,
        verbosity=args.verbose - args.quiet,
        transfers=args.transfers,
        rescan_seconds=args.rescan,
    )


def _start_logging(verbosity: int) -> None:
    level = {-1: LogLevel.warn, 0: LogLevel.info}.get(
        verbosity, LogLevel.debug if verbosity > 0 else LogLevel.error
    )
    levels = LogLevelFilterPredicate(defaultLogLevel=level)
    # Every new connection of the HTTP client would log a line at info.
    levels.setLogLevelForNamespace("twisted.web.client", max(level, LogLevel.warn))
    levels.setLogLevelForNamespace("twisted.internet.base", max(level, LogLevel.warn))
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [levels])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def _open_folder(folder: Path) -> LocalState:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        state = LocalState.open(folder)
        probe = folder / ".boxsync" / "write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot use {folder} as the synced folder: {e.strerror or e}") from e
    return state


async def run(reactor: Any, options: Options) -> None:
    """
    Sync C{options.folder} until stopped (or until in sync, with C{once}).
    """
    root = options.folder.resolve()
    state = _open_folder(root)
    pool = HTTPConnectionPool(reactor, persistent=True)
    http = HTTPClient(Agent(reactor, pool=pool))
    api = BoxsyncAPI(http, reactor, options.server, options.token, options.name)
    reporter = reporter_for(sys.stderr, options.verbosity < 0)
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
    )
    watcher = rescans = None
    if not options.once:
        watcher = FolderWatcher(reactor, root, engine.ignore, engine, delay=0.03)
        try:
            watcher.start()
        except OSError as e:
            log.warn("cannot watch {root} ({error}); relying on rescans", root=root, error=e)
            watcher = None
        rescans = LoopingCall(engine.rescan)
        rescans.clock = reactor
        rescans.start(options.rescan_seconds, now=False)
    trigger = reactor.addSystemEventTrigger("before", "shutdown", engine.stop)
    try:
        await engine.run()
    except AuthError as e:
        raise UserError(f"the server refused the token: {e.message}") from e
    except NotInSync as e:
        raise UserError(f"could not sync everything: {e}") from e
    except APIError as e:
        raise UserError(f"the server said: {e.message} ({e.status})") from e
    except (ConnectError, DNSLookupError, ConnectionError) as e:
        raise UserError(f"cannot reach {options.server}: {e}") from e
    finally:
        reactor.removeSystemEventTrigger(trigger)
        if rescans is not None and rescans.running:
            rescans.stop()
        if watcher is not None:
            watcher.stop()
        reporter.close()
        state.close()
        await pool.closeCachedConnections()
    if options.once:
        log.info("{folder} is in sync", folder=str(root))


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(sys.argv[1:] if argv is None else argv)
    _start_logging(options.verbosity)

    async def _main(reactor: Any) -> None:
        try:
            await run(reactor, options)
        except UserError as e:
            print(f"boxsync-client: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    react(lambda reactor: Deferred.fromCoroutine(_main(reactor)))
