"""
The index out of reach for a task a server repeats (a poll, a report): said
once when it starts failing, once when it works again, not at every round.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from attrs import define
from twisted.logger import Logger

from .index import IndexUnavailable

__all__ = ["Outage"]


@define
class Outage:
    """
    @ivar doing: what the task does, as a log line names it ("reading the
        token registry").
    @ivar down: whether its last round failed.
    """

    doing: str
    log: Logger
    down: bool = False

    async def round(self, work: Callable[[], Awaitable[object]]) -> None:
        """
        Do one round of the task; never fail, so that the next round comes.
        """
        try:
            await work()
        except IndexUnavailable as e:
            # PostgreSQL is away (a restart): said once, tried until back.
            if not self.down:
                self.log.warn("{doing}: cannot for now: {error}", doing=self.doing, error=str(e))
            self.down = True
            return
        except Exception:
            # The next round may well work.
            self.log.failure("{doing}", doing=self.doing)
            self.down = True
            return
        if self.down:
            self.log.info("{doing} again", doing=self.doing)
        self.down = False
