"""Shell commands and background processes (``sbx.commands``), blocking and
asyncio. Both clients execute the same :mod:`codebox._ops` calls.

``commands.run(cmd)`` runs to completion and returns a
:class:`~codebox.CommandResult`; ``commands.run(cmd, background=True)`` starts
a process and returns a handle (:class:`CommandHandle`) to write its stdin,
signal it, and stream or wait for its output, also from another client later
(``commands.connect(pid)``).
"""

from __future__ import annotations

from types import TracebackType
from typing import (
    Any,
    AsyncGenerator,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Type,
    Union,
    overload,
)

import httpx

from . import _ops as ops
from ._transport import AsyncTransport, SyncTransport
from .models import CommandResult, ProcessEvent, ProcessInfo, ProcessResult

Output = Optional[ops.Callback]


class ProcessStream:
    """A process's output as it happens (``with handle.stream() as events:``).

    The stream is open (subscribed) when :meth:`CommandHandle.stream`
    returns, so output caused afterwards is never missed. Iterating yields
    :class:`~codebox.ProcessEvent` until ``end``; leaving the block only stops
    listening, the process keeps running.
    """

    def __init__(
        self,
        transport: SyncTransport,
        call: "ops.Call[Any]",
        pid: int,
    ) -> None:
        self.pid = pid
        self._transport = transport
        self._call = call
        self._context = transport.stream(call)
        self._response: httpx.Response = self._context.__enter__()
        self._lines = transport.lines(call, self._response)
        self._done = False
        self._closed = False

    def __iter__(self) -> Iterator[ProcessEvent]:
        return self

    def __next__(self) -> ProcessEvent:
        if self._done:
            raise StopIteration
        for line in self._lines:
            if not line:
                continue
            event = ProcessEvent.from_api(ops.decode_json_line(line, "process stream"))
            if event.type == "end":
                self._done = True
            return event
        self._done = True
        raise StopIteration

    def close(self) -> None:
        if self._closed:
            return
        self._closed = self._done = True
        self._context.__exit__(None, None, None)

    def __enter__(self) -> "ProcessStream":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()


