"""Typed exceptions, one per error code of the codebox API.

The server answers every failure with the envelope
``{"success": false, "error": {"code", "message", "field"?, "reason"?, "request_id"}}``
(``docs/api-errors.md``). :func:`error_from_response` turns such an answer into
the matching exception, so callers switch on types instead of strings. Answers
that are not an envelope (a proxy's HTML 502, say) are mapped by HTTP status,
with ``code`` left ``None``.
"""

from __future__ import annotations

import builtins
import json
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
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
    "error_from_response",
]


class CodeboxError(Exception):
    """Base of every error this SDK raises.

    ``code`` is the API's stable error code (``"NOT_FOUND"``...), or ``None``
    when the failure did not come with one (a transport failure, a non-JSON
    answer). ``status`` is the HTTP status when there was an answer.
    ``request_id`` is the server's id for the request: quote it when reporting
    a problem.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.message]
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


class InvalidRequestError(CodeboxError):
    """The request itself was malformed (``INVALID_JSON``, ``METHOD_NOT_ALLOWED``,
    ``UNSUPPORTED_MEDIA_TYPE``): usually a bug in the caller or this SDK."""


class ValidationError(InvalidRequestError):
    """``VALIDATION_ERROR``: a value is missing, unknown or out of range.

    ``field`` is the offending field as a dotted path (``resources.cpu``) when
    the server knows it.
    """

    def __init__(self, message: str, *, field: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.field = field


class AuthenticationError(CodeboxError):
    """``UNAUTHORIZED``: missing, unknown, revoked or expired credentials."""


class NotFoundError(CodeboxError):
    """``NOT_FOUND``: no such sandbox or route. Another user's sandbox is also
    not found, on purpose."""


class ConflictError(CodeboxError):
    """``CONFLICT``: the request does not fit the resource's current state."""


class SandboxGoneError(CodeboxError):
    """``SANDBOX_GONE``: the sandbox existed and has ended.

    ``reason`` says why: ``killed``, ``timeout``, ``oom``, ``server_shutdown``,
    ``server_restart``, ``agent_lost``, ``node_lost``, ``create_failed``.
    Create a new sandbox; never retry on the same id.
    """

    def __init__(self, message: str, *, reason: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason


class PayloadTooLargeError(CodeboxError):
    """``PAYLOAD_TOO_LARGE``: the body or the command is larger than allowed."""


class ResourceLimitError(CodeboxError):
    """``RESOURCE_LIMIT_ERROR``: a quota (live sandboxes per user) is exhausted.
    Waiting alone does not help: free something first. Never retried."""


class RateLimitError(CodeboxError):
    """``RATE_LIMITED``: too many requests. Retried automatically (bounded);
    raised when the retries are used up. ``retry_after`` is the server's hint
    in seconds, when it gave one."""

    def __init__(self, message: str, *, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class InternalServerError(CodeboxError):
    """``INTERNAL_ERROR``: a bug or an unexpected failure on the server."""


class ServiceUnavailableError(CodeboxError):
    """``SERVICE_UNAVAILABLE``: a dependency or capacity is unavailable. Retried
    automatically (bounded); ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class TimeoutError(CodeboxError, builtins.TimeoutError):  # noqa: A001 - mirrors the API's name
    """``TIMEOUT`` (the server's request timeout), or the client gave up waiting
    for an answer. Also a built-in :class:`TimeoutError`, so ``except
    TimeoutError`` catches it whichever one is in scope."""


class APIConnectionError(CodeboxError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke before an answer."""


class UnexpectedResponseError(CodeboxError):
    """The server answered something that is not the documented API (wrong
    shape, not JSON): a version mismatch or something in between."""


_BY_CODE: Dict[str, Type[CodeboxError]] = {
    "VALIDATION_ERROR": ValidationError,
    "INVALID_JSON": InvalidRequestError,
    "METHOD_NOT_ALLOWED": InvalidRequestError,
    "UNSUPPORTED_MEDIA_TYPE": InvalidRequestError,
    "UNAUTHORIZED": AuthenticationError,
    "NOT_FOUND": NotFoundError,
    "CONFLICT": ConflictError,
    "SANDBOX_GONE": SandboxGoneError,
    "PAYLOAD_TOO_LARGE": PayloadTooLargeError,
    "RESOURCE_LIMIT_ERROR": ResourceLimitError,
    "RATE_LIMITED": RateLimitError,
    "INTERNAL_ERROR": InternalServerError,
    "SERVICE_UNAVAILABLE": ServiceUnavailableError,
    "TIMEOUT": TimeoutError,
}

# For answers without an envelope (something between us and the server).
_BY_STATUS: Dict[int, Type[CodeboxError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    405: InvalidRequestError,
    409: ConflictError,
    410: SandboxGoneError,
    413: PayloadTooLargeError,
    415: InvalidRequestError,
    429: RateLimitError,
    500: InternalServerError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: TimeoutError,
}


def error_from_response(
    status: int,
    body: bytes,
    *,
    retry_after: Optional[float] = None,
    header_request_id: Optional[str] = None,
) -> CodeboxError:
    """The exception for a failed answer: by ``error.code`` when the body is
    the API's envelope, else by HTTP status."""
    envelope = _error_object(body)
    if envelope is None:
        return _from_status(status, retry_after, header_request_id)
    code = envelope.get("code")
    message = envelope.get("message")
    request_id = envelope.get("request_id") or header_request_id
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        # A code this SDK version does not know yet: fall back to the status
        # class but keep the code, so callers can still switch on it.
        cls = _BY_STATUS.get(status, InternalServerError if status >= 500 else CodeboxError)
    kwargs: Dict[str, Any] = {
        "code": code if isinstance(code, str) else None,
        "status": status,
        "request_id": request_id if isinstance(request_id, str) else None,
    }
    kwargs.update(_extra_fields(cls, envelope, retry_after))
    text = message if isinstance(message, str) and message else f"HTTP {status}"
    return cls(text, **kwargs)


def _error_object(body: bytes) -> Optional[Mapping[str, Any]]:
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    if not isinstance(decoded, dict) or decoded.get("success") is not False:
        return None
    error = decoded.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return None
    return error


def _extra_fields(
    cls: Type[CodeboxError], envelope: Mapping[str, Any], retry_after: Optional[float]
) -> Dict[str, Any]:
    if issubclass(cls, ValidationError):
        field = envelope.get("field")
        return {"field": field if isinstance(field, str) else None}
    if issubclass(cls, SandboxGoneError):
        reason = envelope.get("reason")
        return {"reason": reason if isinstance(reason, str) else None}
    if issubclass(cls, (RateLimitError, ServiceUnavailableError)):
        return {"retry_after": retry_after}
    return {}


def _from_status(
    status: int, retry_after: Optional[float], request_id: Optional[str]
) -> CodeboxError:
    cls = _BY_STATUS.get(status, InternalServerError if status >= 500 else CodeboxError)
    kwargs: Dict[str, Any] = {"status": status, "request_id": request_id}
    if issubclass(cls, (RateLimitError, ServiceUnavailableError)):
        kwargs["retry_after"] = retry_after
    return cls(f"HTTP {status} without an API error body", **kwargs)
