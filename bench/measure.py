"""
Measuring tools shared by the benchmarks: peak RSS of processes while
something runs, and medians.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Callable, Iterable, TypeVar

import psutil

_T = TypeVar("_T")


class PeakRSS:
    """
    Samples the RSS of some processes every few milliseconds, in a thread,
    and keeps each one's peak.
    """

    def __init__(self, pids: Callable[[], Iterable[int]], every: float = 0.02) -> None:
        self._pids = pids
        self._every = every
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in list(self._pids()):
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[pid] = max(self.peaks.get(pid, 0), rss)
            time.sleep(self._every)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn: Callable[[], _T]) -> tuple[float, _T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)
