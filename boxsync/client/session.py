"""
The client's connection to the server, as a loop of sessions: each one scans
the folder, opens the event stream with a manifest and works through the
plan and the live events until the stream ends; then, after a back-off that
grows while the trouble lasts, the next one starts from a fresh scan.

Where the loop stands is one L{Phase}; what the current session has come to
(its plan, a failed job, a resync asked for) is one L{Attempt}, replaced as
the next session starts, so nothing of a session leaks into the next.
"""

from __future__ import annotations

import errno
import os
import random
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Coroutine

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..paths import HIDDEN_DIR, printable
from .connect import describe_failure, unwrap
from .errors import AuthError, WrongScheme
from .identity import FolderReplaced, InsideSameBox

__all__ = ["Attempt", "Fatal", "NotInSync", "Phase", "Sessions", "describe"]

#: Errors that stop the client: retrying would not help.
Fatal = (AuthError, WrongScheme, FolderReplaced, InsideSameBox)

#: What writing to a full disk (or past a quota or a size limit) fails with.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class NotInSync(Exception):
    """
    With C{once}: the folder could not be brought in sync (the reason is
    the last failure).
    """


class Phase(Enum):
    """
    Where the client's connection stands.
    """

    #: Scanning the folder and opening the event stream.
    CONNECTING = "connecting"
    #: The stream is open; the plan is arriving.
    PLANNING = "planning"
    #: The whole plan has arrived: live events follow.
    LIVE = "live"
    #: Backing off before the next session.
    WAITING = "waiting"
    #: Paused by the user: no session until resumed.
    PAUSED = "paused"
    #: Stopped for good.
    STOPPED = "stopped"


@define
class Attempt:
    """
    What one session has come to.

    @ivar plan_seq: the seq the plan brings the folder to, once it has all
        arrived.
    @ivar failed: whether a job failed (the session is then not in sync).
    @ivar resync: whether the session was ended on purpose, for a fresh
        scan and plan.
    @ivar synced: whether the folder was in sync at some point.
    @ivar error: the last failure, for the log and the status.
    @ivar planned: whether the session was ended on purpose for no trouble
        (the ignore rules changed): its resync is no error to show.
    @ivar fatal: the error that stops the client, met by a job or a rescan
        (the session was ended for it).
    @ivar other_box: whether the server's box turned out not to be the one
        the folder was synced with (the session was ended for it).
    @ivar held: the highest seq the folder held as its stream was asked
        for (its hello's seq must not be below it).
    @ivar latest: the seq of the latest event of each path (a commit, or
        an entry of the plan).
    @ivar seen: the highest seq of the events that came after the plan (in
        seq order: the commits of other clients up to it all came).
    @ivar own: the seqs of this client's own commits in this session, which
        the stream does not echo, once past C{seen}.
    """

    plan_seq: int | None = None
    failed: bool = False
    resync: bool = False
    synced: bool = False
    error: str | None = None
    planned: bool = False
    fatal: Exception | None = None
    other_box: bool = False
    held: int = 0
    latest: dict[str, int] = field(factory=dict)
    seen: int = 0
    own: set[int] = field(factory=set)

    def reached(self) -> int | None:
        """
        The seq the folder is at once every job is done (C{None} before the
        whole plan came): the plan's, or the last event's, and then this
        client's own commits that follow them without a gap. A seq in a gap
        may be another client's commit whose event is still on its way.
        """
        if self.plan_seq is None:
            return None
        seq = max(self.plan_seq, self.seen)
        while seq + 1 in self.own:
            seq += 1
        self.own = {each for each in self.own if each > seq}
        return seq


def describe(error: BaseException, root: Path | None = None, path: str | None = None) -> str:
    """
    One line about a failure, for the log and the status.

    @param root: the synced folder: an error of the system (C{OSError})
        then names the places it met in that folder (not the client's own
        temporary files in it), and not C{path}, the file the line is
        about already.
    """
    cause = unwrap(error)
    if isinstance(cause, OSError) and cause.errno in _FULL:
        return f"no space left on this disk ({cause.strerror})"
    if root is not None and isinstance(cause, OSError) and cause.strerror:
        return cause.strerror + "".join(f" ({place})" for place in _places(cause, root, path))
    return describe_failure(cause)


def _places(error: OSError, root: Path, path: str | None) -> list[str]:
    """
    The names C{error} carries, within C{root} (but its hidden folder, and
    C{path}) as wire paths, outside it as they are; shown escaped.
    """
    places = []
    for name in (error.filename, error.filename2):
        if not isinstance(name, (str, os.PathLike)):
            continue
        relative = os.path.relpath(name, root)
        if relative.split(os.sep)[0] == HIDDEN_DIR or relative == path:
            continue
        places.append(printable(os.fspath(name) if relative.startswith("..") else relative))
    return places


