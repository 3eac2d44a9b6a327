"""The asyncio client: :class:`AsyncSandbox` and :class:`AsyncCommands`, the
same surface as :mod:`codebox.sandbox` with ``await``.

``async with await AsyncSandbox.create() as sbx:`` kills the sandbox and closes
the connection pool on exit.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import AsyncIterator, List, Mapping, Optional, Type

import httpx

from . import _endpoints as api
from ._config import ConnectionConfig, RetryPolicy
from ._requests import command_body, command_http_timeout, create_body, list_params
from ._transport import AsyncTransport
from .errors import SandboxGoneError
from .models import CommandResult, RuntimeInfo, SandboxInfo, SandboxPage, runtimes_from_api

logger = logging.getLogger("codebox")


def _open(
    api_url: Optional[str],
    api_key: Optional[str],
    request_timeout: Optional[float],
    retry: Optional[RetryPolicy],
    transport: Optional[httpx.AsyncBaseTransport],
) -> AsyncTransport:
    config = ConnectionConfig.resolve(api_url, api_key, request_timeout, retry)
    return AsyncTransport(config, transport=transport)


class AsyncCommands:
    """Shell commands in one sandbox (``sbx.commands``)."""

    def __init__(self, sandbox_id: str, transport: AsyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport

    async def run(
        self,
        cmd: str,
        *,
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
    ) -> CommandResult:
        """Runs ``bash -c cmd`` as the sandbox's unprivileged user and waits.
        See :meth:`codebox.Commands.run`."""
        data = await self._transport.request(
            api.RUN_COMMAND,
            path_params={"id": self._sandbox_id},
            body=command_body(cmd, timeout, env, cwd, stdin),
            timeout=command_http_timeout(timeout, self._transport.config.request_timeout),
        )
        return CommandResult.from_api(data)


class AsyncSandbox:
    """A handle on one sandbox. Get one with ``await AsyncSandbox.create()``
    or ``await AsyncSandbox.connect(id)``."""

    def __init__(self, info: SandboxInfo, transport: AsyncTransport) -> None:
        self._info = info
        self._transport = transport
        self._killed = False
        self.commands = AsyncCommands(info.id, transport)

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def sandbox_id(self) -> str:
        """Alias of :attr:`id` (the name E2B's SDK uses)."""
        return self._info.id

    def __repr__(self) -> str:
        return f"AsyncSandbox(id={self.id!r}, runtime={self._info.runtime!r})"

    @classmethod
    async def create(
        cls,
        runtime: str = "python3",
        *,
        cpu: Optional[float] = None,
        memory: Optional[int] = None,
        timeout: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
        env_vars: Optional[Mapping[str, str]] = None,
        api_url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> "AsyncSandbox":
        """Creates and starts a sandbox. See :meth:`codebox.Sandbox.create`."""
        http = _open(api_url, api_key, request_timeout, retry, transport)
        try:
            body = create_body(runtime, cpu, memory, timeout, metadata, env_vars)
            info = SandboxInfo.from_api(await http.request(api.CREATE_SANDBOX, body=body))
        except BaseException:
            await http.aclose()
            raise
        return cls(info, http)

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        *,
        api_url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> "AsyncSandbox":
        """A handle on an existing live sandbox."""
        http = _open(api_url, api_key, request_timeout, retry, transport)
        try:
            data = await http.request(api.GET_SANDBOX, path_params={"id": sandbox_id})
            info = SandboxInfo.from_api(data)
        except BaseException:
            await http.aclose()
            raise
        return cls(info, http)

    @classmethod
    def list(
        cls,
        *,
        status: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        page_size: Optional[int] = None,
        api_url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> AsyncIterator[SandboxInfo]:
        """Your sandboxes, newest first: ``async for info in AsyncSandbox.list():``."""
        # Settings are checked now; the connection opens on the first page.
        config = ConnectionConfig.resolve(api_url, api_key, request_timeout, retry)
        return _iterate_pages(config, transport, status, metadata, page_size)

    @classmethod
    async def runtimes(
        cls,
        *,
        api_url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> List[RuntimeInfo]:
        """The runtimes the server offers."""
        http = _open(api_url, api_key, request_timeout, retry, transport)
        try:
            return runtimes_from_api(await http.request(api.LIST_RUNTIMES))
        finally:
            await http.aclose()

    async def info(self) -> SandboxInfo:
        """The sandbox's current view. Raises ``SandboxGoneError`` once it ended."""
        data = await self._transport.request(api.GET_SANDBOX, path_params={"id": self.id})
        self._info = SandboxInfo.from_api(data)
        return self._info

    async def set_timeout(self, seconds: int) -> SandboxInfo:
        """The sandbox now expires ``seconds`` from now."""
        data = await self._transport.request(
            api.SET_SANDBOX_TIMEOUT, path_params={"id": self.id}, body={"timeout": seconds}
        )
        self._info = SandboxInfo.from_api(data)
        return self._info

    async def kill(self) -> SandboxInfo:
        """Kills the sandbox and returns its final view. Raises
        ``SandboxGoneError`` if it had already ended."""
        data = await self._transport.request(api.DELETE_SANDBOX, path_params={"id": self.id})
        self._info = SandboxInfo.from_api(data)
        self._killed = True
        return self._info

    async def close(self) -> None:
        """Closes the connection pool; the sandbox itself keeps running."""
        await self._transport.aclose()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        try:
            if not self._killed:
                await _kill_on_exit(self, body_failed=exc is not None)
        finally:
            await self.close()


async def _kill_on_exit(sandbox: AsyncSandbox, body_failed: bool) -> None:
    """As :func:`codebox.sandbox._kill_on_exit`, awaited."""
    try:
        await sandbox.kill()
    except SandboxGoneError:
        pass
    except Exception:
        if not body_failed:
            raise
        logger.warning("codebox: cannot kill sandbox %s on exit", sandbox.id, exc_info=True)


async def _iterate_pages(
    config: ConnectionConfig,
    transport: Optional[httpx.AsyncBaseTransport],
    status: Optional[str],
    metadata: Optional[Mapping[str, str]],
    page_size: Optional[int],
) -> AsyncIterator[SandboxInfo]:
    http = AsyncTransport(config, transport=transport)
    try:
        cursor: Optional[str] = None
        while True:
            params = list_params(status, metadata, page_size, cursor)
            page = SandboxPage.from_api(await http.request(api.LIST_SANDBOXES, params=params))
            for info in page.sandboxes:
                yield info
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
    finally:
        await http.aclose()
