"""
A smoke run of the benchmarks, so they cannot rot: tiny sizes, real
processes, and the figures they report must make sense.
"""

from __future__ import annotations

import pytest

from bench import latency, memory
from bench.__main__ import _table


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
