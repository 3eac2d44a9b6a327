"""Every API operation as a request description (:class:`Call`) plus the code
that reads its answer, shared by the blocking and the asyncio clients.

A ``Call`` says what to send (endpoint, path and query parameters, a JSON or a
raw body, the wait) and how to read the envelope's ``data`` (``parse``). The
transports in :mod:`codebox._transport` execute it; the public classes only
pick the call and hand it to their transport. Streamed answers (NDJSON, SSE)
are decoded here too, event by event, by transport-free state machines
(:class:`ExecutionBuilder`, :class:`ProcessCollector`, :class:`SseDecoder`).
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterable,
    Callable,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    Union,
)

from . import _endpoints as api
from ._requests import command_body, command_http_timeout, create_body, list_params
from .errors import APIConnectionError, UnexpectedResponseError
from .models import (
    CommandResult,
    Context,
    Execution,
    ExecutionError,
    FileEntry,
    FileEvent,
    FileListing,
    Logs,
    ProcessEvent,
    ProcessInfo,
    ProcessResult,
    Result,
    RuntimeInfo,
    SandboxInfo,
    SandboxMetrics,
    SandboxPage,
    WriteInfo,
    contexts_from_api,
    processes_from_api,
    runtimes_from_api,
)

T = TypeVar("T")

NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
# A read timeout that never fires: a watch or a quiet process may stay silent
# for as long as it likes. Connecting is still bounded.
NO_READ_TIMEOUT = math.inf
# The server's default execution timeout, and how much longer than the
# execution a silent stream may stay quiet before the client gives up.
DEFAULT_EXECUTION_TIMEOUT = 30
EXECUTION_STREAM_MARGIN = 30.0

RawBody = Union[bytes, Iterable[bytes], AsyncIterable[bytes]]


def _identity(data: Any) -> Any:
    return data


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, transport-free. ``json`` and ``content`` are exclusive;
    only a call whose body is ``None`` or ``bytes`` is retried (a stream
    cannot be sent twice)."""

    endpoint: api.Endpoint
    path_params: Mapping[str, str] = field(default_factory=dict)
    params: Optional[Mapping[str, Any]] = None
    json: Any = None
    content: Optional[RawBody] = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None
    parse: Callable[[Any], T] = _identity

    @property
    def path(self) -> str:
        return self.endpoint.path(**self.path_params)

    @property
    def replayable(self) -> bool:
        return self.content is None or isinstance(self.content, bytes)

    def describe(self) -> str:
        return f"{self.endpoint.method} {self.endpoint.template}"


def _sandbox(sandbox_id: str) -> Dict[str, str]:
    return {"id": sandbox_id}


def _ignore(data: Any) -> None:
    return None


# --- sandboxes -----------------------------------------------------------------


def create_sandbox(
    runtime: str,
    cpu: Optional[float],
    memory: Optional[int],
    timeout: Optional[int],
    metadata: Optional[Mapping[str, str]],
    env_vars: Optional[Mapping[str, str]],
) -> Call[SandboxInfo]:
    body = create_body(runtime, cpu, memory, timeout, metadata, env_vars)
    return Call(api.CREATE_SANDBOX, json=body, parse=SandboxInfo.from_api)


def get_sandbox(sandbox_id: str) -> Call[SandboxInfo]:
    return Call(api.GET_SANDBOX, _sandbox(sandbox_id), parse=SandboxInfo.from_api)


def delete_sandbox(sandbox_id: str) -> Call[SandboxInfo]:
    return Call(api.DELETE_SANDBOX, _sandbox(sandbox_id), parse=SandboxInfo.from_api)


def set_timeout(sandbox_id: str, seconds: int) -> Call[SandboxInfo]:
    return Call(
        api.SET_SANDBOX_TIMEOUT,
        _sandbox(sandbox_id),
        json={"timeout": seconds},
        parse=SandboxInfo.from_api,
    )


def sandbox_metrics(sandbox_id: str) -> Call[SandboxMetrics]:
    return Call(api.GET_SANDBOX_METRICS, _sandbox(sandbox_id), parse=SandboxMetrics.from_api)


def list_sandboxes(
    status: Optional[str],
    metadata: Optional[Mapping[str, str]],
    limit: Optional[int],
    cursor: Optional[str],
) -> Call[SandboxPage]:
    params = list_params(status, metadata, limit, cursor)
    return Call(api.LIST_SANDBOXES, params=params, parse=SandboxPage.from_api)


