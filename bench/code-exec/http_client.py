"""A minimal keep-alive HTTP/1.1 JSON client on the standard library.

Latencies below a millisecond are measured here, so the client must add as
little as possible: one persistent connection, TCP_NODELAY, the request line,
headers and body in one `send` (http.client joins a bytes body with the
headers), no retries, no redirects."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class HttpError(RuntimeError):
    """A request that did not get the status it needed."""


class JsonConnection:
    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None):
        self._host = host
        self._port = port
        self._headers = {"Accept": "application/json", **(headers or {})}
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
            conn.connect()
            assert conn.sock is not None, "connect() sets the socket"
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
        return self._conn

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON body or None)."""
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            # A dropped keep-alive connection is not retried: a retry would hide
            # a server problem and distort the timing. The next call reconnects.
            self.close()
            raise
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return response.status, (json.loads(raw) if raw else None)

    def expect(self, method: str, path: str, status: int, body: Any = None) -> Any:
        got, decoded = self.request(method, path, body)
        if got != status:
            raise HttpError(f"{method} {path}: expected {status}, got {got}: {decoded}")
        return decoded

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
