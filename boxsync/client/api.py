"""
The client's side of the HTTP API that C{docs/protocol.md} describes.

L{BoxsyncAPI} makes one request per method: it opens the event stream, uploads,
deletes and downloads files, streaming every body in pieces, and turns the
server's error answers into the exceptions of L{boxsync.client.errors}. It
does not decide what to transfer (the engine does) and it does not limit
how many transfers run at once.

Every request and every body it reads has its own silence watchdog
(L{boxsync.client.transport}); upload bodies are read from disk by
L{boxsync.client.sources}.

A download is written to disk and hashed in batches in a worker thread
(L{boxsync.writer}), so that the reactor thread only reads the socket.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from io import BytesIO
from pathlib import Path
from typing import Any, AsyncIterator, BinaryIO, Callable, Sequence, TypeVar

from attrs import define, field
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import Cooperator
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.client import FileBodyProducer
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from .. import coding
from ..blocks import BLOCK_MAX, Block, Recipe
from ..paths import normalize
from ..wire import (
    BASE_HEADER,
    BATCH,
    BATCH_MAX_BYTES,
    BEFORE_HEADER,
    CLIENT_HEADER,
    EVENT_STREAM,
    EXECUTABLE_HEADER,
    JSON,
    MTIME_HEADER,
    SEQ_HEADER,
    SHA256_HEADER,
    STREAM_HEADER,
    TRAILER_HEADER,
    BatchFile,
    CommitResult,
    Event,
    Incoming,
    Manifest,
    ProtocolError,
    RemoteFile,
    SSEParser,
    count_header,
    flag_header,
    RefusedEvent,
    decode_event,
    encode_manifest,
    encode_delete_list,
    encode_part,
    encode_path_list,
    parse_batch_results,
    parse_health,
    parse_listing,
    parse_parts,
)
from ..wire.blocks import BlockCommit, blocks_json, parse_missing, parse_recipe
from ..wire.history import Deleted, Restore, VersionEntry, parse_trash, parse_versions
from ..writer import HashingWriter
from .errors import APIError, CorruptBlock, DigestMismatch, MissingBlocks, WrongScheme, error_from
from .probe import SchemeCheck
from .results import DownloadResult
from .resume import etag_sha256, hash_prefix, range_start, unsatisfied_size
from .sockets import read_more
from .sources import file_body
from .throttle import Throttled, TokenBucket
from .transport import DEFAULT_IDLE_TIMEOUT, MAX_JSON, BodyReader, Transport, response_header

__all__ = ["EventStream", "BoxsyncAPI"]

#: The most bytes of one file's result in the answer to a batch, besides
#: the file itself (its path, digest and error).
_MAX_RESULT = 8 * 1024

#: How many deleted files one request of the trash asks for.
TRASH_PAGE = 10_000

_T = TypeVar("_T")


@define(eq=False)
class EventStream:
    """
    An open C{POST /sync} event stream.

    Its events go to the C{on_event} given to L{BoxsyncAPI.open_stream} as
    they arrive; events of unknown types are skipped.

    @ivar done: fires with C{None} when the server ends the stream; fails with
        L{StreamIdle} when it stayed silent too long, with
        L{ProtocolError} for a malformed event, with what C{on_event} raised,
        with C{CancelledError} after L{cancel}, or with the reason the
        connection was lost. Nothing is delivered after it has fired.
    """

    _reader: BodyReader
    _parser: SSEParser

    @property
    def done(self) -> Deferred[None]:
        return self._reader.done

    @property
    def last_event_id(self) -> str | None:
        """
        The id of the last event that carried one.
        """
        return self._parser.last_id

    @property
    def retry(self) -> int | None:
        """
        How long the server asks clients to wait before reconnecting, in
        milliseconds, if it said.
        """
        return self._parser.retry

    def cancel(self) -> None:
        """
        Close the stream; C{done} fails with C{CancelledError}.
        """
        self._reader.done.cancel()


def _flag(value: bool | None) -> str | None:
    """
    C{value} as a flag header carries it (C{None}: no header).
    """
    return None if value is None else str(int(value))


def _file_path(path: str) -> str:
    """
    The URL path of a file, quoted one segment at a time.
    """
    return _url("/files/", path)


def _url(prefix: str, path: str) -> str:
    """
    The URL path of wire path C{path} below C{prefix}, quoted one segment
    at a time.
    """
    segments = normalize(path).split("/")
    return prefix + "/".join(urllib.parse.quote(s, safe="") for s in segments)


@define
class BoxsyncAPI:
    """
    The HTTP API of one boxsync server, for one client.

    @ivar http: the treq client requests go through (or anything with its
        C{request} method, such as treq's C{StubTreq}).
    @ivar clock: the clock for the silence watchdogs.
    @ivar base_url: the server's URL, such as C{"http://127.0.0.1:8080"}.
    @ivar token: the key sent as C{Authorization: Bearer <token>}, if any.
    @ivar client_name: this client's name, sent with every request.
    @ivar stream_id: the id of this client's open event stream (from its
        C{hello}), sent with commits so they are not echoed back; the engine
        sets it.
    @ivar idle_timeout: how many seconds a request may send nothing and
        receive nothing before it is given up with L{StreamIdle}.
    @ivar cooperator: runs the loops that read request bodies from files.
    @ivar threads: where downloads are written to disk and hashed; by
        default the clock, if it is a reactor with a thread pool. Without
        one they are written on the reactor thread.
    @ivar diagnose: asked about a request that failed without an answer
        (see L{Transport.diagnose}).
    @ivar up: the bandwidth limit of the files sent, if any.
    @ivar down: the bandwidth limit of the files received, if any.
    """

    log = Logger()

    http: HTTPClient
    clock: IReactorTime
    base_url: str
    token: str | None
    client_name: str
    stream_id: str | None = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    cooperator: Cooperator = field()
    threads: IReactorThreads | None = field()
    diagnose: SchemeCheck | None = None
    up: TokenBucket | None = None
    down: TokenBucket | None = None

    @cooperator.default
    def _cooperator(self) -> Cooperator:
        return Cooperator(scheduler=lambda work: self.clock.callLater(0, work))

    @threads.default
    def _threads(self) -> IReactorThreads | None:
        return self.clock if IReactorThreads.providedBy(self.clock) else None

    @property
    def _transport(self) -> Transport:
        return Transport(self.http, self.clock, self.base_url, self.idle_timeout, self.diagnose)

    async def healthz(self) -> bool:
        """
        Whether the server answers its liveness probe.
        """
        return await self._health() is not None

    async def features(self) -> frozenset[str]:
        """
        What the server can do beyond the first protocol, as its liveness
        probe tells (nothing, if it does not answer).
        """
        return await self._health() or frozenset()

    async def _health(self) -> frozenset[str] | None:
        """
        The features the liveness probe lists, if the server is healthy.
        """
        try:
            response = await self._transport.request("GET", "/healthz", self._headers())
            body = await self._transport.json_answer(response)
        except (CancelledError, WrongScheme):
            raise
        except Exception as e:
            self.log.info("{url} is not healthy: {error}", url=self.base_url, error=e)
            return None
        if response.code != 200:
            return None
        return parse_health(body)

    async def list_files(self, after: str = "", limit: int = 1000) -> list[RemoteFile]:
        """
        The live files whose paths sort after C{after}, in path order, at
        most C{limit}; fewer than C{limit} means there are no more.
        """
        query = urllib.parse.urlencode({"after": after, "limit": limit})
        response = await self._transport.request("GET", f"/files?{query}", self._headers())
        await self._transport.check(response, 200)
        chunks: list[bytes] = []
        await self._transport.read(response, chunks.append).done
        return parse_listing(b"".join(chunks))

    async def open_stream(
        self,
        manifest: Manifest,
        last_event_id: int | None,
        on_event: Callable[[Event], object],
    ) -> EventStream:
        """
        Send C{manifest} and open the event stream that answers it.

        @param last_event_id: the cursor, sent as C{Last-Event-ID}, if any.
        @param on_event: called with each event, in order, as it arrives.
        @raise APIError: if the server refused the stream.
        """
        headers = self._headers(
            {"Accept": EVENT_STREAM, "Content-Type": JSON, "Cache-Control": "no-cache"}
        )
        if last_event_id is not None:
            headers.setRawHeaders("Last-Event-ID", [str(last_event_id)])
        body = FileBodyProducer(BytesIO(encode_manifest(manifest)), self.cooperator)
        response = await self._transport.request("POST", "/sync", headers, body)
        await self._transport.check(response, 200)
        content_type = response_header(response, "Content-Type") or ""
        if content_type.split(";")[0].strip() != EVENT_STREAM:
            self._transport.abandon(response)
            raise ProtocolError(f"expected an event stream, got {content_type!r}")
        parser = SSEParser()

        def received(chunk: bytes) -> None:
            for message in parser.feed(chunk):
                try:
                    event = decode_event(message)
                except RefusedEvent as e:
                    # That event alone: the rest of the plan still applies.
                    self.log.warn("{refusal}", refusal=str(e))
                    continue
                if event is None:
                    self.log.debug("skipping unknown event {name}", name=message.event)
                else:
                    on_event(event)

        return EventStream(self._transport.read(response, received), parser)

    async def upload(
        self,
        path: str,
        local: Path,
        base: int | None,
        sha256: str | None,
        mtime_ns: int | None,
        on_progress: Callable[[int], object] | None = None,
        size: int | None = None,
        hash_as_sent: bool = False,
        unchanged: Callable[[], bool] | None = None,
        executable: bool | None = None,
    ) -> CommitResult:
        """
        Commit the file C{local} as C{path}, streaming it from disk.

        @param base: the seq the change starts from (0: the path must not
            exist); C{None} for last-writer-wins.
        @param sha256: the file's sha256, which the server checks, if known.
        @param mtime_ns: the file's modification time, kept with it.
        @param on_progress: called with the number of bytes in each piece sent.
        @param size: send only the first C{size} bytes: the size the file had
            when it was hashed (a file being appended to still matches
            C{sha256} then). Default: all of it.
        @param hash_as_sent: without C{sha256}: compute it as the file is
            read and send it after the file's bytes, for the server to check
            (only for a server with the L{SHA256_TRAILER_FEATURE}: another
            would keep it as part of the file).
        @param unchanged: with C{hash_as_sent}, asked once all of the file is
            read whether it is still as it was when C{size} was taken: if
            not, the server is sent a sha256 that refuses the upload, as it
            refuses a file that changed after it was hashed.
        @param executable: whether the file is executable (C{None}: not
            said; the server keeps the mode of the version it replaces).
        @raise StaleBase: if the path is no longer at C{base}.
        @raise APIError: for any other refusal.
        """
        trailer = hash_as_sent and sha256 is None
        headers = self._headers(
            {
                "Content-Type": "application/octet-stream",
                BASE_HEADER: base,
                SHA256_HEADER: sha256,
                TRAILER_HEADER: "sha256" if trailer else None,
                MTIME_HEADER: mtime_ns,
                EXECUTABLE_HEADER: _flag(executable),
            },
            commit=True,
        )
        with local.open("rb") as f:
            body = self._sent(file_body(f, self.cooperator, size, trailer, unchanged))
            response = await self._transport.request(
                "PUT", _file_path(path), headers, body, on_progress
            )
        await self._transport.check(response, 201)
        return CommitResult.from_json(await self._transport.json_answer(response))

    async def set_executable(self, path: str, base: int, sha256: str, executable: bool) -> CommitResult:
        """
        Commit version C{base} of C{path}, whose bytes are C{sha256}, made
        C{executable} or not, without sending the bytes again
        (C{PATCH /files/<path>}).

        @raise StaleBase: if the path is no longer at C{base}, or its bytes
            are not C{sha256}.
        @raise NotFound: if there is no such file.
        @raise APIError: for any other refusal (C{405}: a server without
            the route).
        """
        fields: dict[str, str | int | None] = {
            BASE_HEADER: base,
            SHA256_HEADER: sha256,
            EXECUTABLE_HEADER: _flag(executable),
        }
        return await self._commit("PATCH", _file_path(path), fields)

    async def upload_batch(
        self, files: Sequence[tuple[BatchFile, bytes]]
    ) -> list[CommitResult | APIError]:
        """
        Commit several small files in one request (C{POST /batch/upload}).

        @return: for each file, in order, its commit or the L{APIError} it
            met (a L{StaleBase}, a L{BadRequest} for a sha256 that does not
            match...), as if it had been sent alone.
        @raise APIError: if the server refused the whole batch (a server
            without batches answers 404 or 405).
        """
        body = b"".join(piece for file, data in files for piece in encode_part(file.to_json(), data))
        return await self._batch("/batch/upload", BATCH, body, len(files))

    async def _batch(self, route: str, content_type: str, body: bytes, count: int) -> list[CommitResult | APIError]:
        """
        Send the batch C{body} of C{count} commits to C{route}; each one's
        commit or error, in order.
        """
        headers = self._headers({"Content-Type": content_type}, commit=True)
        producer = self._sent(FileBodyProducer(BytesIO(body), self.cooperator))
        response = await self._transport.request("POST", route, headers, producer)
        await self._transport.check(response, 200)
        answer = await self._transport.json_answer(response, MAX_JSON + count * _MAX_RESULT)
        return [
            outcome if isinstance(outcome, CommitResult) else error_from(outcome)
            for outcome in parse_batch_results(answer, count)
        ]

    async def delete_batch(self, deletes: Sequence[tuple[str, int]]) -> list[CommitResult | APIError]:
        """
        Commit the deletion of several files in one request (C{POST
        /batch/delete}), each at the seq it must still be at.

        @return: for each, in order, its commit or the L{APIError} it met (a
            L{StaleBase}, a L{NotFound}), as if it had been deleted alone.
        @raise APIError: if the server refused the whole batch (a server
            without batch deletes answers 404 or 405).
        """
        return await self._batch("/batch/delete", JSON, encode_delete_list(list(deletes)), len(deletes))

    async def commit_blocks(self, commit: BlockCommit) -> CommitResult:
        """
        Commit a version by its recipe (C{POST /blocks/commit}).

        @raise MissingBlocks: naming the blocks the server lacks.
        @raise StaleBase: if the path is no longer at C{commit.base}.
        """
        body = json.dumps(commit.to_json()).encode("utf-8")
        headers = self._headers({"Content-Type": JSON}, commit=True)
        producer = FileBodyProducer(BytesIO(body), self.cooperator)
        response = await self._transport.request("POST", "/blocks/commit", headers, producer)
        if response.code == 409:
            answer = await self._transport.json_answer(response)
            raise MissingBlocks(409, str(answer.get("error", "")), parse_missing(answer))
        await self._transport.check(response, 201)
        return CommitResult.from_json(await self._transport.json_answer(response))

    async def missing_blocks(self, hashes: list[str], incoming: Incoming | None = None) -> set[str]:
        """
        Those of C{hashes} the server lacks.

        @param incoming: if they are blocks of a file being sent, what the
            account's other clients are told of them (they may fetch them
            as they come).
        """
        body = json.dumps(blocks_json(hashes, incoming)).encode("utf-8")
        producer = FileBodyProducer(BytesIO(body), self.cooperator)
        # As a commit's: the server tells the other clients, not this one.
        headers = self._headers({"Content-Type": JSON}, commit=True)
        response = await self._transport.request("POST", "/blocks/missing", headers, producer)
        await self._transport.check(response, 200)
        return set(parse_missing(await self._transport.json_answer(response, MAX_JSON + 80 * len(hashes))))

    async def put_block(self, block: Block, data: bytes, codings: Sequence[str] = ()) -> int:
        """
        Send the bytes of C{block} ahead of the commit that needs them, in
        the first of C{codings} if that shrinks them.

        @return: how many bytes went on the wire.
        """
        used, body = coding.encode(data, codings)
        headers = self._headers({"Content-Type": "application/octet-stream", "Content-Encoding": used})
        producer = self._sent(FileBodyProducer(BytesIO(body), self.cooperator))
        response = await self._transport.request("PUT", f"/blocks/{block.sha256}", headers, producer)
        await self._transport.check(response, 201)
        await self._transport.small_body(response)
        return len(body)

    async def get_block(self, block: Block, wait: float = 0) -> bytes:
        """
        The bytes of C{block}, checked against its sha256.

        @param wait: how long the server may wait for the block to arrive,
            if it has it nowhere yet (a block of a file still being sent).
        @raise NotFound: if the server has it nowhere (after C{wait}).
        @raise CorruptBlock: if what came is not that block.
        """
        headers = self._headers({"Accept-Encoding": coding.ACCEPTED})
        query = f"?wait={wait:g}" if wait else ""
        response = await self._transport.request("GET", f"/blocks/{block.sha256}{query}", headers)
        await self._transport.check(response, 200)
        # A block travels whole, at most BLOCK_MAX bytes in whatever coding.
        body = await self._transport.small_body(response, BLOCK_MAX + 1024, self.down)
        encoding = response_header(response, "Content-Encoding") or None
        try:
            data = coding.decode(body, encoding, BLOCK_MAX)
        except coding.DecodeError as e:
            raise ProtocolError(f"block {block.sha256}: {e}") from None
        if hashlib.sha256(data).hexdigest() != block.sha256 or len(data) != block.size:
            raise CorruptBlock(block.sha256)
        return data

    async def recipe(self, path: str, seq: int | None = None) -> tuple[int, Recipe]:
        """
        The seq and the recipe of the live version of C{path} (or of its
        version C{seq}, live or kept).

        @raise NotFound: if there is none.
        """
        url = "/blocks/of" + _file_path(path)[len("/files"):] + ("" if seq is None else f"?seq={seq}")
        response = await self._transport.request("GET", url, self._headers())
        await self._transport.check(response, 200)
        answer = await self._transport.json_answer(response, MAX_JSON + 128 * 16384)
        seq = answer.get("seq") if isinstance(answer, dict) else None
        if not isinstance(seq, int):
            raise ProtocolError(f"the recipe of {path!r} has no seq")
        return seq, parse_recipe(answer)

    async def history(self, path: str) -> tuple[bool, list[VersionEntry]]:
        """
        Whether C{path} is deleted, and every version of it kept: the live
        one first, then newest first.

        @raise NotFound: if it has no history.
        """
        answer = await self._get_json("/history" + _file_path(path)[len("/files"):])
        if not isinstance(answer, dict) or not isinstance(answer.get("versions"), list):
            raise ProtocolError("a history must list versions")
        return bool(answer.get("deleted")), [VersionEntry.from_json(v) for v in answer["versions"]]

    async def trash(self, under: str = "", limit: int = 1000) -> list[Deleted]:
        """
        The files deleted under the folder C{under} and not back since,
        newest deletion first, each with its last version.
        """
        found: list[Deleted] = []
        async for page in self.trash_pages(under, limit):
            found += page
        return found

    async def trash_pages(self, under: str = "", limit: int = 1000) -> AsyncIterator[list[Deleted]]:
        """
        The files L{trash} lists, a page at a time.

        Asked for in rows, L{TRASH_PAGE} at a time: the next page is asked
        for as soon as the headers of the last name where it starts
        (L{BEFORE_HEADER}), so the server looks it up while the client
        reads, checks (in a thread) and uses the last. A server from before
        the header is asked once a full page is read; one from before rows
        answers in versions, all of them at once.
        """

        async def ask(count: int, before: int | None = None) -> IResponse:
            fields = {"under": under, "limit": count, "rows": 1, **({} if before is None else {"before": before})}
            response = await self._transport.request("GET", f"/trash?{urllib.parse.urlencode(fields)}", self._headers())
            await self._transport.check(response, 200)
            return response

        def after(page: int, before: object) -> Deferred[IResponse] | None:
            """
            The page after C{page} more files, from C{before} on, if one is wanted.
            """
            left = limit - listed - page
            if left <= 0 or not isinstance(before, int) or isinstance(before, bool):
                return None
            return Deferred.fromCoroutine(ask(min(left, TRASH_PAGE), before))

        listed = 0
        asked = min(limit, TRASH_PAGE)
        response = await ask(asked)
        while True:
            named = response.headers.getRawHeaders(BEFORE_HEADER)
            following = after(asked, int(named[0])) if named and named[0].isdigit() else None
            try:
                answer = await self._transport.json_answer(response, MAX_JSON + 512 * 100_000)
                rows = answer.get("rows") if isinstance(answer, dict) else None
                if not isinstance(rows, list):
                    versions = parse_trash(answer)
                    if asked < limit and len(versions) == asked:
                        query = urllib.parse.urlencode({"under": under, "limit": limit})
                        versions = parse_trash(await self._get_json(f"/trash?{query}"))  # an older server
                    yield versions
                    return
                if not named and len(rows) == asked and isinstance(rows[-1], list) and len(rows[-1]) > 6:
                    following = after(asked, rows[-1][6])  # a server that names not the next page
                page = await self._in_thread(lambda: parse_trash(answer))
                listed += len(page)
                yield page
            except BaseException:  # a bad page, or the pages no longer wanted
                if following is not None:
                    following.addErrback(lambda _: None)
                    following.cancel()
                raise
            if following is None:
                return
            asked = min(limit - listed, TRASH_PAGE)
            response = await following

    async def snapshot(self, under: str, at: str) -> list[VersionEntry]:
        """
        The versions the files under the folder C{under} had at C{at}
        (ISO 8601, or ns since the epoch).
        """
        query = urllib.parse.urlencode({"under": under, "at": at})
        return parse_versions(await self._get_json(f"/snapshot?{query}"))

    async def restore(self, path: str, seq: int, base: int | None, to: str | None = None) -> CommitResult:
        """
        Make version C{seq} of C{path} the current one again, or (given
        C{to}) a new version of the path C{to}.

        @param base: the seq this client saw the path restored to at (0:
            deleted, or none).
        @raise StaleBase: if it moved on since.
        @raise NotFound: if that version is not kept.
        """
        body = json.dumps(Restore(path, seq, base, to).to_json()).encode("utf-8")
        headers = self._headers({"Content-Type": JSON}, commit=True)
        producer = FileBodyProducer(BytesIO(body), self.cooperator)
        response = await self._transport.request("POST", "/restore", headers, producer)
        await self._transport.check(response, 201)
        return CommitResult.from_json(await self._transport.json_answer(response))

    async def _get_json(self, url_path: str) -> Any:
        response = await self._transport.request("GET", url_path, self._headers())
        await self._transport.check(response, 200)
        return await self._transport.json_answer(response, MAX_JSON + 512 * 100_000)

    async def download_batch(self, paths: Sequence[str]) -> list[tuple[dict[str, Any], bytes]]:
        """
        Fetch several small files in one answer (C{POST /batch/download}).

        @return: the parts of the answer, each a header (with C{path},
            C{status} and, for a file sent, its C{seq}, C{sha256} and
            C{mtime_ns}) and the file's bytes.
        @raise APIError: if the server refused the whole batch (a server
            without batches answers 404 or 405).
        @raise ProtocolError: if the answer is malformed or too long.
        """
        body = encode_path_list(list(paths))
        headers = self._headers({"Content-Type": JSON})
        producer = FileBodyProducer(BytesIO(body), self.cooperator)
        response = await self._transport.request("POST", "/batch/download", headers, producer)
        await self._transport.check(response, 200)
        answer = await self._transport.small_body(
            response, BATCH_MAX_BYTES + len(paths) * _MAX_RESULT, self.down
        )
        return parse_parts(answer, len(paths))

    async def delete(self, path: str, base: int) -> CommitResult:
        """
        Commit the deletion of C{path}, which must still be at C{base}.

        @raise StaleBase: if it is not.
        @raise NotFound: if there is no such file.
        """
        return await self._commit("DELETE", _file_path(path), {BASE_HEADER: base})

    async def make_folder(self, path: str, base: int) -> CommitResult:
        """
        Commit the folder C{path} (C{PUT /folders/<path>}), as the version
        after C{base} (0: nothing is there).

        @raise StaleBase: if the path is no longer at C{base}.
        @raise BadRequest: if the box has a file there.
        """
        return await self._commit("PUT", _url("/folders/", path), {BASE_HEADER: base}, 201)

    async def delete_folder(self, path: str, base: int) -> CommitResult:
        """
        Commit the deletion of the folder C{path}, which must still be at
        C{base} (C{DELETE /folders/<path>}).

        @raise StaleBase: if it is not.
        @raise NotFound: if there is no such folder.
        """
        return await self._commit("DELETE", _url("/folders/", path), {BASE_HEADER: base})

    async def _commit(
        self, method: str, url: str, fields: dict[str, str | int | None], status: int = 200
    ) -> CommitResult:
        """
        Make a commit without a body, answered with C{status}, with the
        headers C{fields}.
        """
        response = await self._transport.request(method, url, self._headers(fields, commit=True))
        await self._transport.check(response, status)
        return CommitResult.from_json(await self._transport.json_answer(response))

    async def download(
        self,
        path: str,
        dest: Path,
        expected_sha256: str | None = None,
        on_progress: Callable[[int], object] | None = None,
    ) -> DownloadResult:
        """
        Fetch the current version of C{path} into C{dest}, a piece at a time.

        If C{dest} already holds part of the file (from an interrupted call)
        and C{expected_sha256} is given, only the rest is requested, provided
        the server still has that version; otherwise C{dest} is started over.
        A download that fails keeps C{dest} for the next try, but for a
        digest mismatch. The caller fsyncs and renames C{dest}.

        @param on_progress: called with the number of bytes of each piece
            written (after a resume, first with the size of the part there).
        @raise DigestMismatch: if the file (or the version the server has)
            does not have C{expected_sha256}; C{dest} is deleted.
        @raise NotFound: if there is no such file.
        @raise StreamIdle: if the server stayed silent too long.
        """
        offset = dest.stat().st_size if expected_sha256 and dest.exists() else 0
        headers = self._headers()
        if offset:
            headers.setRawHeaders("Range", [f"bytes={offset}-"])
            headers.setRawHeaders("If-Range", [f'"{expected_sha256}"'])
        response = await self._transport.request("GET", _file_path(path), headers)
        if response.code == 416 and offset:
            # Nothing is past what is there: it may be the whole file (a
            # download that could not be placed), or more than it.
            whole = self._whole_already(response, path, dest, offset, expected_sha256)
            self._transport.abandon(response)
            if whole is not None:
                if on_progress is not None:
                    on_progress(offset)
                return whole
            dest.unlink(missing_ok=True)
            return await self.download(path, dest, expected_sha256, on_progress)
        await self._transport.check(response, 200, 206)
        try:
            seq = count_header(response_header(response, SEQ_HEADER), SEQ_HEADER)
            if seq is None:
                raise ProtocolError(f"download of {path!r} has no {SEQ_HEADER}")
            executable = flag_header(response_header(response, EXECUTABLE_HEADER), EXECUTABLE_HEADER)
            etag = etag_sha256(response)
            if expected_sha256 and etag is not None and etag != expected_sha256:
                dest.unlink(missing_ok=True)
                raise DigestMismatch(path, expected_sha256, etag)
            if response.code == 206:
                if range_start(response) != offset:
                    raise ProtocolError(f"{path!r} resumed at the wrong place")
                digest = hash_prefix(dest, offset)
            else:
                offset, digest = 0, hashlib.sha256()
            # Appended at the end, not with O_APPEND: a hole is appended by
            # seeking past it (holes.append).
            f = dest.open("r+b" if offset else "wb", buffering=0)
            f.seek(offset)
        except BaseException:
            self._transport.abandon(response)
            raise
        if offset and on_progress is not None:
            on_progress(offset)
        with f:
            size = offset + await self._receive(response, f, digest, on_progress)
        actual = digest.hexdigest()
        if expected_sha256 and actual != expected_sha256:
            dest.unlink(missing_ok=True)
            raise DigestMismatch(path, expected_sha256, actual)
        return DownloadResult(sha256=actual, size=size, seq=seq, executable=executable)

    def _whole_already(
        self, response: IResponse, path: str, dest: Path, offset: int, expected_sha256: str | None
    ) -> DownloadResult | None:
        """
        What a C{416} answer to the rest of C{path} after C{offset} bytes
        says, if C{dest} holds the whole version already: its size is the
        file's, and its bytes have the sha256 asked for, which is the
        server's.
        """
        if not expected_sha256 or etag_sha256(response) != expected_sha256 or unsatisfied_size(response) != offset:
            return None
        seq = count_header(response_header(response, SEQ_HEADER), SEQ_HEADER)
        if seq is None or hash_prefix(dest, offset).hexdigest() != expected_sha256:
            return None
        executable = flag_header(response_header(response, EXECUTABLE_HEADER), EXECUTABLE_HEADER)
        return DownloadResult(sha256=expected_sha256, size=offset, seq=seq, executable=executable)

    async def _receive(
        self,
        response: IResponse,
        file: BinaryIO,
        digest: hashlib._Hash,
        on_progress: Callable[[int], object] | None,
    ) -> int:
        """
        Append the body of C{response} to C{file} and feed it to C{digest},
        a batch at a time in a worker thread while the next batch arrives.

        @param on_progress: called with the size of each batch written.
        @return: how many bytes the body had.
        @raise Exception: what writing raised, else why the body did not
            arrive whole; either way, only once all that arrived is written.
        """
        writer = HashingWriter(file, digest, self._in_thread, on_progress)
        reader = self._transport.read(response, writer.write, self.down)
        read_more(reader.transport)
        writer.registerProducer(reader.gate, True)
        try:
            await reader.done
        finally:
            await writer.close()
        return writer.received

    def _sent(self, body: IBodyProducer) -> IBodyProducer:
        """
        The body of a file (or of files) to send, within the limit.
        """
        return body if self.up is None else Throttled(body, self.up)

    def _in_thread(self, work: Callable[[], _T]) -> Deferred[_T]:
        """
        Run C{work} in a thread of C{threads}, or right here without them.
        """
        if self.threads is None:
            return maybeDeferred(work)
        return deferToThreadPool(self.threads, self.threads.getThreadPool(), work)

    def _headers(
        self, fields: dict[str, str | int | None] | None = None, commit: bool = False
    ) -> Headers:
        """
        The headers of a request: authorization, the client's name, the
        stream id for a commit, and those of C{fields} that have a value.
        """
        headers = Headers()
        if self.token is not None:
            headers.setRawHeaders("Authorization", [f"Bearer {self.token}"])
        headers.setRawHeaders(CLIENT_HEADER, [self.client_name])
        if commit and self.stream_id is not None:
            headers.setRawHeaders(STREAM_HEADER, [self.stream_id])
        for name, value in (fields or {}).items():
            if value is not None:
                headers.setRawHeaders(name, [str(value)])
        return headers
