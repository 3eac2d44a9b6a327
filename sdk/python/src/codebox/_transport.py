"""HTTP plumbing shared by :class:`~codebox.Sandbox` and
:class:`~codebox.AsyncSandbox`: sends one API operation, unwraps the
``{"success": true, "data": ...}`` envelope, turns failures into typed errors
and retries ``429 RATE_LIMITED`` / ``503 SERVICE_UNAVAILABLE`` within the
:class:`~codebox.RetryPolicy` bounds. Knows nothing about sandboxes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional

import httpx

from ._config import ConnectionConfig, RetryPolicy, parse_retry_after
from ._endpoints import Endpoint
from .errors import (
    APIConnectionError,
    CodeboxError,
    RateLimitError,
    ServiceUnavailableError,
    TimeoutError,
    UnexpectedResponseError,
    error_from_response,
)

logger = logging.getLogger("codebox")

# Statuses worth retrying unchanged: the server refused before doing the work.
# A 429 RESOURCE_LIMIT_ERROR (quota) is not retried: waiting does not free it.
_RETRYABLE_STATUSES = (429, 503)

Params = Optional[Mapping[str, Any]]


class _RetryBudget:
    """Counts attempts and sleep for one logical request."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._attempts = 1
        self._waited = 0.0

    def delay_before_retry(self, error: CodeboxError) -> Optional[float]:
        """Seconds to sleep before trying again, or ``None`` to raise ``error``."""
        if not isinstance(error, (RateLimitError, ServiceUnavailableError)):
            return None
        if error.status not in _RETRYABLE_STATUSES:
            return None
        if self._attempts >= self._policy.max_attempts:
            return None
        delay = self._policy.delay(self._attempts, error.retry_after)
        if self._waited + delay > self._policy.max_total_wait:
            return None
        self._attempts += 1
        self._waited += delay
        return delay


def _decode_success(response: httpx.Response) -> Any:
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise UnexpectedResponseError(
            "the server's answer is not JSON",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from exc
    if not isinstance(body, dict) or body.get("success") is not True or "data" not in body:
        raise UnexpectedResponseError(
            "the server's answer is not the API's success envelope",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
        )
    return body["data"]


def _error_of(response: httpx.Response) -> CodeboxError:
    return error_from_response(
        response.status_code,
        response.content,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        header_request_id=response.headers.get("x-request-id"),
    )


def _transport_error(exc: httpx.HTTPError, endpoint: Endpoint, api_url: str) -> CodeboxError:
    what = f"{endpoint.method} {endpoint.template}"
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(f"no answer in time from {api_url} for {what}")
    return APIConnectionError(
        f"cannot reach the codebox server at {api_url} for {what}: {type(exc).__name__}"
    )


def _log_retry(endpoint: Endpoint, error: CodeboxError, delay: float) -> None:
    logger.warning(
        "codebox: %s %s answered %s, retrying in %.2fs (request_id=%s)",
        endpoint.method,
        endpoint.template,
        error.code or error.status,
        delay,
        error.request_id,
    )


def _timeout(config: ConnectionConfig, seconds: Optional[float]) -> httpx.Timeout:
    if seconds is None:
        return config.http_timeout()
    return httpx.Timeout(seconds, connect=min(10.0, seconds))


class SyncTransport:
    """Blocking transport over one :class:`httpx.Client` (connection pooling)."""

    def __init__(
        self,
        config: ConnectionConfig,
        transport: Optional[httpx.BaseTransport] = None,
        sleep: Optional[Callable[[float], None]] = None,
    ) -> None:
        self.config = config
        # Looked up now, not at import, so tests can patch `time.sleep`.
        self._sleep = sleep if sleep is not None else time.sleep
        self._client = httpx.Client(
            base_url=config.api_url,
            headers=config.headers(),
            timeout=config.http_timeout(),
            transport=transport,
        )

    def request(
        self,
        endpoint: Endpoint,
        *,
        path_params: Optional[Dict[str, str]] = None,
        params: Params = None,
        body: Any = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Runs ``endpoint`` and returns the envelope's ``data``."""
        budget = _RetryBudget(self.config.retry)
        path = endpoint.path(**(path_params or {}))
        while True:
            response = self._send(endpoint, path, params, body, timeout)
            if response.is_success:
                return _decode_success(response)
            error = _error_of(response)
            delay = budget.delay_before_retry(error)
            if delay is None:
                raise error
            _log_retry(endpoint, error, delay)
            self._sleep(delay)

    def _send(
        self, endpoint: Endpoint, path: str, params: Params, body: Any, timeout: Optional[float]
    ) -> httpx.Response:
        try:
            return self._client.request(
                endpoint.method,
                path,
                params=params,
                json=body,
                timeout=_timeout(self.config, timeout),
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, endpoint, self.config.api_url) from exc

    def close(self) -> None:
        self._client.close()


class AsyncTransport:
    """The same over one :class:`httpx.AsyncClient`."""

    def __init__(
        self,
        config: ConnectionConfig,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        sleep: Optional[Callable[[float], Awaitable[None]]] = None,
    ) -> None:
        self.config = config
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._client = httpx.AsyncClient(
            base_url=config.api_url,
            headers=config.headers(),
            timeout=config.http_timeout(),
            transport=transport,
        )

    async def request(
        self,
        endpoint: Endpoint,
        *,
        path_params: Optional[Dict[str, str]] = None,
        params: Params = None,
        body: Any = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Runs ``endpoint`` and returns the envelope's ``data``."""
        budget = _RetryBudget(self.config.retry)
        path = endpoint.path(**(path_params or {}))
        while True:
            response = await self._send(endpoint, path, params, body, timeout)
            if response.is_success:
                return _decode_success(response)
            error = _error_of(response)
            delay = budget.delay_before_retry(error)
            if delay is None:
                raise error
            _log_retry(endpoint, error, delay)
            await self._sleep(delay)

    async def _send(
        self, endpoint: Endpoint, path: str, params: Params, body: Any, timeout: Optional[float]
    ) -> httpx.Response:
        try:
            return await self._client.request(
                endpoint.method,
                path,
                params=params,
                json=body,
                timeout=_timeout(self.config, timeout),
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, endpoint, self.config.api_url) from exc

    async def aclose(self) -> None:
        await self._client.aclose()
