"""Retries: 429 RATE_LIMITED and 503 SERVICE_UNAVAILABLE are retried honouring
Retry-After, within max_attempts and max_total_wait; nothing else is."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import List, Optional, Type

import httpx
import pytest

import codebox
from codebox import _endpoints as api
from codebox._config import ConnectionConfig, RetryPolicy, parse_retry_after
from codebox._transport import AsyncTransport, SyncTransport

from _fakes import API_KEY, API_URL, RUNTIMES_JSON, FakeServer, fail, ok, sandbox_json

RUNTIMES = "/api/v1/runtimes"


def rate_limited(retry_after: Optional[str] = "2") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return fail(429, "RATE_LIMITED", headers=headers)


def unavailable(retry_after: Optional[str] = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return fail(503, "SERVICE_UNAVAILABLE", headers=headers)


def sync_transport(fake: FakeServer, policy: RetryPolicy, sleeps: List[float]) -> SyncTransport:
    config = ConnectionConfig.resolve(API_URL, API_KEY, retry=policy)
    return SyncTransport(config, transport=fake.transport(), sleep=sleeps.append)


def fixed_jitter(value: float) -> RetryPolicy:
    return RetryPolicy(jitter=lambda: value)


@pytest.mark.parametrize(
    "header,expected",
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-1", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        (None, None),
    ],
)
def test_parse_retry_after_seconds(header: Optional[str], expected: Optional[float]) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 11, 29, 10, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Sun, 29 Nov 2026 10:00:12 GMT", now=now) == 12.0
    assert parse_retry_after("Sun, 29 Nov 2026 09:59:00 GMT", now=now) == 0.0


def test_rate_limited_is_retried_after_retry_after() -> None:
    fake = FakeServer().on("GET", RUNTIMES, rate_limited("2"), rate_limited("3"), ok(RUNTIMES_JSON))
    sleeps: List[float] = []
    data = sync_transport(fake, RetryPolicy(), sleeps).request(api.LIST_RUNTIMES)
    assert data == RUNTIMES_JSON
    assert sleeps == [2.0, 3.0]
    assert len(fake.requests) == 3


def test_unavailable_without_retry_after_backs_off_exponentially() -> None:
    fake = FakeServer().on(
        "GET", RUNTIMES, unavailable(), unavailable(), unavailable(), ok(RUNTIMES_JSON)
    )
    sleeps: List[float] = []
    sync_transport(fake, fixed_jitter(1.0), sleeps).request(api.LIST_RUNTIMES)
    assert sleeps == [0.5, 1.0, 2.0]
    sleeps.clear()
    fake = FakeServer().on("GET", RUNTIMES, unavailable(), unavailable(), ok(RUNTIMES_JSON))
    sync_transport(fake, fixed_jitter(0.0), sleeps).request(api.LIST_RUNTIMES)
    # Jitter never goes below half the step, so waits still grow.
    assert sleeps == [0.25, 0.5]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(backoff_initial=1.0, backoff_max=3.0, jitter=lambda: 1.0)
    assert [policy.delay(n, None) for n in range(1, 6)] == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_attempts_are_bounded() -> None:
    fake = FakeServer().on("GET", RUNTIMES, unavailable("1"))
    sleeps: List[float] = []
    with pytest.raises(codebox.ServiceUnavailableError) as raised:
        sync_transport(fake, RetryPolicy(max_attempts=3), sleeps).request(api.LIST_RUNTIMES)
    assert len(fake.requests) == 3
    assert sleeps == [1.0, 1.0]
    assert raised.value.retry_after == 1.0


def test_total_wait_is_bounded() -> None:
    fake = FakeServer().on("GET", RUNTIMES, rate_limited("20"))
    sleeps: List[float] = []
    policy = RetryPolicy(max_attempts=10, max_total_wait=30.0)
    with pytest.raises(codebox.RateLimitError) as raised:
        sync_transport(fake, policy, sleeps).request(api.LIST_RUNTIMES)
    # 20 s fits the 30 s budget once; a second 20 s would not.
    assert sleeps == [20.0]
    assert len(fake.requests) == 2
    assert raised.value.retry_after == 20.0


def test_a_wait_longer_than_the_budget_is_raised_at_once() -> None:
    fake = FakeServer().on("GET", RUNTIMES, rate_limited("3600"))
    sleeps: List[float] = []
    with pytest.raises(codebox.RateLimitError) as raised:
        sync_transport(fake, RetryPolicy(), sleeps).request(api.LIST_RUNTIMES)
    assert sleeps == [] and len(fake.requests) == 1
    assert raised.value.retry_after == 3600.0


def test_retries_can_be_disabled() -> None:
    fake = FakeServer().on("GET", RUNTIMES, rate_limited("1"), ok(RUNTIMES_JSON))
    sleeps: List[float] = []
    with pytest.raises(codebox.RateLimitError):
        sync_transport(fake, RetryPolicy(max_attempts=1), sleeps).request(api.LIST_RUNTIMES)
    assert sleeps == [] and len(fake.requests) == 1


@pytest.mark.parametrize(
    "answer,expected",
    [
        (
            fail(429, "RESOURCE_LIMIT_ERROR", "sandboxes limit exceeded: 10"),
            codebox.ResourceLimitError,
        ),
        (fail(500, "INTERNAL_ERROR"), codebox.InternalServerError),
        (fail(504, "TIMEOUT"), codebox.TimeoutError),
        (fail(400, "VALIDATION_ERROR", field="runtime"), codebox.ValidationError),
        (fail(410, "SANDBOX_GONE", reason="killed"), codebox.SandboxGoneError),
    ],
)
def test_other_failures_are_not_retried(answer: httpx.Response, expected: Type[Exception]) -> None:
    fake = FakeServer().on("GET", RUNTIMES, answer, ok(RUNTIMES_JSON))
    sleeps: List[float] = []
    with pytest.raises(expected):
        sync_transport(fake, RetryPolicy(), sleeps).request(api.LIST_RUNTIMES)
    assert sleeps == [] and len(fake.requests) == 1


def test_a_gateway_error_without_envelope_is_not_retried() -> None:
    fake = FakeServer().on(
        "GET", RUNTIMES, httpx.Response(502, content=b"bad gateway"), ok(RUNTIMES_JSON)
    )
    sleeps: List[float] = []
    with pytest.raises(codebox.ServiceUnavailableError):
        sync_transport(fake, RetryPolicy(), sleeps).request(api.LIST_RUNTIMES)
    assert len(fake.requests) == 1


def test_async_transport_retries_the_same_way() -> None:
    fake = FakeServer().on("GET", RUNTIMES, rate_limited("2"), unavailable(), ok(RUNTIMES_JSON))
    sleeps: List[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run() -> object:
        config = ConnectionConfig.resolve(API_URL, API_KEY, retry=fixed_jitter(1.0))
        transport = AsyncTransport(config, transport=fake.transport(), sleep=fake_sleep)
        try:
            return await transport.request(api.LIST_RUNTIMES)
        finally:
            await transport.aclose()

    assert asyncio.run(run()) == RUNTIMES_JSON
    assert sleeps == [2.0, 1.0]


def test_sandbox_create_is_retried_when_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: List[float] = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    created = ok(sandbox_json(), status=201)
    fake = FakeServer().on("POST", "/api/v1/sandboxes", rate_limited("1"), created)
    sandbox = codebox.Sandbox.create(api_url=API_URL, api_key=API_KEY, transport=fake.transport())
    sandbox.close()
    assert sleeps == [1.0]
    assert fake.calls() == [("POST", "/api/v1/sandboxes")] * 2
    assert fake.body(0) == fake.body(1) == {"runtime": "python3"}


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_total_wait=-1)
