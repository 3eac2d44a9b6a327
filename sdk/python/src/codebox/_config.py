"""Connection settings: where the server is, which key to use, how long to wait
and how to retry. Arguments win over the environment (``CODEBOX_API_URL``,
``CODEBOX_API_KEY``), which wins over the defaults."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Optional
from urllib.parse import urlsplit

import httpx

from ._version import __version__
from .errors import AuthenticationError

API_URL_ENV = "CODEBOX_API_URL"
API_KEY_ENV = "CODEBOX_API_KEY"
DEFAULT_API_URL = "http://127.0.0.1:3000"
# How long to wait for an ordinary API answer. Creating a sandbox builds a
# jail, and a busy host can take a few seconds: this leaves room for that.
DEFAULT_REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """How ``429 RATE_LIMITED`` and ``503 SERVICE_UNAVAILABLE`` are retried.

    A ``Retry-After`` header is honoured as the minimum wait; without one the
    wait grows exponentially from ``backoff_initial`` up to ``backoff_max``
    (with jitter, so many clients do not come back in step). Both bounds hold:
    at most ``max_attempts`` requests in all, and at most ``max_total_wait``
    seconds spent sleeping; an answer asking for a longer wait than what is
    left is raised at once instead (its ``retry_after`` tells the caller).
    ``RetryPolicy(max_attempts=1)`` disables retries.
    """

    max_attempts: int = 4
    max_total_wait: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.max_total_wait < 0 or self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("RetryPolicy waits must not be negative")

    def delay(self, retry_number: int, retry_after: Optional[float]) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first)."""
        if retry_after is not None:
            return retry_after
        ceiling = min(self.backoff_initial * (2 ** (retry_number - 1)), self.backoff_max)
        # "Equal jitter": at least half the exponential step, so waits still grow.
        return float(ceiling / 2 + ceiling / 2 * self.jitter())


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date.
    ``None`` when absent or unreadable (then backoff applies)."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(text, now)
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds


def _seconds_until_http_date(text: str, now: Optional[datetime]) -> Optional[float]:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now if now is not None else datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything needed to talk to one server. Build it with :meth:`resolve`."""

    api_url: str
    api_key: str
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __repr__(self) -> str:
        # The key is a secret: never print it in logs or tracebacks.
        return (
            f"ConnectionConfig(api_url={self.api_url!r}, api_key='***', "
            f"request_timeout={self.request_timeout!r}, retry={self.retry!r})"
        )

    @classmethod
    def resolve(
        cls,
        api_url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
    ) -> "ConnectionConfig":
        url = api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
        key = api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise AuthenticationError(
                f"no API key: pass api_key=... or set {API_KEY_ENV} "
                "(a local server writes its admin key to <data dir>/admin.key)"
            )
        timeout = DEFAULT_REQUEST_TIMEOUT if request_timeout is None else request_timeout
        if timeout <= 0:
            raise ValueError("request_timeout must be positive")
        return cls(
            api_url=_normalise_url(url),
            api_key=key,
            request_timeout=timeout,
            retry=retry if retry is not None else RetryPolicy(),
        )

    def headers(self) -> "dict[str, str]":
        return {
            "X-API-Key": self.api_key,
            "Accept": "application/json",
            "User-Agent": f"codebox-python/{__version__}",
        }

    def http_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.request_timeout, connect=min(10.0, self.request_timeout))


def _normalise_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"api_url must be an http(s) URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError("api_url must not have a query or a fragment")
    return url.rstrip("/")
