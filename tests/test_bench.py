"""
A smoke run of the benchmarks, so they cannot rot: tiny sizes, real
processes, and the figures they report must make sense. nginx is left out
(the full run installs and measures it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bulk, e2e, fanout, latency, memory, report, restart
from bench.__main__ import _table


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

    rows = e2e.run(1, [(10, True)], runs=1)
    assert len(rows) == 2 and all(_number(r["boxsync s (median)"]) > 0 for r in rows)
    sections.append(("e2e", "e2e", rows))

    rows = fanout.run([20], events=1)
    assert rows[0]["streams"] == "20"
    assert 0 < _number(rows[0]["all got the event s (median)"]) < 10
    sections.append(("fanout", "fanout", rows))

    rows = restart.run(20, runs=1)
    assert rows[0]["file transfers"] == 0
    sections.append(("restart", "restart", rows))

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