class CommandHandle:
    """A background process (``commands.run(cmd, background=True)`` or
    ``commands.connect(pid)``)."""

    def __init__(self, sandbox_id: str, pid: int, transport: SyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport
        self.pid = pid

    def __repr__(self) -> str:
        return f"CommandHandle(pid={self.pid})"

    def send_stdin(self, data: Union[str, bytes]) -> int:
        """Writes to its stdin (started with ``stdin=True``); returns the bytes
        written. At most the server's body limit (2 MiB) per call."""
        return self._transport.call(ops.write_stdin(self._sandbox_id, self.pid, data))

    def close_stdin(self) -> None:
        """Its stdin reads end-of-file."""
        self._transport.call(ops.close_stdin(self._sandbox_id, self.pid))

    def signal(self, signal: str) -> None:
        """Sends ``signal`` (``SIGTERM``, ``SIGINT``, ``SIGKILL``, ``SIGHUP``,
        ``SIGQUIT``, ``SIGUSR1``, ``SIGUSR2``, ``SIGSTOP``, ``SIGCONT``; the
        ``SIG`` prefix is optional) to its process group."""
        self._transport.call(ops.signal_process(self._sandbox_id, self.pid, signal))

    def kill(self) -> None:
        """``SIGKILL`` to its process group."""
        self.signal("SIGKILL")

    def stream(self) -> ProcessStream:
        """Subscribes to its output: the events from now on, after up to 1 MiB
        buffered while nobody listened. ``NotFoundError`` once it has ended."""
        return ProcessStream(
            self._transport, ops.stream_process(self._sandbox_id, self.pid), self.pid
        )

    def wait(self, *, on_stdout: Output = None, on_stderr: Output = None) -> ProcessResult:
        """Streams its output (to the callbacks, in order) until it ends.

        The server keeps no exit status for a process nobody listened to: if
        it has already ended, this raises ``NotFoundError``. Subscribe first
        (:meth:`stream`) when the process may end quickly.
        """
        callbacks = {"on_stdout": on_stdout, "on_stderr": on_stderr}
        collector = ops.ProcessCollector(self.pid)
        with self.stream() as events:
            for event in events:
                ops.pick(callbacks, collector.feed(event))
        return collector.finish()


class Commands:
    """Shell commands and background processes in one sandbox (``sbx.commands``)."""

    def __init__(self, sandbox_id: str, transport: SyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport

    @overload
    def run(
        self,
        cmd: str,
        *,
        background: Literal[False] = False,
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
    ) -> CommandResult: ...

    @overload
    def run(
        self,
        cmd: str,
        *,
        background: Literal[True],
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: bool = False,
        args: Optional[List[str]] = None,
        tag: Optional[str] = None,
    ) -> CommandHandle: ...

    def run(
        self,
        cmd: str,
        *,
        background: bool = False,
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[str, bool, None] = None,
        args: Optional[List[str]] = None,
        tag: Optional[str] = None,
    ) -> Union[CommandResult, CommandHandle]:
        """Runs ``bash -c cmd`` as the sandbox's unprivileged user.

        In the foreground (default) it waits: ``timeout`` is in seconds
        (server default 30, at most 300), ``stdin`` a string fed to it; a
        command that outlives its timeout is killed and comes back with
        ``timed_out=True``, and a non-zero exit is not an exception either:
        check ``exit_code`` (or ``ok``).

        With ``background=True`` it answers at once with a
        :class:`CommandHandle`: the process runs until it exits, its
        ``timeout`` (none: as long as the sandbox) or a signal. ``stdin=True``
        keeps its stdin open for :meth:`CommandHandle.send_stdin`; ``args``
        runs ``cmd`` as a program with these arguments, without a shell;
        ``tag`` labels it in :meth:`list`.
        """
        if background:
            return self._start(cmd, timeout, env, cwd, stdin, args, tag)
        if isinstance(stdin, bool) or args is not None or tag is not None:
            raise TypeError("stdin must be a string, and args/tag need background=True")
        call = ops.run_command(
            self._sandbox_id, cmd, timeout, env, cwd, stdin, self._transport.config.request_timeout
        )
        return self._transport.call(call)

    def _start(
        self,
        cmd: str,
        timeout: Optional[int],
        env: Optional[Mapping[str, str]],
        cwd: Optional[str],
        stdin: Union[str, bool, None],
        args: Optional[List[str]],
        tag: Optional[str],
    ) -> CommandHandle:
        if stdin is not None and not isinstance(stdin, bool):
            raise TypeError("with background=True, stdin is a bool (keep it open)")
        call = ops.start_process(
            self._sandbox_id,
            cmd,
            args=args,
            env=env,
            cwd=cwd,
            stdin=bool(stdin),
            timeout=timeout,
            tag=tag,
        )
        info = self._transport.call(call)
        return CommandHandle(self._sandbox_id, info.pid, self._transport)

    def list(self) -> List[ProcessInfo]:
        """The running background processes."""
        return self._transport.call(ops.list_processes(self._sandbox_id))

    def connect(self, pid: int) -> CommandHandle:
        """A handle on a running process (from :meth:`list`, or another client)."""
        return CommandHandle(self._sandbox_id, pid, self._transport)

    def kill(self, pid: int) -> None:
        """``SIGKILL`` to the process group of ``pid``."""
        self.connect(pid).kill()

    def send_stdin(self, pid: int, data: Union[str, bytes]) -> int:
        return self.connect(pid).send_stdin(data)


class AsyncProcessStream:
    """As :class:`ProcessStream`: ``async with await handle.stream() as events:``."""

    def __init__(self, transport: AsyncTransport, call: "ops.Call[Any]", pid: int) -> None:
        self.pid = pid
        self._transport = transport
        self._call = call
        self._context = transport.stream(call)
        self._lines: Optional[AsyncGenerator[str, None]] = None
        self._done = False
        self._closed = False

    async def _open(self) -> "AsyncProcessStream":
        response = await self._context.__aenter__()
        self._lines = self._transport.lines(self._call, response)
        return self

    def __aiter__(self) -> "AsyncProcessStream":
        return self

    async def __anext__(self) -> ProcessEvent:
        if self._done or self._lines is None:
            raise StopAsyncIteration
        async for line in self._lines:
            if not line:
                continue
            event = ProcessEvent.from_api(ops.decode_json_line(line, "process stream"))
            if event.type == "end":
                self._done = True
            return event
        self._done = True
        raise StopAsyncIteration

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = self._done = True
        try:
            if self._lines is not None:
                await self._lines.aclose()
        finally:
            await self._context.__aexit__(None, None, None)

    async def __aenter__(self) -> "AsyncProcessStream":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()


class AsyncCommandHandle:
    """As :class:`CommandHandle`, with ``await``."""

    def __init__(self, sandbox_id: str, pid: int, transport: AsyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport
        self.pid = pid

    def __repr__(self) -> str:
        return f"AsyncCommandHandle(pid={self.pid})"

    async def send_stdin(self, data: Union[str, bytes]) -> int:
        return await self._transport.call(ops.write_stdin(self._sandbox_id, self.pid, data))

    async def close_stdin(self) -> None:
        await self._transport.call(ops.close_stdin(self._sandbox_id, self.pid))

    async def signal(self, signal: str) -> None:
        await self._transport.call(ops.signal_process(self._sandbox_id, self.pid, signal))

    async def kill(self) -> None:
        await self.signal("SIGKILL")

    async def stream(self) -> AsyncProcessStream:
        stream = AsyncProcessStream(
            self._transport, ops.stream_process(self._sandbox_id, self.pid), self.pid
        )
        return await stream._open()

    async def wait(self, *, on_stdout: Output = None, on_stderr: Output = None) -> ProcessResult:
        """As :meth:`CommandHandle.wait`; callbacks may be coroutine functions."""
        callbacks = {"on_stdout": on_stdout, "on_stderr": on_stderr}
        collector = ops.ProcessCollector(self.pid)
        async with await self.stream() as events:
            async for event in events:
                await ops.maybe_await(ops.pick(callbacks, collector.feed(event)))
        return collector.finish()


class AsyncCommands:
    """As :class:`Commands`, with ``await``."""

    def __init__(self, sandbox_id: str, transport: AsyncTransport) -> None:
        self._sandbox_id = sandbox_id
        self._transport = transport

    @overload
    async def run(
        self,
        cmd: str,
        *,
        background: Literal[False] = False,
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: str,
        *,
        background: Literal[True],
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: bool = False,
        args: Optional[List[str]] = None,
        tag: Optional[str] = None,
    ) -> AsyncCommandHandle: ...

    async def run(
        self,
        cmd: str,
        *,
        background: bool = False,
        timeout: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[str, bool, None] = None,
        args: Optional[List[str]] = None,
        tag: Optional[str] = None,
    ) -> Union[CommandResult, AsyncCommandHandle]:
        """See :meth:`codebox.Commands.run`."""
        if background:
            if stdin is not None and not isinstance(stdin, bool):
                raise TypeError("with background=True, stdin is a bool (keep it open)")
            call = ops.start_process(
                self._sandbox_id,
                cmd,
                args=args,
                env=env,
                cwd=cwd,
                stdin=bool(stdin),
                timeout=timeout,
                tag=tag,
            )
            info = await self._transport.call(call)
            return AsyncCommandHandle(self._sandbox_id, info.pid, self._transport)
        if isinstance(stdin, bool) or args is not None or tag is not None:
            raise TypeError("stdin must be a string, and args/tag need background=True")
        call_fg = ops.run_command(
            self._sandbox_id, cmd, timeout, env, cwd, stdin, self._transport.config.request_timeout
        )
        return await self._transport.call(call_fg)

    async def list(self) -> List[ProcessInfo]:
        return await self._transport.call(ops.list_processes(self._sandbox_id))

    def connect(self, pid: int) -> AsyncCommandHandle:
        return AsyncCommandHandle(self._sandbox_id, pid, self._transport)

    async def kill(self, pid: int) -> None:
        await self.connect(pid).kill()

    async def send_stdin(self, pid: int, data: Union[str, bytes]) -> int:
        return await self.connect(pid).send_stdin(data)
