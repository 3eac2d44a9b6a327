"""Sandbox and AsyncSandbox against a scripted fake server: what is sent, how
answers are read, what the context managers do."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, List

import httpx
import pytest

import codebox
from codebox import AsyncSandbox, Sandbox
from codebox.models import CommandResult, SandboxInfo, parse_timestamp

from _fakes import (
    API_KEY,
    API_URL,
    COMMAND_JSON,
    RUNTIMES_JSON,
    SANDBOX_ID,
    FakeServer,
    fail,
    killed_json,
    ok,
    sandbox_json,
    standard_server,
)

BASE = f"/api/v1/sandboxes/{SANDBOX_ID}"


def connect_kwargs(fake: FakeServer) -> Any:
    return {"api_url": API_URL, "api_key": API_KEY, "transport": fake.transport()}


def test_create_sends_only_the_runtime_by_default() -> None:
    fake = standard_server()
    with Sandbox.create(**connect_kwargs(fake)) as sbx:
        assert sbx.id == sbx.sandbox_id == SANDBOX_ID
    assert fake.body(0) == {"runtime": "python3"}
    request = fake.requests[0]
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["user-agent"] == f"codebox-python/{codebox.__version__}"
    assert request.headers["content-type"] == "application/json"


def test_create_sends_every_option() -> None:
    fake = standard_server()
    sbx = Sandbox.create(
        "node",
        cpu=0.5,
        memory=256,
        timeout=600,
        metadata={"team": "data"},
        env_vars={"A": "1"},
        **connect_kwargs(fake),
    )
    sbx.close()
    assert fake.body(0) == {
        "runtime": "node",
        "resources": {"cpu": 0.5, "memory": 256},
        "timeout": 600,
        "metadata": {"team": "data"},
        "env_vars": {"A": "1"},
    }


def test_one_resource_completes_with_the_documented_default() -> None:
    fake = standard_server()
    Sandbox.create(cpu=2, **connect_kwargs(fake)).close()
    Sandbox.create(memory=1024, **connect_kwargs(fake)).close()
    assert fake.body(0)["resources"] == {"cpu": 2, "memory": 512}
    assert fake.body(1)["resources"] == {"cpu": 1.0, "memory": 1024}


def test_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEBOX_API_URL", "http://env-host:9999/prefix/")
    monkeypatch.setenv("CODEBOX_API_KEY", "cbx_from_env")
    fake = FakeServer().on("GET", "/prefix/api/v1/runtimes", ok(RUNTIMES_JSON))
    Sandbox.runtimes(transport=fake.transport())
    request = fake.requests[0]
    assert str(request.url) == "http://env-host:9999/prefix/api/v1/runtimes"
    assert request.headers["x-api-key"] == "cbx_from_env"


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEBOX_API_URL", "http://env-host:9999")
    monkeypatch.setenv("CODEBOX_API_KEY", "cbx_from_env")
    fake = standard_server()
    Sandbox.runtimes(**connect_kwargs(fake))
    assert fake.requests[0].url.host == "codebox.test"
    assert fake.requests[0].headers["x-api-key"] == API_KEY


def test_default_url_is_the_local_server() -> None:
    fake = standard_server()
    Sandbox.runtimes(api_key=API_KEY, transport=fake.transport())
    assert str(fake.requests[0].url) == "http://127.0.0.1:3000/api/v1/runtimes"


@pytest.mark.parametrize("url", ["ftp://host", "127.0.0.1:3000", "http://host/?q=1"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        Sandbox.runtimes(api_url=url, api_key=API_KEY)


def test_info_reads_every_field() -> None:
    fake = standard_server()
    with Sandbox.create(**connect_kwargs(fake)) as sbx:
        info = sbx.info()
    assert info.status == "running" and info.is_live
    assert info.resources == codebox.Resources(cpu=1.0, memory=512)
    assert info.created_at == datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert info.ended_at is None and info.termination_reason is None


def test_connect_gets_the_sandbox_and_encodes_the_id() -> None:
    fake = standard_server()
    Sandbox.connect(SANDBOX_ID, **connect_kwargs(fake)).close()
    assert fake.calls() == [("GET", BASE)]
    with pytest.raises(codebox.NotFoundError):
        Sandbox.connect("../runtimes", **connect_kwargs(fake))
    # The id stays one path segment: it cannot reach another route.
    assert fake.requests[-1].url.raw_path == b"/api/v1/sandboxes/%2E%2E%2Fruntimes"


@pytest.mark.parametrize(
    "sandbox_id,raw", [("..", b"%2E%2E"), (".", b"%2E"), ("a b?c#d", b"a%20b%3Fc%23d")]
)
def test_ids_that_urls_would_normalise_stay_one_segment(sandbox_id: str, raw: bytes) -> None:
    fake = FakeServer()
    with pytest.raises(codebox.NotFoundError):
        Sandbox.connect(sandbox_id, **connect_kwargs(fake))
    assert fake.requests[-1].url.raw_path == b"/api/v1/sandboxes/" + raw


def test_list_follows_cursors_and_sends_filters() -> None:
    first = ok({"sandboxes": [sandbox_json("a" * 26), sandbox_json("b" * 26)], "next_cursor": "c1"})
    last = ok({"sandboxes": [sandbox_json("c" * 26)], "next_cursor": None})
    fake = FakeServer().on("GET", "/api/v1/sandboxes", first, last)
    found = Sandbox.list(
        status="running",
        metadata={"team": "data", "env": "dev"},
        page_size=2,
        **connect_kwargs(fake),
    )
    assert [info.id for info in found] == ["a" * 26, "b" * 26, "c" * 26]
    params = [dict(request.url.params) for request in fake.requests]
    common = {"status": "running", "metadata.team": "data", "metadata.env": "dev", "limit": "2"}
    assert params == [common, {**common, "cursor": "c1"}]


def test_list_checks_settings_at_once() -> None:
    with pytest.raises(codebox.AuthenticationError):
        Sandbox.list(api_url=API_URL)


def test_list_is_lazy() -> None:
    fake = FakeServer().on(
        "GET", "/api/v1/sandboxes", ok({"sandboxes": [sandbox_json()], "next_cursor": "x"})
    )
    iterator = Sandbox.list(**connect_kwargs(fake))
    assert fake.requests == []
    assert next(iter(iterator)).id == SANDBOX_ID
    assert len(fake.requests) == 1


def test_set_timeout_and_kill() -> None:
    fake = standard_server()
    sbx = Sandbox.create(**connect_kwargs(fake))
    sbx.set_timeout(1800)
    final = sbx.kill()
    sbx.close()
    assert fake.calls()[1:] == [("POST", f"{BASE}/timeout"), ("DELETE", BASE)]
    assert fake.body(1) == {"timeout": 1800}
    assert final.status == "terminated" and final.termination_reason == "killed"
    assert final.ended_at is not None and not final.is_live


def test_commands_run_sends_options_and_waits_long_enough() -> None:
    fake = standard_server()
    with Sandbox.create(**connect_kwargs(fake)) as sbx:
        result = sbx.commands.run("cat", timeout=120, env={"X": "1"}, cwd="/tmp", stdin="hi")
        sbx.commands.run("true")
    assert result == CommandResult(**COMMAND_JSON) and result.ok
    assert fake.body(1) == {
        "cmd": "cat",
        "timeout": 120,
        "env": {"X": "1"},
        "cwd": "/tmp",
        "stdin": "hi",
    }
    assert fake.body(2) == {"cmd": "true"}
    # The HTTP wait outlasts the command's own timeout (server default 30 s).
    assert fake.requests[1].extensions["timeout"]["read"] == 150.0
    assert fake.requests[2].extensions["timeout"]["read"] == 60.0


def test_command_result_ok() -> None:
    assert not CommandResult.from_api({**COMMAND_JSON, "exit_code": 1}).ok
    assert not CommandResult.from_api({**COMMAND_JSON, "timed_out": True}).ok


@pytest.mark.parametrize(
    "patch",
    [
        {"exit_code": True},
        {"exit_code": "0"},
        {"stdout": None},
        {"timed_out": 0},
        {"duration_ms": 1.5},
    ],
)
def test_command_result_rejects_wrong_types(patch: Any) -> None:
    with pytest.raises(codebox.UnexpectedResponseError):
        CommandResult.from_api({**COMMAND_JSON, **patch})


def test_sandbox_view_tolerates_new_fields_but_not_missing_ones() -> None:
    assert SandboxInfo.from_api({**sandbox_json(), "gpu": 1}).id == SANDBOX_ID
    broken = sandbox_json()
    del broken["expires_at"]
    with pytest.raises(codebox.UnexpectedResponseError):
        SandboxInfo.from_api(broken)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-11-29T10:00:00Z", datetime(2026, 11, 29, 10, 0, 0, tzinfo=timezone.utc)),
        ("2026-11-29T10:00:00.5Z", datetime(2026, 11, 29, 10, 0, 0, 500000, tzinfo=timezone.utc)),
        (
            "2026-11-29T10:00:00.123456789Z",
            datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=timezone.utc),
        ),
        ("2026-11-29T12:00:00+02:00", datetime(2026, 11, 29, 10, 0, 0, tzinfo=timezone.utc)),
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text, "t") == expected


@pytest.mark.parametrize("text", ["2026-11-29", "yesterday", 12, None])
def test_bad_timestamps(text: Any) -> None:
    with pytest.raises(codebox.UnexpectedResponseError):
        parse_timestamp(text, "t")


def test_context_manager_kills_on_exit() -> None:
    fake = standard_server()
    with Sandbox.create(**connect_kwargs(fake)):
        pass
    assert fake.calls() == [("POST", "/api/v1/sandboxes"), ("DELETE", BASE)]


def test_context_manager_does_not_kill_twice() -> None:
    fake = standard_server()
    with Sandbox.create(**connect_kwargs(fake)) as sbx:
        sbx.kill()
    assert [call for call in fake.calls() if call[0] == "DELETE"] == [("DELETE", BASE)]


def test_context_manager_accepts_an_already_ended_sandbox() -> None:
    fake = standard_server()
    fake.routes[("DELETE", BASE)] = [fail(410, "SANDBOX_GONE", reason="timeout")]
    with Sandbox.create(**connect_kwargs(fake)):
        pass
    assert fake.calls()[-1] == ("DELETE", BASE)


def test_context_manager_keeps_the_block_error_when_kill_fails() -> None:
    fake = standard_server()
    fake.routes[("DELETE", BASE)] = [fail(500, "INTERNAL_ERROR")]
    with pytest.raises(KeyError):
        with Sandbox.create(**connect_kwargs(fake)):
            raise KeyError("from the block")
    assert fake.calls()[-1] == ("DELETE", BASE)


def test_context_manager_raises_a_kill_failure_otherwise() -> None:
    fake = standard_server()
    fake.routes[("DELETE", BASE)] = [fail(500, "INTERNAL_ERROR")]
    with pytest.raises(codebox.InternalServerError):
        with Sandbox.create(**connect_kwargs(fake)):
            pass


def test_create_failure_raises_the_typed_error() -> None:
    fake = FakeServer().on(
        "POST",
        "/api/v1/sandboxes",
        fail(400, "VALIDATION_ERROR", "unknown runtime", field="runtime"),
    )
    with pytest.raises(codebox.ValidationError) as raised:
        Sandbox.create("cobol", **connect_kwargs(fake))
    assert raised.value.field == "runtime" and raised.value.status == 400


def test_runtimes() -> None:
    fake = standard_server()
    runtimes = Sandbox.runtimes(**connect_kwargs(fake))
    assert [(r.name, r.version, r.aliases) for r in runtimes] == [
        ("python3", "3.11.2", ("python3.11",))
    ]


# --- asyncio -----------------------------------------------------------------


def test_async_lifecycle() -> None:
    fake = standard_server()

    async def run() -> List[Any]:
        async with await AsyncSandbox.create(timeout=60, **connect_kwargs(fake)) as sbx:
            result = await sbx.commands.run("echo 42", timeout=5)
            info = await sbx.info()
            extended = await sbx.set_timeout(90)
        return [result, info, extended]

    result, info, extended = asyncio.run(run())
    assert result.stdout == "42\n" and info.id == extended.id == SANDBOX_ID
    assert fake.calls() == [
        ("POST", "/api/v1/sandboxes"),
        ("POST", f"{BASE}/commands"),
        ("GET", BASE),
        ("POST", f"{BASE}/timeout"),
        ("DELETE", BASE),
    ]
    assert fake.body(0) == {"runtime": "python3", "timeout": 60}
    assert fake.requests[1].extensions["timeout"]["read"] == 60.0


def test_async_list_and_runtimes() -> None:
    first = ok({"sandboxes": [sandbox_json("a" * 26)], "next_cursor": "c1"})
    last = ok({"sandboxes": [sandbox_json("b" * 26)], "next_cursor": None})
    fake = standard_server()
    fake.routes[("GET", "/api/v1/sandboxes")] = [first, last]

    async def run() -> Any:
        ids = [
            info.id async for info in AsyncSandbox.list(status="running", **connect_kwargs(fake))
        ]
        runtimes = await AsyncSandbox.runtimes(**connect_kwargs(fake))
        connected = await AsyncSandbox.connect(SANDBOX_ID, **connect_kwargs(fake))
        final = await connected.kill()
        await connected.close()
        return ids, runtimes, final

    ids, runtimes, final = asyncio.run(run())
    assert ids == ["a" * 26, "b" * 26]
    assert runtimes[0].name == "python3"
    assert final == SandboxInfo.from_api(killed_json())
    assert dict(fake.requests[1].url.params) == {"status": "running", "cursor": "c1"}


def test_async_context_manager_keeps_the_block_error() -> None:
    fake = standard_server()
    fake.routes[("DELETE", BASE)] = [fail(500, "INTERNAL_ERROR")]

    async def run() -> None:
        async with await AsyncSandbox.create(**connect_kwargs(fake)):
            raise KeyError("from the block")

    with pytest.raises(KeyError):
        asyncio.run(run())
    assert fake.calls()[-1] == ("DELETE", BASE)


def test_async_errors_are_typed() -> None:
    fake = FakeServer().on("POST", "/api/v1/sandboxes", fail(401, "UNAUTHORIZED", "bad key"))

    async def run() -> None:
        await AsyncSandbox.create(**connect_kwargs(fake))

    with pytest.raises(codebox.AuthenticationError):
        asyncio.run(run())


def test_a_closed_transport_is_not_reused_after_failed_create() -> None:
    closed: List[bool] = []

    class Tracking(httpx.MockTransport):
        def close(self) -> None:
            closed.append(True)

    fake = FakeServer().on("POST", "/api/v1/sandboxes", fail(400, "VALIDATION_ERROR"))
    with pytest.raises(codebox.ValidationError):
        Sandbox.create(api_url=API_URL, api_key=API_KEY, transport=Tracking(fake.handler))
    assert closed == [True]
