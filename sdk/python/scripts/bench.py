"""Round-trip latency of the SDK against a running server (not a test: numbers
vary with the machine). Uses CODEBOX_API_URL / CODEBOX_API_KEY.

    CODEBOX_API_KEY=$(cat .codebox/admin.key) target/sdk-python-venv/bin/python \
        sdk/python/scripts/bench.py --iterations 20
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Callable, Dict, List, TypeVar

from codebox import Sandbox

T = TypeVar("T")


def timed(samples: List[float], call: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = call()
    samples.append((time.perf_counter() - start) * 1000)
    return result


def percentile(samples: List[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description="SDK round-trip latency")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--runtime", default="python3")
    args = parser.parse_args()
    samples: Dict[str, List[float]] = {"create": [], "commands.run": [], "kill": []}
    for _ in range(args.iterations):
        sbx = timed(samples["create"], lambda: Sandbox.create(args.runtime))
        try:
            for _ in range(5):
                timed(samples["commands.run"], functools.partial(sbx.commands.run, "true"))
            timed(samples["kill"], sbx.kill)
        finally:
            sbx.close()
    print(f"{'operation':<14}{'n':>5}{'p50 ms':>10}{'p90 ms':>10}{'max ms':>10}")
    for name, values in samples.items():
        print(
            f"{name:<14}{len(values):>5}{statistics.median(values):>10.1f}"
            f"{percentile(values, 0.9):>10.1f}{max(values):>10.1f}"
        )


if __name__ == "__main__":
    main()
