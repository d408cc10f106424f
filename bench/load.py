"""
Load test: many simulated clients against one real server, with Locust.

Each Locust user (see ``bench/locustfile.py``) holds an event stream open and
uploads, downloads and lists small files, for a bounded time. Locust runs
headless in a process of its own (it monkey-patches the standard library with
gevent, which must stay out of this process) and writes its statistics as
CSV; this module reads them back: requests/s, failures (the target is none)
and latency percentiles per kind of request, beside the CPU the server and
the load generator used. Locust is installed into this interpreter with pip
when it is missing.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from boxsync.testing import Server

from . import report

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
#: The pip requirement installed when Locust is missing (as in the bench extra).
REQUIREMENT = "locust>=2.20"
#: Locust's request type for what the event stream reports (the others are HTTP).
STREAM = "SSE"
#: The names the locustfile gives uploads and the events they cause.
UPLOAD = "PUT /files/{path}"
EVENT = "event: upload -> stream"
#: The names of a stream's start (until ``ready``) and of its failures.
READY = "POST /sync until ready"
STREAM_FAILED = "POST /sync stream"


def ensure_locust() -> None:
    """
    Make sure Locust can run in this interpreter, installing it with pip
    if it is missing. Locust is looked up, never imported, here.

    @raise RuntimeError: if it is missing and pip could not install it.
    """
    if importlib.util.find_spec("locust") is not None:
        return
    print(f"installing {REQUIREMENT} for the load test (python -m pip install)...",
          file=sys.stderr, flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", REQUIREMENT],
        capture_output=True, text=True,
    )
    importlib.invalidate_caches()
    if result.returncode != 0 or importlib.util.find_spec("locust") is None:
        raise RuntimeError(
            f"Locust is not installed and `{sys.executable} -m pip install {REQUIREMENT}` "
            f"failed:\n{result.stderr.strip()[-2000:]}"
        )


def _environment() -> dict[str, str]:
    """
    This process's environment for Locust: without Locust's settings (so
    only the command line configures it), without coverage's (the load
    generator is not under test, and coverage's tracer and gevent do not
    mix), and with the source tree importable.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "COVERAGE_"))}
    # The locustfile imports this module's names from the source tree.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LOCUSTFILE.parents[1]), env.get("PYTHONPATH")]))
    return env


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_stats(path: Path) -> list[dict[str, str]]:
    """
    The rows of one of the CSV files Locust's C{--csv PREFIX} writes (e.g.
    C{PREFIX_stats.csv}, C{Aggregated} row included).
    """
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _ms(value: str) -> str:
    return "n/a" if value in ("", "N/A") else f"{float(value):.0f}"


def summarise(stats: list[dict[str, str]], seconds: float) -> list[dict[str, object]]:
    """
    One table row per kind of request, then one for all HTTP requests.
    """
    rows: list[dict[str, object]] = []
    http_count = http_failures = 0
    ordered = sorted(stats, key=lambda row: (row["Type"] == STREAM, row["Name"]))
    for row in ordered:
        if row["Name"] == "Aggregated":
            continue
        count, failures = int(row["Request Count"]), int(row["Failure Count"])
        if row["Type"] != STREAM:
            http_count += count
            http_failures += failures
        rows.append({
            "request": row["Name"],
            "count": f"{count:,}",
            "failures": failures,
            "per s": f"{count / seconds:.1f}",
            "p50 ms": _ms(row["50%"]),
            "p95 ms": _ms(row["95%"]),
            "p99 ms": _ms(row["99%"]),
            "max ms": _ms(row["Max Response Time"]),
        })
    uploads = sum(int(r["Request Count"]) for r in stats if r["Name"] == UPLOAD)
    events = sum(int(r["Request Count"]) for r in stats if r["Name"] == EVENT)
    rows.append({
        "request": "all HTTP requests",
        "count": f"{http_count:,}",
        "failures": http_failures,
        "per s": f"{http_count / seconds:.1f}",
        "events per upload": f"{events / uploads:.1f}" if uploads else "n/a",
    })
    return rows


def _failures(prefix: Path) -> str:
    """
    Why requests failed, from Locust's C{PREFIX_failures.csv} (20 lines at most).
    """
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return ""
    lines = [f"  {r['Occurrences']} x {r['Name']}: {r['Error']}" for r in read_stats(path)]
    more = [f"  ... and {len(lines) - 20} more"] if len(lines) > 20 else []
    return "\n".join(lines[:20] + more)


def _locust(server: Server, users: int, rate: float, duration: int, prefix: Path) -> int:
    """
    Run Locust headless against C{server}, writing its CSV files at
    C{prefix} and its output at C{prefix}.log; its exit status. It is
    killed if it runs a minute longer than asked.
    """
    log = Path(f"{prefix}.log")
    with open(log, "wb") as output:
        locust = subprocess.Popen(
            [
                sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                "--users", str(users), "--spawn-rate", f"{rate:g}", "--run-time", f"{duration}s",
                "--host", server.url, "--api-key", server.key, "--csv", str(prefix),
                "--only-summary", "--loglevel", "WARNING",
            ],
            stdout=output, stderr=subprocess.STDOUT, env=_environment(), cwd=prefix.parent,
        )
    try:
        return locust.wait(duration + 60)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"load: Locust did not finish in {duration + 60} s:\n{log.read_text()[-3000:]}")
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.wait(10)


def run(users: int, duration: int, spawn_rate: float | None = None) -> list[dict[str, object]]:
    """
    Start a server, run C{users} Locust users against it for C{duration}
    seconds (started at C{spawn_rate} per second, by default all within
    about two seconds), and return the table.

    @raise SystemExit: if Locust did not finish, or any request failed.
    """
    ensure_locust()
    with tempfile.TemporaryDirectory(prefix="boxsync-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        prefix = Path(tmp) / "locust"
        server = Server(Path(tmp) / "box").start()
        try:
            assert server.process is not None and server.process.popen is not None
            server_process = psutil.Process(server.process.popen.pid)
            print(f"  load: {users} users for {duration} s", file=sys.stderr, flush=True)
            server_cpu, locust_cpu = _cpu_seconds(server_process), _children_cpu_seconds()
            start = time.perf_counter()
            code = _locust(server, users, spawn_rate or max(1.0, users / 2), duration, prefix)
            seconds = time.perf_counter() - start
            server_cpu = _cpu_seconds(server_process) - server_cpu
            locust_cpu = _children_cpu_seconds() - locust_cpu
        finally:
            server.kill()
        stats, log = Path(f"{prefix}_stats.csv"), Path(f"{prefix}.log")
        if not stats.exists():
            raise SystemExit(f"load: Locust failed (exit status {code}):\n{log.read_text()[-3000:]}")
        rows = summarise(read_stats(stats), duration)
        rows[-1].update({
            "users": users,
            "server CPU %": f"{server_cpu / seconds * 100:.0f}",
            "Locust CPU %": f"{locust_cpu / seconds * 100:.0f}",
        })
        if code != 0 or any(r["failures"] for r in rows):
            raise SystemExit(
                f"load: failed requests (Locust exit status {code}):\n{_failures(prefix)}\n"
                + report.table("load", rows) + f"\nLocust's output:\n{log.read_text()[-3000:]}"
            )
    return rows
