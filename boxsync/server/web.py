"""
The web page: a person's view of their box, served by the server itself.

The page is static files from the package (L{static_files}) that talk to the same
routes the clients use: C{GET /files} to list, C{POST /sync} for the live
event stream, C{PUT}/C{DELETE /files/...} to change the box. What the page
adds is here:

 - L{Sessions <boxsync.server.sessions.Sessions>} (in L{sessions
   <boxsync.server.sessions>}): signing in, the session cookie, CSRF.
 - L{WebPage}: the routes only the page needs (sign-in and sign-out, the
   static files under a strict Content-Security-Policy, a file's record, a
   download as an attachment, a folder as a zip streamed on the fly, moving
   and renaming, the account's clients and their transfers under way).
"""

from __future__ import annotations

import os
import secrets
import time
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, BinaryIO, cast
from urllib.parse import quote

from attrs import define, field
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from zope.interface import implementer

from ..paths import BadPath, normalize
from ..wire import CLIENT_HEADER, ProtocolError
from .app import BoxsyncApp
from .auth import Principal, Unauthorized
from .box import Box, NotFound
from .files import box_file
from .http import header, json_body, listed
from .index import FileRecord
from .presence import Presence
from .sessions import (
    API_POLICY,
    PAGE_POLICY,
    SIGN_IN,
    Session,
    Sessions,
    check_csrf,
    json_request,
    same_origin,
    secure_headers,
    set_cookie,
)
from .staging import StagingFile

__all__ = [
    "WebPage",
    "static_files",
    "zip_member",
]


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

#: How much of a file the zip of a folder reads at a time.
ZIP_CHUNK = 256 * 1024


def static_files() -> dict[str, tuple[bytes, str]]:
    """
    The page's static files, from the installed package: name to content
    and content type.
    """
    folder = resources.files("boxsync.server") / "static"
    found = {}
    for entry in folder.iterdir():
        kind = _TYPES.get(os.path.splitext(entry.name)[1])
        if kind is not None and entry.is_file():
            found[entry.name] = (entry.read_bytes(), kind)
    return found


async def records_under(box: Box, folder: str) -> AsyncIterator[FileRecord]:
    """
    The live files below C{folder} (the whole box if C{""}), and the
    folders synced as folders of their own, in path order, the index read a
    page at a time.
    """
    prefix = f"{normalize(folder)}/" if folder else ""
    after = prefix
    while True:
        page: list[FileRecord] = await box.index.page(box.account, after, 500)
        for record in page:
            if not record.path.startswith(prefix):
                return
            if not record.deleted:
                yield record
        if len(page) < 500:
            return
        after = page[-1].path


def zip_member(record: FileRecord, folder: str) -> zipfile.ZipInfo:
    """
    The entry of C{record} in the zip of C{folder}: its path from the
    folder's parent, so the zip unpacks into a folder of that name.
    """
    name = record.path
    parent = folder.rpartition("/")[0]
    if parent:
        name = name[len(parent) + 1 :]
    when = time.localtime(record.mtime_ns / 1e9)
    if record.folder:
        name += "/"
    info = zipfile.ZipInfo(name, date_time=max(when[:6], (1980, 1, 1, 0, 0, 0)))
    info.compress_type = zipfile.ZIP_STORED
    if record.folder:
        info.external_attr = 0o40755 << 16 | 0x10  # and MS-DOS's folder flag
    else:
        info.external_attr = (0o755 if record.executable else 0o644) << 16
    return info


