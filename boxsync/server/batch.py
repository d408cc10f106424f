"""
Batches of small files: many uploads in one request, many downloads in one
answer (C{POST /batch/upload}, C{POST /batch/download}).

One request per small file costs more than the file: the request and its
answer, a thread hop to write it, an fsync, a commit. A batch upload is
written to the staging area in one thread hop, made durable with one
C{syncfs} of the box's file system (every file of the batch at once, where
one fsync per file forces one journal commit each), and joins the box's next
group commit as a whole. A batch download reads every file in one thread
hop. Each file still succeeds or fails on its own, as it would alone.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from twisted.logger import Logger

from .. import libc
from ..fs import write_small
from ..wire import (
    BATCH_FILE_LIMIT,
    BATCH_MAX_BYTES,
    BatchFile,
    ErrorAnswer,
    Refusal,
    encode_part,
)
from .beneath import Folders
from .box import Box, DigestMismatch, MissingBlocks
from .index import FileRecord
from .staging import StagingFile, as_box_error
from .uploads import BodyTooLarge, check_size

__all__ = ["upload_batch", "delete_batch", "download_batch"]

log = Logger()


#: From how many files on, a batch is made durable with one C{syncfs} rather
#: than with an fsync each: an fsync costs ~0.6 ms a file here, a C{syncfs} ~10 ms
#: (it waits for every dirty page of the file system, not just the batch's).
SYNCFS_FROM = 16


def _make_durable(fds: Sequence[int]) -> None:
    """
    Make the data of the files open as C{fds}, all on one file system,
    durable: one C{syncfs} for many of them, else (or where there is no
    C{syncfs}) one fsync each.

    @raise OSError: if the file system reports a write error.
    """
    syncfs = libc.function("syncfs", ctypes.c_int)
    if syncfs is not None and len(fds) >= SYNCFS_FROM:
        libc.check(syncfs(fds[0]))
        return
    for fd in fds:
        os.fsync(fd)


def _stage(
    staging: Path, files: Sequence[tuple[BatchFile, bytes]], max_upload: int | None
) -> list[StagingFile | BaseException]:
    """
    Write each file of a batch to a new staging file with its final mtime,
    then make them all durable at once (in a thread); each gets its mode
    as it is placed.

    @return: for each file, its staging file, or why it could not be
        staged (its sha256 is not the one announced, the disk is full).
    """
    outcomes: list[StagingFile | BaseException] = []
    fds: list[int] = []
    try:
        for file, data in files:
            try:
                check_size(file.path, len(data), max_upload)
            except BodyTooLarge as e:
                outcomes.append(e)
                continue
            digest = hashlib.sha256(data)
            if digest.hexdigest() != file.sha256:
                outcomes.append(
                    DigestMismatch(
                        f"{file.path}: body has sha256 {digest.hexdigest()}, "
                        f"not {file.sha256} as announced"
                    )
                )
                continue
            try:
                fd, name = tempfile.mkstemp(dir=staging, prefix="up-")
            except OSError as e:
                outcomes.append(as_box_error(e))
                continue
            fds.append(fd)
            staged = StagingFile(Path(name), None, size=len(data), hash=digest)
            try:
                os.fchmod(fd, 0o644)
                write_small(fd, data, file.mtime_ns)
            except OSError as e:
                staged.discard()
                outcomes.append(as_box_error(e))
                continue
            outcomes.append(staged)
        try:
            _make_durable(fds)
        except OSError as e:
            error = as_box_error(e)
            for i, outcome in enumerate(outcomes):
                if isinstance(outcome, StagingFile):
                    outcome.discard()
                    outcomes[i] = error
    finally:
        for fd in fds:
            os.close(fd)
    return outcomes


async def upload_batch(
    box: Box,
    files: Sequence[tuple[BatchFile, bytes]],
    origin: str,
    stream: str | None,
    max_upload: int | None = None,
) -> list[FileRecord | BaseException]:
    """
    Commit each file of a batch upload, all in one group if they can be.

    @param max_upload: the largest file accepted (C{None}: no limit); a
        larger one is refused with L{BodyTooLarge}, as it would be alone.

    @return: for each file, its stored record or why it failed (a stale
        base, a sha256 that is not the one announced, a full disk...).
    """
    files, refused = await _take_stored(box, files)
    staging = box.storage.staging
    to_stage = [file for i, file in enumerate(files) if i not in refused]
    written = iter(await box.storage.in_thread(lambda: _stage(staging, to_stage, max_upload)))
    staged = [refused[i] if i in refused else next(written) for i in range(len(files))]
    committing = iter(
        box.commit_batch(
            [
                (file.path, outcome, file.base, file.mtime_ns, file.executable)
                for (file, _), outcome in zip(files, staged)
                if isinstance(outcome, StagingFile)
            ],
            origin,
            stream,
        )
    )
    results: list[FileRecord | BaseException] = []
    for outcome in staged:
        if not isinstance(outcome, StagingFile):
            results.append(outcome)
            continue
        try:
            results.append(await next(committing))
        except Exception as e:
            results.append(e)
    _log_batch("uploaded", origin, results, sized=True)
    return results


async def delete_batch(
    box: Box, deletes: Sequence[tuple[str, int | None]], origin: str, stream: str | None
) -> list[FileRecord | BaseException]:
    """
    Commit each delete of a batch, all in one group (see L{Box.delete_many}).

    @return: for each, its tombstone or why it was not deleted.
    """
    results = await box.delete_many(deletes, origin, stream, batched=True)
    _log_batch("deleted", origin, results)
    return results


async def _take_stored(
    box: Box, files: Sequence[tuple[BatchFile, bytes]]
) -> tuple[list[tuple[BatchFile, bytes]], dict[int, BaseException]]:
    """
    The files of a batch with the bytes of its stored parts (those the
    client did not send, as the account has their content) taken from the
    block store; and, by their place in the batch, the stored parts whose
    content the account no longer has.
    """
    wanted = [file.sha256 for file, _ in files if file.stored]
    if not wanted:
        return list(files), {}
    contents: dict[str, bytes] = await box.blocks.read_many(wanted)
    taken: list[tuple[BatchFile, bytes]] = []
    refused: dict[int, BaseException] = {}
    for i, (file, data) in enumerate(files):
        if file.stored:
            data = contents.get(file.sha256, b"")
            if file.sha256 not in contents:
                refused[i] = MissingBlocks([file.sha256])
        taken.append((file, data))
    return taken, refused


def _log_batch(what: str, origin: str, results: Sequence[FileRecord | BaseException], sized: bool = False) -> None:
    """
    Log a batch in one line (each file is logged at debug level): C{what}
    was done to its files, and with C{sized}, how many bytes they hold.
    """
    records = [result for result in results if isinstance(result, FileRecord)]
    log.info(
        "{origin} {what} {count} files" + (" ({size} bytes)" if sized else "") + " in a batch{seqs}; {refused} refused",
        what=what,
        origin=origin or "a client",
        count=len(records),
        size=sum(record.size for record in records),
        seqs=f" as seqs {records[0].seq} to {records[-1].seq}" if records else "",
        refused=len(results) - len(records),
    )


async def download_batch(box: Box, paths: Sequence[str]) -> list[bytes]:
    """
    The parts of the answer to a batch download: for each path, a header
    with the file's seq, sha256, size, mtime and whether it is executable,
    and then its bytes, or a
    header with the C{status} and C{error} of why it is not there (404: no
    such file; 413: too large for a batch; 503: the batch is full, ask
    again).
    """
    rows: dict[str, FileRecord] = await box.index.get_many(box.account, list(paths))

    def read() -> list[bytes]:
        with box.storage.folders() as folders:
            return read_through(folders)

    def read_through(folders: Folders) -> list[bytes]:
        parts: list[bytes] = []
        total = 0
        for path in paths:
            row = rows.get(path)
            data = None
            if row is not None and not row.deleted:
                if row.size > BATCH_FILE_LIMIT:
                    parts += _refusal(path, Refusal.TOO_LARGE, f"{path!r} is too large for a batch: download it on its own")
                    continue
                data = box.storage.read_small(path, BATCH_FILE_LIMIT, folders)
            if row is None or data is None:
                parts += _refusal(path, Refusal.NOT_FOUND, f"{path!r} is not in the box")
                continue
            if total + len(data) > BATCH_MAX_BYTES:
                parts += _refusal(path, Refusal.ASK_AGAIN, "the batch is full: ask again")
                continue
            total += len(data)
            header: dict[str, Any] = {
                "path": path,
                "status": 200,
                "seq": row.seq,
                "sha256": row.sha256,
                "mtime_ns": row.mtime_ns,
                "size": len(data),
                "executable": row.executable,
            }
            parts += encode_part(header, data)
        return parts

    result: list[bytes] = await box.storage.in_thread(read)
    return result


def _refusal(path: str, refusal: Refusal, error: str) -> list[bytes]:
    return encode_part({"path": path, "status": int(refusal), **ErrorAnswer(refusal, error).to_json()})
