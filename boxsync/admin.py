"""
``boxsync-admin``: the tokens of a box served with ``twistd boxsync --tokens``.

``token`` mints one (and makes its account on first use) and prints it, and
nothing else, on standard output; ``tokens`` lists them (never their values);
``revoke`` revokes one, which a running server notices at once; ``web-link``
prints a link that signs a browser in to the web page, once, within minutes;
``history`` shows what the kept versions take, and ``prune`` removes those
the history no longer keeps, now.
Each command
works on the box folder directly, so it runs on the server's machine, as the
user the server runs as.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Coroutine, NoReturn, Sequence, TextIO, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.selectreactor import SelectReactor
from twisted.python.failure import Failure

from .config import folder, human_size
from .lock import FolderLock, Locked
from .output import escape_unencodable, reader_gone
from .paths import HIDDEN_DIR
from .reactors import IServerReactor
from .sqlite import DamagedDatabase
from .server import retention
from .server.auth import DEFAULT_ACCOUNT
from .server.box import Box
from .server.hub import Hub
from .server.index import IndexUnavailable, VersionRecord
from .server import migration
from .server.service import INDEX_FILE, LOCK_FILE, indexed_in, open_index, open_registry, record_index, served_with
from .server.storage import BoxStorage
from .server.tap import index_url
from .server.accounts import BadAccountFolder, account_folder
from .server.registry import REGISTRY_FILE, Registry, TokenRecord
from .server.sessions import LINK_CLIENT, LINK_SECONDS
from .server.tokens import (
    BadName,
    SecretError,
    TokenClaims,
    check_account,
    check_client,
    load_secret,
    mint,
    new_token_id,
    parse_duration,
)

__all__ = ["main", "run", "AdminError"]

PROGRAM = "boxsync-admin"

_T = TypeVar("_T")


class AdminError(Exception):
    """
    Something the user can fix: said in one line, exit status 1.
    """


#: How long a command waits for an index in PostgreSQL before it says it
#: cannot reach it (the server itself waits longer).
INDEX_TIMEOUT = 5.0


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """
    An argparse type that runs C{check} and reports its error as argparse's.
    """

    def convert(value: str) -> str:
        try:
            check(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value

    return convert


def _parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Mint, list and revoke the tokens of a box served with --tokens.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def served(command: argparse.ArgumentParser) -> None:
        """
        The options that say which box, and where its index is.
        """
        command.add_argument(
            "--box", default=environ.get("BOXSYNC_BOX") or "./box",
            help="the box folder of the server [default: $BOXSYNC_BOX, else ./box]",
        )
        command.add_argument(
            "--index", type=_checked(index_url), default=environ.get("BOXSYNC_INDEX"), metavar="URL",
            help="the server's --index, if its index is in PostgreSQL: postgresql://USER@HOST:PORT/DATABASE "
            "[default: $BOXSYNC_INDEX, else SQLite, in the box]",
        )

    token = commands.add_parser(
        "token", help="mint a token (printed alone on standard output)", description=(
            "Mint a token for a client of an account, making the account if it is new. "
            "The token is printed once, alone on standard output: TOKEN=$(boxsync-admin token ...)"
        )
    )
    served(token)
    token.add_argument("--account", required=True, type=_checked(check_account), help="the account")
    token.add_argument("--client", required=True, type=_checked(check_client), help="the client's id, e.g. laptop")
    token.add_argument(
        "--expires", type=_checked(parse_duration), metavar="DURATION",
        help="how long it works, e.g. 30m, 12h, 90d [default: until revoked]",
    )

    tokens = commands.add_parser("tokens", help="list the tokens (not their values)")
    served(tokens)
    tokens.add_argument("--account", type=_checked(check_account), help="only this account's")

    revoke = commands.add_parser("revoke", help="revoke a token, at once, open streams included")
    served(revoke)
    revoke.add_argument(
        "token_id", metavar="ID", nargs="?", help="the token's id, as listed by 'tokens'"
    )
    revoke.add_argument("--account", type=_checked(check_account), help="with --client: instead of ID")
    revoke.add_argument(
        "--client", type=_checked(check_client),
        help="revoke every token of this client of --account (a lost laptop)",
    )

    link = commands.add_parser(
        "web-link", help="print a one-time link that signs a browser in to the web page",
        description=(
            "Print a link to the server's web page that signs a browser in to an account: "
            f"it works once, within {LINK_SECONDS // 60} minutes. The link is the last line of the output."
        ),
    )
    served(link)
    link.add_argument("--account", required=True, type=_checked(check_account), help="the account")
    link.add_argument(
        "--server", required=True, metavar="URL",
        help="the server's address as the browser reaches it, e.g. https://box.example.org:8443",
    )
    history = commands.add_parser(
        "history", help="show how much the kept versions take, per account",
        description="Show the overwritten and deleted versions the server keeps, per account: "
        "how many, their size, and the oldest.",
    )
    served(history)

    prune = commands.add_parser(
        "prune", help="remove the versions the history no longer keeps, now",
        description="Remove now what the server's hourly tidying would: the versions past "
        "--keep-versions, thinned by --thin-versions, over --history-max, with the server "
        "stopped. Give the values the server runs with (stricter ones free more).",
    )
    served(prune)
    prune.add_argument(
        "--keep-versions", type=_checked(retention.parse_duration), default=None, metavar="DURATION",
        help="how long a version is kept, e.g. 30d, 12h, 0 [default: 30d]",
    )
    prune.add_argument(
        "--thin-versions", type=_checked(retention.Thinning.parse), default=retention.THIN_VERSIONS,
        metavar="STEPS", help=f"how versions thin out as they age, or off [default: {retention.THIN_VERSIONS}]",
    )
    prune.add_argument(
        "--history-max", type=_checked(retention.HistoryMax.parse), default="none", metavar="SIZE",
        help="the most the versions may take, e.g. 50G or 10%% [default: none]",
    )
    migrate = commands.add_parser(
        "migrate", help="move the box's index into PostgreSQL, or back into the box",
        description="With every server of the box stopped, copy its index and token registry "
        "from the box's SQLite files into an empty PostgreSQL database (--to), or from PostgreSQL "
        "into new SQLite files in the box (--from), checking every file of the box against it "
        "first. The files stay in the box folder.",
    )
    migrate.add_argument(
        "--box", default=environ.get("BOXSYNC_BOX") or "./box",
        help="the box folder of the server [default: $BOXSYNC_BOX, else ./box]",
    )
    where = migrate.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to", type=_checked(index_url), metavar="URL", help="the empty PostgreSQL database to move it to"
    )
    where.add_argument(
        "--from", dest="from_", type=_checked(index_url), metavar="URL",
        help="the PostgreSQL database to move it back from",
    )
    return parser


def _box(path: str) -> Path:
    try:
        box = folder(path)
    except ValueError as e:
        raise AdminError(f"--box: {e}") from None
    if not box.is_dir():
        raise AdminError(f"{box} is not a folder: give the server's box with --box")
    return Path(os.path.realpath(box))


def _registry(box: Path, index: str | None) -> Registry:
    """
    The token registry of C{box}: in PostgreSQL, with C{index}; else the
    box's SQLite file.

    @raise AdminError: if the box's index is in PostgreSQL but C{index} is
        not given, or the registry cannot be opened.
    """
    _check_index(box, index)
    try:
        return open_registry(index, box / HIDDEN_DIR, INDEX_TIMEOUT)
    except (sqlite3.Error, DamagedDatabase) as e:
        raise AdminError(f"cannot open the token registry of {box}: {e}") from None


def _check_index(box: Path, index: str | None) -> None:
    """
    @raise AdminError: if the index of C{box} is in PostgreSQL (its
        servers noted where) and C{index} does not say so.
    """
    if index is None and (where := indexed_in(box / HIDDEN_DIR)) is not None:
        raise AdminError(f"the index of {box} is in PostgreSQL ({where}): give its URL with --index")


def _has_registry(box: Path, index: str | None) -> bool:
    """
    Whether C{box} has a token registry (one in PostgreSQL always has).
    """
    _check_index(box, index)
    return index is not None or (box / HIDDEN_DIR / REGISTRY_FILE).exists()


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def mint_token(
    box: Path, account: str, client: str, expires_in: int | None, now: int, index: str | None = None
) -> tuple[str, TokenRecord]:
    """
    Mint a token for C{client} of C{account} in C{box} (making the secret
    and the account if need be) and register it.
    """
    hidden = box / HIDDEN_DIR
    hidden.mkdir(mode=0o700, exist_ok=True)
    secret = load_secret(hidden, create=True)
    account_folder(box, account)
    record = TokenRecord(
        new_token_id(), account, client, now, None if expires_in is None else now + expires_in
    )
    registry = _registry(box, index)
    try:
        registry.add(record)
    finally:
        registry.close()
    claims = TokenClaims(record.token_id, account, client, record.issued, record.expires)
    return mint(secret, claims), record


def _new_box(path: str, err: TextIO) -> Path:
    """
    The box of C{path}, made (as the server would make it) if it is missing
    but its parent folder is there.
    """
    box = Path(path).expanduser()
    if not box.exists() and box.parent.is_dir():
        box.mkdir(mode=0o755)
        err.write(f"made the box folder {box}\n")
    return _box(path)


def _token(args: argparse.Namespace, out: TextIO, err: TextIO, now: int) -> None:
    expires_in = None if args.expires is None else parse_duration(args.expires)
    box = _new_box(args.box, err)
    served = served_with(box / HIDDEN_DIR)
    if served == "key":
        raise AdminError(
            f"{box} is served to one shared key (--api-key): tokens are for a box served with --tokens "
            "(see docs/deploy.md to change)"
        )
    token, record = mint_token(box, args.account, args.client, expires_in, now, args.index)
    out.write(token + "\n")
    err.write(
        f"token {record.token_id} for client {record.client} of account {record.account}, "
        f"expires {_when(record.expires)}\n"
    )
    if served is None:
        err.write(f"no server has served {box} yet: the token works once one serves it with --tokens\n")


def _tokens(args: argparse.Namespace, out: TextIO, err: TextIO, now: int) -> None:
    box = _box(args.box)
    if not _has_registry(box, args.index):
        err.write(f"no tokens have been minted for {box}\n")
        return
    registry = _registry(box, args.index)
    try:
        records = registry.tokens(args.account)
    finally:
        registry.close()
    rows = [("ID", "ACCOUNT", "CLIENT", "ISSUED", "EXPIRES", "STATUS")] + [
        (r.token_id, r.account, r.client, _when(r.issued), _when(r.expires), r.status(now))
        for r in records
    ]
    _table(rows, out)


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """
    Write C{rows}, the first one the titles, in aligned columns.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


