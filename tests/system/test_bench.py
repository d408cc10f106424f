"""
A smoke run of the benchmarks, so they cannot rot: tiny sizes, real
processes, and the figures they report must make sense. nginx is left out
(the full run installs and measures it); Locust is installed with pip when it
is missing, as the benchmark does.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from bench import blocks, bulk, cluster, e2e, fanout, history, join, latency, load, memory, report, restart
from bench.__main__ import _table
from boxsync.testing import Server


def _number(value: object) -> float:
    return float(str(value).split()[0].rstrip("x"))


@pytest.mark.slow
def test_memory_and_latency_smoke() -> None:
    rows = memory.run([4])
    assert rows[0]["size"] == "4 MiB"
    peak = float(str(rows[0]["server peak RSS"]).split()[0])
    assert 10 < peak < 500
    rows += latency.run(3)
    assert float(str(rows[1]["median ms"])) > 0
    table = _table("smoke", rows[:1])
    assert table.startswith("## smoke") and "| 4 MiB" in table


@pytest.mark.slow
def test_bulk_e2e_fanout_restart_smoke(tmp_path: Path) -> None:
    sections = []
    rows = bulk.run(2, runs=1, use_nginx=False)
    assert [r["ratio"] for r in rows[:5]] == ["n/a"] * 5
    assert all(_number(r["MB/s"]) > 0 for r in rows[:5])
    sections.append(("bulk", "bulk", rows))

    rows = e2e.run(1, [(10, True)], runs=1, use_rsync=False, use_syncthing=False)
    assert len(rows) == 2 and all(_number(r["boxsync s (median)"]) > 0 for r in rows)
    sections.append(("e2e", "e2e", rows))

    rows = fanout.run([20], events=1)
    assert rows[0]["streams"] == "20"
    assert 0 < _number(rows[0]["all got the event s (median)"]) < 10
    sections.append(("fanout", "fanout", rows))

    rows = restart.run(20, runs=1)
    assert rows[0]["file transfers"] == 0
    sections.append(("restart", "restart", rows))

    rows = join.run(20, runs=1, use_rsync=False)
    assert rows[0]["what an empty B gets with --once"] == "20 files of 4 KiB, nested folders"
    assert _number(rows[0]["boxsync s (median)"]) > 0 and rows[0]["vs rsync"] == "n/a"
    sections.append(("join", "join", rows))

    sections.append(("memory", "memory", [
        {"size": "4 MiB", "server peak RSS": "50.0 MiB", "client peak RSS (up)": "60.0 MiB",
         "client peak RSS (down)": "61.0 MiB"},
        {"size": "8 MiB", "server peak RSS": "51.0 MiB", "client peak RSS (up)": "60.5 MiB",
         "client peak RSS (down)": "61.5 MiB"},
    ]))
    target = tmp_path / "docs" / "performance.md"
    report.write(target, "python -m bench --smoke", sections)
    text = target.read_text()
    assert "python -m bench --smoke" in text and "## restart" in text
    if report._pyplot() is not None:
        assert (tmp_path / "docs" / "performance-memory.png").stat().st_size > 1000


@pytest.mark.slow
def test_blocks_smoke(tmp_path: Path) -> None:
    """
    Every row of the blocks benchmark runs, the bytes its proxies count
    say what each change moves, and its plot is drawn.
    """
    rows = blocks.run(32, 4, use_nginx=False)
    by = {str(row["work"]): row for row in rows}
    for work in ("new file", "new file, both clients running"):
        assert _number(by[work]["up"]) >= 32 and _number(by[work]["down"]) >= 32
        assert _number(by[work]["A→B s"]) > 0
    for work in ("rename", "rename, both clients running"):
        assert _number(by[work]["up"]) < 1 and _number(by[work]["down"]) < 1
    for work in ("4 KiB overwritten in the middle", "4 KiB overwritten, both clients running"):
        assert 0 < _number(by[work]["up"]) < 16 and 0 < _number(by[work]["down"]) < 16
    target = tmp_path / "docs" / "performance.md"
    report.write(target, "python -m bench blocks", [("blocks", "blocks", rows)])
    assert "| new file, both clients running" in target.read_text()
    if report._pyplot() is not None:
        assert (tmp_path / "docs" / "performance-blocks.png").stat().st_size > 1000


@pytest.mark.slow
def test_history_smoke() -> None:
    shared, restored, trash, folder = history.run(8, 50)
    before, after = (_number(part) for part in str(shared["figure"]).split("→"))
    assert 0 < after < before / 2, shared
    assert "10 versions kept" in str(shared["reference"])
    assert _number(restored["figure"]) > 0 and "50 files" in str(trash["work"])
    assert "50 overwritten files" in str(folder["work"]) and _number(folder["figure"]) > 0
    assert "cp -a + sync" in str(folder["reference"])


def test_streams_need_a_server() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        fanout.Holder([])


_STATS = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,\
90%,95%,98%,99%,99.9%,99.99%,100%
PUT,PUT /files/{path},10,0,9,9.5,3,31,64,2.0,0.0,9,10,10,11,12,30,31,31,31,31,31
SSE,event: upload -> stream,20,0,8,8.1,2,29.4,0,4.0,0.0,8,9,9,9,10,29,29,29,29,29,29
GET,GET /files?limit=100,0,0,0,0,0,0,0,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A
,Aggregated,30,0,9,8.6,2,31,21,6.0,0.0,9,9,10,10,11,29,31,31,31,31,31
"""


