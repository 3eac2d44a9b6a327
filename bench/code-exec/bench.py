"""codebox's code execution against Jupyter Kernel Gateway, on this machine, in
one run (issue 4, "Speed"). Not a test: speed is never asserted, only printed.

Phases, each on an otherwise idle server:
  1. codebox, server with CODEBOX_POOL_SIZE=0: create -> first `1+1` (cold).
  2. codebox, server with its default pool: create -> first `1+1` (warm pool),
     warm `1+1` round trips on one sandbox, throughput of N clients on N sandboxes.
  3. Jupyter Kernel Gateway as shipped ("jkg"), then again with TCP_NODELAY on its
     websockets ("jkg_nodelay", its best case): POST /api/kernels -> first `1+1`
     over the websocket, warm `1+1` round trips, throughput of N clients on N kernels.
Then the table and, with --json, the same numbers as JSON. Run it through
`bench/code-exec/run`, which makes the venv and builds the binaries."""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import codebox_side
import jkg_side
import throughput
from report import print_table, ratios, targets
from stats import summarize

REPO_ROOT = Path(__file__).resolve().parents[2]
# The gateway as shipped, and with TCP_NODELAY on its websockets.
JKG_VARIANTS = {"jkg": False, "jkg_nodelay": True}
SYSTEMS = ("codebox", *JKG_VARIANTS)
# Recorded with the results: the versions the JKG numbers belong to.
PACKAGES = ("jupyter-kernel-gateway", "ipykernel", "jupyter-server", "tornado", "pyzmq", "websocket-client")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--runtime", default="python3", help="codebox runtime of the sandboxes")
    parser.add_argument("--cold", type=int, default=100, help="cold create -> 1+1 samples")
    parser.add_argument("--pool", type=int, default=100, help="warm-pool create -> 1+1 samples")
    parser.add_argument(
        "--pool-settle-ms",
        type=float,
        default=500.0,
        help="pause after each pooled sample so the pool refills, interpreter included (untimed)",
    )
    parser.add_argument(
        "--pool-fill-seconds",
        type=float,
        default=5.0,
        help="wait after the pooled server starts, while it fills its pool (untimed)",
    )
    parser.add_argument("--warm", type=int, default=2000, help="warm 1+1 round trips (codebox)")
    parser.add_argument("--jkg-starts", type=int, default=30, help="kernel start -> 1+1 samples")
    parser.add_argument("--jkg-warm", type=int, default=1000, help="warm 1+1 round trips (JKG)")
    parser.add_argument(
        "--jkg-variants",
        choices=("both", "stock", "nodelay"),
        default="both",
        help="the gateway as shipped, with TCP_NODELAY on its websockets (jkg_nodelay.py), or both",
    )
    parser.add_argument("--warmup", type=int, default=50, help="untimed round trips before warm samples")
    parser.add_argument("--clients", type=int, default=8, help="throughput clients (one sandbox/kernel each)")
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput duration per system")
    parser.add_argument(
        "--templates",
        choices=("python3", "none"),
        default="python3",
        help="mount the python3 template (IPython; built once into --templates-dir) or none (host python)",
    )
    parser.add_argument(
        "--templates-dir",
        type=Path,
        default=REPO_ROOT / "target" / "bench-templates",
        help="where the python3 template is built and kept between runs",
    )
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run, not numbers")
    parser.add_argument("--skip-codebox", action="store_true")
    parser.add_argument("--skip-jkg", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.cold, args.pool, args.warm, args.jkg_starts, args.jkg_warm = 5, 5, 100, 3, 100
        args.warmup, args.seconds = 5, 2.0
    return args


class Run:
    """Collects each phase's numbers; a failed phase is recorded, the run goes on."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {system: {} for system in SYSTEMS}
        self.errors: list[str] = []

    def phase(
        self, system: str, name: str, call: Callable[[], Any], log: Callable[[], str] | None = None
    ) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {system}: {name} ...", file=sys.stderr, flush=True)
        try:
            self.results[system][name] = call()
        except Exception as error:  # noqa: BLE001 - recorded, reported, exit code set
            traceback.print_exc()
            if log is not None:
                print(f"--- end of the {system} server log ---\n{log()}", file=sys.stderr)
            self.errors.append(f"{system} {name}: {error}")
            self.results[system][name] = {"error": str(error)}


def summaries(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {key: summarize(values) for key, values in samples.items() if values}


def codebox_binaries() -> tuple[Path, str]:
    configured = os.environ.get("CODEBOX_BIN")
    binary = Path(configured) if configured else REPO_ROOT / "target" / "release" / "codebox"
    agent = os.environ.get("CODEBOX_AGENT_PATH", "")
    if not binary.is_file():
        raise SystemExit(f"no codebox binary at {binary}: build it or set CODEBOX_BIN")
    if not agent or not Path(agent).is_file():
        raise SystemExit("CODEBOX_AGENT_PATH must name a built agent (scripts/build-agent)")
    if os.geteuid() != 0:
        raise SystemExit("codebox serve needs root (namespaces and cgroups)")
    return binary, agent


def run_codebox(args: argparse.Namespace, run: Run) -> None:
    binary, agent = codebox_binaries()
    settle = args.pool_settle_ms / 1000.0
    templates = codebox_side.Templates(args.templates_dir, "" if args.templates == "none" else args.templates)
    templates.build(binary)
    with codebox_side.running_server(binary, agent, templates, 0, "cold") as server:
        log = server.log_tail
        cold = functools.partial(codebox_side.measure_start, server, args.runtime, args.cold, 0.0)
        run.phase("codebox", "cold_start", lambda: summaries(cold()), log)
    with codebox_side.running_server(binary, agent, templates, None, "pool") as server:
        log = server.log_tail
        # The pool fills in the background after start; let it.
        time.sleep(args.pool_fill_seconds)
        pool = functools.partial(codebox_side.measure_start, server, args.runtime, args.pool, settle)
        run.phase("codebox", "pool_start", lambda: summaries(pool()), log)
        warm = functools.partial(codebox_side.measure_warm, server, args.runtime, args.warm, args.warmup)
        run.phase("codebox", "warm", lambda: summaries(warm()), log)
        run.phase("codebox", "throughput", lambda: codebox_throughput(server, args), log)


def codebox_throughput(server: codebox_side.CodeboxServer, args: argparse.Namespace) -> dict[str, Any]:
    workers = codebox_side.make_workers(server, args.runtime, args.clients)
    try:
        return throughput.measure(workers, args.seconds)
    finally:
        codebox_side.remove_workers(server, workers)


def run_jkg(args: argparse.Namespace, run: Run, system: str) -> None:
    with jkg_side.running_gateway(nodelay=JKG_VARIANTS[system]) as server:
        log = server.log_tail
        start = functools.partial(jkg_side.measure_start, server, args.jkg_starts)
        run.phase(system, "kernel_start", lambda: summaries(start()), log)
        warm = functools.partial(jkg_side.measure_warm, server, args.jkg_warm, args.warmup)
        run.phase(system, "warm", lambda: summaries(warm()), log)
        run.phase(system, "throughput", lambda: jkg_throughput(server, args), log)


def jkg_throughput(server: jkg_side.JkgServer, args: argparse.Namespace) -> dict[str, Any]:
    workers = jkg_side.make_workers(server, args.clients)
    try:
        return throughput.measure(workers, args.seconds)
    finally:
        jkg_side.remove_workers(server, workers)


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "packages": {name: _version(name) for name in PACKAGES},
        "codebox_bin": os.environ.get("CODEBOX_BIN"),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> int:
    args = parse_args()
    run = Run()
    started = machine()
    if not args.skip_codebox:
        run_codebox(args, run)
    if not args.skip_jkg:
        for system, nodelay in JKG_VARIANTS.items():
            if args.jkg_variants == "both" or (args.jkg_variants == "nodelay") == nodelay:
                run_jkg(args, run, system)
    document = {
        "machine": started,
        "load_average_after": os.getloadavg(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"},
        **run.results,
        "ratios": ratios(run.results),
        "targets": targets(run.results),
        "errors": run.errors,
    }
    print_table(document)
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    for error in run.errors:
        print(f"FAILED: {error}", file=sys.stderr)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
