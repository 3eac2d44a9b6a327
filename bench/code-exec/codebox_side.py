"""The codebox half: a real `codebox serve` started from the built binary, and
the measurements through its HTTP API on loopback.

The server runs with a fresh 0711 data directory (the jail mounts the runtime's
root file system from it, so the sandbox user must be able to traverse it), its
own cgroup parent (`recover` at start destroys whatever it finds under the
parent, so sharing the default one would kill other servers' sandboxes on this
machine), rate limits off (the benchmark is one client hammering one key) and
per-user quota raised for the throughput phase. Its admin key is read from
`<data dir>/admin.key`."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from http_client import HttpError, JsonConnection
from stats import timed

STARTUP_DEADLINE_SECONDS = 120.0
SHUTDOWN_GRACE_SECONDS = 40.0
EXECUTE_CODE = "1+1"
EXPECTED_TEXT = "2"
# Settings that must come from here, not from the caller's shell.
_ENV_BLOCKLIST = ("DATABASE_URL", "REDIS_URL", "MAX_SANDBOXES_PER_USER", "DEFAULT_TIMEOUT")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CodeboxServer:
    port: int
    admin_key: str
    log: Path

    def connect(self) -> JsonConnection:
        return JsonConnection("127.0.0.1", self.port, {"X-API-Key": self.admin_key})

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Templates:
    """The language templates the servers mount: `enabled` ("python3", or ""
    for none: sandboxes then run the host's python without IPython) from
    `root_dir`, built once up front and reused across runs, never in the
    background while a phase is measured."""

    root_dir: Path
    enabled: str

    def env(self) -> dict[str, str]:
        return {
            "CODEBOX_TEMPLATES_DIR": str(self.root_dir),
            "CODEBOX_TEMPLATES_ENABLED": self.enabled,
            "CODEBOX_TEMPLATES_BUILD_ON_START": "false",
        }

    def build(self, binary: Path) -> None:
        """`codebox template build` (a no-op when current); pip's progress shows."""
        if not self.enabled:
            return
        self.root_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="codebox-bench-template-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODEBOX_")} | self.env()
        try:
            subprocess.run(
                [str(binary), "template", "build", "--data-dir", str(scratch / "data")],
                env=env,
                check=True,
                timeout=1800,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _server_env(agent: str, pool_size: int | None, cgroup_parent: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CODEBOX_") and key not in _ENV_BLOCKLIST
    }
    env["CODEBOX_AGENT_PATH"] = agent
    env["CODEBOX_CGROUP_PARENT"] = cgroup_parent
    env["CODEBOX_RATE_LIMITS_ENABLED"] = "false"
    env["MAX_SANDBOXES_PER_USER"] = "64"
    if pool_size is not None:
        env["CODEBOX_POOL_SIZE"] = str(pool_size)
    return env


def _wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    probe = JsonConnection("127.0.0.1", port)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"codebox serve exited with {process.returncode}:\n{_tail(log)}")
        try:
            if probe.request("GET", "/health")[0] == 200:
                probe.close()
                return
        except (OSError, ValueError):
            probe.close()
        time.sleep(0.1)
    raise RuntimeError(f"codebox serve did not answer /health:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return CodeboxServer(0, "", log).log_tail()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # SIGTERM: the server destroys its sandboxes and the pool before exiting.
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SHUTDOWN_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _remove_cgroup(parent: str) -> None:
    """The parent cgroup is ours alone: remove it, in every hierarchy (cgroup v1
    has one per controller), once the server has left it empty. Only `rmdir`,
    which the kernel refuses for a cgroup that still holds a process."""
    root = Path("/sys/fs/cgroup")
    candidates = [root / parent, *(hierarchy / parent for hierarchy in root.iterdir())]
    for top in candidates:
        if not top.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(directory)
            except OSError:
                pass


@contextmanager
def running_server(
    binary: Path, agent: str, templates: Templates, pool_size: int | None, label: str
) -> Iterator[CodeboxServer]:
    """`codebox serve` with fresh data until the block ends; `pool_size` None
    keeps the server's default pool."""
    scratch = Path(tempfile.mkdtemp(prefix=f"codebox-bench-{label}-"))
    scratch.chmod(0o711)
    data_dir = scratch / "data"
    log = scratch / "codebox-serve.log"
    port = free_port()
    cgroup_parent = f"codebox-bench-exec-{os.getpid()}-{label}"
    env = _server_env(agent, pool_size, cgroup_parent) | templates.env()
    command = [str(binary), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port, process, log)
        admin_key = (data_dir / "admin.key").read_text().strip()
        yield CodeboxServer(port, admin_key, log)
    finally:
        _stop(process)
        _remove_cgroup(cgroup_parent)
        # Only once the server is gone: it unmounts what it mounted there.
        shutil.rmtree(scratch, ignore_errors=True)


# --- the API calls measured ------------------------------------------------


def create_sandbox(conn: JsonConnection, runtime: str) -> str:
    body = conn.expect("POST", "/api/v1/sandboxes", 201, {"runtime": runtime})
    return str(body["data"]["id"])


def delete_sandbox(conn: JsonConnection, sandbox_id: str) -> None:
    conn.expect("DELETE", f"/api/v1/sandboxes/{sandbox_id}", 200)


def execute(conn: JsonConnection, sandbox_id: str, code: str = EXECUTE_CODE) -> dict[str, object]:
    """`POST /execute` (JSON form, python's default context); checks the answer."""
    body = conn.expect(
        "POST",
        f"/api/v1/sandboxes/{sandbox_id}/execute",
        200,
        {"code": code, "language": "python"},
    )
    data: dict[str, object] = body["data"]
    if data.get("error") is not None or data.get("text") != EXPECTED_TEXT:
        raise HttpError(f"execute {code!r} did not give {EXPECTED_TEXT!r}: {data}")
    return data


# --- the phases -------------------------------------------------------------


def measure_start(
    server: CodeboxServer, runtime: str, iterations: int, settle_seconds: float
) -> dict[str, list[float]]:
    """create -> first `1+1` result, `iterations` times, each sandbox deleted
    afterwards (untimed). `settle_seconds` between samples lets a warm pool
    refill, so every pooled sample is a real claim (the API does not show the
    pool's level)."""
    samples: dict[str, list[float]] = {"total": [], "create": [], "first_execute": []}
    conn = server.connect()
    try:
        for _ in range(iterations):
            start = time.perf_counter()
            sandbox_id = timed(samples["create"], lambda: create_sandbox(conn, runtime))
            timed(samples["first_execute"], functools.partial(execute, conn, sandbox_id))
            samples["total"].append((time.perf_counter() - start) * 1000.0)
            delete_sandbox(conn, sandbox_id)
            if settle_seconds > 0:
                time.sleep(settle_seconds)
    finally:
        conn.close()
    return samples


def measure_warm(server: CodeboxServer, runtime: str, iterations: int, warmup: int) -> dict[str, list[float]]:
    """`1+1` round trips on one sandbox's python context, after `warmup`
    untimed ones; plus `GET /health` round trips on the same connection, the
    floor that HTTP and this client add to any call."""
    samples: dict[str, list[float]] = {"execute": [], "health": []}
    conn = server.connect()
    sandbox_id = create_sandbox(conn, runtime)
    try:
        for _ in range(warmup):
            execute(conn, sandbox_id)
            conn.expect("GET", "/health", 200)
        for _ in range(iterations):
            timed(samples["execute"], lambda: execute(conn, sandbox_id))
        for _ in range(iterations):
            timed(samples["health"], lambda: conn.expect("GET", "/health", 200))
    finally:
        delete_sandbox(conn, sandbox_id)
        conn.close()
    return samples


class CodeboxWorker:
    """One throughput client: its own connection and sandbox (made beforehand)."""

    def __init__(self, server: CodeboxServer, sandbox_id: str):
        self.server = server
        self.sandbox_id = sandbox_id
        self.conn: JsonConnection | None = None

    def setup(self) -> None:
        self.conn = self.server.connect()
        execute(self.conn, self.sandbox_id)

    def one(self) -> None:
        assert self.conn is not None, "setup() runs first"
        execute(self.conn, self.sandbox_id)

    def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()


def make_workers(server: CodeboxServer, runtime: str, clients: int) -> list[CodeboxWorker]:
    conn = server.connect()
    try:
        workers = []
        for _ in range(clients):
            sandbox_id = create_sandbox(conn, runtime)
            # The default context's interpreter starts here, not in the timing.
            execute(conn, sandbox_id)
            workers.append(CodeboxWorker(server, sandbox_id))
        return workers
    finally:
        conn.close()


def remove_workers(server: CodeboxServer, workers: list[CodeboxWorker]) -> None:
    conn = server.connect()
    try:
        for worker in workers:
            delete_sandbox(conn, worker.sandbox_id)
    finally:
        conn.close()