def list_runtimes() -> Call[List[RuntimeInfo]]:
    return Call(api.LIST_RUNTIMES, parse=runtimes_from_api)


# --- commands and processes ------------------------------------------------------


def run_command(
    sandbox_id: str,
    cmd: str,
    timeout: Optional[int],
    env: Optional[Mapping[str, str]],
    cwd: Optional[str],
    stdin: Optional[str],
    request_timeout: float,
) -> Call[CommandResult]:
    return Call(
        api.RUN_COMMAND,
        _sandbox(sandbox_id),
        json=command_body(cmd, timeout, env, cwd, stdin),
        timeout=command_http_timeout(timeout, request_timeout),
        parse=CommandResult.from_api,
    )


def start_process(
    sandbox_id: str,
    cmd: str,
    *,
    args: Optional[List[str]],
    env: Optional[Mapping[str, str]],
    cwd: Optional[str],
    stdin: bool,
    timeout: Optional[int],
    tag: Optional[str],
) -> Call[ProcessInfo]:
    """A background process: the answer is its pid, at once."""
    body: Dict[str, Any] = {"cmd": cmd, "background": True}
    if args is not None:
        body["args"] = list(args)
    if env is not None:
        body["env"] = dict(env)
    if cwd is not None:
        body["cwd"] = cwd
    if stdin:
        body["stdin"] = True
    if timeout is not None:
        body["timeout"] = timeout
    if tag is not None:
        body["tag"] = tag
    return Call(api.START_PROCESS, _sandbox(sandbox_id), json=body, parse=ProcessInfo.from_api)


def list_processes(sandbox_id: str) -> Call[List[ProcessInfo]]:
    return Call(api.LIST_PROCESSES, _sandbox(sandbox_id), parse=processes_from_api)


def _process(sandbox_id: str, pid: int) -> Dict[str, str]:
    return {"id": sandbox_id, "pid": str(pid)}


def stream_process(sandbox_id: str, pid: int) -> Call[None]:
    """Reattach: NDJSON events from now on until ``end``."""
    return Call(
        api.STREAM_PROCESS,
        _process(sandbox_id, pid),
        headers={"Accept": NDJSON},
        timeout=NO_READ_TIMEOUT,
    )


def write_stdin(sandbox_id: str, pid: int, data: Union[str, bytes]) -> Call[int]:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return Call(
        api.WRITE_PROCESS_STDIN,
        _process(sandbox_id, pid),
        content=raw,
        headers={"Content-Type": "application/octet-stream"},
        parse=lambda d: _int_field(d, "written", "stdin answer"),
    )


def close_stdin(sandbox_id: str, pid: int) -> Call[None]:
    return Call(api.CLOSE_PROCESS_STDIN, _process(sandbox_id, pid), parse=_ignore)


def signal_process(sandbox_id: str, pid: int, signal: str) -> Call[None]:
    name = signal.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    return Call(api.SIGNAL_PROCESS, _process(sandbox_id, pid), json={"signal": name}, parse=_ignore)


def _int_field(data: Any, key: str, what: str) -> int:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise UnexpectedResponseError(f"{what}.{key} is missing or not an integer")
    return value


# --- code execution and contexts -------------------------------------------------


def context_id_of(context: Union[str, Context, None]) -> Optional[str]:
    if context is None or isinstance(context, str):
        return context
    return context.id


def execute(
    sandbox_id: str,
    code: str,
    *,
    language: Optional[str],
    context: Union[str, Context, None],
    timeout: Optional[int],
    env_vars: Optional[Mapping[str, str]],
) -> Call[None]:
    """``POST .../execute`` streamed as NDJSON."""
    body: Dict[str, Any] = {"code": code}
    if language is not None:
        body["language"] = language
    context_id = context_id_of(context)
    if context_id is not None:
        body["context_id"] = context_id
    if timeout is not None:
        body["timeout"] = timeout
    if env_vars is not None:
        body["env_vars"] = dict(env_vars)
    # Between two events the code may be silent for its whole timeout; an
    # execution also waits its turn behind others in the same context.
    execution = DEFAULT_EXECUTION_TIMEOUT if timeout is None else timeout
    return Call(
        api.EXECUTE_CODE,
        _sandbox(sandbox_id),
        json=body,
        headers={"Accept": NDJSON},
        timeout=float(execution) + EXECUTION_STREAM_MARGIN,
    )


