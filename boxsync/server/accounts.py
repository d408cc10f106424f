"""
The accounts of a server in token mode: one box each, in a folder of its own
below the box folder, sharing the index, the staging folder and the hub.

The accounts are those the token registry knows (C{boxsync-admin token}
makes one by minting its first token, and makes its folder). The registry is
watched while the server runs (L{TokenWatch}): an account minted meanwhile
is adopted, and a revoked token is refused from then on and its open
streams are ended.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from attrs import define, field
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from ..reactors import IServerReactor
from .adopt import adopt
from .auth import TOKEN_REFUSED, Forbidden
from .blockstore import IBlockStore, LocalBlockStore
from .box import Box
from .hub import Hub
from .index import IIndex
from .relay import Relay
from .storage import BoxStorage
from .tokens import BadName, check_account
from .tokenwatch import TokenWatch
from .turns import Turns

__all__ = ["Accounts", "BadAccountFolder"]


class BadAccountFolder(Exception):
    """
    An account's folder that cannot be served: not a folder of the box's own.
    """


def account_folder(root: Path, account: str) -> Path:
    """
    The folder of C{account} in the box C{root}, made if missing.

    @raise BadName: if C{account} is not a valid account name.
    @raise BadAccountFolder: if something else than a plain folder (a file,
        a symbolic link) is in its place.
    """
    folder = root / check_account(account)
    if not os.path.lexists(folder):
        folder.mkdir(mode=0o755, exist_ok=True)
    if folder.is_symlink() or not folder.is_dir():
        raise BadAccountFolder(f"{folder} must be a folder (not a link or a file)")
    return folder


@define
class Accounts:
    """
    @ivar root: the box folder, with one folder per account.
    @ivar tokens: the token registry, watched: its accounts are these.
    @ivar blocks: makes the block store of an account.
    """

    reactor: IServerReactor
    root: Path
    index: IIndex
    hub: Hub
    tokens: TokenWatch
    relay: Relay | None = None
    turns: Callable[[BoxStorage], Turns] = lambda storage: Turns()
    blocks: Callable[[str, IIndex, BoxStorage], IBlockStore] = LocalBlockStore
    adopting: bool = True
    _boxes: dict[str, Box] = field(factory=dict)
    _adopted: dict[str, Deferred[Any]] = field(factory=dict)
    log = Logger()

    async def start(self) -> None:
        """
        Adopt the folder of every account the registry (read already)
        knows, and from now on of each it comes to know.
        """
        self.tokens.changed = self._changed
        self._changed(set())
        await gatherResults(list(self._adopted.values()))

    def boxes(self) -> list[Box]:
        """
        The boxes of the accounts adopted so far.
        """
        return list(self._boxes.values())

    def names(self) -> list[str]:
        return sorted(self._boxes)

    def has(self, account: str) -> bool:
        """
        Whether C{account} exists. One minted since the last poll exists
        once its folder does (minting makes it); it is adopted right away.
        """
        if account in self._boxes:
            return True
        try:
            folder = self.root / check_account(account)
        except BadName:
            return False
        if folder.is_symlink() or not folder.is_dir():
            return False
        return self._open(account) is not None

    def box(self, account: str) -> Box:
        """
        The box of C{account}.

        @raise Forbidden: if there is no such account.
        """
        box = self._boxes.get(account)
        if box is None:
            raise Forbidden(TOKEN_REFUSED)
        return box

    def _open(self, account: str) -> Box | None:
        """
        Make the box of C{account} and start adopting its folder; C{None}
        (and an error in the log) if its folder cannot be served.
        """
        try:
            storage = BoxStorage(self.reactor, account_folder(self.root, account))
        except (BadName, BadAccountFolder, OSError) as e:
            self.log.error("account {account} cannot be served: {error}", account=account, error=e)
            return None
        box = self._boxes[account] = Box(
            account,
            self.index,
            storage,
            self.hub,
            blocks=self.blocks(account, self.index, storage),
            relay=self.relay,
            turns=self.turns(storage),
        )
        if self.relay is not None:
            following = Deferred.fromCoroutine(box.follow())
            following.addErrback(
                lambda failure: self.log.failure("following account {account}", failure, account=account)
            )
        if not self.adopting:
            return box
        adopting = Deferred.fromCoroutine(adopt(box, self.reactor))
        adopting.addErrback(
            lambda failure: self.log.failure("adopting account {account}", failure, account=account)
        )
        self._adopted[account] = adopting
        return box

    def _changed(self, newly_revoked: set[str]) -> None:
        """
        Take in the registry's changes: end the streams of newly revoked
        tokens; open new accounts.
        """
        if newly_revoked:
            streams = self.hub.disconnect(newly_revoked)
            self.log.info(
                "{tokens} tokens revoked, {streams} open streams ended",
                tokens=len(newly_revoked),
                streams=streams,
            )
        for account in sorted(self.tokens.accounts - self._boxes.keys()):
            self._open(account)
