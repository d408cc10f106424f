"""
The folder lock: one process alone, or several side by side (the servers of
one box), never both at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boxsync.lock import FolderLock, Locked


def test_taken_alone_it_keeps_everyone_out_until_shared(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    first = FolderLock.acquire(path)
    with pytest.raises(Locked) as refused:
        FolderLock.acquire(path, shared=True)
    assert refused.value.pid is not None
    with pytest.raises(Locked):
        FolderLock.acquire(path)
    first.share()
    second = FolderLock.acquire(path, shared=True)
    third = FolderLock.acquire(path, shared=True)
    # Nobody takes it alone while any holds it shared.
    with pytest.raises(Locked):
        FolderLock.acquire(path)
    for held in (first, second):
        held.release()
    with pytest.raises(Locked):
        FolderLock.acquire(path)
    third.release()
    FolderLock.acquire(path).release()


def test_a_waiting_taker_gets_it_once_it_is_let_go(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "lock"
    held = FolderLock.acquire(path)
    got: list[FolderLock] = []
    waiter = threading.Thread(target=lambda: got.append(FolderLock.acquire(path, wait=True)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got
    held.release()
    waiter.join(10)
    assert not waiter.is_alive() and len(got) == 1
    got[0].release()
