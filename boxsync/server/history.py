"""
The history routes: the versions of a path, the bytes of one version, the
files deleted under a folder, a folder as it was at a time, and a restore
(see L{boxsync.wire.history}). Each works within the caller's account: a
token of one account never sees another's history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from attrs import define
from klein import Klein
from twisted.web.iweb import IRequest

from ..paths import normalize
from ..wire import BEFORE_HEADER, CLIENT_HEADER, STREAM_HEADER, ProtocolError, count_header
from ..wire.history import Restore, VersionEntry, iso_time, parse_time, trash_rows
from ..wire.values import check_count, json_object
from .auth import Principal
from .box import Box, NotFound
from .files import BoxFile
from .http import committed, encoded_json_body, header, json_body, query
from .index import FileRecord, TrashPage, VersionRecord

if TYPE_CHECKING:
    from .app import BoxsyncApp

__all__ = ["HistoryRoutes", "entry"]

#: The most deleted files one C{GET /trash} answer lists by default, and
#: at most.
TRASH_LIMIT = 1000
MAX_TRASH_LIMIT = 100_000


def entry(version: FileRecord | VersionRecord) -> VersionEntry:
    """
    A live or kept version as the history lists it.
    """
    ended = (None, None) if isinstance(version, FileRecord) else (version.ended_seq, iso_time(version.ended_ns))
    return VersionEntry(
        version.path, version.seq, iso_time(version.committed_ns), version.size, version.sha256,
        version.mtime_ns, version.origin, *ended,
    )


def _folder(request: IRequest) -> str:
    under = query(request, "under") or ""
    return normalize(under) if under.strip("/") else ""


@define
class HistoryRoutes:
    """
    The history routes of C{api}'s boxes.
    """

    api: BoxsyncApp

    def install(self, app: Klein) -> None:
        authorized = self.api._authorized
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("/history/<path:path>", "GET", self.history),
            ("/versions/<int:seq>", "GET", self.version),
            ("/trash", "GET", self.trash),
            ("/snapshot", "GET", self.snapshot),
            ("/restore", "POST", self.restore),
        ]
        for n, (url, method, route) in enumerate(routes):
            app.route(url, methods=[method], endpoint=f"history_{n}")(authorized(route))

    def _box(self, principal: Principal) -> Box:
        return self.api.boxes(principal.account)

    async def history(self, request: IRequest, principal: Principal, path: str) -> bytes:
        """
        Every version of C{path} kept, the live one first, then newest first.
        """
        box = self._box(principal)
        path = normalize(path)
        current: FileRecord | None = await box.index.get(box.account, path)
        kept: list[VersionRecord] = await box.index.versions(box.account, path)
        if current is not None and current.folder:
            current = None  # a folder has no versions
        versions = [entry(current)] if current is not None and not current.deleted else []
        deleted_at = current.seq if current is not None and current.deleted else None
        for version in kept:
            listed = entry(version)
            versions.append(
                VersionEntry(**{**listed.to_json(), "deleted": version.ended_seq == deleted_at})
            )
        if not versions:
            raise NotFound(f"{path!r} has no history here")
        return json_body(
            request, 200, {"path": path, "deleted": deleted_at is not None, "versions": [v.to_json() for v in versions]}
        )

    async def version(self, request: IRequest, principal: Principal, seq: int) -> Any:
        """
        The bytes of version C{seq} (with C{Range}, as a current file).
        """
        box = self._box(principal)
        found = await box.version_file(check_count(seq, "seq"))
        if found is None:
            raise NotFound(f"no version {seq} is kept")
        opened, version = found
        record = FileRecord(version.path, version.size, version.sha256, version.mtime_ns, version.seq)
        return BoxFile(opened, version.path.rsplit("/", 1)[-1], record)

    async def trash(self, request: IRequest, principal: Principal) -> bytes:
        """
        The files deleted under C{?under=} and not back since, newest
        deletion first, each as its last version (with C{?rows=1}, as
        L{Deleted} rows, and C{?before=SEQ}: only those deleted before; a
        full page names the C{before} of the next in L{BEFORE_HEADER}).
        """
        box = self._box(principal)
        limit = count_header(query(request, "limit"), "limit") or TRASH_LIMIT
        if limit > MAX_TRASH_LIMIT:
            raise ProtocolError(f"limit must be at most {MAX_TRASH_LIMIT}")
        if query(request, "rows") == "1":
            before = count_header(query(request, "before"), "before")
            page: TrashPage = await box.index.trash_json(box.account, _folder(request), limit, before)
            if page.count == limit and page.last is not None:
                request.setHeader(BEFORE_HEADER, str(page.last))
            return encoded_json_body(request, 200, trash_rows(page.rows))
        found: list[VersionRecord] = await box.index.trash(box.account, _folder(request), limit)
        files = [{**entry(version).to_json(), "deleted": True, "deleted_seq": version.ended_seq} for version in found]
        return json_body(request, 200, {"files": files})

    async def snapshot(self, request: IRequest, principal: Principal) -> bytes:
        """
        The versions the files under C{?under=} had at C{?at=} (ISO 8601, or
        ns since the epoch).
        """
        box = self._box(principal)
        at = query(request, "at")
        if at is None:
            raise ProtocolError("a snapshot needs ?at=TIME")
        when = parse_time(at)
        found: list[FileRecord | VersionRecord] = await box.index.at(box.account, _folder(request), when)
        return json_body(request, 200, {"at": iso_time(when), "files": [entry(v).to_json() for v in found]})

    async def restore(self, request: IRequest, principal: Principal) -> bytes:
        """
        Make a version the current one (or, given C{to}, a new version of
        another path): a new commit, refused (C{412}) if the path moved on
        from the base the client saw.
        """
        asked = Restore.from_json(json_object(request.content.read(), "a restore"))
        record = await self._box(principal).restore(
            asked.path,
            asked.seq,
            asked.base,
            origin=header(request, CLIENT_HEADER) or principal.client,
            stream=header(request, STREAM_HEADER),
            to=asked.to,
        )
        return json_body(request, 201, committed(record).to_json())
