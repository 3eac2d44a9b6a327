"""Contract tests against a real ``codebox serve`` (see the ``server`` fixture):
the SDK's calls, answers and error mapping as the server really behaves."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Dict, Iterator, List

import pytest

import codebox
from codebox import AsyncSandbox, RetryPolicy, Sandbox

from _server import MAX_SANDBOXES_PER_USER, RunningServer

pytestmark = pytest.mark.server


@pytest.fixture
def conn(server: RunningServer) -> Dict[str, Any]:
    return {"api_url": server.url, "api_key": server.admin_key}


@pytest.fixture
def sandboxes(conn: Dict[str, Any]) -> Iterator[List[Sandbox]]:
    """Sandboxes a test creates; whatever is still live at the end is killed,
    so one failing test cannot eat the next one's quota."""
    created: List[Sandbox] = []
    yield created
    for sbx in created:
        try:
            sbx.kill()
        except codebox.SandboxGoneError:
            pass
        finally:
            sbx.close()


def label() -> Dict[str, str]:
    """Metadata unique to one test, to find exactly its sandboxes in listings."""
    return {"test": uuid.uuid4().hex[:12]}


def test_runtimes_offer_python3(conn: Dict[str, Any]) -> None:
    runtimes = Sandbox.runtimes(**conn)
    names = {r.name for r in runtimes} | {a for r in runtimes for a in r.aliases}
    assert "python3" in names
    python = next(r for r in runtimes if r.name == "python3")
    assert python.language == "python" and python.version.startswith("3.")


def test_create_run_and_kill(conn: Dict[str, Any], sandboxes: List[Sandbox]) -> None:
    tags = label()
    sbx = Sandbox.create(
        "python3",
        cpu=0.5,
        memory=256,
        timeout=120,
        metadata=tags,
        env_vars={"GREETING": "hello"},
        **conn,
    )
    sandboxes.append(sbx)
    info = sbx.info()
    assert info.id == sbx.id and info.status == "running" and info.runtime == "python3"
    assert info.resources == codebox.Resources(cpu=0.5, memory=256)
    assert info.metadata == tags and info.isolation
    assert 100 <= (info.expires_at - info.created_at).total_seconds() <= 120

    result = sbx.commands.run("python3 -c 'print(6*7)'; echo $GREETING; echo oops >&2; exit 3")
    assert result.stdout == "42\nhello\n" and result.stderr == "oops\n"
    assert result.exit_code == 3 and not result.timed_out and not result.truncated and not result.ok

    final = sbx.kill()
    assert final.status == "terminated" and final.termination_reason == "killed"
    assert final.ended_at is not None
    with pytest.raises(codebox.SandboxGoneError) as gone:
        sbx.info()
    assert gone.value.reason == "killed" and gone.value.status == 410 and gone.value.request_id


def test_command_options(conn: Dict[str, Any], sandboxes: List[Sandbox]) -> None:
    sbx = Sandbox.create(**conn)
    sandboxes.append(sbx)
    result = sbx.commands.run(
        "cat; pwd; echo $COLOR", stdin="piped\n", cwd="/tmp", env={"COLOR": "blue"}
    )
    assert result.stdout == "piped\n/tmp\nblue\n" and result.ok
    assert sbx.commands.run("whoami").stdout.strip() == "user"


def test_command_timeout_is_a_result_not_an_error(
    conn: Dict[str, Any], sandboxes: List[Sandbox]
) -> None:
    sbx = Sandbox.create(**conn)
    sandboxes.append(sbx)
    result = sbx.commands.run("echo started; sleep 60", timeout=1)
    assert result.timed_out and not result.ok
    assert result.stdout == "started\n"
    # The sandbox is still usable after a command was killed.
    assert sbx.commands.run("echo after").stdout == "after\n"


def test_large_output_is_truncated(conn: Dict[str, Any], sandboxes: List[Sandbox]) -> None:
    sbx = Sandbox.create(**conn)
    sandboxes.append(sbx)
    result = sbx.commands.run("head -c 3000000 /dev/zero | tr '\\0' a")
    assert result.truncated and result.exit_code == 0
    assert 0 < len(result.stdout) < 3_000_000 and set(result.stdout) == {"a"}


def test_connect_list_and_set_timeout(conn: Dict[str, Any], sandboxes: List[Sandbox]) -> None:
    tags = label()
    for _ in range(3):
        sandboxes.append(Sandbox.create(metadata=tags, **conn))
    newest_first = [sbx.id for sbx in reversed(sandboxes)]

    # page_size=1 makes the listing follow next_cursor across three pages.
    listed = [info.id for info in Sandbox.list(metadata=tags, page_size=1, **conn)]
    assert listed == newest_first
    running = {info.id for info in Sandbox.list(status="running", metadata=tags, **conn)}
    assert running == set(newest_first)

    connected = Sandbox.connect(sandboxes[0].id, **conn)
    try:
        before = connected.info().expires_at
        after = connected.set_timeout(3600).expires_at
        assert after > before
        assert connected.commands.run("echo via connect").stdout == "via connect\n"
    finally:
        connected.close()

    sandboxes[0].kill()
    assert {info.id for info in Sandbox.list(status="running", metadata=tags, **conn)} == set(
        newest_first[:2]
    )
    terminated = list(Sandbox.list(status="terminated", metadata=tags, **conn))
    assert [(info.id, info.termination_reason) for info in terminated] == [
        (sandboxes[0].id, "killed")
    ]


