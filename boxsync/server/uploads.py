"""
Request bodies with limits, and upload bodies streamed straight into the
box's staging area.

Twisted's C{Request} collects a body in memory or in a temporary file
elsewhere before any resource sees it, however large. L{StreamingRequest}
instead opens a staging file on the box's own file system as soon as the
headers of an upload have arrived, and writes (and hashes) each piece of the
body as it comes, so an upload of any size costs the same small memory and
is never copied. Every other body (a manifest) is collected as before, but
only up to a limit: past it, the rest is read and dropped, and the request
fails with L{BodyTooLarge}.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Callable

from twisted.web.server import Request

from .limits import LimitedSite
from .storage import StagingFile

__all__ = ["StreamingRequest", "UploadSite", "take_upload", "check_body", "BodyTooLarge"]


class BodyTooLarge(ValueError):
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


class UploadSite(LimitedSite):
    """
    A L{LimitedSite} whose requests stream uploads into staging files.

    @ivar new_staging: makes the staging file for an upload.
    @ivar max_upload: the largest upload body accepted, in bytes (C{None}:
        no limit).
    @ivar max_body: the largest body of any other request (a manifest)
        accepted, in bytes (C{None}: no limit).
    @ivar authorize: checks the C{Authorization} header before a byte of the
        body is stored, raising if it does not let the caller in.
    """

    def __init__(
        self,
        resource: object,
        new_staging: Callable[[], StagingFile],
        max_upload: int | None = None,
        authorize: Callable[[bytes | None], object] = lambda header: None,
        max_body: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, requestFactory=StreamingRequest, **kwargs)
        self.new_staging = new_staging
        self.max_upload = max_upload
        self.max_body = max_body
        self.authorize = authorize


class StreamingRequest(Request):
    """
    A request whose upload body goes to a L{StagingFile} as it arrives, and
    whose other bodies are kept only up to the site's C{max_body}.

    @ivar body_error: what went wrong with the body on its way in (refused
        credentials, too large, a full disk), for the route to raise.
    """

    staged: StagingFile | None = None
    body_error: Exception | None = None
    _limit: int | None = None
    _received = 0

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        site = getattr(channel, "site", None)
        if not isinstance(site, UploadSite):
            super().gotLength(length)
            return
        upload = is_upload(channel._command, channel._path)  # type: ignore[attr-defined]
        if not upload:
            self._limit = site.max_body
            if self._refused(length, "request body"):
                return
            super().gotLength(length)
            return
        self.content = BytesIO()
        try:
            site.authorize(self.requestHeaders.getRawHeaders(b"Authorization", [None])[0])
        except Exception as e:
            self.body_error = e
            return
        self._limit = site.max_upload
        if self._refused(length, "upload"):
            return
        try:
            self.staged = site.new_staging()
        except OSError as e:
            self.body_error = e

    def _refused(self, length: int | None, what: str) -> bool:
        if self._limit is None or length is None or length <= self._limit:
            return False
        self.content = BytesIO()
        self.body_error = BodyTooLarge(f"{what} of {length} bytes is over the limit of {self._limit}")
        return True

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_error is not None:
            return
        self._received += len(data)
        if self._limit is not None and self._received > self._limit:
            # The rest of the body is read and dropped, so the client gets
            # the answer instead of a reset connection.
            self.body_error = BodyTooLarge(f"body is over the limit of {self._limit} bytes")
            self._drop()
            if self.content is not None:
                self.content.close()
            self.content = BytesIO()
            return
        staged = self.staged
        if staged is None:
            super().handleContentChunk(data)
            return
        staged.write(data)
        if staged.error is not None:
            self.body_error = staged.error
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


def check_body(request: object) -> None:
    """
    @raise Exception: the error the body of C{request} met on its way in
        (refused credentials, too large, a full disk), if any.
    """
    error = getattr(request, "body_error", None)
    if error is not None:
        raise error


def take_upload(request: object) -> StagingFile:
    """
    Claim the staging file of an upload request; from here on the caller
    must place or discard it.

    @raise Exception: the error the upload met on its way in (see
        L{check_body}), if any.
    """
    check_body(request)
    staged = getattr(request, "staged", None)
    if staged is None:
        raise RuntimeError("this request has no streamed upload")
    request.staged = None  # type: ignore[attr-defined]
    return staged
