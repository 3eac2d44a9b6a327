"""A scripted fake server for unit tests: answers through ``httpx.MockTransport``
and records every request the SDK sends."""

from __future__ import annotations

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
    )
