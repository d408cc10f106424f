"""
What every route does with a request: read a header or a query argument,
answer in JSON, give a file's record as the wire carries it.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from ..wire import JSON, CommitResult, Delete, Download, Event, Folder, RemoteFile
from .index import FileRecord

__all__ = ["header", "query", "json_body", "encoded_json_body", "committed", "listed", "as_download", "as_event"]


def header(request: IRequest, name: str) -> str | None:
    """
    The value of the request's header C{name}, if it has one.
    """
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def query(request: IRequest, name: str) -> str | None:
    """
    The first value of the query argument C{name}, if there is one.
    """
    values = request.args.get(name.encode(), [])
    return values[0].decode("utf-8", "replace") if values else None


def json_body(request: IRequest, status: int, body: Any) -> bytes:
    """
    Answer C{request} with C{status} and C{body} as JSON.
    """
    return encoded_json_body(request, status, json.dumps(body).encode("utf-8") + b"\n")


def encoded_json_body(request: IRequest, status: int, body: bytes) -> bytes:
    """
    Answer C{request} with C{status} and C{body}, JSON already encoded.
    """
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON.encode("ascii"))
    return body


def committed(record: FileRecord) -> CommitResult:
    """
    C{record} as the answer to the commit that made it.
    """
    return CommitResult(
        path=record.path,
        seq=record.seq,
        sha256=record.sha256,
        size=record.size,
        mtime_ns=record.mtime_ns,
        deleted=record.deleted,
        executable=record.executable,
        folder=record.folder,
    )


def listed(record: FileRecord) -> RemoteFile:
    """
    C{record} as C{GET /files} lists it.
    """
    return RemoteFile(
        path=record.path,
        size=record.size,
        sha256=record.sha256,
        seq=record.seq,
        mtime_ns=record.mtime_ns,
        origin=record.origin,
        executable=record.executable,
    )


def as_download(record: FileRecord) -> Download:
    """
    The event that has a client fetch C{record}, a live version.
    """
    return Download(record.path, record.sha256, record.size, record.mtime_ns, record.seq, record.executable)


def as_event(record: FileRecord) -> Event:
    """
    The event that tells a client of C{record}: a file to fetch, a folder
    to make, or a path deleted.
    """
    if record.deleted:
        return Delete(record.path, record.seq)
    if record.folder:
        return Folder(record.path, record.seq)
    return as_download(record)
