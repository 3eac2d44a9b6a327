"""Python SDK for codebox, a self-hosted Code Interpreter.

This package owns the client side of the native ``/api/v1`` HTTP API (see the
server's ``openapi/openapi.json``): sandbox lifecycle, stateful code
execution with streaming and rich results, contexts, files, commands and
background processes, the terminal, typed errors and bounded retries. It must
not grow methods for endpoints the server does not publish;
``tests/test_openapi_contract.py`` holds it to that.

    from codebox import Sandbox

    with Sandbox.create(runtime="python3") as sbx:
        sbx.run_code("x = 41")
        print(sbx.run_code("x + 1").text)   # 42
"""

from __future__ import annotations

from ._config import API_KEY_ENV, API_URL_ENV, DEFAULT_API_URL, ConnectionConfig, RetryPolicy
from ._version import __version__
from .async_sandbox import AsyncSandbox
from .commands import (
    AsyncCommandHandle,
    AsyncCommands,
    AsyncProcessStream,
    CommandHandle,
    Commands,
    ProcessStream,
)
from .contexts import AsyncContexts, Contexts
from .errors import (
    APIConnectionError,
    AuthenticationError,
    CodeboxError,
    ConflictError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ResourceLimitError,
    SandboxGoneError,
    ServiceUnavailableError,
    TimeoutError,
    UnexpectedResponseError,
    ValidationError,
)
from .files import AsyncFiles, AsyncFileWatch, Files, FileWatch
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
    Resources,
    Result,
    RuntimeInfo,
    SandboxInfo,
    SandboxMetrics,
    WriteInfo,
)
from .pty import AsyncPty, AsyncTerminal, Pty, Terminal
from .sandbox import Sandbox

__all__ = [
    "__version__",
    "API_KEY_ENV",
    "API_URL_ENV",
    "DEFAULT_API_URL",
    "ConnectionConfig",
    "RetryPolicy",
    "Sandbox",
    "Commands",
    "CommandHandle",
    "ProcessStream",
    "Contexts",
    "Files",
    "FileWatch",
    "Pty",
    "Terminal",
    "AsyncSandbox",
    "AsyncCommands",
    "AsyncCommandHandle",
    "AsyncProcessStream",
    "AsyncContexts",
    "AsyncFiles",
    "AsyncFileWatch",
    "AsyncPty",
    "AsyncTerminal",
    "SandboxInfo",
    "SandboxMetrics",
    "Resources",
    "CommandResult",
    "RuntimeInfo",
    "Execution",
    "ExecutionError",
    "Result",
    "Logs",
    "Context",
    "FileEntry",
    "FileListing",
    "FileEvent",
    "WriteInfo",
    "ProcessInfo",
    "ProcessEvent",
    "ProcessResult",
    "CodeboxError",
    "InvalidRequestError",
    "ValidationError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "SandboxGoneError",
    "PayloadTooLargeError",
    "ResourceLimitError",
    "RateLimitError",
    "InternalServerError",
    "ServiceUnavailableError",
    "TimeoutError",
    "APIConnectionError",
    "UnexpectedResponseError",
]
