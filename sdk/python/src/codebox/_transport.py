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
from contextlib import asynccontextmanager, contextmanager
from typing import (
    Any,
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterator,
    Mapping,
    Optional,
    TypeVar,
)

import httpx

from ._config import NO_RETRY, ConnectionConfig, RetryPolicy, parse_retry_after
from ._endpoints import Endpoint
from ._ops import Call
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
T = TypeVar("T")
# An error answer is read up to this much: enough for any envelope, and a
# misbehaving proxy cannot make the client buffer an endless body.
_MAX_ERROR_BODY = 64 * 1024
# Chunks of a download handed to the caller.
DOWNLOAD_CHUNK = 256 * 1024


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


def _error_of(response: httpx.Response, body: bytes) -> CodeboxError:
    return error_from_response(
        response.status_code,
        body,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        header_request_id=response.headers.get("x-request-id"),
    )


def _transport_error(exc: httpx.HTTPError, endpoint: Endpoint, api_url: str) -> CodeboxError:
    what = f"{endpoint.method} {endpoint.template}"
    if isinstance(exc, httpx.StreamError):
        return APIConnectionError(f"{what}: the request body stream failed: {exc}")
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
    if seconds == float("inf"):
        connect = min(10.0, config.request_timeout)
        return httpx.Timeout(None, connect=connect, write=config.request_timeout)
    return httpx.Timeout(seconds, connect=min(10.0, seconds))


def _plain_call(
    endpoint: Endpoint,
    path_params: Optional[Dict[str, str]],
    params: Params,
    body: Any,
    timeout: Optional[float],
) -> "Call[Any]":
    return Call(endpoint, path_params or {}, params=params, json=body, timeout=timeout)


def _budget(config: ConnectionConfig, call: "Call[Any]") -> _RetryBudget:
    # A streamed body cannot be sent twice: such a call is never retried.
    return _RetryBudget(config.retry if call.replayable else NO_RETRY)


def _build(client: Any, config: ConnectionConfig, call: "Call[Any]") -> httpx.Request:
    request: httpx.Request = client.build_request(
        call.endpoint.method,
        call.path,
        params=call.params,
        json=call.json,
        content=call.content,
        headers=dict(call.headers),
        timeout=_timeout(config, call.timeout),
    )
    return request


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
        return self.call(_plain_call(endpoint, path_params, params, body, timeout))

    def call(self, call: "Call[T]") -> T:
        """Runs ``call`` and returns its parsed ``data``."""
        response = self._open(call, stream=False)
        return call.parse(_decode_success(response))

    @contextmanager
    def stream(self, call: "Call[Any]") -> Iterator[httpx.Response]:
        """The successful answer of ``call``, its body not read yet; closed
        when the block ends. Failures before the body are typed errors."""
        response = self._open(call, stream=True)
        try:
            yield response
        finally:
            response.close()

    def lines(self, call: "Call[Any]", response: httpx.Response) -> Iterator[str]:
        """The body's lines; a broken or silent connection is a typed error."""
        try:
            yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise _transport_error(exc, call.endpoint, self.config.api_url) from exc

    def chunks(self, call: "Call[Any]", response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(DOWNLOAD_CHUNK)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, call.endpoint, self.config.api_url) from exc

    def _open(self, call: "Call[Any]", *, stream: bool) -> httpx.Response:
        budget = _budget(self.config, call)
        while True:
            request = _build(self._client, self.config, call)
            try:
                response = self._client.send(request, stream=stream)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, call.endpoint, self.config.api_url) from exc
            if response.is_success:
                return response
            error = _error_of(response, self._error_body(call, response))
            delay = budget.delay_before_retry(error)
            if delay is None:
                raise error
            _log_retry(call.endpoint, error, delay)
            self._sleep(delay)

    def _error_body(self, call: "Call[Any]", response: httpx.Response) -> bytes:
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError as exc:
            raise _transport_error(exc, call.endpoint, self.config.api_url) from exc
        finally:
            response.close()
        return bytes(body)

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
        return await self.call(_plain_call(endpoint, path_params, params, body, timeout))

    async def call(self, call: "Call[T]") -> T:
        """Runs ``call`` and returns its parsed ``data``."""
        response = await self._open(call, stream=False)
        return call.parse(_decode_success(response))

    @asynccontextmanager
    async def stream(self, call: "Call[Any]") -> AsyncIterator[httpx.Response]:
        """As :meth:`SyncTransport.stream`."""
        response = await self._open(call, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def lines(self, call: "Call[Any]", response: httpx.Response) -> AsyncGenerator[str, None]:
        try:
            async for line in response.aiter_lines():
                yield line
        except httpx.HTTPError as exc:
            raise _transport_error(exc, call.endpoint, self.config.api_url) from exc

    async def chunks(
        self, call: "Call[Any]", response: httpx.Response
    ) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                yield chunk
        except httpx.HTTPError as exc:
            raise _transport_error(exc, call.endpoint, self.config.api_url) from exc

    async def _open(self, call: "Call[Any]", *, stream: bool) -> httpx.Response:
        budget = _budget(self.config, call)
        while True:
            request = _build(self._client, self.config, call)
            try:
                response = await self._client.send(request, stream=stream)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, call.endpoint, self.config.api_url) from exc
            if response.is_success:
                return response
            error = _error_of(response, await self._error_body(call, response))
            delay = budget.delay_before_retry(error)
            if delay is None:
                raise error
            _log_retry(call.endpoint, error, delay)
            await self._sleep(delay)

    async def _error_body(self, call: "Call[Any]", response: httpx.Response) -> bytes:
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError as exc:
            raise _transport_error(exc, call.endpoint, self.config.api_url) from exc
        finally:
            await response.aclose()
        return bytes(body)

    async def aclose(self) -> None:
        await self._client.aclose()
