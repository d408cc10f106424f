"""
The synced folder is the one the client started with: the folder at its
path and the state file in it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boxsync.client.identity import FolderIdentity, FolderReplaced
from boxsync.client.state import LocalState


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "synced"
    folder.mkdir()
    LocalState.open(folder).close()
    (folder / "a.txt").write_bytes(b"a")
    return folder


def test_the_same_folder_passes(root: Path) -> None:
    identity = FolderIdentity.of(root)
    (root / "a.txt").unlink()
    (root / "b.txt").write_bytes(b"b")
    identity.check()


def test_a_folder_moved_away_and_made_again_is_not_the_one(root: Path) -> None:
    identity = FolderIdentity.of(root)
    os.rename(root, root.with_name("moved"))
    root.mkdir()
    with pytest.raises(FolderReplaced, match="no longer the folder"):
        identity.check()
    # Even with a state of its own, it is another folder.
    LocalState.open(root).close()
    with pytest.raises(FolderReplaced):
        identity.check()


def test_a_folder_deleted_is_not_the_one(root: Path) -> None:
    identity = FolderIdentity.of(root)
    os.rename(root, root.with_name("moved"))
    with pytest.raises(FolderReplaced):
        identity.check()


def test_a_state_file_replaced_is_not_the_one(root: Path) -> None:
    """
    The folder kept, its hidden folder put back from elsewhere (a copy
    from a backup): the state is not the one the client keeps.
    """
    identity = FolderIdentity.of(root)
    state = root / ".boxsync" / "state.sqlite"
    copy = state.with_name("copy")
    copy.write_bytes(state.read_bytes())
    os.replace(copy, state)
    with pytest.raises(FolderReplaced, match=r"state of .* \(\.boxsync/state\.sqlite\) was deleted or replaced"):
        identity.check()
    # Deleted with its hidden folder, by a user tidying hidden folders.
    state.unlink()
    with pytest.raises(FolderReplaced, match="compares every file with the box"):
        identity.check()
