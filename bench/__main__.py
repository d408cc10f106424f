"""
``python -m bench``: run boxsync's benchmarks and print their tables.

    python -m bench                # everything, full sizes
    python -m bench --quick        # small sizes, a minute or so
    python -m bench memory latency # only these
"""

from __future__ import annotations

import argparse
import sys
import time

from . import latency, memory


def _table(title: str, rows: list[dict[str, object]]) -> str:
    if not rows:
        return f"{title}: no rows\n"
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = [f"## {title}", ""]
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("which", nargs="*", default=["memory", "latency"])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",")], default=None,
        help="memory: file sizes in MiB, comma-separated (default 256,1024,2048)",
    )
    parser.add_argument("--changes", type=int, default=None, help="latency: how many changes")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([16] if args.quick else [256, 1024, 2048])
    changes = args.changes or (10 if args.quick else 20)
    plans = {
        "memory": lambda: memory.run(sizes),
        "latency": lambda: latency.run(changes),
    }
    for name in args.which:
        if name not in plans:
            parser.error(f"unknown benchmark {name!r}; choose from {', '.join(plans)}")
        print(f"running {name}...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        rows = plans[name]()
        print(_table(f"{name} ({time.perf_counter() - start:.0f} s)", rows), flush=True)


if __name__ == "__main__":
    main()