def _revoke(args: argparse.Namespace, out: TextIO, err: TextIO, now: int) -> None:
    by_id = args.token_id is not None
    by_client = args.account is not None and args.client is not None
    if by_id == by_client or (by_id and (args.account or args.client)):
        raise AdminError("name the token to revoke: its ID, or --account and --client")
    box = _box(args.box)
    records: list[TokenRecord] = []
    revoked: list[bool] = []
    if _has_registry(box, args.index):
        registry = _registry(box, args.index)
        try:
            if args.token_id is not None:
                found = registry.get(args.token_id)
                records = [] if found is None else [found]
            else:
                records = [r for r in registry.tokens(args.account) if r.client == args.client]
            revoked = [registry.revoke(r.token_id, now) for r in records]
        finally:
            registry.close()
    if not records:
        wanted = (
            repr(args.token_id) if args.token_id is not None
            else f"of client {args.client!r} of account {args.account!r}"
        )
        raise AdminError(f"there is no token {wanted} in {box}")
    for record, done in zip(records, revoked):
        what = f"token {record.token_id} of client {record.client} of account {record.account}"
        if done:
            out.write(f"revoked {what}\n")
        else:
            out.write(f"{what} was already revoked on {_when(record.revoked)}\n")


def _web_link(args: argparse.Namespace, out: TextIO, err: TextIO, now: int) -> None:
    server = args.server.strip().rstrip("/")
    if not server.startswith(("https://", "http://")) or len(server) <= len("https://"):
        raise AdminError(f"{args.server!r} is not the server's address: give e.g. https://box.example.org:8443")
    box = _box(args.box)
    if not _has_registry(box, args.index) or args.account not in _accounts(box, args.index):
        raise AdminError(f"there is no account {args.account!r} in {box}: mint a token for it first")
    token, record = mint_token(box, args.account, LINK_CLIENT, LINK_SECONDS, now, args.index)
    err.write(
        f"sign-in link {record.token_id} for account {record.account}: it works once, "
        f"until {_when(record.expires)}\n"
    )
    out.write(f"{server}/#link={token}\n")


