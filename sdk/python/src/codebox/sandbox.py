"""The blocking client: :class:`Sandbox`.

One ``Sandbox`` object is a handle on one server-side sandbox and owns one
HTTP connection pool; ``with Sandbox.create() as sbx:`` kills the sandbox and
closes the pool on exit. Its parts: :meth:`Sandbox.run_code`,
``sbx.contexts`` (:class:`~codebox.Contexts`), ``sbx.files``
(:class:`~codebox.Files`), ``sbx.commands`` (:class:`~codebox.Commands`) and
``sbx.pty`` (:class:`~codebox.Pty`). Requests are described once in
:mod:`codebox._ops` and executed by :class:`~codebox._transport.SyncTransport`.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Iterator, List, Mapping, Optional, Type, Union

import httpx

from . import _ops as ops
from ._config import ConnectionConfig, RetryPolicy
from ._transport import SyncTransport
from .commands import Commands
from .contexts import Contexts
from .errors import SandboxGoneError
from .files import Files
from .models import Context, Execution, RuntimeInfo, SandboxInfo, SandboxMetrics
from .pty import Pty

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


class Sandbox:
    """A handle on one sandbox. Get one with :meth:`create` or :meth:`connect`."""

    def __init__(self, info: SandboxInfo, transport: SyncTransport) -> None:
        self._info = info
        self._transport = transport
        self._killed = False
        self.commands = Commands(info.id, transport)
        self.files = Files(info.id, transport)
        self.contexts = Contexts(info.id, transport)
        self.pty = Pty(info.id, transport.config)

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
            info = http.call(ops.create_sandbox(runtime, cpu, memory, timeout, metadata, env_vars))
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
            info = http.call(ops.get_sandbox(sandbox_id))
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
            return http.call(ops.list_runtimes())
        finally:
            http.close()

    def info(self) -> SandboxInfo:
        """The sandbox's current view. Raises ``SandboxGoneError`` once it ended."""
        self._info = self._transport.call(ops.get_sandbox(self.id))
        return self._info

    def set_timeout(self, seconds: int) -> SandboxInfo:
        """The sandbox now expires ``seconds`` from now (never beyond the
        server's maximum lifetime)."""
        self._info = self._transport.call(ops.set_timeout(self.id, seconds))
        return self._info

    def kill(self) -> SandboxInfo:
        """Kills everything in the sandbox and frees it; returns the final view
        (``status`` ``terminated``). Raises ``SandboxGoneError`` if it had
        already ended."""
        self._info = self._transport.call(ops.delete_sandbox(self.id))
        self._killed = True
        return self._info

    def metrics(self) -> SandboxMetrics:
        """CPU, memory, disk and process usage against the sandbox's limits."""
        return self._transport.call(ops.sandbox_metrics(self.id))

    def run_code(
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
        """Runs ``code`` in a context and returns its :class:`~codebox.Execution`.

        State persists between calls of one context (the language's default
        context unless ``context`` is given; see :attr:`contexts`).
        ``language``: ``python``, ``javascript``, ``typescript`` or ``bash``
        (default: the context's, else the runtime's). ``timeout`` in seconds
        from the start of the execution (default 30, at most 300): on expiry
        the code is interrupted and the state survives. ``env_vars`` apply to
        this execution only.

        Output streams while the code runs: ``on_stdout`` / ``on_stderr`` get
        each chunk of text, ``on_result`` each :class:`~codebox.Result`,
        ``on_error`` the :class:`~codebox.ExecutionError`, in the order the
        code produced them. An error in the code is ``execution.error``, not
        an exception; API failures are exceptions. An exception raised by a
        callback stops the stream, which interrupts the code.
        """
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
        with self._transport.stream(call) as response:
            for line in self._transport.lines(call, response):
                if not line:
                    continue
                ops.pick(callbacks, builder.feed(ops.decode_json_line(line, "execution")))
                if builder.ended:
                    break
        return builder.finish()

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
            page = http.call(ops.list_sandboxes(status, metadata, page_size, cursor))
            yield from page.sandboxes
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
    finally:
        http.close()
