"""
The client's job scheduler (L{boxsync.client.jobs}): which jobs wait for
which, with an injected clock and jobs that end when a test says so.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from boxsync.client.jobs import Jobs


class Scheduled:
    """
    A L{Jobs} whose jobs each wait for a L{Deferred} the test fires, and the
    order in which they started.
    """

    def __init__(self, limit: int = 8) -> None:
        self.clock = Clock()
        self.started: list[str] = []
        self.failures: list[str] = []
        self._ends: dict[str, Deferred[None]] = {}
        self.jobs = Jobs(self.clock, limit, 2, self._failed, lambda: None)

    def _failed(self, failure: Failure, path: str, job: Callable[[], Awaitable[None]]) -> None:
        self.failures.append(path)

    def submit(self, name: str, path: str | None = None) -> None:
        """
        Submit a job named C{name} on C{path} (by default, C{name}).
        """
        end: Deferred[None] = Deferred()
        self._ends[name] = end

        async def job() -> None:
            self.started.append(name)
            await end

        self.jobs.submit(path if path is not None else name, job)

    def end(self, name: str, error: Exception | None = None) -> None:
        if error is None:
            self._ends[name].callback(None)
        else:
            self._ends[name].errback(error)
        self.settle()

    def settle(self) -> None:
        for _ in range(5):
            self.clock.advance(0)


def test_jobs_on_unrelated_paths_run_at_once() -> None:
    s = Scheduled()
    for name in ["a", "b/c", "b/d", "e"]:
        s.submit(name)
    s.settle()
    assert s.started == ["a", "b/c", "b/d", "e"]


def test_a_job_waits_for_the_earlier_one_on_its_path() -> None:
    s = Scheduled()
    s.submit("first", "a")
    s.submit("second", "a")
    s.settle()
    assert s.started == ["first"]
    s.end("first")
    assert s.started == ["first", "second"]
    assert s.jobs.active == 1


def test_a_job_below_a_path_waits_for_the_earlier_job_on_it() -> None:
    # A file deleted, then a folder of its name with a file in it.
    s = Scheduled()
    s.submit("f")
    s.submit("f/g/x")
    s.submit("other")
    s.settle()
    assert s.started == ["f", "other"]
    s.end("f")
    assert s.started == ["f", "other", "f/g/x"]


def test_a_job_on_a_folder_waits_for_the_earlier_jobs_below_it() -> None:
    # A folder's files deleted, then a file of the folder's name.
    s = Scheduled()
    s.submit("f/x")
    s.submit("f/g/y")
    s.submit("f")
    s.settle()
    assert s.started == ["f/x", "f/g/y"]
    s.end("f/g/y")
    assert s.started == ["f/x", "f/g/y"]
    s.end("f/x")
    assert s.started == ["f/x", "f/g/y", "f"]


def test_only_earlier_jobs_are_waited_for() -> None:
    s = Scheduled()
    s.submit("f")
    s.submit("f/x")
    s.submit("f/y")
    s.settle()
    assert s.started == ["f"]
    s.end("f")
    assert s.started == ["f", "f/x", "f/y"]
    # A later job on the folder waits for both; the one after it on a
    # path below waits for it in turn.
    s.submit("f again", "f")
    s.submit("f/x again", "f/x")
    s.settle()
    s.end("f/x")
    assert s.started == ["f", "f/x", "f/y"]
    s.end("f/y")
    assert s.started == ["f", "f/x", "f/y", "f again"]
    s.end("f again")
    assert s.started == ["f", "f/x", "f/y", "f again", "f/x again"]


def test_a_failed_job_is_reported_and_the_next_still_runs() -> None:
    s = Scheduled()
    s.submit("f")
    s.submit("f/x")
    s.settle()
    s.end("f", OSError("gone"))
    assert s.failures == ["f"]
    assert s.started == ["f", "f/x"]


def test_the_limit_of_jobs_at_once_holds() -> None:
    s = Scheduled(limit=2)
    for name in ["a", "b", "c"]:
        s.submit(name)
    s.settle()
    assert s.started == ["a", "b"]
    s.end("a")
    assert s.started == ["a", "b", "c"]


def test_nothing_is_kept_of_jobs_that_ended() -> None:
    s = Scheduled()
    s.submit("f/g/x")
    s.submit("f")
    s.settle()
    s.end("f/g/x")
    s.end("f")
    assert s.jobs.active == 0
    s.submit("f/g/y")
    s.settle()
    assert s.started[-1] == "f/g/y"


def test_a_path_that_failed_is_a_problem_until_any_job_on_it_succeeds() -> None:
    s = Scheduled()
    s.submit("first", "p")
    s.settle()
    s.end("first", OSError("in the way"))
    s.jobs.retry_later("p", lambda: _nothing(), "in the way")
    assert s.jobs.problems == {"p": "in the way"}
    # Another job on the path (not the retry) gets it through.
    s.submit("second", "p")
    s.settle()
    s.end("second")
    assert s.jobs.problems == {}
    s.jobs.stop()


async def _nothing() -> None:
    pass
