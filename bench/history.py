"""
History: what keeping every version costs, and how fast it comes back.

A file of ``size`` random bytes is overwritten ten times by A's client, 4 KiB
in a new place each time: the disk the kept versions take (``du`` of the
box's ``.boxsync/versions``, the file system's own count) before and after
they share their blocks (``boxsync-admin prune`` with the server stopped;
the server does it hourly), beside what changed. Then the oldest version is restored
(``boxsync-client restore --seq``, the process timed whole) beside ``cp``
of the same file with an fsync; ``deletions`` small files deleted at once
are listed in the trash (``boxsync-client trash --json``); and a folder of
small files all overwritten (what ransomware does) is restored as it was
(``boxsync-client restore FOLDER --at``), beside ``cp -a`` of the same tree
with a ``sync``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from boxsync.testing import Client, Server

from .measure import mib, scratch_pair

#: How many times the file is overwritten.
OVERWRITES = 10

#: How much each overwrite changes.
CHANGE = 4096

#: The most files the folder restored as it was holds.
RESTORED = 10_000


def _on_disk(folder: Path) -> int:
    """
    The bytes the files of C{folder} take on disk (holes take none).
    """
    return sum(entry.stat(follow_symlinks=False).st_blocks * 512 for entry in os.scandir(folder))


def _command(server: Server, *args: str) -> float:
    """
    Run C{boxsync-client ARGS} against C{server}: its seconds, start-up
    included.
    """
    command = [sys.executable, "-m", "boxsync.client", args[0], "--server", server.url, f"--token={server.key}"]
    start = time.perf_counter()
    subprocess.run([*command, *args[1:]], check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - start


def _cp(source: Path, target: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(source, target)
    with open(target, "rb") as f:
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    target.unlink()
    return seconds


def run(size_mib: int, deletions: int) -> list[dict[str, object]]:
    size = size_mib * 2**20
    rows: list[dict[str, object]] = []
    with scratch_pair() as (root, server, a, _):
        image = a.folder / "image.bin"
        with open(image, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(2**20))
        a.once(timeout=3600)
        for n in range(OVERWRITES):
            with open(image, "r+b") as f:
                f.seek((n + 1) * size // (OVERWRITES + 2))
                f.write(os.urandom(CHANGE))
            a.once(timeout=3600)
        versions = server.box / ".boxsync" / "versions"
        kept = sorted(int(name) for name in os.listdir(versions))
        before = _on_disk(versions)
        # Pruned with the server stopped, as it must be.
        server.stop()
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "boxsync.admin", "prune", "--box", str(server.box), "--thin-versions", "off"],
            check=True, capture_output=True, timeout=3600,
        )
        shared = time.perf_counter() - start
        server.start()
        after = _on_disk(versions)
        rows.append(
            {
                "work": f"{OVERWRITES} overwrites of {CHANGE // 1024} KiB: the kept versions on disk",
                "size": mib(size),
                "figure": f"{mib(before)} → {mib(after)}",
                "reference": f"{len(kept)} versions kept; {OVERWRITES * CHANGE // 1024} KiB changed; "
                f"sharing took {shared:.1f} s",
            }
        )
        restore = _command(server, "restore", "image.bin", "--seq", str(kept[0]))
        reference = _cp(server.box / "image.bin", root / "copy.bin")
        rows.append(
            {
                "work": "restore of the oldest version",
                "size": mib(size),
                "figure": f"{restore:.2f} s",
                "reference": f"cp + fsync {reference:.2f} s",
            }
        )
        rows.append(_trash(root, server, deletions))
        rows.append(_restore_folder(root, server, min(deletions, RESTORED)))
    return rows


def _trash(root: Path, server: Server, deletions: int) -> dict[str, object]:
    """
    C{deletions} small files in 100 folders, synced, deleted at once and
    synced: how long listing the trash takes.
    """
    c = Client(server, root / "c", "c", verbose=False)
    folder = c.folder / "old"
    for n in range(deletions):
        if n % 1000 == 0:
            (folder / f"{n // 1000:03d}").mkdir(parents=True, exist_ok=True)
        (folder / f"{n // 1000:03d}" / f"{n}.txt").write_bytes(b"%d\n" % n)
    c.once(timeout=3600)
    shutil.rmtree(folder)
    c.once(timeout=3600)
    listed = min(_command(server, "trash", "--json") for _ in range(3))
    idle = min(_command(server, "trash", "--json", "nothing-here") for _ in range(3))
    return {
        "work": f"the trash listed, {deletions:,} files deleted",
        "size": mib(deletions * 6),
        "figure": f"{listed:.2f} s",
        "reference": f"{listed - idle:.2f} s more than an empty listing",
    }


def _restore_folder(root: Path, server: Server, files: int) -> dict[str, object]:
    """
    C{files} small files in folders of 1,000, synced, all overwritten and
    synced: how long bringing the folder back as it was takes.
    """
    d = Client(server, root / "d", "d", verbose=False)
    folder = d.folder / "photos"
    for n in range(files):
        (folder / f"{n // 1000:03d}").mkdir(parents=True, exist_ok=True)
        (folder / f"{n // 1000:03d}" / f"{n}.jpg").write_bytes(b"photo %d\n" % n)
    d.once(timeout=3600)
    then = datetime.now(timezone.utc).isoformat()
    time.sleep(0.01)
    for n in range(files):
        (folder / f"{n // 1000:03d}" / f"{n}.jpg").write_bytes(b"encrypted %d\n" % n)
    d.once(timeout=3600)
    restore = _command(server, "restore", "photos", "--at", then)
    restored = server.box / "photos"
    assert (restored / "000" / "0.jpg").read_bytes() == b"photo 0\n", "the folder was not restored"
    start = time.perf_counter()
    subprocess.run(["cp", "-a", str(restored), str(root / "photos-copy")], check=True)
    os.sync()
    reference = time.perf_counter() - start
    return {
        "work": f"a folder of {files:,} overwritten files restored as it was",
        "size": mib(files * 12),
        "figure": f"{restore:.2f} s",
        "reference": f"cp -a + sync {reference:.2f} s",
    }
