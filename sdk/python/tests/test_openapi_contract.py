"""The SDK against the published OpenAPI document (``openapi/openapi.json``), so
the two cannot drift: every operation the SDK calls exists with that method,
the bodies it sends fit the request schemas, the fields it requires are
required by the response schemas, and every error code is mapped."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Set, Tuple

import pytest

from codebox import AsyncSandbox, Sandbox, errors
from codebox import _endpoints as api
from codebox.models import (
    CommandResult,
    Context,
    ExecutionError,
    FileEntry,
    ProcessInfo,
    Resources,
    RuntimeInfo,
    SandboxInfo,
    SandboxMetrics,
    WriteInfo,
)

from _fakes import API_KEY, API_URL, REPO_ROOT, SANDBOX_ID, FakeServer, standard_server

# Operations that are not plain HTTP requests of the transports (WebSocket).
WEBSOCKETS = {api.OPEN_PTY}
HTTP_ENDPOINTS = tuple(e for e in api.ALL if e not in WEBSOCKETS)
# Operations whose body is raw bytes, not a JSON schema.
RAW_BODIES = {
    (api.UPLOAD_FILE.method, api.UPLOAD_FILE.template),
    (
        api.WRITE_PROCESS_STDIN.method,
        api.WRITE_PROCESS_STDIN.template,
    ),
}


@pytest.fixture(scope="module")
def document() -> Dict[str, Any]:
    path = Path(os.environ.get("CODEBOX_OPENAPI", REPO_ROOT / "openapi" / "openapi.json"))
    loaded: Dict[str, Any] = json.loads(path.read_text())
    return loaded


def schema(document: Dict[str, Any], name: str) -> Dict[str, Any]:
    found: Dict[str, Any] = document["components"]["schemas"][name]
    return found


def operation(document: Dict[str, Any], method: str, path: str) -> Dict[str, Any]:
    found: Dict[str, Any] = document["paths"][path][method.lower()]
    return found


def template_regex(template: str) -> "re.Pattern[str]":
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$")


def match_operation(document: Dict[str, Any], method: str, path: str) -> Tuple[str, str]:
    for template, operations in document["paths"].items():
        if template_regex(template).match(path) and method.lower() in operations:
            return method, template
    raise AssertionError(f"{method} {path} is not an operation of the OpenAPI document")


def exercise_everything() -> FakeServer:
    """Calls every public method of both clients against the fake server."""
    fake = standard_server()
    kwargs: Dict[str, Any] = {"api_url": API_URL, "api_key": API_KEY, "transport": fake.transport()}
    list(Sandbox.list(status="running", metadata={"k": "v"}, page_size=5, **kwargs))
    Sandbox.runtimes(**kwargs)
    Sandbox.connect(SANDBOX_ID, **kwargs).close()
    with Sandbox.create(
        "python3", cpu=1, memory=512, timeout=60, metadata={"a": "b"}, env_vars={"E": "1"}, **kwargs
    ) as sbx:
        sbx.info()
        sbx.set_timeout(60)
        sbx.metrics()
        sbx.commands.run("true", timeout=5, env={"X": "1"}, cwd="/tmp", stdin="")
        exercise_code_files_processes(sbx)

    async def run_async() -> None:
        [info async for info in AsyncSandbox.list(**kwargs)]
        await AsyncSandbox.runtimes(**kwargs)
        async with await AsyncSandbox.create(**kwargs) as sbx:
            await sbx.info()
            await sbx.set_timeout(60)
            await sbx.metrics()
            await sbx.commands.run("true")
            ctx = await sbx.contexts.create("python", cwd="/tmp", env_vars={"A": "1"})
            await sbx.run_code("1", language="python", context=ctx, timeout=5, env_vars={"B": "2"})
            await sbx.contexts.list()
            await sbx.contexts.restart(ctx)
            await sbx.contexts.interrupt(ctx)
            await sbx.contexts.remove(ctx)
            await sbx.files.read("a.txt")
            await sbx.files.write("a.txt", b"x")
            await sbx.files.list("/home/user", depth=2)
            await sbx.files.exists("a.txt")
            await sbx.files.mkdir("d", parents=True)
            await sbx.files.move("a", "b", overwrite=True)
            await sbx.files.remove("d", recursive=True)
            async with await sbx.files.watch("/home/user", recursive=True) as watch:
                [event async for event in watch]
            handle = await sbx.commands.run(
                "cat", background=True, stdin=True, timeout=60, env={"C": "3"}, cwd="/tmp", tag="t"
            )
            await handle.send_stdin("x")
            await handle.close_stdin()
            await handle.signal("SIGTERM")
            await handle.wait()
            await sbx.commands.list()

    asyncio.run(run_async())
    return fake


def exercise_code_files_processes(sbx: Sandbox) -> None:
    ctx = sbx.contexts.create("python", cwd="/tmp", env_vars={"A": "1"})
    sbx.run_code("1", language="python", context=ctx, timeout=5, env_vars={"B": "2"})
    sbx.contexts.list()
    sbx.contexts.restart(ctx)
    sbx.contexts.interrupt(ctx)
    sbx.contexts.remove(ctx)
    sbx.files.read("a.txt")
    sbx.files.download("a.txt", io.BytesIO())
    sbx.files.write("a.txt", "text")
    sbx.files.write("b.bin", io.BytesIO(b"streamed"))
    sbx.files.list("/home/user", depth=2)
    sbx.files.stat("a.txt")
    sbx.files.mkdir("d", parents=False)
    sbx.files.move("a", "b", overwrite=True)
    sbx.files.remove("d", recursive=True)
    with sbx.files.watch("/home/user", recursive=True) as watch:
        list(watch)
    handle = sbx.commands.run(
        "cat", background=True, stdin=True, timeout=60, env={"C": "3"}, cwd="/tmp", tag="t"
    )
    handle.send_stdin(b"x")
    handle.close_stdin()
    handle.kill()
    handle.wait()
    sbx.commands.list()
    sbx.commands.run("python3", background=True, args=["-c", "pass"])


def test_every_endpoint_exists_with_its_method(document: Dict[str, Any]) -> None:
    for endpoint in HTTP_ENDPOINTS:
        operations = document["paths"].get(endpoint.template)
        assert operations is not None, f"{endpoint.template} is not in openapi.json"
        assert endpoint.method.lower() in operations, f"{endpoint.method} {endpoint.template}"


def test_the_endpoint_table_is_complete() -> None:
    declared = {value for value in vars(api).values() if isinstance(value, api.Endpoint)}
    assert declared == set(api.ALL)


def test_every_request_the_sdk_sends_is_a_documented_operation(document: Dict[str, Any]) -> None:
    fake = exercise_everything()
    used = {match_operation(document, r.method, r.url.path) for r in fake.requests}
    # And the exercise really covers the table, so the check above means something.
    assert used == {(e.method, e.template) for e in HTTP_ENDPOINTS}


def test_websocket_routes_are_documented(document: Dict[str, Any]) -> None:
    for endpoint in WEBSOCKETS:
        operations = document["paths"].get(endpoint.template)
        if operations is None:
            pytest.skip(f"the server does not publish {endpoint.template} yet (PTY route)")
        assert endpoint.method.lower() in operations


def request_schema_name(document: Dict[str, Any], method: str, template: str) -> str:
    body = operation(document, method, template)["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    return str(ref.rsplit("/", 1)[1])


def check_body(document: Dict[str, Any], name: str, body: Dict[str, Any]) -> None:
    spec = schema(document, name)
    assert set(spec.get("required", [])) <= set(body), f"{name}: missing required fields"
    unknown = set(body) - set(spec["properties"])
    assert not unknown, f"{name} does not document {unknown}"
    if "resources" in body:
        check_body(document, "Resources", body["resources"])


def test_request_bodies_fit_their_schemas(document: Dict[str, Any]) -> None:
    fake = exercise_everything()
    checked: Set[str] = set()
    for request in fake.requests:
        if not request.content:
            continue
        method, template = match_operation(document, request.method, request.url.path)
        if (method, template) in RAW_BODIES:
            content = operation(document, method, template)["requestBody"]["content"]
            assert "application/octet-stream" in content or "*/*" in content, template
            continue
        name = request_schema_name(document, method, template)
        check_body(document, name, json.loads(request.content))
        checked.add(name)
    assert checked == {
        "CreateSandboxRequest",
        "SetTimeoutRequest",
        "RunCommandRequest",
        "ExecuteRequest",
        "CreateContextRequest",
        "MakeDirRequest",
        "MoveRequest",
        "StartProcessRequest",
        "SignalRequest",
    }


def test_query_parameters_are_documented(document: Dict[str, Any]) -> None:
    fake = exercise_everything()
    sent: Dict[Tuple[str, str], Set[str]] = {}
    for request in fake.requests:
        key = match_operation(document, request.method, request.url.path)
        sent.setdefault(key, set()).update(request.url.params.keys())
    assert sent[("GET", "/api/v1/sandboxes")], "the exercise never listed sandboxes"
    for (method, template), names in sent.items():
        documented = {
            p["name"]
            for p in operation(document, method, template).get("parameters", [])
            if p.get("in") == "query"
        }
        for name in names:
            generic = "metadata.KEY" if name.startswith("metadata.") else name
            assert generic in documented, f"{method} {template} does not document ?{name}"


def test_streams_are_asked_for_in_a_documented_media_type(document: Dict[str, Any]) -> None:
    fake = exercise_everything()
    streamed = 0
    for request in fake.requests:
        accept = request.headers.get("accept", "")
        if accept not in ("application/x-ndjson", "text/event-stream"):
            continue
        method, template = match_operation(document, request.method, request.url.path)
        responses = operation(document, method, template)["responses"]
        media = {m for answer in responses.values() for m in answer.get("content", {})}
        assert accept in media, f"{method} {template} does not answer {accept}"
        streamed += 1
    assert streamed >= 4


def required_by_sdk(model: Any) -> Set[str]:
    return {
        f.name
        for f in dataclasses.fields(model)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


@pytest.mark.parametrize(
    "model,name",
    [
        (SandboxInfo, "Sandbox"),
        (Resources, "Resources"),
        (CommandResult, "CommandResult"),
        (RuntimeInfo, "Runtime"),
        (SandboxMetrics, "SandboxMetrics"),
        (Context, "Context"),
        (ExecutionError, "ExecutionError"),
        (FileEntry, "FileEntry"),
        (WriteInfo, "FileUpload"),
        (ProcessInfo, "Process"),
    ],
)
def test_fields_the_sdk_requires_are_required_by_the_api(
    model: Any, name: str, document: Dict[str, Any]
) -> None:
    spec = schema(document, name)
    assert required_by_sdk(model) <= set(spec["required"])
    assert {f.name for f in dataclasses.fields(model)} <= set(spec["properties"])


def test_every_error_code_is_mapped(document: Dict[str, Any]) -> None:
    codes = schema(document, "ErrorEnvelope")["properties"]["error"]["properties"]["code"]["enum"]
    assert set(codes) == set(errors._BY_CODE)


def test_termination_reasons_and_statuses_are_the_documented_ones(document: Dict[str, Any]) -> None:
    sandbox = schema(document, "Sandbox")["properties"]
    doc = errors.SandboxGoneError.__doc__ or ""
    for reason in sandbox["termination_reason"]["enum"]:
        assert reason in doc, f"SandboxGoneError does not document reason {reason}"
    assert set(sandbox["status"]["enum"]) >= {"creating", "running"}
