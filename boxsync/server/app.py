"""
The HTTP API of ``docs/protocol.md``, as a Klein application.

Routes authenticate through one wrapper, call the account's L{Box}, and let
exceptions through to one handler that maps each to a status and a JSON body.
"""

from __future__ import annotations

import functools
import uuid
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Concatenate,
    ParamSpec,
    Sequence,
    TypeVar,
    cast,
)

from attrs import Factory, define, evolve, field
from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException

from .. import coding
from ..blocks import BLOCK_MAX, Block
from ..paths import BadPath, normalize
from ..wire import (
    BASE_HEADER,
    BATCH,
    CLIENT_HEADER,
    EVENT_STREAM,
    EXECUTABLE_FEATURE,
    EXECUTABLE_HEADER,
    FOLDERS_FEATURE,
    LAST_EVENT_ID,
    MTIME_HEADER,
    SHA256_HEADER,
    SHA256_TRAILER_FEATURE,
    STREAM_HEADER,
    CommitResult,
    ErrorAnswer,
    ProtocolError,
    Refusal,
    RemoteFile,
    count_header,
    mtime_header,
    encode_batch_results,
    flag_header,
    health_json,
    parse_path_list,
    parse_delete_list,
    parse_upload_batch,
    sha256_header,
)
from ..wire.blocks import (
    BLOCKS_FEATURE,
    ENCODINGS,
    BlockCommit,
    missing_json,
    parse_blocks,
    parse_incoming,
    recipe_json,
)
from ..wire.history import TRASH_ROWS_FEATURE
from ..wire.values import check_sha256, json_object
from .auth import Forbidden, IAuthenticator, Principal, Unauthorized
from .batch import delete_batch, download_batch, upload_batch
from .blockstore import BadBlock
from .box import Box, DigestMismatch, MissingBlocks, NotFound, StaleBase
from .events import EventStream, sse_for
from .files import BoxFile, box_file
from .http import committed, header, json_body, listed, query
from .hub import Hub, TooManyStreams
from .index import FileRecord, IndexUnavailable
from .s3store import StoreUnavailable
from .legacy import LegacyAdapter
from .limits import MAX_MANIFEST_ENTRIES
from .manifest import read_manifest
from .plan import plan
from .sharing import VersionDamaged
from .staging import BoxNotWritable, DiskFull
from .transfers import Transfers
from .uploads import BodyTooLarge, check_body, check_size, take_upload, trailer_sha256

if TYPE_CHECKING:
    from .sessions import Sessions