def _accounts(box: Path, index: str | None) -> set[str]:
    registry = _registry(box, index)
    try:
        return registry.accounts()
    finally:
        registry.close()


def _history(args: argparse.Namespace, out: TextIO, err: TextIO, now: int) -> None:
    kept = _in_own_reactor(lambda reactor: _kept_versions(reactor, _box(args.box), args.index))
    rows = [("ACCOUNT", "VERSIONS", "SIZE", "OLDEST")]
    for account, versions in sorted(kept.items()):
        oldest = min((version.ended_ns for version in versions), default=None)
        rows.append(
            (
                account,
                str(len(versions)),
                human_size(sum(version.size for version in versions)),
                "-" if oldest is None else _when(oldest // 10**9),
            )
        )
    _table(rows, out)


def _prune(args: argparse.Namespace, out: TextIO, err: TextIO, now: int) -> None:
    keep = retention.KEEP_VERSIONS if args.keep_versions is None else retention.parse_duration(args.keep_versions)
    rules = retention.Retention(
        keep, retention.Thinning.parse(args.thin_versions), retention.HistoryMax.parse(args.history_max)
    )
    box = _box(args.box)

    async def work(reactor: IServerReactor) -> retention.Tidied:
        async with _opened(reactor, box, args.index) as boxes:
            return await retention.tidy(boxes, rules, now)

    _check_served(box, args.index)
    # The server's lock: the versions' files are rewritten, which only one
    # process may do at a time.
    try:
        lock = FolderLock.acquire(box / HIDDEN_DIR / LOCK_FILE)
    except Locked as e:
        raise AdminError(
            f"{box} is being served (pid {e.pid}): the server prunes its history hourly by its own "
            "--keep-versions, --thin-versions and --history-max; stop it to prune now by others"
        ) from None
    try:
        tidied = _in_own_reactor(work)
    finally:
        lock.release()
    out.write(f"removed {tidied.versions} versions and {tidied.blocks} unused blocks\n")


async def _kept_versions(reactor: IServerReactor, box: Path, index: str | None) -> dict[str, list[VersionRecord]]:
    async with _opened(reactor, box, index) as boxes:
        return {each.account: await each.index.kept_versions(each.account) for each in boxes}


def _check_served(box: Path, url: str | None) -> None:
    """
    Make sure the box folder C{box} has an index: in the PostgreSQL database
    at C{url}, or in the box.

    @raise AdminError: if it has none (it was never served).
    """
    _check_index(box, url)
    if url is None and not (box / HIDDEN_DIR / migration.INDEX_SQLITE).exists():
        raise AdminError(f"{box} has never been served: there is no history")


@asynccontextmanager
async def _opened(reactor: IServerReactor, box: Path, url: str | None = None) -> AsyncIterator[list[Box]]:
    """
    The boxes of the accounts of the box folder C{box} (one, for a box
    served to a shared key), with its index open: in the PostgreSQL
    database at C{url}, or in SQLite in the box.
    """
    hidden = box / HIDDEN_DIR
    _check_served(box, url)
    index = open_index(reactor, url, hidden, timeout=INDEX_TIMEOUT)
    index.start()
    try:
        hub = Hub(reactor)
        if served_with(hidden) == "tokens":
            accounts = sorted(_accounts(box, url))
            roots = [(account, account_folder(box, account)) for account in accounts]
        else:
            roots = [(DEFAULT_ACCOUNT, box)]
        yield [Box(account, index, BoxStorage(reactor, root), hub) for account, root in roots]
    finally:
        index.stop()


def _in_own_reactor(work: Callable[[IServerReactor], Coroutine[Any, Any, _T]]) -> _T:
    """
    Run C{work} to its end on a reactor of its own (not the global one: a
    command runs in a process, or a test, that may have one running), and
    return what it returned or raise what it raised.
    """
    reactor = SelectReactor()
    outcome: list[_T | Failure] = []

    def start() -> None:
        done = Deferred.fromCoroutine(work(cast(IServerReactor, reactor)))
        done.addBoth(outcome.append)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[return-value]


def _migrate(args: argparse.Namespace, out: TextIO, err: TextIO, now: int) -> None:
    box = _box(args.box)
    hidden = box / HIDDEN_DIR
    if args.to is not None and (noted := indexed_in(hidden)) is not None:
        raise AdminError(f"the index of {box} is in PostgreSQL already ({noted})")
    if args.from_ is not None and indexed_in(hidden) is None:
        raise AdminError(f"the index of {box} is in the box: nothing to move back")
    if args.to is not None:
        # Said before the server's lock is taken: its file would mark the
        # folder as a box.
        try:
            migration.check_embedded(box)
        except migration.MigrationError as e:
            raise AdminError(str(e)) from None
    tokens = served_with(hidden) == "tokens"

    def folder_of(account: str) -> Path:
        return box / account if tokens else box

    try:
        lock = FolderLock.acquire(hidden / LOCK_FILE)
    except Locked as e:
        raise AdminError(f"{box} is being served (pid {e.pid}): stop every server of the box first") from None
    try:
        if args.to is not None:
            moved = migration.to_postgresql(box, args.to, folder_of)
            record_index(hidden, args.to)
            from .server.pgindex import where

            there = f"PostgreSQL ({where(args.to)}): serve it with --index and that URL"
        else:
            moved = migration.to_sqlite(box, args.from_, folder_of)
            (hidden / INDEX_FILE).unlink()
            there = "the box: serve it without --index"
    except migration.MigrationError as e:
        raise AdminError(str(e)) from None
    finally:
        lock.release()
    counts = ", ".join(f"{count} {table}" for table, count in moved.rows.items())
    out.write(f"checked {moved.files} files; copied {counts}\n")
    out.write(f"the index of {box} is now in {there}\n")


_COMMANDS = {
    "token": _token,
    "tokens": _tokens,
    "revoke": _revoke,
    "web-link": _web_link,
    "history": _history,
    "prune": _prune,
    "migrate": _migrate,
}


def run(
    argv: Sequence[str],
    out: TextIO,
    err: TextIO,
    environ: dict[str, str] | None = None,
    now: Callable[[], float] = time.time,
) -> int:
    """
    Run the command of C{argv}; return the exit status. Known errors are
    one line on C{err}; usage errors exit as argparse does (status 2).
    """
    args = _parser(dict(os.environ) if environ is None else environ).parse_args(list(argv))
    try:
        _COMMANDS[args.command](args, out, err, int(now()))
        out.flush()
    except BrokenPipeError:
        raise  # the reader of C{out} went away: see L{main}
    except (AdminError, BadName, BadAccountFolder, SecretError, IndexUnavailable, OSError, sqlite3.Error) as e:
        err.write(f"{PROGRAM}: error: {e}\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    escape_unencodable(sys.stdout, sys.stderr)
    try:
        status = run(sys.argv[1:] if argv is None else argv, sys.stdout, sys.stderr)
    except BrokenPipeError:
        reader_gone()
    sys.exit(status)


if __name__ == "__main__":
    main()
