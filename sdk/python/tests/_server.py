"""Starting and stopping a real ``codebox serve`` for the contract tests.

``$CODEBOX_BIN`` (default ``target/release/codebox``) runs with ``serve --port
<free port> --data-dir <fresh dir>`` and the agent from ``$CODEBOX_AGENT_PATH``
(``scripts/build-agent``); it is ready when ``/health`` answers, and its admin
key is read from ``<data dir>/admin.key``. Without a binary, an agent or root the
tests skip, unless ``CODEBOX_REQUIRE_SERVER=1`` (set by ``scripts/test``) turns
that into a failure so CI cannot go green on nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, NoReturn

import httpx
import pytest

from _fakes import REPO_ROOT

# How long the server may take to answer /health after starting, and to stop.
STARTUP_DEADLINE_SECONDS = 120.0
SHUTDOWN_GRACE_SECONDS = 40.0
# Small enough that the quota test is cheap, large enough for the other tests.
MAX_SANDBOXES_PER_USER = 4
# Server settings that must come from here, not from the caller's shell.
_SERVER_ENV_BLOCKLIST = (
    "DATABASE_URL",
    "REDIS_URL",
    "API_KEY_SECRET",
    "JWT_SECRET",
    "MAX_SANDBOXES_PER_USER",
    "DEFAULT_TIMEOUT",
    "MAX_CODE_SIZE",
)


@dataclass
class RunningServer:
    url: str
    admin_key: str
    data_dir: Path
    binary: Path
    process: "subprocess.Popen[bytes]"
    env: Dict[str, str]

    def create_user_key(self, name: str) -> str:
        """A fresh user with an API key, through the admin CLI."""
        common = ["--data-dir", str(self.data_dir)]
        self._cli(["users", "create", name, *common])
        output = self._cli(["keys", "create", "--user", name, *common])
        return output.splitlines()[0].strip()

    def _cli(self, args: "list[str]") -> str:
        done = subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"codebox {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CODEBOX_REQUIRE_SERVER") == "1":
        pytest.fail(f"the contract tests need a server: {reason}", pytrace=False)
    pytest.skip(reason)


def _server_binary() -> Path:
    configured = os.environ.get("CODEBOX_BIN")
    binary = Path(configured) if configured else REPO_ROOT / "target" / "release" / "codebox"
    if not binary.is_file():
        _unavailable(f"no codebox binary at {binary} (build it or set CODEBOX_BIN)")
    return binary


def _agent_path() -> str:
    agent = os.environ.get("CODEBOX_AGENT_PATH")
    if not agent or not Path(agent).is_file():
        _unavailable("CODEBOX_AGENT_PATH is not set to a built agent (scripts/build-agent)")
    return agent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def templates_dir() -> Path:
    """Where the server builds its python3 template: kept across runs (the first
    build needs PyPI and takes minutes; later ones find it current). Its
    parents must be searchable by the sandbox user, like the data directory."""
    configured = os.environ.get("CODEBOX_SDK_TEMPLATES_DIR")
    return Path(configured) if configured else REPO_ROOT / "target" / "sdk-python-templates"


def _server_env(agent: str) -> Dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CODEBOX_") and key not in _SERVER_ENV_BLOCKLIST
    }
    env["CODEBOX_AGENT_PATH"] = agent
    env["MAX_SANDBOXES_PER_USER"] = str(MAX_SANDBOXES_PER_USER)
    # Only python3 (charts); its build runs in the background while tests run.
    env["CODEBOX_TEMPLATES_ENABLED"] = "python3"
    env["CODEBOX_TEMPLATES_BUILD_ON_START"] = "true"
    directory = templates_dir()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    env["CODEBOX_TEMPLATES_DIR"] = str(directory)
    return env


def _log_tail(log: Path) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    except OSError:
        return "(no log)"


def _wait_healthy(url: str, process: "subprocess.Popen[bytes]", log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"codebox serve exited with {process.returncode}:\n{_log_tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"codebox serve did not answer /health:\n{_log_tail(log)}")


def _stop(process: "subprocess.Popen[bytes]") -> None:
    if process.poll() is not None:
        return
    # SIGTERM: the server destroys its sandboxes before exiting.
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SHUTDOWN_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _scratch_dir() -> Path:
    """A fresh directory the sandbox user can traverse. Not pytest's tmp_path:
    that sits under a 0700 directory, and the jail then cannot mount the
    runtime's root file system from the data directory (EACCES)."""
    scratch = Path(tempfile.mkdtemp(prefix="codebox-sdk-test-"))
    scratch.chmod(0o711)
    return scratch


def start_server() -> Iterator[RunningServer]:
    """Runs a server with fresh data until the generator closes."""
    if os.geteuid() != 0:
        _unavailable("the codebox server needs root (namespaces and cgroups)")
    binary = _server_binary()
    env = _server_env(_agent_path())
    scratch = _scratch_dir()
    data_dir = scratch / "data"
    log = scratch / "codebox-serve.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(binary), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, process, log)
        admin_key = (data_dir / "admin.key").read_text().strip()
        yield RunningServer(url, admin_key, data_dir, binary, process, env)
    finally:
        _stop(process)
        # Only once the server is gone: it unmounts what it mounted there.
        shutil.rmtree(scratch, ignore_errors=True)
