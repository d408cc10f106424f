"""
The blocks of a box whose servers keep what is sent to them in an S3
bucket (C{--store s3://...}): L{BucketedBlockStore}, an L{IBlockStore}
made of the box's own (L{LocalBlockStore}: the blocks of its files and
kept versions, read where they are) and of the account's blocks in the
bucket (L{S3BlockStore}).

Every block a client sends goes to the bucket as it arrives, so any server
finds it there: an upload cut off on one server resumes on another from
the blocks already sent, and the bucket, not one server's disk, holds
what is not committed yet. Once a version made of them is committed, its
blocks are in the box's files, and are deleted from the bucket: nothing
is kept twice. A block is read from the box first (its own disk, nothing
on the network) and only then from the bucket; the bucket's sweep deletes
what an upload sent but never committed, past its grace period and claims
(see L{boxsync.server.s3store}).

The files themselves stay in the box folder: the servers share it (see
docs/architecture.md, "Several servers of one box").
"""

from __future__ import annotations

from typing import Sequence

from attrs import frozen
from zope.interface import implementer

from ..blocks import BLOCK_MAX, Block, Recipe
from .blockstore import IBlockStore, LocalBlockStore
from .s3store import S3BlockStore
from .staging import StagingFile

__all__ = ["ASSEMBLE_BYTES", "BucketedBlockStore"]

#: About how many bytes of blocks an assembly reads at once (a few blocks).
ASSEMBLE_BYTES = 4 * BLOCK_MAX


@implementer(IBlockStore)
@frozen
class BucketedBlockStore:
    """
    L{IBlockStore} of the box's files and the bucket (see the module's
    description).
    """

    box: LocalBlockStore
    bucket: S3BlockStore

    async def missing(self, hashes: Sequence[str]) -> list[str]:
        absent: list[str] = await self.box.missing(hashes)
        if not absent:
            return []
        # Those the bucket has are claimed there, for the upload that asked.
        lacking: list[str] = await self.bucket.missing(absent)
        return lacking

    async def put(self, block: Block, data: bytes) -> None:
        await self.bucket.put(block, data)

    async def read(self, sha256: str) -> bytes | None:
        return (await self.read_many([sha256])).get(sha256)

    async def read_many(self, hashes: Sequence[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(hashes))
        found: dict[str, bytes] = await self.box.read_many(unique)
        rest = [sha256 for sha256 in unique if sha256 not in found]
        if rest:
            found.update(await self.bucket.read_many(rest))
        return found

    async def assemble(self, recipe: Recipe, staged: StagingFile) -> list[str]:
        """
        Read the blocks a few at a time (each checked against its sha256,
        wherever it is found) and write them in order; at the first that
        is nowhere, stop and name every block of the recipe still missing.
        """
        blocks = list(recipe.blocks)
        start = 0
        while start < len(blocks):
            some: list[Block] = []
            size = 0
            while start < len(blocks) and (not some or size + blocks[start].size <= ASSEMBLE_BYTES):
                some.append(blocks[start])
                size += blocks[start].size
                start += 1
            got = await self.read_many([block.sha256 for block in some])
            lacking = [block.sha256 for block in some if len(got.get(block.sha256, b"")) != block.size]
            if lacking:
                # One found but not what it says (a box file changed by
                # hand, say) is named too: sent again, it goes to the bucket.
                rest = [block.sha256 for block in blocks[start:] if block.sha256 not in lacking]
                return list(dict.fromkeys(lacking + await self.missing(rest)))
            await self.box.storage.in_thread(lambda: staged.write_many(got[block.sha256] for block in some))
            if staged.error is not None:
                raise staged.error
        return []

    async def used(self, recipe: Recipe) -> None:
        """
        The version is in the box's files now, and its blocks with it: the
        bucket keeps no second copy of them.
        """
        await self.bucket.drop([block.sha256 for block in recipe.blocks])

    async def sweep(self, older_than_ns: int) -> int:
        swept: int = await self.box.sweep(older_than_ns)
        swept += await self.bucket.sweep(older_than_ns)
        return swept
