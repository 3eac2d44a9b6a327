"""Error mapping: every API error code becomes its exception, with its extras."""

from __future__ import annotations

import builtins
import json
from typing import Type

import httpx
import pytest

import codebox
from codebox import errors
from codebox._config import ConnectionConfig

from _fakes import API_KEY, API_URL, fail, ok, standard_server

CATALOGUE = [
    ("VALIDATION_ERROR", 400, codebox.ValidationError),
    ("INVALID_JSON", 400, codebox.InvalidRequestError),
    ("UNAUTHORIZED", 401, codebox.AuthenticationError),
    ("NOT_FOUND", 404, codebox.NotFoundError),
    ("METHOD_NOT_ALLOWED", 405, codebox.InvalidRequestError),
    ("CONFLICT", 409, codebox.ConflictError),
    ("SANDBOX_GONE", 410, codebox.SandboxGoneError),
    ("PAYLOAD_TOO_LARGE", 413, codebox.PayloadTooLargeError),
    ("UNSUPPORTED_MEDIA_TYPE", 415, codebox.InvalidRequestError),
    ("RESOURCE_LIMIT_ERROR", 429, codebox.ResourceLimitError),
    ("RATE_LIMITED", 429, codebox.RateLimitError),
    ("INTERNAL_ERROR", 500, codebox.InternalServerError),
    ("SERVICE_UNAVAILABLE", 503, codebox.ServiceUnavailableError),
    ("TIMEOUT", 504, codebox.TimeoutError),
]


def envelope(code: str, **extra: object) -> bytes:
    error = {"code": code, "message": "it failed", "request_id": "req-9", **extra}
    return json.dumps({"success": False, "error": error}).encode()


@pytest.mark.parametrize("code,status,expected", CATALOGUE)
def test_each_code_maps_to_its_exception(code: str, status: int, expected: Type[Exception]) -> None:
    error = errors.error_from_response(status, envelope(code))
    assert type(error) is expected
    assert isinstance(error, codebox.CodeboxError)
    assert (error.code, error.status, error.request_id) == (code, status, "req-9")
    assert error.message == "it failed"
    assert "req-9" in str(error) and code in str(error)


def test_validation_error_carries_the_field() -> None:
    error = errors.error_from_response(400, envelope("VALIDATION_ERROR", field="resources.cpu"))
    assert isinstance(error, codebox.ValidationError)
    assert error.field == "resources.cpu"
    assert errors.error_from_response(400, envelope("VALIDATION_ERROR")).field is None  # type: ignore[attr-defined]


def test_sandbox_gone_carries_the_reason() -> None:
    error = errors.error_from_response(410, envelope("SANDBOX_GONE", reason="oom"))
    assert isinstance(error, codebox.SandboxGoneError)
    assert error.reason == "oom"


@pytest.mark.parametrize("code,status", [("RATE_LIMITED", 429), ("SERVICE_UNAVAILABLE", 503)])
def test_retry_after_is_carried(code: str, status: int) -> None:
    error = errors.error_from_response(status, envelope(code), retry_after=7.0)
    assert error.retry_after == 7.0  # type: ignore[attr-defined]


def test_request_id_falls_back_to_the_header() -> None:
    body = json.dumps(
        {"success": False, "error": {"code": "NOT_FOUND", "message": "x", "request_id": None}}
    ).encode()
    error = errors.error_from_response(404, body, header_request_id="hdr-1")
    assert error.request_id == "hdr-1"


@pytest.mark.parametrize(
    "status,expected",
    [
        (502, codebox.ServiceUnavailableError),
        (503, codebox.ServiceUnavailableError),
        (404, codebox.NotFoundError),
        (401, codebox.AuthenticationError),
        (504, codebox.TimeoutError),
        (500, codebox.InternalServerError),
        (599, codebox.InternalServerError),
        (418, codebox.CodeboxError),
    ],
)
def test_answers_without_an_envelope_map_by_status(status: int, expected: Type[Exception]) -> None:
    error = errors.error_from_response(status, b"<html>Bad Gateway</html>", header_request_id="h")
    assert type(error) is expected
    assert error.code is None and error.status == status and error.request_id == "h"


def test_a_success_shaped_body_on_an_error_status_is_not_an_envelope() -> None:
    error = errors.error_from_response(500, b'{"success": true, "data": {}}')
    assert type(error) is codebox.InternalServerError and error.code is None


@pytest.mark.parametrize(
    "status,expected",
    [
        (400, codebox.InvalidRequestError),
        (500, codebox.InternalServerError),
        (418, codebox.CodeboxError),
    ],
)
def test_an_unknown_code_keeps_the_code(status: int, expected: Type[Exception]) -> None:
    error = errors.error_from_response(status, envelope("SOMETHING_NEW"))
    assert type(error) is expected
    assert error.code == "SOMETHING_NEW"


def test_timeout_and_connection_errors_are_also_builtins() -> None:
    assert issubclass(codebox.TimeoutError, builtins.TimeoutError)
    assert issubclass(codebox.APIConnectionError, builtins.ConnectionError)
    assert (
        str(codebox.TimeoutError("slow", code="TIMEOUT", status=504))
        == "slow (code=TIMEOUT, status=504)"
    )


def test_sdk_errors_raised_through_the_client() -> None:
    fake = standard_server().on(
        "GET", "/api/v1/sandboxes/missing", fail(404, "NOT_FOUND", "no such sandbox")
    )
    with pytest.raises(codebox.NotFoundError) as raised:
        codebox.Sandbox.connect(
            "missing", api_url=API_URL, api_key=API_KEY, transport=fake.transport()
        )
    assert raised.value.request_id == "req-123"
    assert raised.value.message == "no such sandbox"


def test_transport_failures_are_typed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(codebox.APIConnectionError) as refused:
        codebox.Sandbox.runtimes(
            api_url=API_URL, api_key=API_KEY, transport=httpx.MockTransport(refuse)
        )
    assert isinstance(refused.value.__cause__, httpx.ConnectError)
    assert API_URL in refused.value.message
    with pytest.raises(codebox.TimeoutError):
        codebox.Sandbox.runtimes(
            api_url=API_URL, api_key=API_KEY, transport=httpx.MockTransport(stall)
        )


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json={"data": {}}),
        httpx.Response(200, json={"success": True}),
        ok({"runtimes": "python3"}),
        ok({"runtimes": [{"name": "python3"}]}),
    ],
)
def test_malformed_success_answers_are_unexpected(answer: httpx.Response) -> None:
    transport = httpx.MockTransport(lambda request: answer)
    with pytest.raises(codebox.UnexpectedResponseError):
        codebox.Sandbox.runtimes(api_url=API_URL, api_key=API_KEY, transport=transport)


def test_missing_api_key_fails_before_any_request() -> None:
    fake = standard_server()
    with pytest.raises(codebox.AuthenticationError, match="CODEBOX_API_KEY"):
        codebox.Sandbox.create(api_url=API_URL, transport=fake.transport())
    assert fake.requests == []


def test_config_repr_hides_the_key() -> None:
    config = ConnectionConfig.resolve(API_URL, "cbx_secret_value")
    assert "cbx_secret_value" not in repr(config)