def test_context_manager_kills(conn: Dict[str, Any]) -> None:
    with Sandbox.create(**conn) as sbx:
        assert sbx.commands.run("true").ok
    with pytest.raises(codebox.SandboxGoneError) as gone:
        Sandbox.connect(sbx.id, **conn)
    assert gone.value.reason == "killed"


def test_context_manager_kills_when_the_block_fails(conn: Dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="from the block"):
        with Sandbox.create(**conn) as sbx:
            raise RuntimeError("from the block")
    with pytest.raises(codebox.SandboxGoneError):
        Sandbox.connect(sbx.id, **conn)


def test_config_from_the_environment(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEBOX_API_URL", server.url)
    monkeypatch.setenv("CODEBOX_API_KEY", server.admin_key)
    assert Sandbox.runtimes()


@pytest.mark.parametrize(
    "options,field",
    [
        ({"runtime": "cobol"}, "runtime"),
        ({"cpu": 64}, "resources.cpu"),
        ({"memory": 1}, "resources.memory"),
        ({"env_vars": {"1BAD": "x"}}, "env_vars.1BAD"),
    ],
)
def test_validation_errors_name_the_field(
    conn: Dict[str, Any], options: Dict[str, Any], field: str
) -> None:
    with pytest.raises(codebox.ValidationError) as invalid:
        Sandbox.create(**options, **conn)
    assert invalid.value.status == 400 and invalid.value.code == "VALIDATION_ERROR"
    assert invalid.value.field == field


def test_unknown_runtime_lists_the_available_ones(conn: Dict[str, Any]) -> None:
    with pytest.raises(codebox.ValidationError) as invalid:
        Sandbox.create("cobol", **conn)
    assert "python3" in invalid.value.message


def test_bad_key_is_an_authentication_error(server: RunningServer) -> None:
    with pytest.raises(codebox.AuthenticationError) as refused:
        Sandbox.create(api_url=server.url, api_key="cbx_not_a_real_key")
    assert refused.value.status == 401 and refused.value.code == "UNAUTHORIZED"


def test_unknown_and_foreign_sandboxes_are_not_found(
    server: RunningServer, conn: Dict[str, Any], sandboxes: List[Sandbox]
) -> None:
    with pytest.raises(codebox.NotFoundError):
        Sandbox.connect("a" * 26, **conn)
    with pytest.raises(codebox.NotFoundError):
        Sandbox.connect("../runtimes", **conn)

    mine = Sandbox.create(**conn)
    sandboxes.append(mine)
    other_key = server.create_user_key(f"other-{uuid.uuid4().hex[:8]}")
    with pytest.raises(codebox.NotFoundError) as hidden:
        Sandbox.connect(mine.id, api_url=server.url, api_key=other_key)
    assert hidden.value.status == 404
    assert [info.id for info in Sandbox.list(api_url=server.url, api_key=other_key)] == []
    # Still alive for its owner.
    assert mine.info().status == "running"


def test_a_killed_sandbox_is_gone_everywhere(conn: Dict[str, Any]) -> None:
    sbx = Sandbox.create(**conn)
    sbx.kill()
    try:
        for call in (
            sbx.info,
            sbx.kill,
            lambda: sbx.set_timeout(60),
            lambda: sbx.commands.run("true"),
        ):
            with pytest.raises(codebox.SandboxGoneError) as gone:
                call()
            assert gone.value.reason == "killed"
    finally:
        sbx.close()


def test_too_large_command_is_refused(conn: Dict[str, Any], sandboxes: List[Sandbox]) -> None:
    sbx = Sandbox.create(**conn)
    sandboxes.append(sbx)
    with pytest.raises(codebox.PayloadTooLargeError) as refused:
        sbx.commands.run("#" * (1024 * 1024 + 1))
    assert refused.value.status == 413


def test_quota_is_a_resource_limit_error_and_not_retried(server: RunningServer) -> None:
    key = server.create_user_key(f"quota-{uuid.uuid4().hex[:8]}")
    user: Dict[str, Any] = {"api_url": server.url, "api_key": key}
    held = [Sandbox.create(**user) for _ in range(MAX_SANDBOXES_PER_USER)]
    try:
        with pytest.raises(codebox.ResourceLimitError) as refused:
            Sandbox.create(retry=RetryPolicy(max_attempts=4), **user)
        assert refused.value.status == 429 and refused.value.code == "RESOURCE_LIMIT_ERROR"
    finally:
        for sbx in held:
            sbx.kill()
            sbx.close()
    # Freed: creating works again.
    with Sandbox.create(**user) as sbx:
        assert sbx.info().status == "running"


def test_async_client(conn: Dict[str, Any]) -> None:
    tags = label()

    async def run() -> Any:
        async with await AsyncSandbox.create(metadata=tags, **conn) as sbx:
            outputs = await asyncio.gather(
                sbx.commands.run("echo one"), sbx.commands.run("echo two")
            )
            listed = [info.id async for info in AsyncSandbox.list(metadata=tags, **conn)]
            extended = await sbx.set_timeout(600)
            sandbox_id = sbx.id
        with pytest.raises(codebox.SandboxGoneError):
            await AsyncSandbox.connect(sandbox_id, **conn)
        return sandbox_id, outputs, listed, extended

    sandbox_id, outputs, listed, extended = asyncio.run(run())
    assert [o.stdout for o in outputs] == ["one\n", "two\n"]
    assert listed == [sandbox_id] and extended.id == sandbox_id
