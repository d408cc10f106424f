"""
Commits made on other servers reach the event streams open on this one.

Several servers on one index in PostgreSQL each hold some clients' event
streams. After each commit a server tells the others on a PostgreSQL
channel (C{NOTIFY}) which account and which seqs it committed, and which
stream the commit came from (that client has it already); each server
C{LISTEN}s on the channel, skips what it said itself, and has the account's
box read those seqs from the index and publish them to its streams.

The blocks of a large file on its way travel the same way, on a channel
of their own (L{BLOCKS_CHANNEL}): which runs of blocks a client announced
(L{Announced}: the other servers' streams of the account are told, as the
streams of the server that heard it are) and which blocks have reached the
store every server reads (L{Arrived}: a download waiting for one on another
server reads it now). So a file flows from a client on one server to a
client on another while it is still being sent.

A notification is small and carries no file data: the index stays the one
truth. One that is lost (the listening connection broke, the server that
committed died between its commit and its notification) is caught up: after
the connection comes back, and every L{CATCH_UP_SECONDS} in any case, each
box publishes what the index has past the last seq it published.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Sequence, Union

from attrs import asdict, define, field, frozen

from ..batches import batched
from ..wire.events import Incoming
from ..wire.values import ProtocolError, check_sha256

__all__ = [
    "BLOCKS_PER_NOTIFICATION",
    "NOTIFICATION_BYTES",
    "CATCH_UP_SECONDS",
    "Announced",
    "Arrived",
    "BlockNews",
    "Commit",
    "Receiver",
    "Relay",
    "Seen",
    "announcements",
    "arrivals",
    "decode_news",
]

#: How often every box publishes what it may have missed anyway.
CATCH_UP_SECONDS = 5.0

#: The most blocks one notification names.
BLOCKS_PER_NOTIFICATION = 40

#: The most bytes of one notification: PostgreSQL takes up to 8,000.
NOTIFICATION_BYTES = 7900


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


@frozen
class Arrived:
    """
    What a notification of blocks says: server C{server} has put the blocks
    C{hashes} of C{account} in the store every server reads.
    """

    server: str
    account: str
    hashes: tuple[str, ...]

    def encode(self) -> str:
        return json.dumps({"server": self.server, "account": self.account, "arrived": list(self.hashes)})


@frozen
class Announced:
    """
    What a notification of blocks says: a client of server C{server}, on
    event stream C{stream}, is sending C{incoming} to C{account}.
    """

    server: str
    account: str
    incoming: Incoming
    stream: str | None

    def encode(self) -> str:
        return json.dumps(
            {"server": self.server, "account": self.account, "incoming": asdict(self.incoming), "stream": self.stream},
            ensure_ascii=False,
        )


BlockNews = Union[Arrived, Announced]


def decode_news(payload: str) -> BlockNews:
    """
    @raise ValueError: if C{payload} is neither an encoded L{Arrived} nor an
        encoded L{Announced}.
    """
    try:
        news: Any = json.loads(payload)
        server, account = str(news["server"]), str(news["account"])
        if "arrived" in news:
            return Arrived(server, account, tuple(check_sha256(each) for each in news["arrived"]))
        stream = news["stream"]
        return Announced(server, account, Incoming(**news["incoming"]), None if stream is None else str(stream))
    except (KeyError, TypeError, ValueError, ProtocolError) as e:
        raise ValueError(f"not news of blocks: {payload!r} ({e})") from None


def arrivals(server: str, account: str, hashes: Sequence[str]) -> list[Arrived]:
    """
    The notifications that the blocks C{hashes} have arrived.
    """
    return [Arrived(server, account, tuple(some)) for some in batched(hashes, BLOCKS_PER_NOTIFICATION)]


def announcements(server: str, account: str, incoming: Incoming, stream: str | None) -> list[Announced]:
    """
    The notifications that say C{incoming}: its run cut into pieces of at
    most L{BLOCKS_PER_NOTIFICATION} blocks and L{NOTIFICATION_BYTES}, each
    from its own offset. A path so long (once escaped) that not even one
    block fits is not told: the other servers' clients fetch that file
    once it is committed.
    """
    empty = Announced(server, account, Incoming(incoming.path, incoming.size, incoming.offset, ()), stream)
    # An offset takes at most 20 digits; each block, its pair and a comma.
    room = NOTIFICATION_BYTES - len(empty.encode().encode()) - 20
    pieces = []
    blocks: list[tuple[str, int]] = []
    used = 0
    offset = start = incoming.offset
    for sha256, size in incoming.blocks:
        cost = len(json.dumps([sha256, size])) + 2
        if blocks and (len(blocks) == BLOCKS_PER_NOTIFICATION or used + cost > room):
            pieces.append(Announced(server, account, Incoming(incoming.path, incoming.size, start, blocks), stream))
            blocks, used, start = [], 0, offset
        if cost > room:
            return []
        blocks.append((sha256, size))
        used += cost
        offset += size
    if blocks:
        pieces.append(Announced(server, account, Incoming(incoming.path, incoming.size, start, blocks), stream))
    return pieces


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
    What a box tells of its commits (L{PostgresRelay.tell}) and of the
    blocks of files on their way.
    """

    def tell(self, account: str, seq: int, stream: str | None) -> None: ...

    def tell_arrived(self, account: str, sha256: str) -> None: ...

    def tell_incoming(self, account: str, incoming: Incoming, stream: str | None) -> None: ...


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

    def heard(self, news: BlockNews) -> None:
        """
        C{news} of the blocks of a file on its way to another server.
        """
