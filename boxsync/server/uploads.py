"""
Upload bodies streamed straight into the box's staging area.

Twisted's C{Request} collects a body in memory or in a temporary file
elsewhere before any resource sees it. L{StreamingRequest} instead opens a
staging file on the box's own file system as soon as the headers of an upload
have arrived, and writes (and hashes) each piece of the body as it comes, so
an upload of any size costs the same small memory and is never copied.
"""

from __future__ import annotations

from io import BytesIO
from typing import Callable

from twisted.web.server import Request, Site

from .storage import StagingFile

__all__ = ["StreamingRequest", "UploadSite", "take_upload", "UploadTooLarge"]


class UploadTooLarge(ValueError):
    """
    The body is larger than the server accepts.
    """


def is_upload(method: bytes, uri: bytes) -> bool:
    """
    Whether a request's body is file content to stream into the box.
    """
    path = uri.split(b"?", 1)[0]
    return (method == b"PUT" and path.startswith(b"/files/")) or (
        method == b"POST" and path == b"/upload"
    )


class UploadSite(Site):
    """
    A L{Site} whose requests stream uploads into staging files.

    @ivar new_staging: makes the staging file for an upload.
    @ivar max_upload: the largest body accepted, in bytes (C{None}: no limit).
    @ivar authorize: checks the C{Authorization} header before a byte of the
        body is stored, raising if it does not let the caller in.
    """

    def __init__(
        self,
        resource: object,
        new_staging: Callable[[], StagingFile],
        max_upload: int | None = None,
        authorize: Callable[[bytes | None], object] = lambda header: None,
        **kwargs: object,
    ) -> None:
        super().__init__(resource, requestFactory=StreamingRequest, **kwargs)  # type: ignore[arg-type]
        self.new_staging = new_staging
        self.max_upload = max_upload
        self.authorize = authorize


class StreamingRequest(Request):
    """
    A request whose upload body goes to a L{StagingFile} as it arrives.
    """

    staged: StagingFile | None = None
    upload_error: Exception | None = None
    _received = 0

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        site = getattr(channel, "site", None)
        if not isinstance(site, UploadSite) or not is_upload(
            channel._command, channel._path  # type: ignore[attr-defined]
        ):
            super().gotLength(length)
            return
        self.content = BytesIO()
        try:
            site.authorize(self.requestHeaders.getRawHeaders(b"Authorization", [None])[0])
        except Exception as e:
            self.upload_error = e
            return
        if site.max_upload is not None and length is not None and length > site.max_upload:
            self.upload_error = UploadTooLarge(
                f"upload of {length} bytes is over the limit of {site.max_upload}"
            )
            return
        try:
            self.staged = site.new_staging()
        except OSError as e:
            self.upload_error = e

    def handleContentChunk(self, data: bytes) -> None:
        staged = self.staged
        if staged is None:
            if self.upload_error is None:
                super().handleContentChunk(data)
            return
        self._received += len(data)
        site = self.channel.site  # type: ignore[attr-defined]
        if site.max_upload is not None and self._received > site.max_upload:
            self.upload_error = UploadTooLarge(
                f"upload is over the limit of {site.max_upload} bytes"
            )
            self._drop()
            return
        staged.write(data)
        if staged.error is not None:
            self.upload_error = staged.error
            self.staged = None

    def _drop(self) -> None:
        if self.staged is not None:
            self.staged.discard()
            self.staged = None

    def finish(self) -> object:
        self._drop()
        return super().finish()

    def connectionLost(self, reason: object) -> None:
        self._drop()
        super().connectionLost(reason)


def take_upload(request: object) -> StagingFile:
    """
    Claim the staging file of an upload request; from here on the caller
    must place or discard it.

    @raise Exception: the error the upload met on its way in (disk full, too
        large), if any.
    """
    error = getattr(request, "upload_error", None)
    if error is not None:
        raise error
    staged = getattr(request, "staged", None)
    if staged is None:
        raise RuntimeError("this request has no streamed upload")
    request.staged = None  # type: ignore[attr-defined]
    return staged
