"""
The wire side of blocks: a file's recipe as JSON, the commit of a version
by its recipe (C{POST /blocks/commit}), the answer naming the blocks the
server lacks, and the content codings a block travels in.

A client that speaks blocks commits a file by its recipe; the server answers
C{201} with the commit if it has every block (in this account: in any file,
any version it keeps, or sent earlier), else C{409} naming those it lacks.
The client sends those (C{PUT /blocks/<sha256>}, any order, several at
once; a block sent once stays until it is used or a day has passed) and
commits again. A client cutting a file as it sends it asks which of the
blocks cut so far the server lacks (C{POST /blocks/missing}) and sends
those while it cuts the rest. A block is fetched with C{GET /blocks/<sha256>}, and a
version's recipe with C{GET /blocks/of/<path>}.
"""

from __future__ import annotations

from typing import Any

from attrs import asdict, frozen

from ..blocks import BLOCK_MAX, Block, Recipe
from .events import Incoming
from .values import ProtocolError, check_count, check_mtime, check_path, check_sha256

__all__ = [
    "BLOCKS_FEATURE",
    "MAX_BLOCKS",
    "BlockCommit",
    "ENCODINGS",
    "recipe_json",
    "parse_recipe",
    "blocks_json",
    "parse_blocks",
    "parse_incoming",
    "missing_json",
    "parse_missing",
]

#: What a server that speaks blocks lists among its C{features}.
BLOCKS_FEATURE = "blocks"

#: The most blocks one recipe may list: a file of 64 GiB of the largest
#: blocks.
MAX_BLOCKS = 16384

#: The content codings a block may travel in, best first: zstd where both
#: sides have it, gzip (the standard library's) otherwise.
ENCODINGS = ("zstd", "gzip")


def recipe_json(recipe: Recipe) -> dict[str, Any]:
    return {
        "sha256": recipe.sha256,
        "size": recipe.size,
        "blocks": [[block.sha256, block.size] for block in recipe.blocks],
    }


def parse_recipe(data: object) -> Recipe:
    """
    Read a recipe.

    @raise ProtocolError: if it is not one, or its blocks do not add up to
        its size.
    """
    if not isinstance(data, dict):
        raise ProtocolError("a recipe must be a JSON object")
    sha256 = check_sha256(data.get("sha256"))
    size = check_count(data.get("size"), "size")
    listed = data.get("blocks")
    if not isinstance(listed, list) or len(listed) > MAX_BLOCKS:
        raise ProtocolError(f"blocks must be a list of at most {MAX_BLOCKS} [sha256, size] pairs")
    blocks = []
    for item in listed:
        if not isinstance(item, list) or len(item) != 2:
            raise ProtocolError("each block must be a [sha256, size] pair")
        block_size = check_count(item[1], "block size")
        if not 0 < block_size <= BLOCK_MAX:
            raise ProtocolError(f"a block must have 1 to {BLOCK_MAX} bytes")
        blocks.append(Block(check_sha256(item[0]), block_size))
    if sum(block.size for block in blocks) != size:
        raise ProtocolError("the blocks do not add up to the file's size")
    return Recipe(sha256, size, tuple(blocks))


@frozen
class BlockCommit:
    """
    A new version of C{path}, made of the blocks of C{recipe}.

    @ivar base: the seq it starts from (0: the path must be free); C{None}
        for last writer wins.
    @ivar executable: whether the version is executable; C{None}: as the
        version it replaces.
    """

    path: str
    base: int | None
    mtime_ns: int
    recipe: Recipe
    executable: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "base": self.base,
            "mtime_ns": self.mtime_ns,
            "executable": self.executable,
            **recipe_json(self.recipe),
        }

    @classmethod
    def from_json(cls, data: object) -> BlockCommit:
        """
        @raise ProtocolError: if C{data} is not a commit by recipe.
        """
        if not isinstance(data, dict):
            raise ProtocolError("a commit must be a JSON object")
        base = data.get("base")
        executable = data.get("executable")
        if executable is not None and not isinstance(executable, bool):
            raise ProtocolError("executable must be true, false or null")
        return cls(
            check_path(data.get("path")),
            None if base is None else check_count(base, "base"),
            check_mtime(data.get("mtime_ns")),
            parse_recipe(data),
            executable,
        )


def blocks_json(hashes: list[str], incoming: Incoming | None = None) -> dict[str, Any]:
    """
    The body of C{POST /blocks/missing}: the blocks a client may send, and,
    if they are those of a file it is sending, what the server tells the
    account's other clients of it.
    """
    body: dict[str, Any] = {"blocks": hashes}
    if incoming is not None:
        body["incoming"] = {name: value for name, value in asdict(incoming).items()}
    return body


def parse_incoming(data: dict[str, Any]) -> Incoming | None:
    """
    The C{incoming} announcement of a body of C{POST /blocks/missing}, if
    it has one.

    @raise ProtocolError: if it is malformed.
    """
    raw = data.get("incoming")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProtocolError("incoming must be an object")
    try:
        incoming = Incoming(check_path(raw.get("path")), raw.get("size"), raw.get("offset"), raw.get("blocks"))
    except TypeError as e:
        raise ProtocolError(f"bad incoming: {e}") from None
    if incoming.offset + sum(size for _, size in incoming.blocks) > incoming.size:
        raise ProtocolError("incoming blocks go past the file's size")
    return incoming


def parse_blocks(data: object) -> list[str]:
    """
    @raise ProtocolError: if C{data} is not a list of at most L{MAX_BLOCKS}
        blocks.
    """
    if not isinstance(data, dict) or not isinstance(data.get("blocks"), list) or len(data["blocks"]) > MAX_BLOCKS:
        raise ProtocolError(f"blocks must list at most {MAX_BLOCKS} sha256s")
    return [check_sha256(sha256) for sha256 in data["blocks"]]


def missing_json(missing: list[str]) -> dict[str, Any]:
    """
    The answer (C{409}) to a commit whose blocks are not all there.
    """
    return {"error": f"{len(missing)} blocks are missing", "missing": missing}


def parse_missing(data: object) -> list[str]:
    """
    @raise ProtocolError: if C{data} is not an answer naming missing blocks.
    """
    if not isinstance(data, dict) or not isinstance(data.get("missing"), list):
        raise ProtocolError("a 409 answer must name the missing blocks")
    return [check_sha256(sha256) for sha256 in data["missing"]]