def create_context(
    sandbox_id: str,
    language: Optional[str],
    cwd: Optional[str],
    env_vars: Optional[Mapping[str, str]],
) -> Call[Context]:
    body: Dict[str, Any] = {}
    if language is not None:
        body["language"] = language
    if cwd is not None:
        body["cwd"] = cwd
    if env_vars is not None:
        body["env_vars"] = dict(env_vars)
    return Call(api.CREATE_CONTEXT, _sandbox(sandbox_id), json=body, parse=Context.from_api)


def list_contexts(sandbox_id: str) -> Call[List[Context]]:
    return Call(api.LIST_CONTEXTS, _sandbox(sandbox_id), parse=contexts_from_api)


def _context(sandbox_id: str, context: Union[str, Context]) -> Dict[str, str]:
    return {"id": sandbox_id, "cid": context if isinstance(context, str) else context.id}


def delete_context(sandbox_id: str, context: Union[str, Context]) -> Call[None]:
    return Call(api.DELETE_CONTEXT, _context(sandbox_id, context), parse=_ignore)


def restart_context(sandbox_id: str, context: Union[str, Context]) -> Call[None]:
    return Call(api.RESTART_CONTEXT, _context(sandbox_id, context), parse=_ignore)


def interrupt_context(sandbox_id: str, context: Union[str, Context]) -> Call[None]:
    return Call(api.INTERRUPT_CONTEXT, _context(sandbox_id, context), parse=_ignore)


# --- files -------------------------------------------------------------------------


def download_file(sandbox_id: str, path: str, request_timeout: float) -> Call[None]:
    # The timeout bounds each read, not the whole transfer.
    return Call(
        api.DOWNLOAD_FILE,
        _sandbox(sandbox_id),
        params={"path": path},
        headers={"Accept": "application/octet-stream"},
        timeout=request_timeout,
    )


def upload_file(
    sandbox_id: str, path: str, content: RawBody, length: Optional[int]
) -> Call[WriteInfo]:
    headers = {"Content-Type": "application/octet-stream"}
    if length is not None:
        # Known up front: the server refuses an oversized upload at once, and
        # the body is sent without chunked encoding.
        headers["Content-Length"] = str(length)
    return Call(
        api.UPLOAD_FILE,
        _sandbox(sandbox_id),
        params={"path": path},
        content=content,
        headers=headers,
        parse=WriteInfo.from_api,
    )


def list_files(sandbox_id: str, path: Optional[str], depth: Optional[int]) -> Call[FileListing]:
    params: Dict[str, Any] = {}
    if path is not None:
        params["path"] = path
    if depth is not None:
        params["depth"] = depth
    return Call(api.LIST_FILES, _sandbox(sandbox_id), params=params, parse=FileListing.from_api)


def stat_file(sandbox_id: str, path: str) -> Call[FileEntry]:
    return Call(
        api.STAT_FILE, _sandbox(sandbox_id), params={"path": path}, parse=FileEntry.from_api
    )


def make_directory(sandbox_id: str, path: str, parents: bool) -> Call[FileEntry]:
    return Call(
        api.MAKE_DIRECTORY,
        _sandbox(sandbox_id),
        json={"path": path, "parents": parents},
        parse=FileEntry.from_api,
    )


def move_path(sandbox_id: str, source: str, destination: str, overwrite: bool) -> Call[FileEntry]:
    return Call(
        api.MOVE_PATH,
        _sandbox(sandbox_id),
        json={"from": source, "to": destination, "overwrite": overwrite},
        parse=FileEntry.from_api,
    )


def delete_file(sandbox_id: str, path: str, recursive: bool) -> Call[None]:
    params: Dict[str, Any] = {"path": path}
    if recursive:
        params["recursive"] = "true"
    return Call(api.DELETE_FILE, _sandbox(sandbox_id), params=params, parse=_ignore)


def watch_files(
    sandbox_id: str, path: Optional[str], recursive: bool, timeout: Optional[float] = None
) -> Call[None]:
    params: Dict[str, Any] = {}
    if path is not None:
        params["path"] = path
    if recursive:
        params["recursive"] = "true"
    return Call(
        api.WATCH_FILES,
        _sandbox(sandbox_id),
        params=params,
        headers={"Accept": EVENT_STREAM},
        timeout=NO_READ_TIMEOUT if timeout is None else timeout,
    )


# --- stream decoding -------------------------------------------------------------


