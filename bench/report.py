"""
``docs/performance.md`` and its plots, from the rows the benchmarks return.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

Rows = list[dict[str, object]]


def table(title: str, rows: Rows) -> str:
    if not rows:
        return f"## {title}\n\nno rows\n"
    columns = list(dict.fromkeys(c for row in rows for c in row))
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = [f"## {title}", ""]
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = (str(row.get(c, "")).ljust(w) for c, w in zip(columns, widths))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: object) -> float:
    return float(str(value).split()[0].rstrip("x").replace(",", ""))


def _pyplot() -> Any:
    """
    matplotlib's pyplot (drawing to files only), or C{None} if matplotlib is
    not installed: the report then has no plots.
    """
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_memory(rows: Rows, path: Path) -> Path | None:
    plt = _pyplot()
    if plt is None or not rows:
        return None

    sizes = [_number(r["size"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for column, style in (
        ("server peak RSS", "o-"),
        ("client peak RSS (up)", "s-"),
        ("client peak RSS (down)", "^-"),
    ):
        ax.plot(sizes, [_number(r[column]) for r in rows], style, label=column)
    ax.axhline(80, color="tab:blue", linestyle=":", label="server target 80 MB")
    ax.axhline(120, color="tab:orange", linestyle=":", label="client target 120 MB")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [f"{s:g}" for s in sizes])
    ax.set_xlabel("file size (MiB)")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_ylim(0, max(140, ax.get_ylim()[1]))
    ax.set_title("Peak memory while one file moves A → server → B")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_bulk(rows: Rows, path: Path) -> Path | None:
    rows = [r for r in rows if r.get("nginx+curl MB/s") not in (None, "n/a")]
    plt = _pyplot()
    if plt is None or not rows:
        return None

    labels = [str(r["transfer"]) for r in rows]
    ours = [_number(r["MB/s"]) for r in rows]
    ref = [_number(r["nginx+curl MB/s"]) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], ref, height=0.4, label="nginx + curl", color="tab:gray")
    ax.barh([y - 0.2 for y in ys], ours, height=0.4, label="boxsync", color="tab:blue")
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MB/s (median)")
    ax.set_title(f"Bulk transfer of {rows[0]['size']} on loopback")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_load(rows: Rows, path: Path) -> Path | None:
    rows = [r for r in rows if r.get("p50 ms") not in (None, "n/a")]
    plt = _pyplot()
    if plt is None or not rows:
        return None

    fig, ax = plt.subplots(figsize=(8, 4))
    ys = range(len(rows))
    for offset, column, color in ((-0.27, "p50 ms", "tab:blue"), (0, "p95 ms", "tab:orange"),
                                  (0.27, "p99 ms", "tab:red")):
        ax.barh([y + offset for y in ys], [_number(r[column]) for r in rows], height=0.27,
                label=column.split()[0], color=color)
    ax.set_yticks(list(ys), [str(r["request"]) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("latency (ms)")
    ax.set_title("Latency under load, per kind of request (Locust)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_blocks(rows: Rows, path: Path) -> Path | None:
    plt = _pyplot()
    if plt is None or not rows:
        return None

    labels = [str(r["work"]) for r in rows]
    ys = list(range(len(rows)))
    fig, (wire, clock) = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    # A bar of nothing would not show on a log scale: 0.01 MiB is the floor.
    for offset, column, color in ((-0.2, "up", "tab:blue"), (0.2, "down", "tab:green")):
        wire.barh([y + offset for y in ys], [max(_number(r[column]), 0.01) for r in rows], height=0.4,
                  label=f"{column} (A's proxy)" if column == "up" else f"{column} (B's proxy)", color=color)
    wire.plot([_number(r["size"]) for r in rows], ys, "k|", markersize=14, label="size of what changed hands")
    wire.set_xscale("log")
    wire.set_xlabel("MiB on the wire")
    wire.set_yticks(ys, labels, fontsize=8)
    wire.invert_yaxis()
    wire.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    clock.barh(ys, [_number(r["A→B s"]) for r in rows], height=0.5, color="tab:blue", label="boxsync A → B")
    nginx = [(y, _number(str(r["reference"]).split("nginx PUT+GET")[1])) for y, r in zip(ys, rows)
             if "nginx PUT+GET" in str(r.get("reference", "")) and "n/a" not in str(r["reference"])]
    if nginx:
        clock.plot([s for _, s in nginx], [y for y, _ in nginx], "r|", markersize=14, label="nginx PUT+GET")
    clock.set_xlabel("seconds")
    clock.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle("Blocks: what each change costs A → B")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


_INTRO = """\
# boxsync performance

Written by `{command}` on {date} ({machine}). Every figure is a median of
several runs beside a reference measured in the same run on the same machine:
these machines are noisy (±30 % between runs), so read the ratios, not the
lone timings. Each table names its target.

Reproduce: `pip install -e '.[bench]'` (or `pip install matplotlib locust`),
then `python -m bench` (everything, full sizes; installs nginx and rsync with
apt-get if they are missing and it runs as root) or `python -m bench --quick` (a few
minutes). `python -m bench --help` lists the benchmarks and their options;
`BENCH_DIR=/some/disk` puts the temporary files elsewhere than `/tmp`.

Where a target is missed, what limits it and what was tried is in
[performance-analysis.md](performance-analysis.md) (written by hand, from
profiles).
"""


def write(path: Path, command: str, sections: list[tuple[str, str, Rows]], notes: str = "") -> None:
    """
    Write the report: for each benchmark, its title, what it measures, and
    its table; plots next to the report.
    """
    docs = path.parent
    docs.mkdir(parents=True, exist_ok=True)
    parts = [
        _INTRO.format(
            command=command,
            date=datetime.date.today().isoformat(),
            machine=f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}",
        )
    ]
    if notes:
        parts.append(notes.rstrip() + "\n")
    for name, title, rows in sections:
        parts.append(table(title, rows))
        picture = None
        if name == "memory":
            picture = plot_memory(rows, docs / "performance-memory.png")
        elif name == "bulk":
            picture = plot_bulk(rows, docs / "performance-bulk.png")
        elif name == "load":
            picture = plot_load(rows, docs / "performance-load.png")
        elif name == "blocks":
            picture = plot_blocks(rows, docs / "performance-blocks.png")
        if picture is not None:
            parts.append(f"![{title}]({picture.name})\n")
    path.write_text("\n".join(parts))