class _Sink:
    """
    Where a C{ZipFile} writes: kept until taken, never seekable (so each
    entry's sizes go after its data, and nothing is held but what was just
    written).
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def seek(self, *args: object) -> int:
        raise OSError("not seekable")

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


@implementer(IPushProducer)
@define
class _Drain:
    """
    Back-pressure for a response written from a coroutine: L{wait} returns
    once the connection takes more.
    """

    _paused: Deferred[None] | None = None

    async def wait(self) -> None:
        if self._paused is not None:
            await self._paused

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self.resumeProducing()


@define
class _Linked(StagingFile):
    """
    A staging file that is a second name of a file already in the box, for
    a move: durable already, its digest known.
    """

    digest: str = ""

    @property
    def sha256(self) -> str:
        return self.digest


@define
class WebPage:
    """
    The routes of the page, added to the server's Klein app, with its
    error handling and its authentication.
    """

    clock: IReactorTime
    api: BoxsyncApp
    sessions: Sessions
    presence: Presence
    files: dict[str, tuple[bytes, str]] = field(factory=static_files)

    def install(self, app: Klein) -> None:
        # The app's one authorising wrapper: a session or an Authorization header.
        authorized = self.api._authorized
        # Klein names an endpoint after its function: these need names of their own.
        routes: list[tuple[str, str, Any]] = [
            ("/", "GET", self.index),
            ("/static/<name>", "GET", self.static),
            (SIGN_IN, "POST", self.sign_in),
            ("/web/session", "GET", authorized(self.whoami)),
            ("/web/session", "DELETE", self.sign_out),
            ("/web/clients", "GET", authorized(self.clients)),
            ("/web/record/<path:path>", "GET", authorized(self.record)),
            ("/web/download/<path:path>", "GET", authorized(self.download)),
            ("/web/zip", "GET", authorized(self.zip)),
            ("/web/zip/<path:path>", "GET", authorized(self.zip)),
            ("/web/move", "POST", authorized(self.move)),
        ]
        for n, (url, method, route) in enumerate(routes):
            app.route(url, methods=[method], endpoint=f"web_{n}")(route)

    def _page(self, request: IRequest, name: str) -> bytes:
        found = self.files.get(name)
        if found is None:
            raise NotFound(f"{name!r} is not a file of the page")
        content, kind = found
        secure_headers(request, PAGE_POLICY)
        request.setHeader(b"Content-Type", kind.encode())
        request.setHeader(b"Cache-Control", b"no-cache")
        return content

    def index(self, request: IRequest) -> bytes:
        return self._page(request, "index.html")

    def static(self, request: IRequest, name: str) -> bytes:
        return self._page(request, name)

    async def sign_in(self, request: IRequest) -> bytes:
        same_origin(request)
        token = json_request(request).get("token")
        if not isinstance(token, str) or not token.strip():
            raise ProtocolError("give the token to sign in with")
        session = await self.sessions.open(token)
        set_cookie(request, session.cookie, int(session.expires - self.clock.seconds()))
        secure_headers(request, API_POLICY)
        return json_body(request, 200, self._who(session))

    async def sign_out(self, request: IRequest) -> bytes:
        session = self.sessions.session(request)
        if session is not None:
            check_csrf(request, session)
            await self.sessions.sign_out(session)
        set_cookie(request, "", 0)
        secure_headers(request, API_POLICY)
        return json_body(request, 200, {"signed_out": True})

    @staticmethod
    def _who(session: Session) -> dict[str, Any]:
        principal = session.principal
        return {"account": principal.account, "client": principal.client, "csrf": session.csrf}

    async def whoami(self, request: IRequest, principal: Principal) -> bytes:
        """
        Who is signed in, the CSRF token for the page's requests, and the
        account's current seq (list the box after reading it, then open the
        event stream from it: nothing is missed in between).
        """
        session = self.sessions.session(request)
        if session is None:
            raise Unauthorized("sign in first")
        box = self.api.boxes(principal.account)
        seq = await box.index.current_seq(principal.account)
        return json_body(request, 200, {**self._who(session), "seq": seq})

    async def clients(self, request: IRequest, principal: Principal) -> bytes:
        """
        The clients of the account that had an event stream open since the
        server started (any server of its index), or have a transfer under
        way: how many streams each has open now, when it was last connected
        (now, while it transfers), and its transfers.
        """
        found = await self.presence.clients(principal.account)
        return json_body(request, 200, {"now": self.clock.seconds(), "clients": [c.to_json() for c in found]})

    async def record(self, request: IRequest, principal: Principal, path: str) -> bytes:
        """
        The live file at C{path}: what C{GET /files} lists of it.
        """
        box = self.api.boxes(principal.account)
        path = normalize(path)
        record: FileRecord | None = await box.index.get(principal.account, path)
        if record is None or record.deleted or record.folder:
            raise NotFound(f"{path!r} is not in the box")
        return json_body(request, 200, listed(record).to_json())

    async def download(self, request: IRequest, principal: Principal, path: str) -> Any:
        """
        The file at C{path} to save, not to show (resumable, as
        C{GET /files/...}).
        """
        found = await box_file(self.api.boxes(principal.account), path)
        request.setHeader(b"Content-Disposition", _attachment(path.rpartition("/")[2]))
        return found

    async def zip(self, web_request: IRequest, principal: Principal, path: str = "") -> None:
        """
        The live files below folder C{path} (the whole box without one), as
        a zip written as it is read: nothing is held but one piece of one
        file. Files are stored as they are (most are compressed already).
        """
        request = cast(Request, web_request)
        folder = normalize(path) if path else ""
        box = self.api.boxes(principal.account)
        records = records_under(box, folder)
        first = await anext(records, None)
        if first is None:
            raise NotFound(f"{folder!r} is not a folder of the box")
        name = (folder.rpartition("/")[2] or principal.account) + ".zip"
        request.setHeader(b"Content-Type", b"application/zip")
        request.setHeader(b"Content-Disposition", _attachment(name))
        drain = _Drain()
        request.registerProducer(drain, True)
        sink = _Sink()
        try:
            with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:  # type: ignore[call-overload]
                record: FileRecord | None = first
                while record is not None:
                    await self._zip_file(box, archive, sink, record, folder, request, drain)
                    record = await anext(records, None)
            request.write(sink.take())
        finally:
            if not getattr(request, "_disconnected", False):
                request.unregisterProducer()

    async def _zip_file(
        self,
        box: Box,
        archive: zipfile.ZipFile,
        sink: _Sink,
        record: FileRecord,
        folder: str,
        request: IRequest,
        drain: _Drain,
    ) -> None:
        if record.folder:
            archive.writestr(zip_member(record, folder), b"")
            request.write(sink.take())
            return
        source = await box.storage.in_thread(lambda: _open_regular(box, record.path))
        if source is None:
            return  # deleted meanwhile: left out
        with source, archive.open(zip_member(record, folder), "w", force_zip64=True) as member:
            while chunk := await box.storage.in_thread(lambda: source.read(ZIP_CHUNK)):
                member.write(chunk)
                request.write(sink.take())
                await drain.wait()
        request.write(sink.take())

    async def move(self, request: IRequest, principal: Principal) -> bytes:
        """
        Move (or rename) the file or folder C{from} to C{to}, where nothing
        is: each file is committed at its new path as a second name of the
        same bytes (nothing is copied), then deleted at the old one; every
        client sees the new file and the deletion.
        """
        body = json_request(request)
        source, target = normalize(_text(body, "from")), normalize(_text(body, "to"))
        if target == source or target.startswith(source + "/"):
            raise BadPath(f"{source!r} cannot move into itself")
        box = self.api.boxes(principal.account)
        origin = header(request, CLIENT_HEADER) or principal.client
        record: FileRecord | None = await box.index.get(principal.account, source)
        if record is not None and not record.deleted and not record.folder:
            moves = [(record, target)]
        else:
            moves = [(each, target + each.path[len(source) :]) async for each in records_under(box, source)]
            if record is not None and not record.deleted:
                moves.insert(0, (record, target))
        if not moves:
            raise NotFound(f"{source!r} is not in the box")
        for old, new in moves:
            if old.folder:
                await box.make_folder(new, 0, origin=origin)
                continue
            linked = await box.storage.in_thread(lambda: _link(box, old))
            await box.commit(new, linked, 0, old.mtime_ns, origin=origin, executable=old.executable)
            await box.delete(old.path, old.seq, origin=origin)
        # The folders go once what was in them has: the deepest first.
        for old, _ in reversed(moves):
            if old.folder:
                await box.delete_folder(old.path, old.seq, origin=origin)
        return json_body(request, 200, {"moved": len(moves)})


def _open_regular(box: Box, path: str) -> BinaryIO | None:
    """
    The regular file at C{path}, open to read; C{None} if there is none
    (never through a link, never waiting on a FIFO). Blocking.
    """
    return box.storage.open_file(path)


def _link(box: Box, record: FileRecord) -> _Linked:
    """
    A second name, in the staging folder, of the file of C{record}.

    @raise NotFound: if it is gone.
    """
    staged = box.storage.staging / f"mv-{secrets.token_hex(8)}"
    if not box.storage.link(record.path, staged):
        raise NotFound(f"{record.path!r} is not in the box")
    return _Linked(Path(staged), None, size=record.size, digest=record.sha256)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a path")
    return value


def _attachment(name: str) -> bytes:
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}".encode()
