"""The SDK against the published OpenAPI document (``openapi/openapi.json``), so
the two cannot drift: every operation the SDK calls exists with that method,
the bodies it sends fit the request schemas, the fields it requires are
required by the response schemas, and every error code is mapped."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

import pytest

from codebox import AsyncSandbox, Sandbox, errors
from codebox import _endpoints as api
from codebox.models import CommandResult, Resources, RuntimeInfo, SandboxInfo

from _fakes import API_KEY, API_URL, REPO_ROOT, SANDBOX_ID, FakeServer, standard_server


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
        sbx.commands.run("true", timeout=5, env={"X": "1"}, cwd="/tmp", stdin="")

    async def run_async() -> None:
        [info async for info in AsyncSandbox.list(**kwargs)]
        await AsyncSandbox.runtimes(**kwargs)
        async with await AsyncSandbox.create(**kwargs) as sbx:
            await sbx.info()
            await sbx.set_timeout(60)
            await sbx.commands.run("true")

    asyncio.run(run_async())
    return fake


def test_every_endpoint_exists_with_its_method(document: Dict[str, Any]) -> None:
    for endpoint in api.ALL:
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
    assert used == {(e.method, e.template) for e in api.ALL}


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
        name = request_schema_name(document, method, template)
        check_body(document, name, json.loads(request.content))
        checked.add(name)
    assert checked == {"CreateSandboxRequest", "SetTimeoutRequest", "RunCommandRequest"}


def test_query_parameters_are_documented(document: Dict[str, Any]) -> None:
    fake = exercise_everything()
    documented = {p["name"] for p in operation(document, "GET", "/api/v1/sandboxes")["parameters"]}
    sent: List[str] = []
    for request in fake.requests:
        if request.method == "GET" and request.url.path == "/api/v1/sandboxes":
            sent.extend(request.url.params.keys())
    assert sent, "the exercise never listed sandboxes"
    for name in sent:
        generic = "metadata.KEY" if name.startswith("metadata.") else name
        assert generic in documented, f"list_sandboxes does not document ?{name}"


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
