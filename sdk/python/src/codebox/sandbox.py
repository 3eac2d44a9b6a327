"""The blocking client: :class:`Sandbox` and its :class:`Commands`.

One ``Sandbox`` object is a handle on one server-side sandbox and owns one
HTTP connection pool; ``with Sandbox.create() as sbx:`` kills the sandbox and
closes the pool on exit. Code execution, files, processes and the PTY will join
this class as the server grows those endpoints.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Iterator, List, Mapping, Optional, Type

import httpx

from . import _endpoints as api
from ._config import ConnectionConfig, RetryPolicy
from ._requests import command_body, command_http_timeout, create_body, list_params
from ._transport import SyncTransport
from .errors import SandboxGoneError
from .models import CommandResult, RuntimeInfo, SandboxInfo, SandboxPage, runtimes_from_api

logger = logging.getLogger("codebox")


def _open(
    api_url: Optional[str],
    api_key: Optional[str],
    request_timeout: Optional[float],
    retry: Optional[RetryPolicy],
    transport: Optional[httpx.BaseTransport],
) -> SyncTransport:
    config = ConnectionConfig.resolve(api_url, api_key, request_timeout, retry)
    return SyncTransport(config, transport=transport)


class Commands:
    """Shell commands in one sandbox (``sbx.commands``)."""

    def __init__(self, sandbox_id: str, transport: SyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport

    def run(
        self,
        cmd: str,
        *,
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
    ) -> CommandResult:
        """Runs ``bash -c cmd`` as the sandbox's unprivileged user and waits.

        ``timeout`` is in seconds (server default 30, at most 300); a command
        that outlives it is killed and comes back with ``timed_out=True``, not
        as an exception. A non-zero exit is not an exception either: check
        ``exit_code`` (or ``ok``).
        """
        data = self._transport.request(
            api.RUN_COMMAND,
            path_params={"id": self._sandbox_id},
            body=command_body(cmd, timeout, env, cwd, stdin),
            timeout=command_http_timeout(timeout, self._transport.config.request_timeout),
        )
        return CommandResult.from_api(data)


class Sandbox:
    """A handle on one sandbox. Get one with :meth:`create` or :meth:`connect`."""

    def __init__(self, info: SandboxInfo, transport: SyncTransport) -> None:
        self._info = info
        self._transport = transport
        self._killed = False
        self.commands = Commands(info.id, transport)

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def sandbox_id(self) -> str:
        """Alias of :attr:`id` (the name E2B's SDK uses)."""
        return self._info.id

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, runtime={self._info.runtime!r})"

    @classmethod
    def create(
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
        transport: Optional[httpx.BaseTransport] = None,
    ) -> "Sandbox":
        """Creates and starts a sandbox.

        ``cpu`` in cores, ``memory`` in MiB (when only one is given the other
        takes the documented default, 1 core / 512 MiB), ``timeout`` is the
        lifetime in seconds (server default 300), ``metadata`` labels it for
        :meth:`list`, ``env_vars`` is the environment of every command.
        """
        http = _open(api_url, api_key, request_timeout, retry, transport)
        try:
            body = create_body(runtime, cpu, memory, timeout, metadata, env_vars)
            info = SandboxInfo.from_api(http.request(api.CREATE_SANDBOX, body=body))
        except BaseException:
            http.close()
            raise
        return cls(info, http)

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        api_url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> "Sandbox":
        """A handle on an existing live sandbox. Raises ``NotFoundError`` (or
        ``SandboxGoneError`` if it has ended)."""
        http = _open(api_url, api_key, request_timeout, retry, transport)
        try:
            info = SandboxInfo.from_api(
                http.request(api.GET_SANDBOX, path_params={"id": sandbox_id})
            )
        except BaseException:
            http.close()
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
        transport: Optional[httpx.BaseTransport] = None,
    ) -> Iterator[SandboxInfo]:
        """Your sandboxes, newest first, fetched page by page as you iterate.

        ``status``: ``creating``, ``running``, ``terminated`` or ``failed``;
        ``metadata``: only sandboxes whose labels include all these pairs.
        """
        # Settings are checked now; the connection opens on the first page.
        config = ConnectionConfig.resolve(api_url, api_key, request_timeout, retry)
        return _iterate_pages(config, transport, status, metadata, page_size)

    @classmethod
    def runtimes(
        cls,
        *,
        api_url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> List[RuntimeInfo]:
        """The runtimes the server offers (names and aliases for :meth:`create`)."""
        http = _open(api_url, api_key, request_timeout, retry, transport)
        try:
            return runtimes_from_api(http.request(api.LIST_RUNTIMES))
        finally:
            http.close()

    def info(self) -> SandboxInfo:
        """The sandbox's current view. Raises ``SandboxGoneError`` once it ended."""
        self._info = SandboxInfo.from_api(
            self._transport.request(api.GET_SANDBOX, path_params={"id": self.id})
        )
        return self._info

    def set_timeout(self, seconds: int) -> SandboxInfo:
        """The sandbox now expires ``seconds`` from now (never beyond the
        server's maximum lifetime)."""
        self._info = SandboxInfo.from_api(
            self._transport.request(
                api.SET_SANDBOX_TIMEOUT, path_params={"id": self.id}, body={"timeout": seconds}
            )
        )
        return self._info

    def kill(self) -> SandboxInfo:
        """Kills everything in the sandbox and frees it; returns the final view
        (``status`` ``terminated``). Raises ``SandboxGoneError`` if it had
        already ended."""
        self._info = SandboxInfo.from_api(
            self._transport.request(api.DELETE_SANDBOX, path_params={"id": self.id})
        )
        self._killed = True
        return self._info

    def close(self) -> None:
        """Closes the connection pool; the sandbox itself keeps running."""
        self._transport.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        try:
            if not self._killed:
                _kill_on_exit(self, body_failed=exc is not None)
        finally:
            self.close()


def _kill_on_exit(sandbox: Sandbox, body_failed: bool) -> None:
    """Kills at the end of a ``with`` block. An already-ended sandbox is fine;
    another failure is raised, unless the block itself is failing: then it is
    logged so it does not hide the block's own exception."""
    try:
        sandbox.kill()
    except SandboxGoneError:
        pass
    except Exception:
        if not body_failed:
            raise
        logger.warning("codebox: cannot kill sandbox %s on exit", sandbox.id, exc_info=True)


def _iterate_pages(
    config: ConnectionConfig,
    transport: Optional[httpx.BaseTransport],
    status: Optional[str],
    metadata: Optional[Mapping[str, str]],
    page_size: Optional[int],
) -> Iterator[SandboxInfo]:
    http = SyncTransport(config, transport=transport)
    try:
        cursor: Optional[str] = None
        while True:
            params = list_params(status, metadata, page_size, cursor)
            page = SandboxPage.from_api(http.request(api.LIST_SANDBOXES, params=params))
            yield from page.sandboxes
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
    finally:
        http.close()
