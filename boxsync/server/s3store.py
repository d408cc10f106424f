"""
An account's blocks in an S3 bucket, for a cluster of servers that share
one (any S3 service: SeaweedFS, MinIO, AWS): L{S3BlockStore}, the second
L{IBlockStore}. What one instance puts, every other reads.

Each block is one object, named by the account and its sha256::

    blocks/<account>/<sha256[:2]>/<sha256>

written once (a put of a block the bucket holds writes nothing, and the
write itself is conditional: C{If-None-Match: *}) and never changed. Every
read is checked against the sha256; an object that is not what its name
says is deleted, to be sent again. Blocks are fetched a few at a time into
memory (a block is at most L{BLOCK_MAX}), so a file of any size is
assembled with a few blocks in flight. Every call to S3 runs in the
reactor's thread pool, never on the reactor's thread.

Which blocks are kept: every version's blocks are in the bucket (a commit
puts them first), so a block some version references (the index says
which) is never deleted, nor looked for when a client asks what is
missing. The others are blocks of versions forgotten since, and blocks
sent ahead of commits still under way or that never came.
L{S3BlockStore.sweep} deletes one only when all three hold:

 - no version references it (the index is asked last, just before the
   delete, so a commit made while the sweep lists is seen);
 - it was written before the deadline (the grace period: an upload sends
   its blocks and commits well within it);
 - it has no I{claim} written since the deadline. A block the bucket
   already holds is not written again, so it does not look young when an
   upload needs it: a put of it, or a L{S3BlockStore.missing} that
   reports it present, writes a claim (an empty object
   C{claims/<account>/<sha256>}) instead, as git freshens an object it
   finds already there. The commit that uses the block removes its claim;
   claims older than the deadline are removed by the sweep.

So an upload that asked for its blocks within the grace period finds them
all at its commit. The one window left, a claim written in the instant
between the sweep's listing of claims and its delete, makes that commit
fail with the block missing, and the client sends it again.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import deque
from datetime import datetime
from functools import partial
from typing import Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import parse_qs, urlsplit

from attrs import define, frozen
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, FirstError, gatherResults
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from ..batches import batched
from ..blocks import BLOCK_MAX, Block, Recipe, block_of
from ..errors import first_line
from .blockstore import BadBlock, IBlockStore, check_block
from .index import BlockSource, IIndex
from .staging import StagingFile

__all__ = ["BadStore", "S3Bucket", "S3BlockStore", "S3Location", "StoreUnavailable", "parse_store_url", "stores_from_url"]

_T = TypeVar("_T")
_R = TypeVar("_R")

#: How many blocks an assembly has in flight (fetched, not yet written).
ASSEMBLE_WINDOW = 4
#: How many S3 calls a store makes at once for one bulk request.
CONCURRENCY = 8
#: The most keys S3 deletes in one call.
_DELETE_BATCH = 1000

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_EXISTS = frozenset({"412", "PreconditionFailed"})
_UNAVAILABLE = frozenset({"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown"})

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]{1,32}")


class StoreUnavailable(Exception):
    """
    The bucket cannot be reached for now (the S3 service is down, or
    unreachable): what was asked may be asked again later.
    """


class BadStore(ValueError):
    """
    A store URL or its credentials cannot be used; the message is one line.
    """


@frozen
class S3Location:
    """
    A bucket, the S3 service holding it (C{None}: AWS) and its region.
    """

    bucket: str
    endpoint: str | None
    region: str


def parse_store_url(url: str) -> S3Location:
    """
    The bucket that C{s3://BUCKET?endpoint=http://HOST:PORT&region=REGION}
    names (both parameters optional: AWS, C{us-east-1}).

    @raise BadStore: if C{url} is not such a URL.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise BadStore("a store URL starts with s3://, as in s3://BUCKET?endpoint=http://HOST:PORT")
    if "@" in parts.netloc:
        raise BadStore("credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not in the store URL")
    if not _BUCKET.fullmatch(parts.netloc):
        raise BadStore(f"{parts.netloc!r} is not a bucket name: 3 to 63 lowercase letters, digits, '.' and '-'")
    if parts.path not in ("", "/") or parts.fragment:
        raise BadStore("a store URL names a bucket only: s3://BUCKET, without a path")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise BadStore(f"the store URL's parameters {parts.query!r} are not name=value pairs") from None
    unknown = sorted(set(query) - {"endpoint", "region"})
    if unknown:
        raise BadStore(f"unknown store URL parameter {unknown[0]!r}: only endpoint and region")
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if repeated:
        raise BadStore(f"the store URL gives {repeated[0]!r} more than once")
    endpoint = query.get("endpoint", [None])[0]
    if endpoint is not None:
        where = urlsplit(endpoint)
        if where.scheme not in ("http", "https") or not where.hostname or where.path not in ("", "/"):
            raise BadStore(f"endpoint {endpoint!r} is not an http:// or https:// address of an S3 service")
        try:
            where.port
        except ValueError:
            raise BadStore(f"endpoint {endpoint!r} has no valid port") from None
    region = query.get("region", ["us-east-1"])[0]
    if not _REGION.fullmatch(region):
        raise BadStore(f"{region!r} is not a region name")
    return S3Location(parts.netloc, endpoint, region)


@frozen
class S3Bucket:
    """
    A bucket and a client of its S3 service (boto3's clients may be used
    from many threads at once), shared by every account's store.
    """

    client: Any
    name: str

    @classmethod
    def connect(cls, location: S3Location, environ: Mapping[str, str]) -> S3Bucket:
        """
        A client of C{location}, with the credentials in C{environ}
        (C{AWS_ACCESS_KEY_ID} and C{AWS_SECRET_ACCESS_KEY}), or, if it has
        neither, those boto3 finds by itself.

        @raise BadStore: if only one of the two is given, or boto3 is not
            installed.
        """
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise BadStore("an s3:// store needs boto3: pip install 'boxsync[cluster]'") from None
        key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
        if (key is None) != (secret is None):
            raise BadStore("give both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
        config = Config(
            max_pool_connections=2 * CONCURRENCY,
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
            # Every block is checked against its sha256 as it is read: a
            # CRC or a signed sha256 of each body on the way too would only
            # cost CPU.
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=location.endpoint,
            region_name=location.region,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=config,
        )
        return cls(client, location.bucket)


def stores_from_url(
    url: str, reactor: IReactorThreads, index: IIndex, environ: Mapping[str, str] = os.environ
) -> Callable[[str], S3BlockStore]:
    """
    For a C{--store} URL: each account's L{S3BlockStore}, all in its bucket.

    @raise BadStore: if the URL or the credentials cannot be used.
    """
    bucket = S3Bucket.connect(parse_store_url(url), environ)
    return lambda account: S3BlockStore(account, index, bucket, reactor)


def _code(e: Exception) -> str:
    """
    The S3 error code of C{e} (botocore's C{ClientError}), or C{""}.
    """
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _unreachable(e: Exception) -> bool:
    """
    Whether C{e} says the S3 service cannot be reached or cannot answer for
    now (no connection, a time-out, a 5xx), as opposed to an answer.
    """
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    if isinstance(e, BotoCoreError):
        return not isinstance(e, NoCredentialsError)
    return _code(e) in _UNAVAILABLE


def _ns(when: datetime) -> int:
    return round(when.timestamp() * 1e6) * 1000


@implementer(IBlockStore)
@define
class S3BlockStore:
    """
    L{IBlockStore} in an S3 bucket (see the module's description).

    @ivar window: how many blocks an assembly has in flight.
    @ivar page: how many names a listing of the bucket takes at a time.
    """

    account: str
    index: IIndex
    bucket: S3Bucket
    reactor: IReactorThreads
    window: int = ASSEMBLE_WINDOW
    page: int = 1000
    log = Logger()

    # Names in the bucket.

    @property
    def _blocks(self) -> str:
        return f"blocks/{self.account}/"

    @property
    def _claims(self) -> str:
        return f"claims/{self.account}/"

    def key(self, sha256: str) -> str:
        """
        The name of the block C{sha256} in the bucket.
        """
        return f"{self._blocks}{sha256[:2]}/{sha256}"

    def claim_key(self, sha256: str) -> str:
        """
        The name of the claim on the block C{sha256} in the bucket.
        """
        return f"{self._claims}{sha256}"

    # Blocking calls, each run in a thread.

    def _in_thread(self, fn: Callable[[], _T]) -> Deferred[_T]:
        def call() -> _T:
            try:
                return fn()
            except Exception as e:
                if _unreachable(e):
                    # The details (where the S3 service is) are the server's
                    # own: the client is told only to ask again.
                    self.log.warn("the bucket cannot be reached: {error}", error=first_line(e))
                    raise StoreUnavailable(f"the bucket {self.bucket.name} cannot be reached for now") from None
                raise

        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), call)

    async def _map(self, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """
        C{fn} of each of C{items}, in threads, L{CONCURRENCY} at a time.
        """
        limit = DeferredSemaphore(CONCURRENCY)
        try:
            results: list[_R] = await gatherResults(
                [limit.run(self._in_thread, partial(fn, item)) for item in items], consumeErrors=True
            )
        except FirstError as e:
            e.subFailure.raiseException()
        return results

    def _unless(self, codes: frozenset[str], method: str, **arguments: Any) -> Any:
        """
        The answer to the call C{method} of the bucket, or C{None} if S3
        answers with one of the error C{codes}.
        """
        try:
            return getattr(self.bucket.client, method)(Bucket=self.bucket.name, **arguments)
        except Exception as e:
            if _code(e) in codes:
                return None
            raise

    def _written(self, key: str) -> int | None:
        """
        When the object C{key} was written (ns), or C{None} if there is none.
        """
        head = self._unless(_NOT_FOUND, "head_object", Key=key)
        return None if head is None else _ns(head["LastModified"])

    def _claim(self, sha256: str) -> None:
        self.bucket.client.put_object(Bucket=self.bucket.name, Key=self.claim_key(sha256), Body=b"")

    def _held(self, sha256: str) -> bool:
        """
        Whether the bucket holds the block C{sha256}; claimed if it does.
        """
        if self._written(self.key(sha256)) is None:
            return False
        self._claim(sha256)
        return True

    def _put(self, block: Block, data: bytes) -> None:
        check_block(block, data)
        if self._unless(_EXISTS, "put_object", Key=self.key(block.sha256), Body=data, IfNoneMatch="*") is None:
            # Held already (written before, or by another put just now): it
            # is claimed, to look as young as if it were written now.
            self._claim(block.sha256)

    def _get(self, sha256: str) -> bytes | BadBlock | None:
        """
        The bytes of the block C{sha256}; C{None} if the bucket has no such
        object; a L{BadBlock} if its object is not that block (deleted then,
        to be sent again).
        """
        key = self.key(sha256)
        got = self._unless(_NOT_FOUND, "get_object", Key=key)
        if got is None:
            return None
        body = got["Body"]
        try:
            data = body.read() if got["ContentLength"] <= BLOCK_MAX else None
        finally:
            body.close()
        if data is not None and block_of(data).sha256 == sha256:
            return bytes(data)
        self._delete([key])
        return BadBlock(f"the object {key} in bucket {self.bucket.name} is not block {sha256}: deleted")

    def _delete(self, keys: Sequence[str]) -> None:
        for batch in batched(keys, _DELETE_BATCH):
            answer = self.bucket.client.delete_objects(
                Bucket=self.bucket.name, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
            )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(
                    f"bucket {self.bucket.name} refused to delete {len(errors)} objects,"
                    f" {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def _list(self, prefix: str, token: str | None) -> tuple[list[tuple[str, int]], str | None]:
        """
        A page of the objects under C{prefix}: each one's name after the
        last C{/} and when it was written (ns), and the token of the next
        page (C{None}: this was the last).
        """
        more = {"ContinuationToken": token} if token is not None else {}
        page = self.bucket.client.list_objects_v2(Bucket=self.bucket.name, Prefix=prefix, MaxKeys=self.page, **more)
        found = [(item["Key"].rsplit("/", 1)[-1], _ns(item["LastModified"])) for item in page.get("Contents", [])]
        return found, page.get("NextContinuationToken") if page.get("IsTruncated") else None

    def _list_all(self, prefix: str) -> dict[str, int]:
        found: dict[str, int] = {}
        token: str | None = None
        while True:
            page, token = self._list(prefix, token)
            found.update(page)
            if token is None:
                return found

    # IBlockStore.

    async def missing(self, hashes: Sequence[str]) -> list[str]:
        unique = list(dict.fromkeys(hashes))
        found: dict[str, BlockSource] = await self.index.find_blocks(self.account, unique)
        rest = [sha256 for sha256 in unique if sha256 not in found]
        held = await self._map(self._held, rest)
        return [sha256 for sha256, there in zip(rest, held) if not there]

    async def put(self, block: Block, data: bytes) -> None:
        await self._in_thread(partial(self._put, block, data))

    async def read(self, sha256: str) -> bytes | None:
        return (await self.read_many([sha256])).get(sha256)

    async def read_many(self, hashes: Sequence[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(hashes))
        got = await self._map(self._get, unique)
        usable = {sha256: self._usable(data, None) for sha256, data in zip(unique, got)}
        return {sha256: data for sha256, data in usable.items() if data is not None}

    def _usable(self, data: bytes | BadBlock | None, block: Block | None) -> bytes | None:
        """
        C{data} if it is the bytes of a block (of C{block}'s size, if given).
        """
        if isinstance(data, BadBlock):
            self.log.warn("{problem}", problem=str(data))
            return None
        if data is None or (block is not None and len(data) != block.size):
            return None
        return data

    async def assemble(self, recipe: Recipe, staged: StagingFile) -> list[str]:
        """
        Fetch the blocks in order, L{window} at a time, each written to
        C{staged} as its turn comes; stop at the first block the bucket
        does not have, and then find which others it lacks.
        """
        upcoming = iter(recipe.blocks)
        fetching: deque[Deferred[bytes | BadBlock | None]] = deque()
        written: set[str] = set()
        lacking: str | None = None
        try:
            for block in recipe.blocks:
                for ahead in itertools.islice(upcoming, self.window - len(fetching)):
                    fetching.append(self._in_thread(partial(self._get, ahead.sha256)))
                data = self._usable(await fetching.popleft(), block)
                if data is None:
                    lacking = block.sha256
                    break
                await self._in_thread(partial(staged.write, data))
                if staged.error is not None:
                    raise staged.error
                written.add(block.sha256)
        finally:
            # Fetches under way hold threads: let them end.
            await DeferredList(list(fetching), consumeErrors=True)
        if lacking is None:
            return []
        hashes = list(dict.fromkeys(block.sha256 for block in recipe.blocks))
        rest = [sha256 for sha256 in hashes if sha256 not in written and sha256 != lacking]
        when = await self._map(self._written, [self.key(sha256) for sha256 in rest])
        absent = {lacking} | {sha256 for sha256, written_ns in zip(rest, when) if written_ns is None}
        return [sha256 for sha256 in hashes if sha256 in absent]

    async def drop(self, hashes: Sequence[str]) -> None:
        """
        Delete the blocks C{hashes} and their claims at once: they are kept
        elsewhere now (in the box's files, for L{BucketedBlockStore
        <boxsync.server.bucketed.BucketedBlockStore>}).
        """
        unique = list(dict.fromkeys(hashes))
        keys = [self.key(sha256) for sha256 in unique] + [self.claim_key(sha256) for sha256 in unique]
        await self._in_thread(partial(self._delete, keys))

    async def used(self, recipe: Recipe) -> None:
        """
        The blocks stay (the version is made of them); their claims go.
        """
        claims = [self.claim_key(sha256) for sha256 in dict.fromkeys(b.sha256 for b in recipe.blocks)]
        await self._in_thread(partial(self._delete, claims))

    async def sweep(self, older_than_ns: int) -> int:
        """
        Delete the blocks written before C{older_than_ns} that no version
        references and nothing claimed since (see the module's
        description), then the claims older than that; return how many
        blocks.
        """
        count = 0
        token: str | None = None
        while True:
            page, token = await self._in_thread(partial(self._list, self._blocks, token))
            old = [sha256 for sha256, written_ns in page if written_ns < older_than_ns]
            if old:
                claims = await self._in_thread(partial(self._list_all, self._claims))
                unclaimed = [sha256 for sha256 in old if claims.get(sha256, 0) < older_than_ns]
                found: dict[str, BlockSource] = await self.index.find_blocks(self.account, unclaimed)
                doomed = [self.key(sha256) for sha256 in unclaimed if sha256 not in found]
                await self._in_thread(partial(self._delete, doomed))
                count += len(doomed)
            if token is None:
                break
        claims = await self._in_thread(partial(self._list_all, self._claims))
        stale = [self.claim_key(sha256) for sha256, written_ns in claims.items() if written_ns < older_than_ns]
        await self._in_thread(partial(self._delete, stale))
        return count
