"""
End to end: the time from files landing in client A's folder to their being
complete in client B's (which starts with none of them), both clients running
live against one server; every file is then checked byte for byte. Beside it,
``cp -a`` of the same files on the same disk (the floor for any sync tool),
an rsync daemon's push then pull of them (bench/reference.py), and two live
Syncthings carrying them from A to B (bench/syncthing.py).

Each scenario runs against a fresh server and fresh clients, several times;
the figures are medians.
"""

from __future__ import annotations

import functools

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from boxsync.testing import tree

from .measure import live_pair, median, remove
from .reference import ensure_rsync, rsync_push_pull
from .syncthing import WATCH_DELAY, syncthing_a_to_b
from .memory import _write


def _entries(folder: Path, leave_out: str = ".boxsync") -> Iterator[os.DirEntry[str]]:
    """
    Every file below C{folder}, its top folder C{leave_out} left out.
    """
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != leave_out or current != folder:
                    stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield entry


def _files(folder: Path, leave_out: str = ".boxsync") -> dict[str, int]:
    """
    Path to size of every file below C{folder}, its top folder C{leave_out}
    left out (a file gone while it is listed is left out too).
    """
    found = {}
    for entry in _entries(folder, leave_out):
        try:
            found[os.path.relpath(entry.path, folder)] = entry.stat().st_size
        except FileNotFoundError:
            continue
    return found


def _count(folder: Path) -> int:
    """
    How many files are below C{folder}, C{.boxsync/} left out: what the
    wait for B polls, as it costs no C{stat} (the benchmark must not take
    the CPU it measures).
    """
    return sum(1 for _ in _entries(folder))


def small_tree(folder: Path, count: int, size: int, nested: bool) -> None:
    """
    Write C{count} files of C{size} random bytes below C{folder}: flat, or
    nested 100 files to a folder, 10 folders to a parent.
    """
    for i in range(count):
        if nested:
            parent = folder / f"d{i // 1000}" / f"e{i // 100 % 10}"
            parent.mkdir(parents=True, exist_ok=True)
        else:
            parent = folder
        (parent / f"f{i}.bin").write_bytes(os.urandom(size))


def scenario(
    root: Path,
    name: str,
    make: Callable[[Path], None],
    timeout: float,
    use_rsync: bool = True,
    use_syncthing: bool = True,
) -> tuple[float, float, float | None, float | None]:
    """
    One run: (seconds from the first byte landing in A to all of it in B,
    seconds ``cp -a`` takes for the same files, seconds an rsync daemon's
    push then pull of them take, and seconds two live Syncthings take from A
    to B, for each if it can be had).
    """
    work = root / name
    source = work / "source"
    source.mkdir(parents=True)
    make(source)
    expected = _files(source)
    # The disk starts quiet: the files just made (and an earlier run's) are
    # written out before the clock starts, not while it runs.
    os.sync()
    server, a, b = live_pair(work)
    try:
        expected["warm.txt"] = 7
        start = time.perf_counter()
        # The files land: each directory entry moves in (a rename, as a
        # finished download or a save by an editor does).
        for entry in os.listdir(source):
            os.rename(source / entry, a.folder / entry)
        deadline = start + timeout
        # A file appears in B only once complete (it is moved into place).
        while _count(b.folder) < len(expected) or _files(b.folder) != expected:
            if time.perf_counter() > deadline:
                missing = len(set(expected) - set(_files(b.folder)))
                raise SystemExit(f"e2e {name}: {missing} files missing in B after {timeout} s")
            # Within 1 % of the time so far: each look lists all of B, and
            # looking every 20 ms took a second of CPU from the clients.
            time.sleep(max(0.02, (time.perf_counter() - start) / 100))
        elapsed = time.perf_counter() - start
        if tree(a.folder) != tree(b.folder):
            raise SystemExit(f"e2e {name}: B's files differ from A's")
    finally:
        a.kill()
        b.kill()
        server.kill()
    copy = work / "copy"
    start = time.perf_counter()
    subprocess.run(["cp", "-a", str(a.folder), str(copy)], check=True)
    subprocess.run(["sync", "-f", str(copy)], check=True)
    cp_seconds = time.perf_counter() - start
    many = len(expected) > 100
    rsync_seconds = rsync_push_pull(a.folder, work / "rsync", many) if use_rsync and ensure_rsync() else None
    syncthing_seconds = None
    if use_syncthing:
        # The same files again, as they were before they landed in A.
        shutil.rmtree(copy / ".boxsync")
        landed = _files(copy)
        syncthing_seconds = syncthing_a_to_b(
            copy, work / "syncthing", lambda folder: _files(folder, ".stfolder") == landed, timeout
        )
    remove(work, many)
    return elapsed, cp_seconds, rsync_seconds, syncthing_seconds


def run(
    big_mib: int,
    small: list[tuple[int, bool]],
    runs: int = 3,
    use_rsync: bool = True,
    use_syncthing: bool = True,
) -> list[dict[str, object]]:
    """
    @param big_mib: the size of the one large file (0: none).
    @param small: how many 4 KiB files, and whether in nested folders, for
        each small-file scenario.
    @param use_rsync: measure an rsync daemon's push then pull beside it.
    @param use_syncthing: measure two live Syncthings beside it.
    """
    plans: list[tuple[str, Callable[[Path], None], float]] = []
    if big_mib:
        def big(folder: Path) -> None:
            _write(folder / "big.bin", big_mib * 2**20)

        plans.append((f"1 file of {big_mib} MiB", big, 600.0))
    for count, nested in small:
        shape = "nested folders" if nested else "one folder"
        plans.append(
            (
                f"{count:,} files of 4 KiB, {shape}",
                functools.partial(_small_tree_4k, count=count, nested=nested),
                600.0,
            )
        )
    rows = []
    with tempfile.TemporaryDirectory(prefix="boxsync-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        for label, make, timeout in plans:
            syncs, copies, rsyncs, syncthings = [], [], [], []
            for i in range(runs):
                print(f"  e2e {label}: run {i + 1}/{runs}", file=sys.stderr, flush=True)
                elapsed, cp_seconds, rsync_seconds, syncthing_seconds = scenario(
                    root, f"run{i}", make, timeout, use_rsync, use_syncthing
                )
                syncs.append(elapsed)
                copies.append(cp_seconds)
                if rsync_seconds is not None:
                    rsyncs.append(rsync_seconds)
                if syncthing_seconds is not None:
                    syncthings.append(syncthing_seconds)
            rows.append(
                {
                    "what moves A → empty B": label,
                    "boxsync s (median)": f"{median(syncs):.2f}",
                    "min–max s": f"{min(syncs):.2f}–{max(syncs):.2f}",
                    "cp -a + sync s (reference)": f"{median(copies):.2f}",
                    "ratio": f"{median(syncs) / median(copies):.2g}x",
                    "rsync push+pull s (reference)": f"{median(rsyncs):.2f}" if rsyncs else "n/a",
                    "vs rsync": f"{median(syncs) / median(rsyncs):.2g}x" if rsyncs else "n/a",
                    f"Syncthing s (its {WATCH_DELAY} s delay in)": f"{median(syncthings):.2f}" if syncthings else "n/a",
                    "vs Syncthing": f"{median(syncs) / median(syncthings):.2g}x" if syncthings else "n/a",
                    "runs": runs,
                }
            )
    return rows


def _small_tree_4k(folder: Path, count: int, nested: bool) -> None:
    small_tree(folder, count, 4096, nested)
