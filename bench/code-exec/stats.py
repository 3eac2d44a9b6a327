"""Summaries of latency samples (milliseconds): n, p50, p99, mean, min, max.

Percentiles are nearest-rank: the p-th percentile of n sorted samples is the
ceil(p * n)-th one, so it is always a value that was really measured (with 100
samples the p99 is the second largest)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50": percentile(samples, 0.50),
        "p99": percentile(samples, 0.99),
        "mean": sum(samples) / len(samples),
        "min": min(samples),
        "max": max(samples),
    }


def timed(samples: list[float], call: Callable[[], T]) -> T:
    """Runs `call`, appends its wall time in milliseconds, returns its value."""
    start = time.perf_counter()
    value = call()
    samples.append((time.perf_counter() - start) * 1000.0)
    return value


def ratio(slower: float | None, faster: float | None) -> float | None:
    """How many times faster `faster` is; None when either side is missing."""
    if slower is None or faster is None or faster <= 0:
        return None
    return slower / faster
