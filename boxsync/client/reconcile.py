"""
What the client does about an event or a local change, decided from what it
knows without doing any of it: the base it has for the path, and what a look
at the file found. The client's counterpart of the server's L{plan.decide
<boxsync.server.plan.decide>}: pure functions, each answering with one
action; the engine carries the action out.

The rule they all keep: nothing is overwritten or deleted here unless it is
unchanged since its base; an edit the server has not seen is kept (as a
conflict copy, or sent up as a new version). A folder is removed only if
nothing at all is in it.
"""

from __future__ import annotations

from typing import Union

from attrs import frozen

from ..wire import Download, Upload
from .scanner import Here, LocalFile
from .state import Base

__all__ = [
    "Action",
    "Clash",
    "DeleteFolderHere",
    "DeleteHere",
    "KeepFolder",
    "MakeFolder",
    "RecordFolder",
    "RemoveFolder",
    "SendFolder",
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
    "answered_late",
    "on_delete",
    "is_folder",
    "on_download",
    "on_folder",
    "on_folder_change",
    "on_folder_delete",
    "on_folder_insync",
    "on_folder_remove",
    "on_folder_upload",
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


@frozen
class MakeFolder:
    """
    Make the folder, and record it as version C{seq}; if C{over_file}, in
    the place of the file there, kept as a conflict copy first if
    C{keep_local} (it has an edit the server has not seen).
    """

    seq: int
    over_file: bool = False
    keep_local: bool = False


@frozen
class RecordFolder:
    """
    The folder is here: record it as version C{seq}.
    """

    seq: int


@frozen
class SendFolder:
    """
    Commit the folder (made here, empty) as the version after C{base}.
    """

    base: int


@frozen
class RemoveFolder:
    """
    Delete the folder on the server, from C{base}.
    """

    base: int


@frozen
class DeleteFolderHere:
    """
    Remove the folder here (nothing is in it), and drop its base.
    """


@frozen
class KeepFolder:
    """
    The folder was deleted on the server but something is in it here: keep
    it, and drop its base (it is synced through what it holds, if at all).
    """


@frozen
class Clash:
    """
    The server and this folder have a file and a folder at one path: say
    so, and try again later.
    """

    reason: str


Action = Union[
    Nothing,
    Record,
    Fetch,
    Send,
    SendMode,
    TakeMode,
    SendEdit,
    Remove,
    Forget,
    Revive,
    DeleteHere,
    MakeFolder,
    RecordFolder,
    SendFolder,
    RemoveFolder,
    DeleteFolderHere,
    KeepFolder,
    Clash,
]

#: What a folder holds, when it is there.
_FOLDERS = (Here.EMPTY, Here.FOLDER)


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


def on_download(event: Download, file: LocalFile | None, unanswered: str | None = None) -> Action:
    """
    The server has version C{event}; the file here is C{file}, which was
    last sent with sha256 C{unanswered} and no answer came, if it was.
    """
    if file is not None and file.sha256 == event.sha256:
        if event.executable in (None, file.executable):
            return Record(event.seq)
        if file.changed and file.base > 0:
            # Made executable (or not) here since its base: that goes up.
            return SendMode(event.seq)
        return TakeMode(event.seq, event.executable)
    own = answered_late(event.sha256, event.seq, bool(event.executable), file, unanswered)
    if own is not None:
        return own
    return Fetch(keep_local=file is not None and file.changed)


def answered_late(
    sha256: str, seq: int, executable: bool, file: LocalFile | None, unanswered: str | None
) -> SendEdit | None:
    """
    If the server's version C{seq} (of C{sha256}) is this client's own
    upload, committed though its answer was lost (it was last sent with
    sha256 C{unanswered}), and C{file} was edited here since: no conflict,
    the edit goes up from that version.
    """
    if file is not None and file.changed and unanswered is not None and unanswered == sha256:
        return SendEdit(sha256, seq, executable)
    return None


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


# Folders synced as folders of their own: what is done about one is decided
# from its base and from what is at its path now.


def is_folder(base: Base | None, here: Here) -> bool:
    """
    Whether what happens at a path concerns a folder: it has a folder's
    base, or a folder is there now.
    """
    return (base is not None and base.folder) or here in _FOLDERS


def on_folder(seq: int, here: Here, file: LocalFile | None = None) -> Action:
    """
    The server has the folder as version C{seq}; the path holds C{here}
    (if a file, C{file}, as a look found it).
    """
    if here in _FOLDERS:
        return RecordFolder(seq)
    if here is Here.NOTHING:
        return MakeFolder(seq)
    if file is not None:
        # A file the server has since replaced with the folder: as for a
        # download over it, an edit the server has not seen is kept.
        return MakeFolder(seq, over_file=True, keep_local=file.changed)
    return Clash(f"the box has a folder where this folder has {here.value}")


def on_folder_delete(base: Base | None, here: Here) -> Action:
    """
    The server deleted the path; it has the base C{base} here and holds
    C{here}, a folder, or had a folder's base.
    """
    if base is None:
        return Nothing()  # a folder never synced here: not this delete's
    if not base.folder:
        return Forget()  # a file here became a folder: that is sent up
    if here is Here.EMPTY:
        return DeleteFolderHere()
    if here is Here.FOLDER:
        return KeepFolder()
    return Forget()


def on_folder_change(base: Base | None, here: Here) -> Action:
    """
    The watcher (or a rescan) reports the path, which has a folder's base
    or holds a folder.
    """
    if here in _FOLDERS:
        if base is None:
            # A new folder is synced as one of its own while it is empty;
            # one with something in it comes with what it holds.
            return SendFolder(0) if here is Here.EMPTY else Nothing()
        if base.folder:
            return Nothing()
        return Remove(base.seq)  # a file became a folder: its delete first
    assert base is not None
    # Gone, or a file (or a link) in its place: its delete goes first.
    return RemoveFolder(base.seq)


def on_folder_upload(event: Upload, base: Base | None, here: Here) -> Action:
    """
    The plan asks for the folder, from C{event.base}.
    """
    if here not in _FOLDERS or (base is not None and not base.folder):
        return Nothing()
    if base is not None and base.seq > event.base:
        return Nothing()  # sent since the plan was made
    return SendFolder(event.base)


def on_folder_remove(seq: int, base: Base | None, here: Here) -> Action:
    """
    The plan says the delete of the path, from version C{seq}, can be
    committed; it has the base C{base} here and holds C{here}.
    """
    if base is not None and not base.folder:
        return Remove(seq)  # a file that became a folder: the folder is new after
    return Nothing() if here in _FOLDERS else RemoveFolder(seq)


def on_folder_insync(seq: int, here: Here) -> Action:
    """
    The server has the folder the manifest reported, as version C{seq}.
    """
    return RecordFolder(seq) if here in _FOLDERS else Nothing()
