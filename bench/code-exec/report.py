"""The results as a table, the codebox/JKG ratios and issue 4's targets.

A ratio is JKG's number over codebox's for latencies (how many times faster
codebox is) and codebox's over JKG's for throughput, so above 1 always means
codebox is ahead. Ratios are given against both gateway variants; the target
ratio is judged against the faster one (`jkg_nodelay`, the gateway's best case),
so a Nagle stall in the shipped gateway cannot flatter codebox."""

from __future__ import annotations

from typing import Any

from stats import ratio

JKG_SYSTEMS = ("jkg", "jkg_nodelay")
# name -> (codebox phase, series), (JKG phase, series)
COMPARED = {
    "cold_start": (("cold_start", "total"), ("kernel_start", "total")),
    "pool_start": (("pool_start", "total"), ("kernel_start", "total")),
    "warm_round_trip": (("warm", "execute"), ("warm", "execute")),
}
# Issue 4, "Speed": name -> (phase, series, upper bound in ms), at p50 and p99.
LATENCY_TARGETS_MS = {
    "cold_start": ("cold_start", "total", 60.0),
    "pool_start": ("pool_start", "total", 10.0),
    "warm_round_trip": ("warm", "execute", 1.0),
}
WARM_RATIO_TARGET = 10.0
# Table rows: label, codebox (phase, series), JKG (phase, series), ratio name, target.
ROWS: tuple[tuple[str, tuple[str, str], tuple[str, str], str, str], ...] = (
    ("create -> first 1+1, cold", ("cold_start", "total"), ("kernel_start", "total"), "cold_start", "<= 60"),
    ("create -> first 1+1, pool", ("pool_start", "total"), ("kernel_start", "total"), "pool_start", "<= 10"),
    ("warm 1+1 round trip", ("warm", "execute"), ("warm", "execute"), "warm_round_trip", "<= 1"),
    ("  cold: create call", ("cold_start", "create"), ("kernel_start", "create"), "", ""),
    ("  cold: first 1+1", ("cold_start", "first_execute"), ("kernel_start", "first_execute"), "", ""),
    ("  pool: create call", ("pool_start", "create"), ("", ""), "", ""),
    ("  pool: first 1+1", ("pool_start", "first_execute"), ("", ""), "", ""),
    ("  GET /health (HTTP floor)", ("warm", "health"), ("", ""), "", ""),
)


def _stat(results: dict[str, Any], system: str, phase: str, series: str, key: str) -> float | None:
    value = results.get(system, {}).get(phase, {}).get(series, {})
    found = value.get(key) if isinstance(value, dict) else None
    return float(found) if found is not None else None


def _eps(results: dict[str, Any], system: str) -> float | None:
    value = results.get(system, {}).get("throughput", {}).get("executions_per_second")
    return float(value) if value is not None else None


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per JKG variant: `<name>_p50`, `<name>_p99` and `throughput`."""
    out: dict[str, dict[str, float | None]] = {}
    for jkg in JKG_SYSTEMS:
        these: dict[str, float | None] = {}
        for name, (codebox, theirs) in COMPARED.items():
            for key in ("p50", "p99"):
                these[f"{name}_{key}"] = ratio(
                    _stat(results, jkg, theirs[0], theirs[1], key),
                    _stat(results, "codebox", codebox[0], codebox[1], key),
                )
        these["throughput"] = ratio(_eps(results, "codebox"), _eps(results, jkg))
        out[f"vs_{jkg}"] = these
    return out


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, (phase, series, bound) in LATENCY_TARGETS_MS.items():
        for key in ("p50", "p99"):
            value = _stat(results, "codebox", phase, series, key)
            out[f"{name}_{key}"] = {
                "target_ms": bound,
                "measured_ms": value,
                "met": None if value is None else value <= bound,
            }
    all_ratios = ratios(results)
    for jkg in JKG_SYSTEMS:
        warm = all_ratios[f"vs_{jkg}"]["warm_round_trip_p50"]
        out[f"warm_ratio_vs_{jkg}_p50"] = {
            "target": WARM_RATIO_TARGET,
            "measured": warm,
            "met": None if warm is None else warm >= WARM_RATIO_TARGET,
        }
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _latency_table(doc: dict[str, Any]) -> None:
    header = f"{'latency, ms':<28}{'codebox p50':>12}{'p99':>8}  target"
    for jkg in JKG_SYSTEMS:
        header += f" |{jkg + ' p50':>16}{'p99':>8}{'x p50':>7}"
    print(header)
    print("-" * len(header))
    for label, codebox, theirs, name, target in ROWS:
        line = (
            f"{label:<28}{_fmt(_stat(doc, 'codebox', *codebox, 'p50'), 3):>12}"
            f"{_fmt(_stat(doc, 'codebox', *codebox, 'p99'), 3):>8}  {target:<6}"
        )
        for jkg in JKG_SYSTEMS:
            times = doc["ratios"][f"vs_{jkg}"].get(f"{name}_p50") if name else None
            line += (
                f" |{_fmt(_stat(doc, jkg, *theirs, 'p50'), 1):>16}"
                f"{_fmt(_stat(doc, jkg, *theirs, 'p99'), 1):>8}{_fmt(times, 1):>7}"
            )
        print(line)


def _throughput_lines(doc: dict[str, Any]) -> None:
    for system in ("codebox", *JKG_SYSTEMS):
        measured = doc.get(system, {}).get("throughput", {})
        if "executions_per_second" not in measured:
            continue
        latency = measured["latency_ms"]
        times = "" if system == "codebox" else doc["ratios"][f"vs_{system}"]["throughput"]
        print(
            f"throughput {system:<12} {measured['clients']} clients: "
            f"{measured['executions_per_second']:>7.0f} executions/s"
            f"  (latency p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms)"
            + (f"  codebox is {times:.1f}x" if isinstance(times, float) else "")
        )


def print_table(doc: dict[str, Any]) -> None:
    _latency_table(doc)
    print()
    _throughput_lines(doc)
    print()
    for name, target in doc["targets"].items():
        met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        measured = target.get("measured_ms", target.get("measured"))
        bound = target.get("target_ms", target.get("target"))
        print(f"target {name:<30} {_fmt(measured, 3):>10} vs {bound:<6} {met}")
    load = doc["machine"]["load_average"]
    print(f"\nload average at start {load[0]:.2f}, at end {doc['load_average_after'][0]:.2f}")
