"""The asyncio client: :class:`AsyncSandbox`, the same surface as
:mod:`codebox.sandbox` with ``await``, executing the same
:mod:`codebox._ops` calls.

``async with await AsyncSandbox.create() as sbx:`` kills the sandbox and closes
the connection pool on exit.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import AsyncIterator, List, Mapping, Optional, Type, Union

import httpx

from . import _ops as ops
from ._config import ConnectionConfig, RetryPolicy
from ._transport import AsyncTransport
from .commands import AsyncCommands
from .contexts import AsyncContexts
from .errors import SandboxGoneError
from .files import AsyncFiles
from .models import Context, Execution, RuntimeInfo, SandboxInfo, SandboxMetrics
from .pty import AsyncPty

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


class AsyncSandbox:
    """A handle on one sandbox. Get one with ``await AsyncSandbox.create()``
    or ``await AsyncSandbox.connect(id)``."""

    def __init__(self, info: SandboxInfo, transport: AsyncTransport) -> None:
        self._info = info
        self._transport = transport
        self._killed = False
        self.commands = AsyncCommands(info.id, transport)
        self.files = AsyncFiles(info.id, transport)
        self.contexts = AsyncContexts(info.id, transport)
        self.pty = AsyncPty(info.id, transport.config)

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
            info = await http.call(
                ops.create_sandbox(runtime, cpu, memory, timeout, metadata, env_vars)
            )
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
            info = await http.call(ops.get_sandbox(sandbox_id))
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
            return await http.call(ops.list_runtimes())
        finally:
            await http.aclose()

    async def info(self) -> SandboxInfo:
        """The sandbox's current view. Raises ``SandboxGoneError`` once it ended."""
        self._info = await self._transport.call(ops.get_sandbox(self.id))
        return self._info

    async def set_timeout(self, seconds: int) -> SandboxInfo:
        """The sandbox now expires ``seconds`` from now."""
        self._info = await self._transport.call(ops.set_timeout(self.id, seconds))
        return self._info

    async def kill(self) -> SandboxInfo:
        """Kills the sandbox and returns its final view. Raises
        ``SandboxGoneError`` if it had already ended."""
        self._info = await self._transport.call(ops.delete_sandbox(self.id))
        self._killed = True
        return self._info

    async def metrics(self) -> SandboxMetrics:
        """CPU, memory, disk and process usage against the sandbox's limits."""
        return await self._transport.call(ops.sandbox_metrics(self.id))

    async def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        *,
        context: Union[str, Context, None] = None,
        timeout: Optional[int] = None,
        env_vars: Optional[Mapping[str, str]] = None,
        on_stdout: Optional[ops.Callback] = None,
        on_stderr: Optional[ops.Callback] = None,
        on_result: Optional[ops.Callback] = None,
        on_error: Optional[ops.Callback] = None,
    ) -> Execution:
        """See :meth:`codebox.Sandbox.run_code`. Callbacks may be plain or
        coroutine functions; each is awaited before the next event is read."""
        call = ops.execute(
            self.id, code, language=language, context=context, timeout=timeout, env_vars=env_vars
        )
        callbacks = {
            "on_stdout": on_stdout,
            "on_stderr": on_stderr,
            "on_result": on_result,
            "on_error": on_error,
        }
        builder = ops.ExecutionBuilder()
        async with self._transport.stream(call) as response:
            lines = self._transport.lines(call, response)
            try:
                async for line in lines:
                    if not line:
                        continue
                    event = ops.decode_json_line(line, "execution")
                    await ops.maybe_await(ops.pick(callbacks, builder.feed(event)))
                    if builder.ended:
                        break
            finally:
                await lines.aclose()
        return builder.finish()

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
            page = await http.call(ops.list_sandboxes(status, metadata, page_size, cursor))
            for info in page.sandboxes:
                yield info
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
    finally:
        await http.aclose()
