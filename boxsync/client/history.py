"""
The history commands of C{boxsync-client}: C{history PATH} (the versions of
a file), C{trash [FOLDER]} (the files deleted there) and C{restore PATH}
(a version, a deleted file, or a whole folder as it was at a time, made
current again).

A restore is a new commit, made from the version the server keeps (no byte
goes up): it reaches every client like any change. Each is made from the
seq this command saw the path at, so an edit made meanwhile is never
overwritten: that path is reported as changed, and left as it is.
"""

from __future__ import annotations

import json
from typing import Any, Sequence, TextIO

from attrs import frozen
from twisted.internet.defer import Deferred, FirstError, gatherResults

from ..batches import batched
from ..garbage import collection_paused
from ..reactors import IClientReactor
from ..wire import CommitResult, ProtocolError
from ..wire.history import Deleted, VersionEntry, json_lines, parse_time
from .api import BoxsyncAPI
from .commands import JSONList, NotInBox, box_path, client_api, files_at, print_json_list
from .connect import connect
from .errors import NotFound, StaleBase
from ..config import human_size
from ..paths import printable

__all__ = ["history", "trash", "restore", "UserError"]


class UserError(Exception):
    """
    A misused history command, said in one line.
    """


def _when(time: str | None) -> str:
    return (time or "-").replace("T", " ")[:19]


def _table(entries: Sequence[VersionEntry | Deleted], first: str, marks: list[str]) -> list[str]:
    rows = [(first, "SEQ", "TIME (UTC)", "SIZE", "SHA256", "CLIENT", "")]
    for entry, mark in zip(entries, marks):
        rows.append(
            (
                printable(entry.path), str(entry.seq), _when(entry.time), human_size(entry.size), entry.sha256[:12],
                printable(entry.client or "-"), mark,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(6)]
    return [
        "  ".join(f"{cell:<{widths[n]}}" if n < 6 else cell for n, cell in enumerate(row)).rstrip()
        for row in rows
    ]


async def _with_api(reactor: IClientReactor, options: Any, work: Any) -> Any:
    connection = connect(reactor, options.server, options.cacert, options.insecure)
    api = client_api(reactor, connection, options)
    try:
        return await work(api)
    finally:
        await connection.close()


async def history(reactor: IClientReactor, options: Any, path: str, out: TextIO) -> None:
    """
    Print the versions of C{path} the server keeps, newest first.
    """
    path = _file(path)

    async def work(api: BoxsyncAPI) -> tuple[bool, list[VersionEntry]]:
        try:
            found: tuple[bool, list[VersionEntry]] = await api.history(path)
        except NotFound:
            raise UserError(f"{path}: no such file, and none in the history") from None
        return found

    deleted, versions = await _with_api(reactor, options, work)
    if options.json:
        print(json.dumps({"path": path, "deleted": deleted, "versions": [v.to_json() for v in versions]}, indent=1), file=out)
        return
    marks = ["deleted" if v.deleted else "current" if v.ended_seq is None else "" for v in versions]
    for line in _table(versions, "PATH", marks):
        print(line, file=out)
    print(f"{len(versions)} versions" + (" (deleted: restore brings back the newest)" if deleted else ""), file=out)


#: The most deleted files C{trash} lists.
TRASH_LISTED = 100_000


async def trash(reactor: IClientReactor, options: Any, folder: str, out: TextIO) -> None:
    """
    Print the files deleted under C{folder} ("" for the whole box), newest
    deletion first.
    """
    under = box_path(folder)
    with collection_paused():
        if options.json:
            # Each page printed as it comes, while the server looks up the next.
            async def listed(api: BoxsyncAPI) -> None:
                with JSONList(out) as printed:
                    async for page in api.trash_pages(under, TRASH_LISTED):
                        printed.add(json_lines(page))

            await _with_api(reactor, options, listed)
            return
        found: list[Deleted] = await _with_api(reactor, options, lambda api: api.trash(under, TRASH_LISTED))
        for line in _table(found, "DELETED FILE", [f"deleted {_when(v.deleted_time)}" for v in found]):
            print(line, file=out)
        print(f"{len(found)} deleted files", file=out)


_CHANGED = "changed meanwhile: left as it is"

#: How many files a restore of a folder asks for at once.
RESTORES_AT_ONCE = 16


@frozen
class _Outcome:
    """
    What a restore did at C{path}: C{result}, said in words; C{done} unless
    the path was left as it is.
    """

    path: str
    seq: int | None
    result: str
    done: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "seq": self.seq, "result": self.result}


