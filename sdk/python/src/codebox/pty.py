"""An interactive terminal in a sandbox (``sbx.pty``), over the
``GET /api/v1/sandboxes/{id}/pty`` WebSocket.

- The query opens it: ``cols``, ``rows``, ``cmd`` (default: a login shell),
  ``cwd``, ``timeout`` (seconds) and ``env.NAME=VALUE``. A refused request (an
  unknown or ended sandbox, a bad value) is the API's typed error; no socket
  is opened.
- Binary frames carry the terminal's bytes both ways; a text frame
  ``{"type": "resize", "cols", "rows"}`` resizes it.
- When the program exits the server closes with code 1000 and the reason
  ``{"exit_code", "signal", "timed_out"}`` (kept on the :class:`Terminal`);
  closing the terminal kills the program's whole tree.

This part needs the optional ``websockets`` package (``pip install
'codebox[pty]'``); the rest of the SDK does not.
"""

from __future__ import annotations

import builtins
import json
from types import TracebackType
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, Iterator, Mapping, Optional, Type, Union
from urllib.parse import urlencode, urlsplit, urlunsplit

from . import _endpoints as api
from ._config import ConnectionConfig
from .errors import APIConnectionError, CodeboxError, TimeoutError, error_from_response

if TYPE_CHECKING:  # pragma: no cover
    from websockets.asyncio.client import ClientConnection as AsyncConnection
    from websockets.sync.client import ClientConnection as SyncConnection

DEFAULT_COLS = 80
DEFAULT_ROWS = 24
# Largest frame accepted from the server (its own limit for client frames).
MAX_FRAME_BYTES = 1024 * 1024
# The close code of a program that exited (its status is in the reason).
CLOSE_NORMAL = 1000


def _missing() -> CodeboxError:
    return CodeboxError("the terminal needs the `websockets` package: pip install 'codebox[pty]'")


def pty_query(
    cols: int,
    rows: int,
    cmd: Optional[str],
    cwd: Optional[str],
    timeout: Optional[int],
    env: Optional[Mapping[str, str]],
) -> Dict[str, str]:
    if cols < 1 or rows < 1:
        raise ValueError("a terminal needs at least one column and one row")
    query = {"cols": str(cols), "rows": str(rows)}
    if cmd is not None:
        query["cmd"] = cmd
    if cwd is not None:
        query["cwd"] = cwd
    if timeout is not None:
        query["timeout"] = str(timeout)
    for name, value in (env or {}).items():
        query[f"env.{name}"] = value
    return query


def pty_url(
    config: ConnectionConfig, sandbox_id: str, query: Optional[Mapping[str, str]] = None
) -> str:
    """``ws(s)://`` URL of the sandbox's terminal."""
    parts = urlsplit(config.api_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + api.OPEN_PTY.path(id=sandbox_id)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query or {}), ""))


def resize_frame(cols: int, rows: int) -> str:
    if cols < 1 or rows < 1:
        raise ValueError("a terminal needs at least one column and one row")
    return json.dumps({"type": "resize", "cols": cols, "rows": rows})


def _headers(config: ConnectionConfig) -> Dict[str, str]:
    headers = config.headers()
    headers.pop("Accept", None)
    return headers


def _handshake_error(exc: BaseException, url: str) -> CodeboxError:
    """A refused upgrade becomes the API's typed error (401, 404, 410, ...)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    shown = url.split("?", 1)[0]
    if isinstance(status, int):
        body = getattr(response, "body", b"") or b""
        headers = getattr(response, "headers", None)
        request_id = headers.get("x-request-id") if headers is not None else None
        return error_from_response(status, bytes(body), header_request_id=request_id)
    if isinstance(exc, builtins.TimeoutError):
        return TimeoutError(f"no terminal in time from {shown}")
    return APIConnectionError(f"cannot open the terminal at {shown}: {type(exc).__name__}")


class _Ending:
    """How the terminal ended, read from the server's close frame."""

    def __init__(self) -> None:
        self.closed = False
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None
        self.timed_out = False
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None

    def record(self, exc: BaseException) -> None:
        self.closed = True
        received = getattr(exc, "rcvd", None)
        if received is None:
            return
        self.close_code = getattr(received, "code", None)
        reason = getattr(received, "reason", "")
        self.close_reason = reason or None
        if self.close_code != CLOSE_NORMAL or not reason:
            return
        try:
            status = json.loads(reason)
        except ValueError:
            return
        if isinstance(status, dict):
            code, signal = status.get("exit_code"), status.get("signal")
            self.exit_code = code if isinstance(code, int) else None
            self.signal = signal if isinstance(signal, int) else None
            self.timed_out = status.get("timed_out") is True


class _TerminalState:
    _ending: _Ending

    @property
    def exit_code(self) -> Optional[int]:
        """The program's exit code once it has exited (``None`` before, or if
        a signal ended it)."""
        return self._ending.exit_code

    @property
    def signal(self) -> Optional[int]:
        return self._ending.signal

    @property
    def timed_out(self) -> bool:
        return self._ending.timed_out

    @property
    def closed(self) -> bool:
        return self._ending.closed

    @property
    def close_reason(self) -> Optional[str]:
        """The server's close reason (``the sandbox ended``, ...)."""
        return self._ending.close_reason


