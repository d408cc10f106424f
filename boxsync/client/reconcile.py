"""
What the client does about an event or a local change, decided from what it
knows without doing any of it: the base it has for the path, and what a look
at the file found. The client's counterpart of the server's L{plan.decide
<boxsync.server.plan.decide>}: pure functions, each answering with one
action; the engine carries the action out.

The rule they all keep: nothing is overwritten or deleted here unless it is
unchanged since its base; an edit the server has not seen is kept (as a
conflict copy, or sent up as a new version).
"""

from __future__ import annotations

from typing import Union

from attrs import frozen

from ..wire import Download, Upload
from .scanner import LocalFile
from .state import Base

__all__ = [
    "Action",
    "DeleteHere",
    "Fetch",
    "Forget",
    "Nothing",
    "Record",
    "Remove",
    "Revive",
    "Send",
    "SendEdit",
    "SendMode",
    "TakeMode",
    "on_delete",
    "on_download",
    "on_insync",
    "on_local_change",
    "on_upload",
    "outdated",
]


@frozen
class Nothing:
    """
    Nothing to do.
    """


@frozen
class Record:
    """
    The file is already that version: record it as its base (of C{seq}).
    """

    seq: int


@frozen
class Fetch:
    """
    Download the version; keep the local copy as a conflict copy first if
    C{keep_local} (it has an edit the server has not seen).
    """

    keep_local: bool


@frozen
class Send:
    """
    Upload the file as the next version after C{base}.
    """

    base: int


@frozen
class SendMode:
    """
    The file's bytes are those of its base, version C{base}: only whether
    it is executable changed. Commit that alone, without the bytes.
    """

    base: int


@frozen
class TakeMode:
    """
    The file's bytes are those of version C{seq}, which differs from it only
    in being C{executable} or not: make the file so, and record the base.
    """

    seq: int
    executable: bool


@frozen
class SendEdit:
    """
    The file was edited since the manifest reported it as the server's
    version C{seq} (with sha256 C{sha256}, executable or not): that is its
    base, and the edit goes up from it.
    """

    sha256: str
    seq: int
    executable: bool = False


@frozen
class Remove:
    """
    Delete the path on the server, from C{base}.
    """

    base: int


@frozen
class Forget:
    """
    Drop the path's base: there is no file to act on.
    """


@frozen
class Revive:
    """
    Changed here after it was deleted on the server: the edit wins. Drop
    the base and upload the file as the version after the delete (C{seq}).
    """

    seq: int


@frozen
class DeleteHere:
    """
    Delete the local file (unchanged since its base).
    """


Action = Union[Nothing, Record, Fetch, Send, SendMode, TakeMode, SendEdit, Remove, Forget, Revive, DeleteHere]


def outdated(base: Base | None, seq: int) -> bool:
    """
    Whether this client is past version C{seq} of a path already (it has
    committed a newer one since): an event about that version, from a plan
    made before, has nothing left to do.
    """
    return base is not None and base.seq >= seq


def _send(seq: int, base: Base | None, file: LocalFile) -> Send | SendMode:
    """
    Send C{file} as the version after C{seq}: only its mode if its bytes are
    those of its base and that base is C{seq}.
    """
    if base is not None and base.seq == seq and file.sha256 == base.sha256:
        return SendMode(seq)
    return Send(seq)


def on_download(event: Download, file: LocalFile | None) -> Action:
    """
    The server has version C{event}; the file here is C{file}.
    """
    if file is not None and file.sha256 == event.sha256:
        if event.executable in (None, file.executable):
            return Record(event.seq)
        if file.changed and file.base > 0:
            # Made executable (or not) here since its base: that goes up.
            return SendMode(event.seq)
        return TakeMode(event.seq, event.executable)
    return Fetch(keep_local=file is not None and file.changed)


def on_delete(seq: int, base: Base | None, file: LocalFile | None) -> Action:
    """
    The server deleted the path as version C{seq}; the file here is C{file}.
    """
    if file is None:
        return Forget()
    if file.changed or base is None:
        return Revive(seq)
    return DeleteHere()


def on_insync(seq: int, sent: tuple[str, bool] | None, file: LocalFile | None) -> Action:
    """
    The server has, as version C{seq}, what the manifest reported for the
    path (C{sent}: the sha256 it reported and whether the file was
    executable, if it reported them); the file is C{file} now.
    """
    if file is None:
        return Nothing()
    if sent is None or (file.sha256, file.executable) == sent:
        return Record(seq)
    sha256, executable = sent
    return SendEdit(sha256, seq, executable)


def on_local_change(base: Base | None, file: LocalFile | None) -> Action:
    """
    The watcher (or a rescan) reports the path; the file is C{file}.
    """
    if file is None:
        return Remove(base.seq) if base is not None else Nothing()
    if file.changed or base is None:
        return _send(base.seq if base is not None else 0, base, file)
    return Nothing()


def on_upload(event: Upload, base: Base | None, file: LocalFile | None) -> Action:
    """
    The plan asks for the file, from C{event.base}; the file is C{file}.
    """
    if file is None:
        return Nothing()
    if base is not None and base.seq > event.base:
        # Uploaded by this client since the plan was made (a change the
        # watcher reported): only what changed after that goes up.
        return _send(base.seq, base, file) if file.changed else Nothing()
    return _send(event.base, base, file)
