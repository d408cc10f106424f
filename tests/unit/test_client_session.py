"""
The loop of sessions (L{boxsync.client.session.Sessions}) on a fake clock:
its phases, its back-off, and how it stops.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from boxsync.client.errors import AuthError
from boxsync.client.session import Attempt, NotInSync, Phase, Sessions, describe


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)


def test_backs_off_longer_while_sessions_fail_and_stops_at_once() -> None:
    clock = Clock()
    sessions = Sessions(clock, max_backoff=2.0)
    started: list[float] = []
    ends: list[Deferred[bool]] = []

    async def session() -> bool:
        sessions.begin()
        assert sessions.phase is Phase.PLANNING
        started.append(clock.seconds())
        ends.append(Deferred())
        return await ends[-1]

    done = Deferred.fromCoroutine(sessions.run(session))
    for _ in range(4):
        ends[-1].errback(ConnectionRefusedError())
        assert sessions.phase is Phase.WAITING
        clock.advance(10)
    assert [b - a for a, b in zip(started, started[1:])] == [10.0] * 4
    assert sessions.phase is Phase.PLANNING
    # Stopping cancels the session under way (one still connecting, say).
    sessions.stop()
    assert ends[-1].called and done.called and sessions.phase is Phase.STOPPED
    assert not clock.getDelayedCalls()


def delays(max_backoff: float, synced_in: int = 0) -> list[float]:
    """
    The waits between five sessions that each fail at once (the one
    numbered C{synced_in} after being in sync).
    """
    clock = Clock()
    sessions = Sessions(clock, max_backoff=max_backoff)
    started: list[float] = []

    async def session() -> bool:
        attempt = sessions.begin()
        started.append(clock.seconds())
        attempt.synced = len(started) == synced_in
        raise ConnectionRefusedError()

    Deferred.fromCoroutine(sessions.run(session))
    while len(started) < 5:
        clock.advance(0.125)
    sessions.stop()
    assert not clock.getDelayedCalls()
    return [round(b - a, 3) for a, b in zip(started, started[1:])]


def test_the_delays_double_up_to_the_limit() -> None:
    assert delays(max_backoff=2.0) == [0.5, 1.0, 2.0, 2.0]


def test_a_session_in_sync_resets_the_back_off() -> None:
    assert delays(max_backoff=30.0, synced_in=3) == [0.5, 1.0, 0.5, 1.0]


def test_once_gives_up_and_a_refused_credential_is_final() -> None:
    clock = Clock()
    once = Sessions(clock, once=True)

    async def never_in_sync() -> bool:
        attempt = once.begin()
        attempt.error, attempt.failed = "b.txt: refused", True
        return False

    failed = Deferred.fromCoroutine(once.run(never_in_sync))
    clock.pump([1.0] * 60)
    assert isinstance(failed.result.value, NotInSync)
    assert str(failed.result.value) == "b.txt: refused"
    failed.addErrback(lambda _: None)

    sessions = Sessions(clock)

    async def refused() -> bool:
        raise AuthError(401, "bad token")

    stopped = Deferred.fromCoroutine(sessions.run(refused))
    assert isinstance(stopped.result.value, AuthError)
    stopped.addErrback(lambda _: None)


def test_once_stopped_before_in_sync_is_not_in_sync_and_live_stopped_is_done() -> None:
    clock = Clock()
    for once in (True, False):
        sessions = Sessions(clock, once=once)
        started: list[Deferred[bool]] = []

        async def endless() -> bool:
            sessions.begin()
            waiting: Deferred[bool] = Deferred()
            started.append(waiting)
            return await waiting

        running = Deferred.fromCoroutine(sessions.run(endless))
        assert len(started) == 1 and not running.called
        sessions.stop()
        if once:
            # A --once stopped by a signal must not say the folder is in sync.
            assert isinstance(running.result.value, NotInSync)
            assert "stopped before" in str(running.result.value)
            running.addErrback(lambda _: None)
        else:
            assert running.called and running.result is None


def test_pause_ends_the_session_and_resume_starts_one() -> None:
    clock = Clock()
    sessions = Sessions(clock)
    started: list[float] = []

    async def session() -> bool:
        sessions.begin()
        started.append(clock.seconds())
        return await Deferred()  # live until cut short

    done = Deferred.fromCoroutine(sessions.run(session))
    assert len(started) == 1 and sessions.phase is Phase.PLANNING
    sessions.pause()
    assert sessions.phase is Phase.PAUSED and sessions.paused
    clock.advance(60)
    assert len(started) == 1, "no session while paused"
    sessions.resume()
    assert len(started) == 2 and sessions.phase is Phase.PLANNING
    sessions.pause()
    sessions.stop()
    assert done.called and sessions.phase is Phase.STOPPED
    assert not clock.getDelayedCalls()


def test_the_cursor_passes_the_clients_own_commits_but_no_gap() -> None:
    """
    The stream does not echo this client's commits: the seq reached goes
    through them, but not past a seq whose event may still be on its way.
    """
    attempt = Attempt()
    attempt.own.add(1)
    assert attempt.reached() is None  # the plan has not all come
    attempt.plan_seq = 0
    attempt.own |= {2, 3, 5}
    assert attempt.reached() == 3  # 4: another client's, not heard yet
    attempt.seen = 4
    assert attempt.reached() == 5
    assert attempt.own == set()
    attempt.own.add(7)
    attempt.seen = 8  # events come in seq order: 6 was heard
    assert attempt.reached() == 8


def test_a_failure_of_the_system_names_the_places_of_the_folder_only() -> None:
    """
    A file that could not be put in place is said with the system's reason
    and the places of the synced folder it met: not the client's temporary
    file (a path the user never made), nor the file the line is about.
    """
    root = Path("/home/me/sync")
    denied = os.strerror(errno.EPERM)
    moved = OSError(errno.EPERM, denied, str(root / ".boxsync/tmp/dl-1234"), str(root / "ro/two.txt"))
    assert describe(moved, root, "ro/two.txt") == denied
    above = OSError(errno.EACCES, os.strerror(errno.EACCES), str(root / "ro/deep"))
    assert describe(above, root, "ro/deep/f.txt") == f"{os.strerror(errno.EACCES)} (ro/deep)"
    odd = OSError(errno.EACCES, os.strerror(errno.EACCES), str(root / "new\nline"))
    assert describe(odd, root, "x") == f"{os.strerror(errno.EACCES)} (new\\nline)"
    outside = OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/mnt/elsewhere/f")
    assert describe(outside, root, "f") == f"{os.strerror(errno.EXDEV)} (/mnt/elsewhere/f)"
    # Without the folder: the error's own first line, as before.
    assert describe(moved) == str(moved)