async def restore(
    reactor: IClientReactor,
    options: Any,
    path: str,
    seq: int | None,
    at: str | None,
    exact: bool,
    out: TextIO,
    to: str | None = None,
) -> int:
    """
    Make a version current again: version C{seq} of the file C{path}; the
    last version of the deleted file C{path}; or (with C{at}) every file
    under the folder or file C{path} as it was then (C{exact}: deleting
    those made since, too).

    @param to: where to put what is restored instead, beside what C{path}
        holds now: a file, or with C{at} a folder, its files each at its
        place in it.
    @return: 0 if all was restored, 1 if a path had changed meanwhile or
        its version was no longer kept.
    """
    target = box_path(path) if at is not None else _file(path)
    if seq is not None and at is not None:
        raise UserError("give --seq or --at, not both")
    if exact and at is None:
        raise UserError("--exact goes with --at")
    place = _Place(target, target if to is None else _elsewhere(to))
    try:
        when = None if at is None else str(parse_time(at))
    except ProtocolError as e:
        raise UserError(f"--at: {e}") from None

    async def work(api: BoxsyncAPI) -> list[_Outcome]:
        if when is None:
            return [await _restore_file(api, place, seq)]
        return await _restore_at(api, place, when, exact)

    outcomes: list[_Outcome] = await _with_api(reactor, options, work)
    if options.json:
        print_json_list([outcome.to_json() for outcome in outcomes], out)
    else:
        for outcome in outcomes:
            print(printable(f"{outcome.path}: {outcome.result}"), file=out)
        if not outcomes:
            print(printable(f"{target or 'the box'}: nothing to restore"), file=out)
    return 0 if all(outcome.done for outcome in outcomes) else 1


def _elsewhere(to: str) -> str:
    """
    The wire path of C{--as}.

    @raise UserError: if it names the whole box.
    """
    found = box_path(to)
    if not found:
        raise UserError("--as: name a file (or, with --at, a folder) in the box, not all of it")
    return found


@frozen
class _Place:
    """
    What a restore takes (C{source}: a file, or a folder with C{--at}) and
    where it puts it (C{target}: the same place, or the one C{--as} names).
    """

    source: str
    target: str

    def of(self, path: str) -> str:
        """
        Where the version of C{path} (C{source} or a path below it) goes.
        """
        return self.target + path[len(self.source):]

    def said(self, path: str, seq: int, result: CommitResult) -> str:
        where = self.of(path)
        return f"restored version {seq} as seq {result.seq}" + ("" if where == path else f" at {where}")


async def _restore_file(api: BoxsyncAPI, place: _Place, seq: int | None) -> _Outcome:
    path = place.source
    try:
        deleted, versions = await api.history(path)
    except NotFound:
        raise UserError(f"{path}: no such file, and none in the history") from None
    current = next((v for v in versions if v.ended_seq is None), None)
    if seq is None:
        if not deleted:
            raise UserError(f"{path} is not deleted: give --seq N (see boxsync-client history {path}) or --at TIME")
        seq = versions[0].seq
    if not any(v.seq == seq for v in versions):
        raise UserError(f"{path} has no version {seq} (see boxsync-client history {path})")
    if place.target == path:
        if current is not None and current.seq == seq:
            return _Outcome(path, seq, f"already at seq {seq}")
        return await _one(api, place, path, seq, 0 if current is None else current.seq)
    # Elsewhere: onto nothing (a file there is the user's, never replaced).
    return await _one(api, place, path, seq, 0)


async def _one(api: BoxsyncAPI, place: _Place, path: str, seq: int, base: int) -> _Outcome:
    where = place.of(path)
    try:
        result = await api.restore(path, seq, base, None if where == path else where)
    except StaleBase:
        return _Outcome(path, seq, _CHANGED if where == path else f"{where} is in the box: left as it is", done=False)
    except NotFound:
        return _Outcome(path, seq, "that version is no longer kept", done=False)
    return _Outcome(path, seq, place.said(path, seq, result))


async def _restore_at(api: BoxsyncAPI, place: _Place, when: str, exact: bool) -> list[_Outcome]:
    target = place.source
    then = {v.path: v for v in await api.snapshot(target, when)}
    if target and not then:
        # Not a folder then: a file, as its folder had it.
        parent = target.rsplit("/", 1)[0] if "/" in target else ""
        then = {v.path: v for v in await api.snapshot(parent, when) if v.path == target}
    try:
        now = {file.path: file for file in await files_at(api, place.target)}
    except NotInBox:
        now = {}
    wanted = []
    for path, version in sorted(then.items()):
        current = now.get(place.of(path))
        if current is None or current.sha256 != version.sha256:
            wanted.append((path, version.seq, 0 if current is None else current.seq))
    outcomes = []
    # A few at a time: the server commits those that come together as one
    # group (one fsync for them all), and each costs a round trip less.
    for batch in batched(wanted, RESTORES_AT_ONCE):
        try:
            outcomes += await gatherResults(
                [Deferred.fromCoroutine(_one(api, place, *each)) for each in batch], consumeErrors=True
            )
        except FirstError as e:
            e.subFailure.raiseException()
    if exact:
        made = {place.of(path) for path in then}
        for path, current in sorted(now.items()):
            if path not in made:
                try:
                    await api.delete(path, current.seq)
                    outcomes.append(_Outcome(path, None, "deleted (made since)"))
                except StaleBase:
                    outcomes.append(_Outcome(path, None, _CHANGED, done=False))
    return outcomes


def _file(path: str) -> str:
    """
    The wire path of the file a command names.

    @raise UserError: if it names the whole box.
    """
    found = box_path(path)
    if not found:
        raise UserError("name a file in the box (or, with --at, a folder)")
    return found
