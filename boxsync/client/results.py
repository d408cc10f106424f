"""
What the client's calls give back: the server's answers to commits and
listings (as the wire reads them) and the result of a download.
"""

from __future__ import annotations

import os

from attrs import frozen

from ..wire import CommitResult, RemoteFile

__all__ = ["CommitResult", "RemoteFile", "DownloadResult"]


@frozen
class DownloadResult:
    """
    A file downloaded completely: its sha256 and size, and the seq of the
    version the server sent (and whether it is executable).
    """

    sha256: str
    size: int
    seq: int
    #: The downloaded file's stat once its mtime was set, if the download
    #: set it (a batch does, in its thread).
    placed: os.stat_result | None = None
    #: Whether the version sent is executable, if the server said.
    executable: bool | None = None