@define
class Sessions:
    """
    The loop of sessions.

    @ivar once: stop as soon as a session ends in sync (and give up after
        a few failures).
    @ivar max_backoff: the longest wait between two sessions, in seconds.
    """

    reactor: IReactorTime
    once: bool = False
    max_backoff: float = 5.0
    phase: Phase = Phase.CONNECTING
    attempt: Attempt = field(factory=Attempt)
    _wake: Deferred[None] | None = None
    _current: Deferred[bool] | None = None
    _resumed: Deferred[None] | None = None
    #: Whether the user paused syncing.
    paused: bool = False
    log = Logger()

    def begin(self) -> Attempt:
        """
        A new session starts: its L{Attempt}.
        """
        self.attempt = Attempt()
        self.phase = Phase.PLANNING
        return self.attempt

    async def run(self, session: Callable[[], Coroutine[Any, Any, bool]]) -> None:
        """
        Run C{session} (which tells whether it ended in sync) again and
        again, backing off after each one that did not, until stopped (or,
        with C{once}, until one ends in sync).

        @raise AuthError: if the server refuses the credentials.
        @raise NotInSync: with C{once}, after too many failures, or if
            stopped first.
        """
        await self._run(session)
        if self.once and self.phase is Phase.STOPPED:
            # Stopped (a signal) before a session ended in sync: not a
            # folder to call in sync.
            raise NotInSync("stopped before the folder was in sync")

    async def _run(self, session: Callable[[], Coroutine[Any, Any, bool]]) -> None:
        failures = 0
        while self.phase is not Phase.STOPPED:
            if self.paused:
                await self._until_resumed()
                failures = 0
                continue
            self.phase = Phase.CONNECTING
            self.attempt.resync = False
            try:
                self._current = Deferred.fromCoroutine(session())
                if await self._current:
                    return
                reason = self.attempt.error or "the server closed the stream"
            except Fatal:
                raise
            except CancelledError:
                if self.attempt.fatal is not None:
                    raise self.attempt.fatal from None
                if self.phase is Phase.STOPPED:
                    return
                if self.paused:
                    continue
                if not self.attempt.resync:
                    raise
                reason = self.attempt.error or "a change raced with another client's"
            except Exception as e:
                if self.once and failures >= 2:
                    raise
                reason = describe(e)
            else:
                if self.once and failures >= 4:
                    raise NotInSync(reason)
                if not self.attempt.failed:
                    failures = 0
            if self.phase is Phase.STOPPED:
                return  # whatever the stop cut short is no trouble to report
            if self.paused:
                continue
            if self.attempt.synced:
                # All was well until now: this trouble is new, so the
                # back-off starts over rather than where the last one ended.
                failures = 0
            failures += 1
            delay = min(self.max_backoff, 0.25 * 2 ** min(failures, 10))
            delay *= random.uniform(0.5, 1.0)
            self.log.info(
                "resyncing in {delay:.1f} s: {reason}", reason=reason, delay=delay, trouble=not self.attempt.planned
            )
            self.phase = Phase.WAITING
            await self._sleep(delay)

    def stop(self) -> None:
        """
        Stop the loop: a session under way (still connecting, say) is
        cancelled, and so is a back-off.
        """
        self.phase = Phase.STOPPED
        self._cut_short()
        if self._resumed is not None and not self._resumed.called:
            self._resumed.cancel()

    def pause(self) -> None:
        """
        End the session under way (or the back-off) and start no other
        until L{resume}.
        """
        if not self.paused:
            self.paused = True
            self._cut_short()

    def resume(self) -> None:
        """
        Start a session again after L{pause}.
        """
        self.paused = False
        if self._resumed is not None and not self._resumed.called:
            self._resumed.callback(None)

    def _cut_short(self) -> None:
        for waiting in (self._wake, self._current):
            if waiting is not None and not waiting.called:
                waiting.cancel()

    async def _until_resumed(self) -> None:
        self.phase = Phase.PAUSED
        self.log.info("paused")
        self._resumed = Deferred()
        try:
            await self._resumed
        except CancelledError:
            return  # stopped while paused
        self.log.info("resumed")

    async def _sleep(self, seconds: float) -> None:
        self._wake = deferLater(self.reactor, seconds, lambda: None)
        try:
            await self._wake
        except CancelledError:
            pass
        finally:
            self._wake = None
