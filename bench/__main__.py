"""
``python -m bench``: run boxsync's benchmarks, print their tables and write
``docs/performance.md`` with its plots.

    python -m bench                # everything, full sizes (about an hour)
    python -m bench --quick        # small sizes, a few minutes
    python -m bench memory latency # only these

Benchmarks: bulk (1 GiB up/down vs nginx+curl), e2e (A → empty B), latency
(single small changes), fanout (N open event streams, one event), memory
(peak RSS vs file size), restart (an in-sync client with a large tree), load
(Locust: many clients with open event streams uploading and downloading),
blocks (renames, edits, resumes and text, bytes counted by a proxy),
history (what kept versions take on disk, a restore, the trash), join (a new
client fills an empty folder with --once, vs an rsync pull), cluster (several
servers of one box on PostgreSQL behind HAProxy, beside one embedded server).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from . import blocks, bulk, cluster, e2e, fanout, history, join, latency, load, memory, report, restart

ALL = ["bulk", "e2e", "latency", "fanout", "memory", "restart", "load", "blocks", "history", "join", "cluster"]

_TITLES = {
    "bulk": "1. Bulk transfer vs nginx + curl (target: up ≥ 0.9x, down ≥ 0.95x)",
    "e2e": "2. End to end, A → empty B (target: 10,000 × 4 KiB < 10 s)",
    "latency": "3. Live latency of single small changes (target: median < 50 ms, p99 < 250 ms)",
    "fanout": "4. Fan-out: one event to N open streams (target: 10,000 within 1 s)",
    "memory": "5. Peak RSS vs file size (target: flat; server < 80 MB, client < 120 MB at 4 GiB)",
    "restart": "6. Restart of an in-sync client (target: 100,000 files < 5 s, 0 bytes sent)",
    "load": "7. Load test (Locust): clients with open event streams (target: 0 failures)",
    "blocks": "8. Blocks, A → B, bytes counted by a proxy (targets: rename < 1 MiB, 4 KiB edit "
    "< 16 MiB each way, resume < 10 % re-sent, text < 10 %, new file ≥ 1.0x nginx PUT+GET)",
    "history": "9. History: what kept versions cost (targets: the disk grows by what changed; restore of "
    "1 GiB < 2 s; 100,000 deleted files listed < 1 s)",
    "join": "10. A new client: --once into an empty folder (target: 10,000 × 4 KiB ≤ rsync pull)",
    "cluster": "11. Several servers of one box on PostgreSQL (targets: latency across servers p50 < 60 ms, "
    "p99 < 250 ms; commits/s with 1, 2, 3 servers; one event to 30,000 streams over 3 servers < 2 s; "
    "1 GiB A → B across servers ≥ 0.7x one embedded server)",
}


def _table(title: str, rows: list[dict[str, object]]) -> str:
    return report.table(title, rows)


def _ints(value: str) -> list[int]:
    return [int(x) for x in value.split(",") if x]


def compiled() -> None:
    """
    Write boxsync's bytecode, as installing it or its first run would: with
    C{PYTHONDONTWRITEBYTECODE} set (as on some machines), every process the
    benchmarks start would otherwise compile its sources again, a cost no
    installed boxsync pays (~0.2 s of each client's start-up here).
    """
    import compileall

    import boxsync

    compileall.compile_dir(str(Path(boxsync.__file__).parent), quiet=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", nargs="*", default=None, help=f"benchmarks to run (default: {' '.join(ALL)})")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, a few minutes)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--bulk-size", type=int, default=None, help="bulk and e2e: the large file in MiB (default 1024)")
    parser.add_argument("--sizes", type=_ints, default=None, help="memory: file sizes in MiB (default 256,1024,4096)")
    parser.add_argument("--changes", type=int, default=None, help="latency: how many changes (default 200)")
    parser.add_argument("--streams", type=_ints, default=None, help="fanout: stream counts (default 1000,10000)")
    parser.add_argument(
        "--cluster-streams", type=int, default=None,
        help="cluster: open streams over 3 servers and on one embedded server (default 30000)",
    )
    parser.add_argument("--files", type=int, default=None, help="restart: files in sync (default 100000)")
    parser.add_argument("--users", type=int, default=None, help="load: simulated clients (default 100)")
    parser.add_argument("--duration", type=int, default=None, help="load: seconds of load (default 60)")
    parser.add_argument(
        "--report", type=Path, default=None,
        help="write the report here (default: docs/performance.md for a full run of every "
        "benchmark, none for --quick or a subset)",
    )
    args = parser.parse_args(argv)
    compiled()
    quick = args.quick
    big = args.bulk_size or (32 if quick else 1024)
    sizes = args.sizes or ([16, 64] if quick else [256, 1024, 4096])
    changes = args.changes or (20 if quick else 200)
    streams = args.streams or ([100, 1000] if quick else [1000, 10000])
    files = args.files or (2000 if quick else 100_000)
    users = args.users or (10 if quick else 100)
    duration = args.duration or (10 if quick else 60)
    small = [(100, False), (1000, True)] if quick else [(1000, False), (10_000, True)]
    plans: dict[str, Callable[[], list[dict[str, object]]]] = {
        "bulk": lambda: bulk.run(big, args.runs),
        "e2e": lambda: e2e.run(big, small, args.runs),
        "latency": lambda: latency.run(changes),
        "fanout": lambda: fanout.run(streams),
        "memory": lambda: memory.run(sizes),
        "blocks": lambda: blocks.run(args.bulk_size or (64 if quick else 1024), 16 if quick else 100),
        "history": lambda: history.run(args.bulk_size or (64 if quick else 1024), 2000 if quick else 100_000),
        "restart": lambda: restart.run(files, args.runs),
        "join": lambda: join.run(1000 if quick else 10_000, args.runs),
        "cluster": lambda: cluster.run(
            changes, 500 if quick else 3000, streams=args.cluster_streams or (3000 if quick else 30_000),
            big_mib=big, runs=args.runs,
        ),
        "load": lambda: load.run(users, duration),
    }
    which = args.which or ALL
    for name in which:
        if name not in plans:
            parser.error(f"unknown benchmark {name!r}; choose from {', '.join(plans)}")
    sections = []
    began = time.perf_counter()
    for i, name in enumerate(which, 1):
        print(f"[{i}/{len(which)}] running {name}...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        rows = plans[name]()
        title = f"{_TITLES[name]} ({time.perf_counter() - start:.0f} s)"
        sections.append((name, title, rows))
        print(_table(title, rows), flush=True)
    print(f"all done in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    everything = not quick and list(which) == list(ALL)
    target = args.report or (Path("docs/performance.md") if everything else None)
    if target is not None:
        command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
        report.write(target, command.strip(), sections)
        print(f"wrote {target}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