def _output(message: Union[str, bytes]) -> bytes:
    return message if isinstance(message, bytes) else message.encode()


class Terminal(_TerminalState):
    """One open terminal: :meth:`send` keystrokes, :meth:`recv` or iterate
    output bytes, :meth:`resize`, :meth:`close` (or a ``with`` block)."""

    def __init__(self, connection: "SyncConnection") -> None:
        self._connection = connection
        self._ending = _Ending()

    def send(self, data: Union[str, bytes]) -> None:
        """Input, as if typed (``"ls\\\\n"``, ``b"\\\\x03"`` for Ctrl-C)."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self._run(lambda: self._connection.send(raw))

    def resize(self, cols: int, rows: int) -> None:
        frame = resize_frame(cols, rows)
        self._run(lambda: self._connection.send(frame))

    def recv(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """The next output bytes; ``None`` once the terminal has closed (then
        :attr:`exit_code` / :attr:`signal` say how the program ended).
        ``TimeoutError`` after ``timeout`` seconds without output."""
        from websockets.exceptions import ConnectionClosed

        try:
            return _output(self._connection.recv(timeout))
        except ConnectionClosed as exc:
            self._ending.record(exc)
            return None
        except builtins.TimeoutError as exc:
            raise TimeoutError(f"no terminal output within {timeout} s") from exc

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.recv()
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        """Closes the connection; the server kills the program's tree."""
        self._connection.close()
        self._ending.closed = True

    def _run(self, action: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            action()
        except ConnectionClosed as exc:
            self._ending.record(exc)
            raise APIConnectionError("the terminal is closed") from exc

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()


class Pty:
    """Terminals of one sandbox (``sbx.pty``)."""

    def __init__(self, sandbox_id: str, config: ConnectionConfig) -> None:
        self._sandbox_id = sandbox_id
        self._config = config

    def create(
        self,
        *,
        cols: int = DEFAULT_COLS,
        rows: int = DEFAULT_ROWS,
        cmd: Optional[str] = None,
        cwd: Optional[str] = None,
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> Terminal:
        """Opens a terminal of ``cols`` x ``rows`` running ``cmd`` (default: a
        login shell) as the sandbox user. Use it in a ``with`` block, or close it."""
        try:
            from websockets.sync.client import connect
        except ImportError as exc:
            raise _missing() from exc
        query = pty_query(cols, rows, cmd, cwd, timeout, env)
        url = pty_url(self._config, self._sandbox_id, query)
        try:
            connection = connect(
                url,
                additional_headers=_headers(self._config),
                open_timeout=self._config.request_timeout,
                max_size=MAX_FRAME_BYTES,
                user_agent_header=None,
            )
        except Exception as exc:
            raise _handshake_error(exc, url) from exc
        # The Terminal owns the connection from here on (its close() ends it);
        # entering it is how websockets >= 17 is told so.
        connection.__enter__()
        return Terminal(connection)


class AsyncTerminal(_TerminalState):
    """As :class:`Terminal`, with ``await``; ``async for chunk in terminal``."""

    def __init__(self, connection: "AsyncConnection") -> None:
        self._connection = connection
        self._ending = _Ending()

    async def send(self, data: Union[str, bytes]) -> None:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        await self._send(raw)

    async def resize(self, cols: int, rows: int) -> None:
        await self._send(resize_frame(cols, rows))

    async def _send(self, message: Union[str, bytes]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._connection.send(message)
        except ConnectionClosed as exc:
            self._ending.record(exc)
            raise APIConnectionError("the terminal is closed") from exc

    async def recv(self) -> Optional[bytes]:
        """The next output bytes; ``None`` once the terminal has closed (wrap
        in ``asyncio.wait_for`` for a deadline)."""
        from websockets.exceptions import ConnectionClosed

        try:
            return _output(await self._connection.recv())
        except ConnectionClosed as exc:
            self._ending.record(exc)
            return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.recv()
            if chunk is None:
                return
            yield chunk

    async def close(self) -> None:
        await self._connection.close()
        self._ending.closed = True

    async def __aenter__(self) -> "AsyncTerminal":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()


class AsyncPty:
    """As :class:`Pty`: ``async with await sbx.pty.create() as terminal:``."""

    def __init__(self, sandbox_id: str, config: ConnectionConfig) -> None:
        self._sandbox_id = sandbox_id
        self._config = config

    async def create(
        self,
        *,
        cols: int = DEFAULT_COLS,
        rows: int = DEFAULT_ROWS,
        cmd: Optional[str] = None,
        cwd: Optional[str] = None,
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> AsyncTerminal:
        try:
            from websockets.asyncio.client import connect
        except ImportError as exc:
            raise _missing() from exc
        query = pty_query(cols, rows, cmd, cwd, timeout, env)
        url = pty_url(self._config, self._sandbox_id, query)
        try:
            connection = await connect(
                url,
                additional_headers=_headers(self._config),
                open_timeout=self._config.request_timeout,
                max_size=MAX_FRAME_BYTES,
                user_agent_header=None,
            )
        except Exception as exc:
            raise _handshake_error(exc, url) from exc
        return AsyncTerminal(connection)
