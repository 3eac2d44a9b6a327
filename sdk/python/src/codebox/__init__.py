"""Python SDK for codebox, a self-hosted Code Interpreter.

This package owns the client side of the native ``/api/v1`` HTTP API (see the
server's ``openapi/openapi.json``): sandbox lifecycle, shell commands, typed
errors and bounded retries. It must not grow methods for endpoints the server
does not publish; ``tests/test_openapi_contract.py`` holds it to that.

    from codebox import Sandbox

    with Sandbox.create(runtime="python3") as sbx:
        print(sbx.commands.run("python3 -c 'print(6*7)'").stdout)
"""

from __future__ import annotations

from ._config import API_KEY_ENV, API_URL_ENV, DEFAULT_API_URL, ConnectionConfig, RetryPolicy
from ._version import __version__
from .async_sandbox import AsyncCommands, AsyncSandbox
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
from .models import CommandResult, Resources, RuntimeInfo, SandboxInfo
from .sandbox import Commands, Sandbox

__all__ = [
    "__version__",
    "API_KEY_ENV",
    "API_URL_ENV",
    "DEFAULT_API_URL",
    "ConnectionConfig",
    "RetryPolicy",
    "Sandbox",
    "Commands",
    "AsyncSandbox",
    "AsyncCommands",
    "SandboxInfo",
    "Resources",
    "CommandResult",
    "RuntimeInfo",
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
