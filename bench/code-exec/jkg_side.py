"""The Jupyter Kernel Gateway half: `python -m kernel_gateway` from the bench
venv on a free loopback port, ipykernel's `python3` kernel, and the Jupyter
messaging protocol over the gateway's websocket (`/api/kernels/{id}/channels`,
JSON text frames with a `channel` field).

An execution counts as done when both its `execute_reply` (shell channel) and
its `execute_result` with `text/plain` "2" (iopub) have arrived: that is what
codebox's JSON answer carries, so both sides are timed to the same point.

The gateway runs as shipped, or (`nodelay`) through `jkg_nodelay.py`, which
sets TCP_NODELAY on its websockets: as shipped, each execution's messages stall
in Nagle's algorithm until the client's delayed ACK (about 40 ms a round trip),
so the tuned gateway is the fair best case of JKG and the kernel."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import websocket

from codebox_side import EXECUTE_CODE, EXPECTED_TEXT, free_port
from http_client import HttpError, JsonConnection
from stats import timed

STARTUP_DEADLINE_SECONDS = 60.0
SHUTDOWN_GRACE_SECONDS = 20.0
EXECUTE_DEADLINE_SECONDS = 60.0
KERNEL_NAME = "python3"


@dataclass
class JkgServer:
    port: int
    log: Path

    def connect(self) -> JsonConnection:
        return JsonConnection("127.0.0.1", self.port)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Jupyter's per-user state goes to the scratch directory, so no config of
    # the caller's changes the gateway and nothing is left behind.
    env["JUPYTER_CONFIG_DIR"] = str(scratch / "config")
    env["JUPYTER_RUNTIME_DIR"] = str(scratch / "runtime")
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["IPYTHONDIR"] = str(scratch / "ipython")
    env.pop("KG_AUTH_TOKEN", None)
    return env


def _wait_ready(server: JkgServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    probe = server.connect()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kernel gateway exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if probe.request("GET", "/api")[0] == 200:
                probe.close()
                return
        except (OSError, ValueError):
            probe.close()
        time.sleep(0.1)
    raise RuntimeError(f"kernel gateway did not answer /api:\n{server.log_tail()}")


@contextmanager
def running_gateway(nodelay: bool = False) -> Iterator[JkgServer]:
    """The gateway until the block ends; `nodelay` runs it through
    `jkg_nodelay.py` (TCP_NODELAY on its websockets)."""
    scratch = Path(tempfile.mkdtemp(prefix="codebox-bench-jkg-"))
    log = scratch / "kernel-gateway.log"
    port = free_port()
    entry = [str(Path(__file__).with_name("jkg_nodelay.py"))] if nodelay else ["-m", "kernel_gateway"]
    command = [
        sys.executable,
        *entry,
        "--KernelGatewayApp.ip=127.0.0.1",
        f"--KernelGatewayApp.port={port}",
        "--KernelGatewayApp.api=kernel_gateway.jupyter_websocket",
    ]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, env=_env(scratch), cwd=scratch, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = JkgServer(port, log)
    try:
        _wait_ready(server, process)
        yield server
    finally:
        if process.poll() is None:
            # SIGINT twice is the gateway's clean stop (it shuts its kernels down).
            process.send_signal(signal.SIGINT)
            time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=SHUTDOWN_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(scratch, ignore_errors=True)


# --- kernels and the messaging protocol ------------------------------------


def start_kernel(conn: JsonConnection) -> str:
    body = conn.expect("POST", "/api/kernels", 201, {"name": KERNEL_NAME})
    return str(body["id"])


def shutdown_kernel(conn: JsonConnection, kernel_id: str) -> None:
    conn.expect("DELETE", f"/api/kernels/{kernel_id}", 204)


class KernelChannel:
    """One websocket to one kernel, one Jupyter session."""

    def __init__(self, server: JkgServer, kernel_id: str):
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels",
            timeout=EXECUTE_DEADLINE_SECONDS,
            sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            enable_multithread=False,
        )

    def _request(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        message = {
            "header": {
                "msg_id": msg_id,
                "username": "bench",
                "session": self.session,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": datetime.now(UTC).isoformat(),
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }
        self.ws.send(json.dumps(message))
        return msg_id

    def execute(self, code: str = EXECUTE_CODE) -> None:
        """Sends `code`, returns once its reply and its result are in."""
        msg_id = self._request(code)
        replied = False
        result: Any | None = None
        while not replied or result is None:
            message = json.loads(self.ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message.get("msg_type") or message["header"]["msg_type"]
            content = message.get("content", {})
            if kind == "execute_reply":
                if content.get("status") != "ok":
                    raise HttpError(f"kernel execute_reply not ok: {content}")
                replied = True
            elif kind == "execute_result":
                result = content.get("data", {}).get("text/plain")
                if result != EXPECTED_TEXT:
                    raise HttpError(f"kernel gave {result!r} for {code!r}")
            elif kind == "error":
                raise HttpError(f"kernel raised {content.get('ename')}: {content.get('evalue')}")

    def close(self) -> None:
        self.ws.close()


# --- the phases -------------------------------------------------------------


def _first_execute(server: JkgServer, kernel_id: str) -> None:
    channel = KernelChannel(server, kernel_id)
    try:
        channel.execute()
    finally:
        channel.close()


def measure_start(server: JkgServer, iterations: int) -> dict[str, list[float]]:
    """POST /api/kernels -> the first `1+1` reply and result, each kernel shut
    down afterwards (untimed)."""
    samples: dict[str, list[float]] = {"total": [], "create": [], "first_execute": []}
    conn = server.connect()
    try:
        for _ in range(iterations):
            start = time.perf_counter()
            kernel_id = timed(samples["create"], lambda: start_kernel(conn))
            timed(samples["first_execute"], functools.partial(_first_execute, server, kernel_id))
            samples["total"].append((time.perf_counter() - start) * 1000.0)
            shutdown_kernel(conn, kernel_id)
    finally:
        conn.close()
    return samples


def measure_warm(server: JkgServer, iterations: int, warmup: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"execute": []}
    conn = server.connect()
    kernel_id = start_kernel(conn)
    channel = KernelChannel(server, kernel_id)
    try:
        for _ in range(warmup):
            channel.execute()
        for _ in range(iterations):
            timed(samples["execute"], channel.execute)
    finally:
        channel.close()
        shutdown_kernel(conn, kernel_id)
        conn.close()
    return samples


class JkgWorker:
    """One throughput client: its own kernel (started beforehand) and websocket."""

    def __init__(self, server: JkgServer, kernel_id: str):
        self.server = server
        self.kernel_id = kernel_id
        self.channel: KernelChannel | None = None

    def setup(self) -> None:
        self.channel = KernelChannel(self.server, self.kernel_id)
        self.channel.execute()

    def one(self) -> None:
        assert self.channel is not None, "setup() runs first"
        self.channel.execute()

    def teardown(self) -> None:
        if self.channel is not None:
            self.channel.close()


def make_workers(server: JkgServer, clients: int) -> list[JkgWorker]:
    conn = server.connect()
    try:
        workers = []
        for _ in range(clients):
            kernel_id = start_kernel(conn)
            channel = KernelChannel(server, kernel_id)
            channel.execute()  # the kernel is up before the timing starts
            channel.close()
            workers.append(JkgWorker(server, kernel_id))
        return workers
    finally:
        conn.close()


def remove_workers(server: JkgServer, workers: list[JkgWorker]) -> None:
    conn = server.connect()
    try:
        for worker in workers:
            shutdown_kernel(conn, worker.kernel_id)
    finally:
        conn.close()