def decode_json_line(line: str, what: str) -> Mapping[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise UnexpectedResponseError(f"{what}: a line of the stream is not JSON") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise UnexpectedResponseError(f"{what}: an event has no type")
    return event


# What an ExecutionBuilder hands to a callback: (callback name, argument).
Dispatch = Tuple[str, Any]


class ExecutionBuilder:
    """Collects the NDJSON events of one execution into an :class:`Execution`
    and says which callback each event goes to."""

    def __init__(self) -> None:
        self._stdout: List[str] = []
        self._stderr: List[str] = []
        self._results: List[Result] = []
        self._error: Optional[ExecutionError] = None
        self._end: Optional[Mapping[str, Any]] = None

    @property
    def ended(self) -> bool:
        return self._end is not None

    def feed(self, event: Mapping[str, Any]) -> Optional[Dispatch]:
        kind = event["type"]
        if self._end is not None:
            raise UnexpectedResponseError("execution stream: an event after `end`")
        if kind in ("stdout", "stderr"):
            text = event.get("text")
            if not isinstance(text, str):
                raise UnexpectedResponseError(f"execution stream: {kind} event without text")
            (self._stdout if kind == "stdout" else self._stderr).append(text)
            return ("on_" + kind, text)
        if kind == "result":
            result = Result.from_api(event)
            self._results.append(result)
            return ("on_result", result)
        if kind == "error":
            self._error = ExecutionError.from_api(event)
            return ("on_error", self._error)
        if kind == "end":
            self._end = event
            return None
        # A newer server's event type: ignored, as unknown fields are.
        return None

    def finish(self) -> Execution:
        end = self._end
        if end is None:
            raise APIConnectionError("the execution stream ended before its `end` event")

        def need(key: str, kind: type) -> Any:
            value = end.get(key)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise UnexpectedResponseError(f"execution end event: {key} is missing")
            return value

        reason = end.get("reason")
        return Execution(
            results=tuple(self._results),
            logs=Logs(tuple(self._stdout), tuple(self._stderr)),
            error=self._error,
            execution_id=need("execution_id", str),
            context_id=need("context_id", str),
            execution_count=need("execution_count", int),
            duration_ms=need("duration_ms", int),
            outcome=need("outcome", str),
            restarted=need("restarted", bool),
            truncated=need("truncated", bool),
            reason=reason if isinstance(reason, str) else None,
        )


class ProcessCollector:
    """Collects a process's events into a :class:`ProcessResult`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._stdout: List[str] = []
        self._stderr: List[str] = []
        self._dropped = 0
        self._end: Optional[ProcessEvent] = None

    @property
    def ended(self) -> bool:
        return self._end is not None

    def feed(self, event: ProcessEvent) -> Optional[Dispatch]:
        if event.type == "start":
            self._dropped += event.dropped_bytes
        elif event.type in ("stdout", "stderr"):
            (self._stdout if event.type == "stdout" else self._stderr).append(event.data)
            return ("on_" + event.type, event.data)
        elif event.type == "end":
            self._end = event
        return None

    def finish(self) -> ProcessResult:
        end = self._end
        if end is None:
            raise APIConnectionError(
                f"the output stream of process {self.pid} ended before its `end` event"
            )
        return ProcessResult(
            pid=self.pid,
            stdout="".join(self._stdout),
            stderr="".join(self._stderr),
            exit_code=end.exit_code,
            signal=end.signal,
            timed_out=end.timed_out,
            dropped_bytes=self._dropped,
        )


class SseDecoder:
    """Server-sent events from lines (without their line ends): ``feed``
    returns ``(event name, data)`` when a blank line completes an event."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: List[str] = []

    def feed(self, line: str) -> Optional[Tuple[str, str]]:
        if line == "":
            if not self._data:
                self._event = "message"
                return None
            done = (self._event, "\n".join(self._data))
            self._event, self._data = "message", []
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def file_event(data: str) -> FileEvent:
    try:
        decoded = json.loads(data)
    except ValueError as exc:
        raise UnexpectedResponseError("watch stream: an event's data is not JSON") from exc
    return FileEvent.from_api(decoded)


# --- callbacks ---------------------------------------------------------------------

# A callback takes one argument; an async client's callbacks may also be
# coroutine functions (awaited in order, before the next event is read).
Callback = Callable[[Any], Any]


def pick(callbacks: Mapping[str, Optional[Callback]], dispatch: Optional[Dispatch]) -> Any:
    """Calls the callback ``dispatch`` names, if given; returns what it returned
    (an awaitable for an async callback)."""
    if dispatch is None:
        return None
    callback = callbacks.get(dispatch[0])
    if callback is None:
        return None
    return callback(dispatch[1])


async def maybe_await(value: Any) -> None:
    """Awaits what an async client's callback returned, if it is awaitable."""
    if inspect.isawaitable(value):
        await value