def test_load_summary(tmp_path: Path) -> None:
    """
    The load test's table comes from Locust's CSV: HTTP rows first, the
    stream's after, then the HTTP total with the events per upload.
    """
    (tmp_path / "locust_stats.csv").write_text(_STATS)
    rows = load.summarise(load.read_stats(tmp_path / "locust_stats.csv"), 5)
    assert [r["request"] for r in rows] == [
        "GET /files?limit=100", "PUT /files/{path}", "event: upload -> stream", "all HTTP requests"]
    assert rows[0]["p50 ms"] == "n/a"
    assert rows[1] == {"request": "PUT /files/{path}", "count": "10", "failures": 0, "per s": "2.0",
                       "p50 ms": "9", "p95 ms": "30", "p99 ms": "31", "max ms": "31"}
    assert rows[3] == {"request": "all HTTP requests", "count": "10", "failures": 0, "per s": "2.0",
                       "events per upload": "2.0"}


def test_ensure_locust_reports_a_failed_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    When Locust is missing and pip cannot install it, the error says so
    (an invalid requirement makes pip fail at once, offline).
    """
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(load, "REQUIREMENT", "not a requirement!")
    with pytest.raises(RuntimeError, match="Locust is not installed"):
        load.ensure_locust()


@pytest.mark.slow
def test_load_smoke(tmp_path: Path) -> None:
    """
    A tiny load test: 3 Locust users for 5 s against a real server, with
    no failure, every kind of request made, and gevent kept out of this
    process.
    """
    try:
        load.ensure_locust()
    except RuntimeError as e:
        pytest.skip(f"Locust is missing and could not be installed: {e}")
    rows = load.run(3, 5)
    by_name = {r["request"]: r for r in rows}
    assert set(by_name) >= {load.UPLOAD, load.EVENT, load.READY, "all HTTP requests"}
    assert all(r["failures"] == 0 for r in rows)
    assert _number(by_name[load.READY]["count"]) == 3
    assert _number(by_name[load.UPLOAD]["count"]) > 0
    assert 0 < _number(by_name[load.EVENT]["p50 ms"]) < 5000
    assert 0 < _number(by_name["all HTTP requests"]["events per upload"]) <= 2
    assert "gevent" not in sys.modules and "locust" not in sys.modules

    report.write(tmp_path / "performance.md", "python -m bench load", [("load", "7. load", rows)])
    assert "| event: upload -> stream" in (tmp_path / "performance.md").read_text()
    if report._pyplot() is not None:
        assert (tmp_path / "performance-load.png").stat().st_size > 1000


@pytest.mark.slow
def test_load_fails_on_failed_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Failed requests fail the load test, with the reasons: here Locust's
    users hold the wrong key, so the server refuses every request.
    """
    try:
        load.ensure_locust()
    except RuntimeError as e:
        pytest.skip(f"Locust is missing and could not be installed: {e}")

    class WrongKey(Server):
        def start(self) -> WrongKey:
            super().start()
            self.key = "not-the-key"
            return self

    monkeypatch.setattr(load, "Server", WrongKey)
    with pytest.raises(SystemExit, match=r"(?s)failed requests.*POST /sync stream.*403"):
        load.run(2, 3)


@pytest.mark.slow
def test_cluster_smoke(monkeypatch: pytest.MonkeyPatch) -> None:
    # The streams are held by 3 processes, 10 each.
    monkeypatch.setattr(fanout, "PER_PROCESS", 10)
    rows = cluster.run(3, 40, sizes=(2,), streams=30, big_mib=4, runs=2)
    if len(rows) == 1:
        pytest.skip(str(rows[0]["figure"]))
    assert [row["what"] for row in rows] == [
        "live latency, one embedded server (3 changes)",
        "live latency, clients on two servers (3 changes)",
        "commits/s of 4 KiB, 8 writers, one embedded server",
        "commits/s of 4 KiB, 8 writers over 2 servers (PostgreSQL)",
        "one event to 30 open streams, one embedded server",
        "one event to 30 open streams, over 3 servers",
        "a new file of 4 MiB A → B, one embedded server",
        "a new file of 4 MiB A → B, A and B on two servers, blocks sent kept in S3",
        "a new file of 4 MiB A → B, A and B on two servers, blocks sent kept in the box folder",
    ]
    assert all(_number(row["median"]) > 0 for row in rows)
    assert all(_number(row["median"]) < 10 for row in rows[4:6])
    assert "x the embedded server; 2 runs, " in str(rows[-1]["note"]) and _number(rows[-1]["note"]) > 0
    # The report's section 11 has them as they are.
    text = report.table("11. cluster", rows)
    assert "| one event to 30 open streams, over 3 servers " in text and "| note " in text