__all__ = ["BoxsyncApp"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: How often, in seconds, the log says again that the box may not be
#: written (every request that meets it is refused).
NOT_WRITABLE_SAID_EVERY = 60.0

#: Exceptions a client can cause, and the refusal each gets.
_REFUSALS: list[tuple[type[BaseException], Refusal]] = [
    (BadPath, Refusal.BAD_REQUEST),
    (ProtocolError, Refusal.BAD_REQUEST),
    (DigestMismatch, Refusal.BAD_REQUEST),
    (BadBlock, Refusal.BAD_REQUEST),
    (coding.DecodeError, Refusal.BAD_REQUEST),
    (Unauthorized, Refusal.UNAUTHORIZED),
    (Forbidden, Refusal.FORBIDDEN),
    (NotFound, Refusal.NOT_FOUND),
    (VersionDamaged, Refusal.NOT_FOUND),
    (StaleBase, Refusal.STALE_BASE),
    (MissingBlocks, Refusal.MISSING_BLOCKS),
    (TooManyStreams, Refusal.TOO_MANY_STREAMS),
    (BodyTooLarge, Refusal.TOO_LARGE),
    (DiskFull, Refusal.DISK_FULL),
    # Its owner, its mode or its mount: the operator's to set right.
    (BoxNotWritable, Refusal.ASK_AGAIN),
    # PostgreSQL or the S3 bucket cannot be reached for now: ask again.
    (IndexUnavailable, Refusal.ASK_AGAIN),
    (StoreUnavailable, Refusal.ASK_AGAIN),
]


class _Resource(KleinResource):
    """
    Klein's resource, but a URL whose path is not UTF-8 once unquoted gets
    the usual JSON C{400} (Klein answers it in plain text and logs a
    traceback for each).
    """

    def render(self, request: IRequest) -> Any:
        try:
            b"/".join(request.postpath).decode("utf-8")  # type: ignore[attr-defined]
        except UnicodeDecodeError:
            return json_body(request, 400, {"error": "the path in the URL is not UTF-8"})
        return super().render(request)


@define
class BoxsyncApp:
    """
    @ivar boxes: the L{Box} of an account.
    @ivar max_manifest_entries: the most files one manifest may list.
    @ivar legacy: serves the clients of the server boxsync replaces, if given.
    @ivar max_upload: the largest file accepted, in bytes (C{None}: no limit);
        the site checks it for single uploads, the batch route for batches.
    @ivar sessions: the web page's signed-in browsers, whose session cookie
        stands in for an C{Authorization} header (L{boxsync.server.web}).
    @ivar transfers: the transfers under way; every file a route sends is
        counted in it while it is sent.
    @ivar disk_full: called when a request found the box's disk full.
    """

    clock: IReactorTime
    auth: IAuthenticator
    boxes: Callable[[str], Box]
    hub: Hub
    max_manifest_entries: int = MAX_MANIFEST_ENTRIES
    legacy: LegacyAdapter | None = None
    max_upload: int | None = None
    sessions: Sessions | None = None
    transfers: Transfers = field(default=Factory(lambda self: Transfers(self.clock), takes_self=True))
    disk_full: Callable[[], object] | None = None
    app: Klein = field(factory=Klein, init=False)
    _unwritable_said: float | None = field(default=None, init=False)
    _unwritable_met: int = field(default=0, init=False)
    log = Logger()

    def __attrs_post_init__(self) -> None:
        app = self.app
        # Paths are checked by boxsync.paths, never rewritten or redirected.
        app.url_map.merge_slashes = False
        app.url_map.strict_slashes = False
        app.route("/healthz", methods=["GET"])(self.healthz)
        app.route("/sync", methods=["POST"])(self._authorized(self.sync))
        app.route("/files", methods=["GET"])(self._authorized(self.listing))
        files = "/files/<path:path>"
        app.route(files, methods=["GET", "HEAD"])(self._authorized(self.download))
        app.route(files, methods=["PUT"])(self._authorized(self.upload))
        app.route(files, methods=["PATCH"])(self._authorized(self.set_executable))
        app.route(files, methods=["DELETE"])(self._authorized(self.delete))
        folders = "/folders/<path:path>"
        app.route(folders, methods=["PUT"])(self._authorized(self.make_folder))
        app.route(folders, methods=["DELETE"])(self._authorized(self.delete_folder))
        app.route("/batch/upload", methods=["POST"])(self._authorized(self.batch_upload))
        app.route("/batch/download", methods=["POST"])(self._authorized(self.batch_download))
        app.route("/batch/delete", methods=["POST"])(self._authorized(self.batch_delete))
        app.route("/blocks/commit", methods=["POST"])(self._authorized(self.commit_blocks))
        app.route("/blocks/missing", methods=["POST"])(self._authorized(self.missing_blocks))
        app.route("/blocks/of/<path:path>", methods=["GET"])(self._authorized(self.recipe))
        app.route("/blocks/<sha256>", methods=["PUT"])(self._authorized(self.put_block))
        app.route("/blocks/<sha256>", methods=["GET"])(self._authorized(self.get_block))
        if self.legacy is not None:
            # Klein names an endpoint after its function: these need names of their own.
            app.route("/upload", methods=["POST"], endpoint="legacy_upload")(
                self._authorized(self.legacy.upload)
            )
            app.route(
                "/download/<path:path>", methods=["GET", "HEAD"], endpoint="legacy_download"
            )(self._authorized(self.legacy.download))
        app.handle_errors(Exception)(self._error)

    def resource(self) -> Any:
        return _Resource(self.app)

    def principal(self, request: IRequest) -> Principal:
        authorization = request.getHeader(b"Authorization")
        if authorization is None and self.sessions is not None:
            signed_in = self.sessions.principal(request)
            if signed_in is not None:
                return signed_in
        return self.auth.authenticate(authorization)

    def _authorized(
        self, route: Callable[Concatenate[IRequest, Principal, _P], Awaitable[_T]]
    ) -> Callable[Concatenate[IRequest, _P], Deferred[_T]]:
        @functools.wraps(route)
        def wrapper(request: IRequest, *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
            principal = self.principal(request)
            check_body(request)
            answer: Deferred[_T] = Deferred.fromCoroutine(route(request, principal, *args, **kwargs))  # type: ignore[arg-type]
            return answer.addCallback(self._counted, request, principal)

        return wrapper

    def _counted(self, answer: _T, request: IRequest, principal: Principal) -> _T:
        """
        Count the bytes of C{answer}, if it is a file to send, as a download
        by the client of C{request}.
        """
        if isinstance(answer, BoxFile):
            account, client = principal.account, _committer(request, principal)[0]
            path = answer.record.path

            def sending(request: IRequest, producer: Any) -> None:
                self.transfers.sending(request, producer, account, client, path)

            answer.sending = sending
        return answer

    def _error(self, request: IRequest, failure: Failure) -> bytes | None:
        if failure.check(CancelledError):
            return None
        if failure.check(HTTPException):
            error: HTTPException = failure.value  # type: ignore[assignment]
            return json_body(request, error.code or 500, {"error": error.description or ""})
        if failure.check(MissingBlocks):
            missing: MissingBlocks = failure.value  # type: ignore[assignment]
            return json_body(request, int(Refusal.MISSING_BLOCKS), missing_json(missing.missing))
        known = self._answer(cast(BaseException, failure.value))
        if known is None:
            self.log.failure("unhandled error in {uri}", failure, uri=request.uri)
            known = _INTERNAL
        return json_body(request, known.status, known.to_json())

    def _answer(self, error: BaseException) -> ErrorAnswer | None:
        """
        The answer that tells a client about C{error} (L{_answer}); a full
        disk is said to L{disk_full} too.
        """
        if isinstance(error, DiskFull) and self.disk_full is not None:
            self.disk_full()
        if isinstance(error, BoxNotWritable):
            self._not_writable(error)
        return _answer(error)

    def _not_writable(self, error: BoxNotWritable) -> None:
        """
        Say, at most once every L{NOT_WRITABLE_SAID_EVERY} seconds, that the
        box may not be written, and how many requests met it since.
        """
        self._unwritable_met += 1
        now = self.clock.seconds()
        if self._unwritable_said is not None and now - self._unwritable_said < NOT_WRITABLE_SAID_EVERY:
            return
        self.log.error(
            "{error}: {where}; what writes in it is refused (503: ask again) until it can "
            "({count} requests since this was last said)",
            error=str(error),
            where=error.filename2 or error.filename,
            count=self._unwritable_met,
        )
        self._unwritable_said, self._unwritable_met = now, 0

    def healthz(self, request: IRequest) -> bytes:
        return json_body(
            request,
            200,
            health_json(
                [
                    SHA256_TRAILER_FEATURE, EXECUTABLE_FEATURE, FOLDERS_FEATURE, BLOCKS_FEATURE, TRASH_ROWS_FEATURE,
                    *ENCODINGS,
                ]
            ),
        )

    async def sync(self, request: IRequest, principal: Principal) -> None:
        # boxsync's clients ask for an event stream; the legacy ones do not.
        accept = (header(request, "Accept") or "").lower()
        if self.legacy is not None and EVENT_STREAM not in accept:
            return await self.legacy.sync(request, principal)
        manifest = await read_manifest(request.content, self.max_manifest_entries, self.clock)
        if manifest.cursor == 0:
            last_id = count_header(header(request, LAST_EVENT_ID), LAST_EVENT_ID)
            if last_id:
                manifest = evolve(manifest, cursor=last_id)
        box = self.boxes(principal.account)
        client = manifest.client or header(request, CLIENT_HEADER) or ""
        stream = EventStream(
            cast(Request, request), uuid.uuid4().hex, client, sse_for(manifest.features),
            coding.GzipStream() if "gzip" in coding.accepted(header(request, "Accept-Encoding")) else None,
        )
        self.log.info(
            "{client} connected: {files} files, {deleted} deleted, cursor {cursor}",
            client=client or "a client",
            files=manifest.files,
            deleted=manifest.deleted,
            cursor=manifest.cursor,
        )
        await stream.serve(
            self.hub,
            principal,
            box.index,
            lambda upto: plan(box.index, principal.account, manifest, upto),
            other_history=manifest.held is not None and await box.committed_otherwise(manifest.held),
        )

    async def listing(self, request: IRequest, principal: Principal) -> bytes:
        """
        The live files whose paths sort after C{?after=}, in path order, at
        most C{?limit=} (1 to 1000, by default 1000) of them: fewer means
        there are no more.
        """
        after = query(request, "after") or ""
        limit = count_header(query(request, "limit"), "limit")
        limit = _LIST_LIMIT if limit is None else limit
        if not 1 <= limit <= _LIST_LIMIT:
            raise ProtocolError(f"limit must be from 1 to {_LIST_LIMIT}")
        box = self.boxes(principal.account)
        found: list[RemoteFile] = []
        while len(found) < limit:
            page: list[FileRecord] = await box.index.page(principal.account, after, limit)
            found += [listed(record) for record in page if not (record.deleted or record.folder)]
            if len(page) < limit:
                break
            after = page[-1].path
        return json_body(request, 200, [file.to_json() for file in found[:limit]])

    async def download(self, request: IRequest, principal: Principal, path: str) -> Any:
        return await box_file(self.boxes(principal.account), path)

    async def upload(self, request: IRequest, principal: Principal, path: str) -> bytes:
        staged = await take_upload(request)
        try:
            path = normalize(path)
            base = count_header(header(request, BASE_HEADER), BASE_HEADER)
            sha256 = sha256_header(header(request, SHA256_HEADER))
            trailer = trailer_sha256(request)
            if trailer is not None:
                if sha256 is not None:
                    raise ProtocolError(f"{SHA256_HEADER} and a sha256 trailer: give one")
                sha256 = trailer
            mtime_ns = mtime_header(header(request, MTIME_HEADER), MTIME_HEADER)
            executable = flag_header(header(request, EXECUTABLE_HEADER), EXECUTABLE_HEADER)
        except BaseException:
            staged.discard()
            raise
        record = await self.boxes(principal.account).upload(
            path,
            staged,
            base,
            sha256,
            mtime_ns,
            *_committer(request, principal),
            executable=executable,
        )
        return json_body(request, 201, committed(record).to_json())

    async def set_executable(self, request: IRequest, principal: Principal, path: str) -> bytes:
        """
        Commit a version that differs from the one at C{X-Boxsync-Base} only
        in being executable or not (C{X-Boxsync-Executable}); the bytes the
        client has are C{X-Boxsync-Sha256}.
        """
        path = normalize(path)
        base = count_header(header(request, BASE_HEADER), BASE_HEADER)
        sha256 = sha256_header(header(request, SHA256_HEADER))
        executable = flag_header(header(request, EXECUTABLE_HEADER), EXECUTABLE_HEADER)
        if base is None or sha256 is None or executable is None:
            raise ProtocolError(f"a PATCH needs {BASE_HEADER}, {SHA256_HEADER} and {EXECUTABLE_HEADER}")
        record = await self.boxes(principal.account).set_executable(
            path,
            base,
            sha256,
            executable,
            *_committer(request, principal),
        )
        return json_body(request, 200, committed(record).to_json())

    async def delete(self, request: IRequest, principal: Principal, path: str) -> bytes:
        box = self.boxes(principal.account)
        return await self._delete(request, principal, path, box.delete)

    async def make_folder(self, request: IRequest, principal: Principal, path: str) -> bytes:
        """
        Commit the folder C{path}, synced as a folder of its own (made in
        the box if it is not there), from C{X-Boxsync-Base} if given.
        """
        record = await self.boxes(principal.account).make_folder(
            normalize(path),
            count_header(header(request, BASE_HEADER), BASE_HEADER),
            *_committer(request, principal),
        )
        return json_body(request, 201, committed(record).to_json())

    async def delete_folder(self, request: IRequest, principal: Principal, path: str) -> bytes:
        box = self.boxes(principal.account)
        return await self._delete(request, principal, path, box.delete_folder)

    async def _delete(
        self,
        request: IRequest,
        principal: Principal,
        path: str,
        delete: Callable[..., Awaitable[FileRecord]],
    ) -> bytes:
        """
        Commit the tombstone of C{path} with C{delete} (L{Box.delete} or
        L{Box.delete_folder}), from C{X-Boxsync-Base}, which it needs.
        """
        path = normalize(path)
        base = count_header(header(request, BASE_HEADER), BASE_HEADER)
        if base is None:
            raise ProtocolError(f"a delete needs {BASE_HEADER}")
        record = await delete(
            path,
            base,
            *_committer(request, principal),
        )
        return json_body(request, 200, committed(record).to_json())

    async def commit_blocks(self, request: IRequest, principal: Principal) -> bytes:
        """
        Commit a version by its recipe (C{POST /blocks/commit}): C{201} with
        the commit, or C{409} naming the blocks the account lacks.
        """
        commit = BlockCommit.from_json(json_object(request.content.read(), "a commit"))
        check_size(commit.path, commit.recipe.size, self.max_upload)
        record = await self.boxes(principal.account).commit_recipe(
            commit,
            origin=header(request, CLIENT_HEADER) or principal.client,
            stream=header(request, STREAM_HEADER),
        )
        return json_body(request, 201, committed(record).to_json())

    async def missing_blocks(self, request: IRequest, principal: Principal) -> bytes:
        """
        Which of the blocks listed the account lacks (C{POST /blocks/missing}).
        """
        body = json_object(request.content.read(), "a list of blocks")
        hashes = parse_blocks(body)
        incoming = parse_incoming(body)
        if incoming is not None:
            # Refused before any of its blocks is sent.
            check_size(incoming.path, incoming.size, self.max_upload)
        box = self.boxes(principal.account)
        missing = await box.blocks.missing(hashes)
        if incoming is not None:
            # The account's other clients may fetch them as they come: those
            # it lacks, that is. The others are in the box (an edit's
            # unchanged blocks), and the other clients have them already or
            # fetch them once the commit comes.
            box.announce(incoming.lacking(set(missing)), header(request, STREAM_HEADER))
        return json_body(request, 200, missing_json(missing))

    async def recipe(self, request: IRequest, principal: Principal, path: str) -> bytes:
        """
        The recipe of the live version of C{path}, with its seq; with
        C{?seq=}, of that version of C{path}, live or kept.
        """
        seq = count_header(query(request, "seq"), "seq")
        row, recipe = await self.boxes(principal.account).recipe(normalize(path), seq)
        return json_body(request, 200, {"path": row.path, "seq": row.seq, **recipe_json(recipe)})

    async def put_block(self, request: IRequest, principal: Principal, sha256: str) -> bytes:
        """
        Keep a block for a commit to come (C{PUT /blocks/<sha256>}), sent
        as it is or in a content coding.
        """
        sha256 = check_sha256(sha256)
        data = coding.decode(request.content.read(), header(request, "Content-Encoding"), BLOCK_MAX)
        await self.boxes(principal.account).put_block(Block(sha256, len(data)), data)
        return json_body(request, 201, {"sha256": sha256, "size": len(data)})

    async def get_block(self, request: IRequest, principal: Principal, sha256: str) -> bytes:
        """
        A block of a file or a kept version of the account, or one sent
        ahead of its commit, in the best content coding the client takes
        that shrinks it.
        """
        sha256 = check_sha256(sha256)
        data = await self.boxes(principal.account).block(sha256, _wait(request), self.clock)
        if data is None:
            raise NotFound(f"no block {sha256}")
        # Every Accept-Encoding field counts (treq's client adds its own).
        accept = b",".join(request.requestHeaders.getRawHeaders(b"Accept-Encoding", []))
        used, body = coding.encode(data, coding.accepted(accept.decode("latin-1")))
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"ETag", f'"{sha256}"'.encode())
        request.setHeader(b"Vary", b"Accept-Encoding")
        if used is not None:
            request.setHeader(b"Content-Encoding", used.encode("ascii"))
        return body

    async def batch_upload(self, request: IRequest, principal: Principal) -> bytes:
        """
        Commit each file of a batch (see L{boxsync.server.batch}); the answer
        lists, in order, each file's record (status 201) or its error.
        """
        files = parse_upload_batch(request.content.read())
        outcomes = await upload_batch(
            self.boxes(principal.account),
            files,
            *_committer(request, principal),
            max_upload=self.max_upload,
        )
        return self._batch_results(request, outcomes)

    async def batch_delete(self, request: IRequest, principal: Principal) -> bytes:
        """
        Delete each file a batch names, at the seq it gives; the answer
        lists, in order, each tombstone (status 201) or why it was not.
        """
        deletes = parse_delete_list(request.content.read())
        outcomes = await delete_batch(self.boxes(principal.account), deletes, *_committer(request, principal))
        return self._batch_results(request, outcomes)

    def _batch_results(self, request: IRequest, outcomes: Sequence[FileRecord | BaseException]) -> bytes:
        """
        The answer to a batch: each file's record or its error, in order.
        """
        results: list[CommitResult | ErrorAnswer] = []
        for outcome in outcomes:
            if isinstance(outcome, FileRecord):
                results.append(committed(outcome))
                continue
            known = self._answer(outcome)
            if known is None:
                self.log.failure("unhandled error in a batch", Failure(outcome))
                known = _INTERNAL
            results.append(known)
        return json_body(request, 200, encode_batch_results(results))

    async def batch_download(self, request: IRequest, principal: Principal) -> bytes:
        """
        Send each file a batch asks for, or why it is not sent.
        """
        paths = parse_path_list(request.content.read())
        parts = await download_batch(self.boxes(principal.account), paths)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", BATCH.encode("ascii"))
        return b"".join(parts)


#: The most files one C{GET /files} answer lists.
_LIST_LIMIT = 1000


#: The answer to an error no client can cause.
_INTERNAL = ErrorAnswer(500, "internal server error")


#: The longest a C{GET /blocks/<sha256>?wait=S} waits for its block.
MAX_BLOCK_WAIT = 30.0


def _wait(request: IRequest) -> float:
    """
    How long a request for a block may wait for it to arrive: its C{wait}
    argument, in seconds, up to L{MAX_BLOCK_WAIT} (0 if none, or not a
    number).
    """
    try:
        wait = float(request.args.get(b"wait", [b"0"])[0])
    except ValueError:
        return 0.0
    return min(max(wait, 0.0), MAX_BLOCK_WAIT) if wait == wait else 0.0


def _committer(request: IRequest, principal: Principal) -> tuple[str, str | None]:
    """
    Who commits with C{request}: the client's name (its header's, else its
    token's), and the event stream the commit is not echoed on, if any.
    """
    return header(request, CLIENT_HEADER) or principal.client, header(request, STREAM_HEADER)


def _answer(error: BaseException) -> ErrorAnswer | None:
    """
    The answer that tells a client about C{error}, if it is one of those the
    protocol names.
    """
    for kind, refusal in _REFUSALS:
        if isinstance(error, kind):
            seq = error.current if isinstance(error, StaleBase) else None
            return ErrorAnswer(int(refusal), str(error), seq)
    return None
