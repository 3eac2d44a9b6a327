"""Closed-loop throughput: N client processes, each with its own connection and
its own sandbox (or kernel), run `1+1` back to back for a fixed time.

Processes, not threads: with the GIL, eight Python threads parsing JSON would
measure the client, not the server. Workers are forked with nothing open (each
opens its connection in `setup`), start together behind a barrier, and each
reports its count and latencies; executions/s is the total count over the
longest worker's window."""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Sequence
from typing import Protocol

from stats import summarize

_SETUP_TIMEOUT_SECONDS = 120.0


class Worker(Protocol):
    def setup(self) -> None: ...

    def one(self) -> None: ...

    def teardown(self) -> None: ...


def _run(
    worker: Worker,
    barrier: multiprocessing.synchronize.Barrier,
    seconds: float,
    results: multiprocessing.Queue[dict[str, object]],
) -> None:
    try:
        worker.setup()
        barrier.wait(timeout=_SETUP_TIMEOUT_SECONDS)
        latencies: list[float] = []
        start = time.perf_counter()
        deadline = start + seconds
        now = start
        while now < deadline:
            worker.one()
            after = time.perf_counter()
            latencies.append((after - now) * 1000.0)
            now = after
        results.put({"count": len(latencies), "window": now - start, "latencies": latencies})
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the run
        barrier.abort()
        results.put({"error": traceback.format_exc()})
    finally:
        worker.teardown()


def measure(workers: Sequence[Worker], seconds: float) -> dict[str, object]:
    """Runs every worker for `seconds`; returns executions/s and the latency
    summary under load."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(workers))
    results: multiprocessing.Queue[dict[str, object]] = context.Queue()
    processes = [context.Process(target=_run, args=(w, barrier, seconds, results)) for w in workers]
    for process in processes:
        process.start()
    # Read before joining: a child blocks on exit until its queue data is taken.
    reports = [results.get(timeout=_SETUP_TIMEOUT_SECONDS + seconds * 4) for _ in processes]
    for process in processes:
        process.join()
    errors = [str(r["error"]) for r in reports if "error" in r]
    if errors:
        raise RuntimeError("a throughput client failed:\n" + errors[0])
    count = sum(int(r["count"]) for r in reports)  # type: ignore[call-overload]
    window = max(float(r["window"]) for r in reports)  # type: ignore[arg-type]
    latencies = [x for r in reports for x in r["latencies"]]  # type: ignore[attr-defined]
    return {
        "clients": len(workers),
        "seconds": window,
        "executions": count,
        "executions_per_second": count / window,
        "latency_ms": summarize(latencies),
    }
