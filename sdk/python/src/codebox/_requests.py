"""Request bodies and query parameters, built the same way for the sync and the
async client. Range checks are the server's job (one source of truth, typed
``ValidationError`` with ``field``); this module only shapes what is sent."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

# The server's documented defaults (docs/api.md), used to complete `resources`
# when only one of cpu/memory is given: the API takes both or neither.
DEFAULT_CPU = 1.0
DEFAULT_MEMORY_MB = 512
# A command's own default timeout on the server, and how much longer than the
# command the HTTP request may take (sandbox scheduling, the answer's transfer).
DEFAULT_COMMAND_TIMEOUT = 30
COMMAND_HTTP_MARGIN = 30.0


def create_body(
    runtime: str,
    cpu: Optional[float],
    memory: Optional[int],
    timeout: Optional[int],
    metadata: Optional[Mapping[str, str]],
    env_vars: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"runtime": runtime}
    if cpu is not None or memory is not None:
        body["resources"] = {
            "cpu": DEFAULT_CPU if cpu is None else cpu,
            "memory": DEFAULT_MEMORY_MB if memory is None else memory,
        }
    if timeout is not None:
        body["timeout"] = timeout
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if env_vars is not None:
        body["env_vars"] = dict(env_vars)
    return body


def list_params(
    status: Optional[str],
    metadata: Optional[Mapping[str, str]],
    limit: Optional[int],
    cursor: Optional[str],
) -> Dict[str, Any]:
    params: Dict[str, Any] = {}
    if status is not None:
        params["status"] = status
    for key, value in (metadata or {}).items():
        params[f"metadata.{key}"] = value
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return params


def command_body(
    cmd: str,
    timeout: Optional[int],
    env: Optional[Mapping[str, str]],
    cwd: Optional[str],
    stdin: Optional[str],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"cmd": cmd}
    if timeout is not None:
        body["timeout"] = timeout
    if env is not None:
        body["env"] = dict(env)
    if cwd is not None:
        body["cwd"] = cwd
    if stdin is not None:
        body["stdin"] = stdin
    return body


def command_http_timeout(timeout: Optional[int], request_timeout: float) -> float:
    """How long to wait for the answer of a command that may run ``timeout`` s."""
    command = DEFAULT_COMMAND_TIMEOUT if timeout is None else timeout
    return max(request_timeout, float(command) + COMMAND_HTTP_MARGIN)
