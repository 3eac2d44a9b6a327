"""A scripted fake server for unit tests: answers through ``httpx.MockTransport``
and records every request the SDK sends."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import httpx

# sdk/python/tests -> the repository root.
REPO_ROOT = Path(__file__).resolve().parents[3]
SANDBOX_ID = "k3v7q2m4x5a6b7c2d3e4f5g6h7"
API_URL = "http://codebox.test"
API_KEY = "cbx_test_key"

Answer = Union[httpx.Response, Callable[[httpx.Request], httpx.Response]]


def sandbox_json(sandbox_id: str = SANDBOX_ID, **overrides: Any) -> Dict[str, Any]:
    view: Dict[str, Any] = {
        "id": sandbox_id,
        "status": "running",
        "runtime": "python3",
        "resources": {"cpu": 1.0, "memory": 512},
        "isolation": "namespaces",
        "metadata": {},
        "created_at": "2026-11-29T10:00:00.123456789Z",
        "expires_at": "2026-11-29T10:05:00Z",
    }
    view.update(overrides)
    return view


def killed_json(sandbox_id: str = SANDBOX_ID) -> Dict[str, Any]:
    return sandbox_json(
        sandbox_id,
        status="terminated",
        termination_reason="killed",
        ended_at="2026-11-29T10:01:00Z",
    )


COMMAND_JSON: Dict[str, Any] = {
    "stdout": "42\n",
    "stderr": "",
    "exit_code": 0,
    "timed_out": False,
    "truncated": False,
    "duration_ms": 18,
}

RUNTIMES_JSON: Dict[str, Any] = {
    "runtimes": [
        {"name": "python3", "language": "python", "version": "3.11.2", "aliases": ["python3.11"]}
    ]
}


# A 1x1 transparent PNG.
PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

END_EVENT: Dict[str, Any] = {
    "type": "end",
    "execution_id": "exec-1",
    "context_id": "default-python",
    "execution_count": 3,
    "duration_ms": 12,
    "outcome": "error",
    "restarted": False,
    "truncated": False,
}

EXECUTION_EVENTS: List[Dict[str, Any]] = [
    {"type": "stdout", "text": "1\n"},
    {"type": "stderr", "text": "warn\n"},
    {
        "type": "result",
        "text/plain": "<Figure>",
        "image/png": base64.b64encode(PNG_BYTES).decode(),
        "is_main_result": False,
    },
    {"type": "stdout", "text": "2\n"},
    {"type": "result", "text/plain": "42", "text/html": "<b>42</b>", "is_main_result": True},
    {
        "type": "error",
        "name": "ZeroDivisionError",
        "value": "division by zero",
        "traceback": "Traceback ...",
    },
    END_EVENT,
]

CONTEXT_JSON: Dict[str, Any] = {
    "id": "ctx-0123456789abcdef",
    "language": "python",
    "cwd": "/home/user",
    "is_default": False,
}

ENTRY_JSON: Dict[str, Any] = {
    "name": "data.csv",
    "path": "/home/user/data.csv",
    "type": "file",
    "size": 5,
    "mode": 420,
    "modified_at": "2026-11-29T10:00:00Z",
    "symlink_target": None,
}

METRICS_JSON: Dict[str, Any] = {
    "cpu_usage_usec": 1000,
    "cpu_limit": 1.0,
    "memory_used_bytes": 1 << 20,
    "memory_peak_bytes": 2 << 20,
    "memory_limit_bytes": 512 << 20,
    "disk_used_bytes": 4096,
    "disk_limit_bytes": 1 << 30,
    "pids": 3,
    "pids_limit": 256,
}

PROCESS_JSON: Dict[str, Any] = {
    "pid": 42,
    "cmd": ["bash", "-c", "cat"],
    "tag": "worker",
    "stdin_open": True,
}

PROCESS_EVENTS: List[Dict[str, Any]] = [
    {"type": "start", "pid": 42, "dropped_bytes": 7},
    {"type": "stdout", "data": "out\n"},
    {"type": "stderr", "data": "err\n"},
    {"type": "stdout", "data": "more\n"},
    {"type": "end", "exit_code": None, "signal": 9, "timed_out": False},
]

WATCH_SSE = (
    ": a comment line\n"
    'event: create\ndata: {"type": "create", "path": "/home/user/a", "is_dir": false}\n\n'
    'event: write\ndata: {"type": "write", "path": "/home/user/a", "is_dir": false}\n\n'
    'event: create\ndata: {"type": "create", "path": "/home/user/d", "is_dir": true}\n\n'
)


def ndjson(events: List[Dict[str, Any]], status: int = 200) -> httpx.Response:
    body = "".join(json.dumps(event) + "\n" for event in events)
    return httpx.Response(
        status, content=body.encode(), headers={"content-type": "application/x-ndjson"}
    )


def sse(text: str) -> httpx.Response:
    return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})


def raw(data: bytes) -> httpx.Response:
    return httpx.Response(200, content=data, headers={"content-type": "application/octet-stream"})


def ok(data: Any, status: int = 200, headers: Optional[Dict[str, str]] = None) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "data": data}, headers=headers)


def fail(
    status: int,
    code: str,
    message: str = "failed",
    headers: Optional[Dict[str, str]] = None,
    **extra: Any,
) -> httpx.Response:
    error = {"code": code, "message": message, "request_id": "req-123", **extra}
    return httpx.Response(status, json={"success": False, "error": error}, headers=headers)


class FakeServer:
    """Routes ``(METHOD, path)`` to queued answers; the last answer of a route
    repeats. Unrouted requests get a 404 envelope, as the real server does."""

    def __init__(self) -> None:
        self.routes: Dict[Tuple[str, str], List[Answer]] = {}
        self.requests: List[httpx.Request] = []

    def on(self, method: str, path: str, *answers: Answer) -> "FakeServer":
        self.routes.setdefault((method, path), []).extend(answers)
        return self

    def handler(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return fail(404, "NOT_FOUND", f"no route {request.method} {request.url.path}")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        response = answer(request) if callable(answer) else answer
        # A fresh copy each time: a response object can be consumed only once,
        # and repeated answers may go to a sync and then an async client.
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.read()
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def calls(self) -> List[Tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.requests]

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def standard_server(sandbox_id: str = SANDBOX_ID) -> FakeServer:
    """Every route the SDK uses, answering as the documented API does."""
    base = f"/api/v1/sandboxes/{sandbox_id}"
    return (
        FakeServer()
        .on("POST", "/api/v1/sandboxes", ok(sandbox_json(sandbox_id), status=201))
        .on(
            "GET",
            "/api/v1/sandboxes",
            ok({"sandboxes": [sandbox_json(sandbox_id)], "next_cursor": None}),
        )
        .on("GET", base, ok(sandbox_json(sandbox_id)))
        .on("DELETE", base, ok(killed_json(sandbox_id)))
        .on("POST", f"{base}/timeout", ok(sandbox_json(sandbox_id)))
        .on("POST", f"{base}/commands", ok(COMMAND_JSON))
        .on("GET", "/api/v1/runtimes", ok(RUNTIMES_JSON))
        .on("GET", f"{base}/metrics", ok(METRICS_JSON))
        .on("POST", f"{base}/execute", ndjson(EXECUTION_EVENTS))
        .on("POST", f"{base}/contexts", ok(CONTEXT_JSON, status=201))
        .on("GET", f"{base}/contexts", ok({"contexts": [CONTEXT_JSON]}))
        .on("DELETE", f"{base}/contexts/{CONTEXT_JSON['id']}", ok({"id": "x", "deleted": True}))
        .on("POST", f"{base}/contexts/{CONTEXT_JSON['id']}/restart", ok({"id": "x"}))
        .on("POST", f"{base}/contexts/{CONTEXT_JSON['id']}/interrupt", ok({"id": "x"}))
        .on("GET", f"{base}/files", raw(b"a,b\n1,2\n"))
        .on("PUT", f"{base}/files", _upload_answer)
        .on("DELETE", f"{base}/files", ok({"path": "/home/user/x", "deleted": True}))
        .on("GET", f"{base}/files/list", ok({"entries": [ENTRY_JSON], "truncated": False}))
        .on("GET", f"{base}/files/stat", ok(ENTRY_JSON))
        .on("POST", f"{base}/files/mkdir", ok({**ENTRY_JSON, "type": "dir"}, status=201))
        .on("POST", f"{base}/files/move", ok(ENTRY_JSON))
        .on("GET", f"{base}/files/watch", sse(WATCH_SSE))
        .on("POST", f"{base}/processes", ok(PROCESS_JSON, status=201))
        .on("GET", f"{base}/processes", ok({"processes": [PROCESS_JSON]}))
        .on("GET", f"{base}/processes/42/stream", ndjson(PROCESS_EVENTS))
        .on("POST", f"{base}/processes/42/stdin", _stdin_answer)
        .on("POST", f"{base}/processes/42/close-stdin", ok({"closed": True}))
        .on("POST", f"{base}/processes/42/signal", ok({"signal": "SIGKILL", "sent": True}))
    )


def _upload_answer(request: httpx.Request) -> httpx.Response:
    path = request.url.params.get("path", "")
    return ok({"path": path, "size": len(request.content)}, status=201)


def _stdin_answer(request: httpx.Request) -> httpx.Response:
    return ok({"written": len(request.content)})
