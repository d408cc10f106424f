"""
Commits made on other servers reach the event streams open on this one.

Several servers on one index in PostgreSQL each hold some clients' event
streams. After each commit a server tells the others on a PostgreSQL
channel (C{NOTIFY}) which account and which seqs it committed, and which
stream the commit came from (that client has it already); each server
C{LISTEN}s on the channel, skips what it said itself, and has the account's
box read those seqs from the index and publish them to its streams.

A notification is small and carries no file data: the index stays the one
truth. One that is lost (the listening connection broke, the server that
committed died between its commit and its notification) is caught up: after
the connection comes back, and every L{CATCH_UP_SECONDS} in any case, each
box publishes what the index has past the last seq it published.
"""

from __future__ import annotations

from typing import Protocol

from attrs import define, field

__all__ = ["CATCH_UP_SECONDS", "Commit", "Receiver", "Relay", "Seen"]

#: How often every box publishes what it may have missed anyway.
CATCH_UP_SECONDS = 5.0


@define(frozen=True)
class Commit:
    """
    What a notification says: seqs C{first} to C{last} of C{account} were
    committed by server C{server}, from the client of event stream
    C{stream} (C{None}: no stream, or not known).
    """

    server: str
    account: str
    first: int
    last: int
    stream: str | None

    def encode(self) -> str:
        return " ".join([self.server, str(self.first), str(self.last), self.stream or "-", self.account])

    @classmethod
    def decode(cls, payload: str) -> Commit:
        """
        @raise ValueError: if C{payload} is not an encoded L{Commit}.
        """
        server, first, last, stream, account = payload.split(" ", 4)
        if not account or int(first) > int(last):
            raise ValueError(f"not a commit: {payload!r}")
        return cls(server, account, int(first), int(last), None if stream == "-" else stream)


@define
class Seen:
    """
    The seqs of one account this server has published: every seq up to
    C{low}, and those in C{above} past it. Commits from several servers
    arrive in any order; this is how each is published once.
    """

    low: int | None = None
    above: set[int] = field(factory=set)

    def fresh(self, seq: int) -> bool:
        """
        Whether C{seq} was not published yet; it counts as published from now.
        """
        if (self.low is not None and seq <= self.low) or seq in self.above:
            return False
        self.above.add(seq)
        return True

    def caught_up(self, seq: int) -> None:
        """
        Every seq up to C{seq} has been published.
        """
        self.low = seq if self.low is None else max(self.low, seq)
        self.above = {each for each in self.above if each > self.low}


class Relay(Protocol):
    """
    What a box tells of its commits (L{PostgresRelay.tell}).
    """

    def tell(self, account: str, seq: int, stream: str | None) -> None: ...


class Receiver(Protocol):
    """
    What the relay tells of other servers' commits.
    """

    def committed(self, commit: Commit) -> None:
        """
        C{commit} was made on another server.
        """

    def catch_up(self) -> None:
        """
        Notifications may have been lost: publish whatever the index has
        that was not published yet.
        """
