"""
The reactors the two programs run on, named by the interfaces they use.

No reactor is imported here: the entry points hand theirs in, and tests
hand in a real reactor or fakes with these interfaces.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
)

__all__ = ["IServerReactor", "IClientReactor"]


class IServerReactor(IReactorCore, IReactorTime, IReactorThreads, IReactorTCP):
    """
    The server's reactor: timers, the thread pool of the disk work and the
    index, and listening (C{--listen} endpoints).
    """


class IClientReactor(
    IReactorCore, IReactorTime, IReactorThreads, IReactorTCP, IReactorFDSet, IReactorPluggableNameResolver
):
    """
    The client's reactor: timers, the thread pool of downloads, connections
    to the server, the file watcher's descriptor and its shutdown trigger.
    """
