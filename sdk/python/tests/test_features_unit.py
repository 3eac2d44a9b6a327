"""run_code, contexts, files, processes and the terminal's helpers against the
scripted fake server: what is sent, how streams are read, the order of
callbacks, and that the sync and async clients agree."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Tuple

import httpx
import pytest

import codebox
from codebox import AsyncSandbox, Sandbox
from codebox import _ops as ops
from codebox._config import ConnectionConfig
from codebox.pty import pty_query, pty_url, resize_frame

from _fakes import (
    API_KEY,
    API_URL,
    CONTEXT_JSON,
    END_EVENT,
    EXECUTION_EVENTS,
    PNG_BYTES,
    PROCESS_EVENTS,
    SANDBOX_ID,
    FakeServer,
    fail,
    ndjson,
    ok,
    raw,
    sandbox_json,
    standard_server,
)

BASE = f"/api/v1/sandboxes/{SANDBOX_ID}"


def kwargs(fake: FakeServer) -> Any:
    return {"api_url": API_URL, "api_key": API_KEY, "transport": fake.transport()}


def sandbox(fake: FakeServer) -> Sandbox:
    return Sandbox.connect(SANDBOX_ID, **kwargs(fake))


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


# --- run_code ------------------------------------------------------------------------


def test_run_code_streams_events_to_callbacks_in_order() -> None:
    fake = standard_server()
    seen: List[Tuple[str, Any]] = []
    with sandbox(fake) as sbx:
        execution = sbx.run_code(
            "print(1)",
            on_stdout=lambda text: seen.append(("stdout", text)),
            on_stderr=lambda text: seen.append(("stderr", text)),
            on_result=lambda result: seen.append(("result", result.text)),
            on_error=lambda error: seen.append(("error", error.name)),
        )
    assert seen == [
        ("stdout", "1\n"),
        ("stderr", "warn\n"),
        ("result", "<Figure>"),
        ("stdout", "2\n"),
        ("result", "42"),
        ("error", "ZeroDivisionError"),
    ]
    assert execution.text == "42"
    assert execution.logs == codebox.Logs(("1\n", "2\n"), ("warn\n",))
    assert execution.stdout == "1\n2\n" and execution.stderr == "warn\n"
    assert execution.error == codebox.ExecutionError(
        "ZeroDivisionError", "division by zero", "Traceback ..."
    )
    assert execution.execution_count == 3 and execution.duration_ms == 12
    assert execution.outcome == "error" and not execution.restarted and not execution.truncated
    assert execution.context_id == "default-python" and execution.reason is None
    assert len(execution.results) == 2 and execution.results[0].png_bytes == PNG_BYTES


def test_run_code_sends_its_options_and_asks_for_ndjson() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        ctx = sbx.contexts.create("python")
        sbx.run_code("x", language="python", context=ctx, timeout=100, env_vars={"A": "1"})
        sbx.run_code("y", context="ctx-other")
        sbx.run_code("z")
    executes = [r for r in fake.requests if r.url.path == f"{BASE}/execute"]
    bodies = [json.loads(r.content) for r in executes]
    assert bodies == [
        {
            "code": "x",
            "language": "python",
            "context_id": CONTEXT_JSON["id"],
            "timeout": 100,
            "env_vars": {"A": "1"},
        },
        {"code": "y", "context_id": "ctx-other"},
        {"code": "z"},
    ]
    assert all(r.headers["accept"] == "application/x-ndjson" for r in executes)
    # A silent stream may wait the whole execution timeout, plus a margin.
    assert executes[0].extensions["timeout"]["read"] == 130.0
    assert executes[2].extensions["timeout"]["read"] == 60.0


def test_an_error_in_the_code_is_not_an_exception_but_an_api_error_is() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        assert sbx.run_code("1/0").error is not None
        fake.routes[("POST", f"{BASE}/execute")] = [fail(413, "PAYLOAD_TOO_LARGE")]
        with pytest.raises(codebox.PayloadTooLargeError):
            sbx.run_code("x" * 10)
        fake.routes[("POST", f"{BASE}/execute")] = [fail(410, "SANDBOX_GONE", reason="timeout")]
        with pytest.raises(codebox.SandboxGoneError) as gone:
            sbx.run_code("x")
    assert gone.value.reason == "timeout"


def test_a_stream_cut_before_end_is_a_connection_error() -> None:
    fake = standard_server()
    fake.routes[("POST", f"{BASE}/execute")] = [ndjson(EXECUTION_EVENTS[:3])]
    with sandbox(fake) as sbx, pytest.raises(codebox.APIConnectionError):
        sbx.run_code("x")


@pytest.mark.parametrize(
    "body",
    [b"not json\n", b'{"no": "type"}\n', b'{"type": "stdout"}\n'],
)
def test_garbage_in_the_stream_is_an_unexpected_response(body: bytes) -> None:
    fake = standard_server()
    fake.routes[("POST", f"{BASE}/execute")] = [httpx.Response(200, content=body)]
    with sandbox(fake) as sbx, pytest.raises(codebox.UnexpectedResponseError):
        sbx.run_code("x")


def test_events_after_end_are_refused() -> None:
    fake = standard_server()
    events = [END_EVENT, {"type": "stdout", "text": "late"}]
    fake.routes[("POST", f"{BASE}/execute")] = [ndjson(events)]
    builder = ops.ExecutionBuilder()
    builder.feed(END_EVENT)
    with pytest.raises(codebox.UnexpectedResponseError):
        builder.feed({"type": "stdout", "text": "late"})
    # The client stops reading at `end`: the late event is never seen.
    with sandbox(fake) as sbx:
        assert sbx.run_code("x").stdout == ""


def test_shutdown_reason_is_kept() -> None:
    fake = standard_server()
    end = {**END_EVENT, "outcome": "interrupted", "reason": "server_shutdown"}
    fake.routes[("POST", f"{BASE}/execute")] = [ndjson([end])]
    with sandbox(fake) as sbx:
        execution = sbx.run_code("x")
    assert execution.reason == "server_shutdown" and execution.outcome == "interrupted"


def test_a_failing_callback_stops_the_stream() -> None:
    fake = standard_server()

    def boom(text: str) -> None:
        raise RuntimeError("callback failed")

    with sandbox(fake) as sbx, pytest.raises(RuntimeError, match="callback failed"):
        sbx.run_code("x", on_stdout=boom)


def test_async_run_code_awaits_coroutine_callbacks_in_order() -> None:
    fake = standard_server()
    seen: List[str] = []

    async def on_stdout(text: str) -> None:
        await asyncio.sleep(0)
        seen.append("out:" + text)

    async def main() -> codebox.Execution:
        async with await AsyncSandbox.connect(SANDBOX_ID, **kwargs(fake)) as sbx:
            return await sbx.run_code(
                "x", on_stdout=on_stdout, on_result=lambda r: seen.append("result:" + str(r.text))
            )

    execution = run_async(main())
    assert seen == ["out:1\n", "result:<Figure>", "out:2\n", "result:42"]
    assert execution.text == "42" and execution.error is not None


# --- Result ---------------------------------------------------------------------------


def test_result_renders_in_jupyter_and_saves_png(tmp_path: Path) -> None:
    result = codebox.Result.from_api(EXECUTION_EVENTS[2])
    assert result._repr_png_() == PNG_BYTES
    assert result.png_bytes == PNG_BYTES and result.png is not None
    assert result._repr_html_() is None and result.text == "<Figure>"
    target = tmp_path / "chart.png"
    assert result.save_png(target) == len(PNG_BYTES)
    assert target.read_bytes() == PNG_BYTES
    assert set(result._repr_mimebundle_()) == {"text/plain", "image/png"}
    assert set(result._repr_mimebundle_(include=["image/png"])) == {"image/png"}
    assert set(result._repr_mimebundle_(exclude=["image/png"])) == {"text/plain"}


def test_result_formats_and_json() -> None:
    result = codebox.Result.from_api(
        {
            "type": "result",
            "text/plain": "{'a': 1}",
            "text/html": "<table/>",
            "text/markdown": "# t",
            "text/latex": "$x$",
            "image/svg+xml": "<svg/>",
            "application/json": '{"a": 1}',
            "is_main_result": True,
            "truncated": True,
        }
    )
    assert result.is_main_result and result.truncated
    assert result._repr_html_() == "<table/>" and result._repr_markdown_() == "# t"
    assert result._repr_latex_() == "$x$" and result._repr_svg_() == "<svg/>"
    assert result._repr_json_() == {"a": 1}
    assert result._repr_mimebundle_()["application/json"] == {"a": 1}
    assert result._repr_png_() is None
    with pytest.raises(ValueError, match="no image/png"):
        result.save_png("never-written.png")
    assert not os.path.exists("never-written.png")


@pytest.mark.parametrize(
    "bundle",
    [{"is_main_result": "yes"}, {"is_main_result": True, "text/plain": 1}, []],
)
def test_malformed_results_are_refused(bundle: Any) -> None:
    with pytest.raises(codebox.UnexpectedResponseError):
        codebox.Result.from_api(bundle)


# --- contexts ---------------------------------------------------------------------------


def test_contexts_create_list_restart_interrupt_remove() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        ctx = sbx.contexts.create()
        assert fake.body() == {}
        sbx.contexts.create("bash", cwd="/tmp", env_vars={"A": "1"})
        assert fake.body() == {"language": "bash", "cwd": "/tmp", "env_vars": {"A": "1"}}
        assert sbx.contexts.list() == [ctx]
        sbx.contexts.restart(ctx)
        sbx.contexts.interrupt(ctx.id)
        sbx.contexts.remove(ctx)
    cid = CONTEXT_JSON["id"]
    assert fake.calls()[-4:] == [
        ("POST", f"{BASE}/contexts/{cid}/restart"),
        ("POST", f"{BASE}/contexts/{cid}/interrupt"),
        ("DELETE", f"{BASE}/contexts/{cid}"),
        ("DELETE", BASE),
    ]
    assert ctx == codebox.Context(cid, "python", "/home/user", False)


def test_context_ids_stay_one_path_segment() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx, pytest.raises(codebox.NotFoundError):
        sbx.contexts.remove("../../x")
    assert fake.requests[-2].url.raw_path == f"{BASE}/contexts/%2E%2E%2F%2E%2E%2Fx".encode()


# --- files ------------------------------------------------------------------------------


def test_files_read_text_and_bytes() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        assert sbx.files.read("data.csv") == "a,b\n1,2\n"
        assert sbx.files.read_bytes("data.csv") == b"a,b\n1,2\n"
        assert b"".join(sbx.files.iter_bytes("data.csv")) == b"a,b\n1,2\n"
    download = fake.requests[1]
    assert download.url.params["path"] == "data.csv"


def test_download_to_a_path_is_atomic(tmp_path: Path) -> None:
    fake = standard_server()
    target = tmp_path / "out.csv"
    with sandbox(fake) as sbx:
        assert sbx.files.download("data.csv", target) == 8
        assert target.read_bytes() == b"a,b\n1,2\n"
        fake.routes[("GET", f"{BASE}/files")] = [fail(404, "NOT_FOUND")]
        with pytest.raises(codebox.NotFoundError):
            sbx.files.download("missing", tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_download_to_a_file_object() -> None:
    fake = standard_server()
    sink = io.BytesIO()
    with sandbox(fake) as sbx:
        assert sbx.files.download("data.csv", sink) == 8
    assert sink.getvalue() == b"a,b\n1,2\n"


def test_write_text_and_bytes_send_a_length() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        info = sbx.files.write("dir/ü.txt", "héllo")
        sbx.files.write("b.bin", b"\x00\x01")
    text, binary = [r for r in fake.requests if r.method == "PUT"]
    assert text.content == "héllo".encode() and text.headers["content-length"] == "6"
    assert text.url.params["path"] == "dir/ü.txt"
    assert text.headers["content-type"] == "application/octet-stream"
    assert binary.content == b"\x00\x01"
    assert info == codebox.WriteInfo("dir/ü.txt", 6)


def test_upload_streams_a_local_file_with_its_length(tmp_path: Path) -> None:
    local = tmp_path / "big.bin"
    payload = os.urandom(3 * 1024 * 1024 + 17)
    local.write_bytes(payload)
    fake = standard_server()
    with sandbox(fake) as sbx:
        info = sbx.files.upload(local, "big.bin")
    put = next(r for r in fake.requests if r.method == "PUT")
    assert put.content == payload and info.size == len(payload)
    assert put.headers["content-length"] == str(len(payload))
    assert "transfer-encoding" not in put.headers


def test_write_from_chunks_is_sent_chunked() -> None:
    fake = standard_server()

    def chunks() -> Iterator[bytes]:
        yield b"ab"
        yield b"cd"

    with sandbox(fake) as sbx:
        sbx.files.write("c.bin", chunks())
    put = next(r for r in fake.requests if r.method == "PUT")
    assert put.content == b"abcd" and put.headers["transfer-encoding"] == "chunked"


def test_a_streamed_upload_is_never_retried_but_bytes_are() -> None:
    fake = standard_server()
    sleeps: List[float] = []
    busy = fail(503, "SERVICE_UNAVAILABLE", headers={"Retry-After": "0"})
    done = ok({"path": "/home/user/x", "size": 1}, status=201)
    fake.routes[("PUT", f"{BASE}/files")] = [busy, done]
    with sandbox(fake) as sbx:
        sbx._transport._sleep = sleeps.append
        sbx.files.write("x", b"x")
        assert sleeps == [0.0]
        fake.routes[("PUT", f"{BASE}/files")] = [busy, done]
        with pytest.raises(codebox.ServiceUnavailableError):
            sbx.files.write("x", io.BytesIO(b"x"))
    assert sleeps == [0.0]


def test_list_stat_exists_mkdir_move_remove() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        listing = sbx.files.list()
        assert fake.requests[-1].url.params == httpx.QueryParams({})
        sbx.files.list("/tmp", depth=3)
        assert dict(fake.requests[-1].url.params) == {"path": "/tmp", "depth": "3"}
        assert listing.entries[0].is_file and not listing.truncated and len(listing) == 1
        assert [e.name for e in listing] == ["data.csv"]
        entry = sbx.files.stat("data.csv")
        assert entry.size == 5 and entry.mode == 0o644 and entry.symlink_target is None
        assert sbx.files.exists("data.csv")
        fake.routes[("GET", f"{BASE}/files/stat")] = [fail(404, "NOT_FOUND")]
        assert not sbx.files.exists("nope")
        assert sbx.files.mkdir("d").is_dir
        assert fake.body() == {"path": "d", "parents": True}
        sbx.files.move("a", "b")
        assert fake.body() == {"from": "a", "to": "b", "overwrite": False}
        sbx.files.remove("d")
        assert dict(fake.requests[-1].url.params) == {"path": "d"}
        sbx.files.remove("d", recursive=True)
        assert dict(fake.requests[-1].url.params) == {"path": "d", "recursive": "true"}


def test_watch_yields_events_until_the_stream_ends() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        with sbx.files.watch("/home/user", recursive=True) as watch:
            events = list(watch)
    request = next(r for r in fake.requests if r.url.path.endswith("/watch"))
    assert dict(request.url.params) == {"path": "/home/user", "recursive": "true"}
    assert request.headers["accept"] == "text/event-stream"
    assert events == [
        codebox.FileEvent("create", "/home/user/a", False),
        codebox.FileEvent("write", "/home/user/a", False),
        codebox.FileEvent("create", "/home/user/d", True),
    ]


def test_watch_timeout_bounds_the_silence_between_events() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        sbx.files.watch().close()
        sbx.files.watch(timeout=5).close()
    watches = [r for r in fake.requests if r.url.path.endswith("/watch")]
    assert [r.extensions["timeout"]["read"] for r in watches] == [None, 5]


def test_sse_decoder_handles_multiline_data_and_comments() -> None:
    decoder = ops.SseDecoder()
    lines = [": hi", "event: x", "data: a", "data:b", "", "", "data: c", ""]
    events = [e for e in (decoder.feed(line) for line in lines) if e is not None]
    assert events == [("x", "a\nb"), ("message", "c")]


def test_async_files_round_trip(tmp_path: Path) -> None:
    fake = standard_server()
    source = tmp_path / "src.bin"
    source.write_bytes(b"0123456789")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"as"
        yield b"ync"

    async def main() -> None:
        async with await AsyncSandbox.connect(SANDBOX_ID, **kwargs(fake)) as sbx:
            assert await sbx.files.read("data.csv") == "a,b\n1,2\n"
            assert await sbx.files.download("data.csv", tmp_path / "d.csv") == 8
            assert (await sbx.files.upload(source, "src.bin")).size == 10
            assert (await sbx.files.write("a.bin", chunks())).size == 5
            assert (await sbx.files.write("l.bin", [b"x", b"y"])).size == 2
            assert await sbx.files.exists("data.csv")
            async with await sbx.files.watch() as watch:
                assert [e.type async for e in watch] == ["create", "write", "create"]

    run_async(main())
    assert (tmp_path / "d.csv").read_bytes() == b"a,b\n1,2\n"
    puts = [r for r in fake.requests if r.method == "PUT"]
    assert [p.content for p in puts] == [b"0123456789", b"async", b"xy"]
    assert puts[0].headers["content-length"] == "10"


# --- commands and processes --------------------------------------------------------------


def test_background_process_handle() -> None:
    fake = standard_server()
    seen: List[str] = []
    with sandbox(fake) as sbx:
        handle = sbx.commands.run("cat", background=True, stdin=True, tag="worker")
        assert fake.body() == {"cmd": "cat", "background": True, "stdin": True, "tag": "worker"}
        assert handle.pid == 42
        assert handle.send_stdin("héllo") == 6
        assert fake.requests[-1].content == "héllo".encode()
        handle.close_stdin()
        handle.signal("term")
        assert fake.body() == {"signal": "SIGTERM"}
        handle.kill()
        assert fake.body() == {"signal": "SIGKILL"}
        result = handle.wait(
            on_stdout=lambda d: seen.append("out:" + d), on_stderr=lambda d: seen.append("err:" + d)
        )
        assert [p.pid for p in sbx.commands.list()] == [42]
    assert seen == ["out:out\n", "err:err\n", "out:more\n"]
    assert result == codebox.ProcessResult(
        pid=42,
        stdout="out\nmore\n",
        stderr="err\n",
        exit_code=None,
        signal=9,
        timed_out=False,
        dropped_bytes=7,
    )
    assert not result.ok
    stream = next(r for r in fake.requests if r.url.path.endswith("/stream"))
    assert stream.headers["accept"] == "application/x-ndjson"
    assert stream.extensions["timeout"]["read"] is None


def test_process_stream_yields_events_and_a_cut_stream_fails_wait() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        handle = sbx.commands.connect(42)
        with handle.stream() as events:
            assert [e.type for e in events] == ["start", "stdout", "stderr", "stdout", "end"]
        fake.routes[("GET", f"{BASE}/processes/42/stream")] = [ndjson(PROCESS_EVENTS[:2])]
        with pytest.raises(codebox.APIConnectionError):
            handle.wait()
        fake.routes[("GET", f"{BASE}/processes/42/stream")] = [fail(404, "NOT_FOUND")]
        with pytest.raises(codebox.NotFoundError):
            handle.wait()


def test_run_argument_mistakes_are_type_errors() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        with pytest.raises(TypeError):
            sbx.commands.run("cat", stdin=True)  # type: ignore[call-overload]
        with pytest.raises(TypeError):
            sbx.commands.run("cat", background=True, stdin="text")  # type: ignore[call-overload]
    assert all(not r.url.path.endswith(("/commands", "/processes")) for r in fake.requests)


def test_async_background_process() -> None:
    fake = standard_server()
    seen: List[str] = []

    async def on_stdout(data: str) -> None:
        seen.append(data)

    async def main() -> codebox.ProcessResult:
        async with await AsyncSandbox.connect(SANDBOX_ID, **kwargs(fake)) as sbx:
            handle = await sbx.commands.run("cat", background=True, stdin=True)
            await handle.send_stdin(b"x")
            await handle.close_stdin()
            await handle.kill()
            assert [p.tag for p in await sbx.commands.list()] == ["worker"]
            async with await handle.stream() as events:
                assert [e.type async for e in events][-1] == "end"
            return await handle.wait(on_stdout=on_stdout)

    result = run_async(main())
    assert seen == ["out\n", "more\n"] and result.signal == 9


# --- metrics and the terminal's helpers ----------------------------------------------------


def test_metrics() -> None:
    fake = standard_server()
    with sandbox(fake) as sbx:
        metrics = sbx.metrics()
    assert metrics.pids == 3 and metrics.cpu_limit == 1.0
    assert metrics.memory_limit_bytes == 512 << 20


@pytest.mark.parametrize(
    "url,expected",
    [
        ("http://h:3000", f"ws://h:3000/api/v1/sandboxes/{SANDBOX_ID}/pty"),
        ("https://h/prefix/", f"wss://h/prefix/api/v1/sandboxes/{SANDBOX_ID}/pty"),
    ],
)
def test_pty_url(url: str, expected: str) -> None:
    config = ConnectionConfig.resolve(url, API_KEY)
    assert pty_url(config, SANDBOX_ID) == expected
    assert pty_url(config, "../x").endswith("/sandboxes/%2E%2E%2Fx/pty")
    query = pty_query(100, 30, "bash -l", "/tmp", 60, {"A": "b c"})
    assert pty_url(config, SANDBOX_ID, query) == (
        expected + "?cols=100&rows=30&cmd=bash+-l&cwd=%2Ftmp&timeout=60&env.A=b+c"
    )


def test_pty_session_against_a_websocket_server() -> None:
    """The client's side of the contract against a scripted WebSocket server:
    the query and key on the upgrade, binary input echoed as output, a resize
    text frame, and the exit status read from the close frame."""
    pytest.importorskip("websockets")
    import threading

    from websockets.sync.server import ServerConnection, serve

    seen: Dict[str, Any] = {}

    def handler(connection: ServerConnection) -> None:
        assert connection.request is not None
        seen["path"] = connection.request.path
        seen["key"] = connection.request.headers.get("X-API-Key")
        for message in connection:
            if isinstance(message, bytes):
                if message == b"exit\n":
                    reason = json.dumps({"exit_code": 3, "signal": None, "timed_out": False})
                    connection.close(1000, reason)
                    return
                connection.send(b"echo:" + message)
            else:
                seen.setdefault("control", []).append(json.loads(message))

    with serve(handler, "127.0.0.1", 0) as server:
        port = server.socket.getsockname()[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        fake = FakeServer().on("GET", BASE, ok(sandbox_json()))
        sbx = Sandbox.connect(
            SANDBOX_ID,
            api_url=f"http://127.0.0.1:{port}",
            api_key=API_KEY,
            transport=fake.transport(),
        )
        try:
            with sbx.pty.create(cols=90, rows=20, cmd="sh") as terminal:
                terminal.send("ls\n")
                assert terminal.recv(timeout=30) == b"echo:ls\n"
                terminal.resize(120, 40)
                terminal.send(b"exit\n")
                assert terminal.recv(timeout=30) is None
                assert terminal.exit_code == 3 and terminal.signal is None
                assert terminal.closed and not terminal.timed_out
                with pytest.raises(codebox.APIConnectionError):
                    terminal.send("late")
        finally:
            sbx.close()
            server.shutdown()
            thread.join(timeout=10)
    assert seen["path"] == f"{BASE}/pty?cols=90&rows=20&cmd=sh"
    assert seen["key"] == API_KEY
    assert seen["control"] == [{"type": "resize", "cols": 120, "rows": 40}]


def test_resize_frame() -> None:
    assert json.loads(resize_frame(120, 40)) == {"type": "resize", "cols": 120, "rows": 40}
    with pytest.raises(ValueError):
        resize_frame(0, 10)


def test_pty_refused_upgrade_is_a_typed_error() -> None:
    pytest.importorskip("websockets")
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    body = json.dumps(
        {"success": False, "error": {"code": "NOT_FOUND", "message": "no", "request_id": "r1"}}
    ).encode()

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            head = (
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            conn.sendall(head.encode() + body)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    fake = FakeServer().on("GET", BASE, ok(sandbox_json()))
    sbx = Sandbox.connect(
        SANDBOX_ID, api_url=f"http://127.0.0.1:{port}", api_key=API_KEY, transport=fake.transport()
    )
    try:
        with pytest.raises(codebox.NotFoundError) as missing:
            sbx.pty.create()
    finally:
        sbx.close()
        thread.join(timeout=10)
        listener.close()
    assert missing.value.request_id == "r1"


def test_raw_download_answer_that_is_not_an_envelope_is_returned_as_is() -> None:
    # A file that happens to hold an API envelope is still just bytes.
    content = json.dumps({"success": False, "error": {"code": "NOT_FOUND"}}).encode()
    fake = standard_server()
    fake.routes[("GET", f"{BASE}/files")] = [raw(content)]
    with sandbox(fake) as sbx:
        assert sbx.files.read_bytes("x.json") == content


# --- the examples (no network: the fake server stands in) ---------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_agent_tool_loop_example_feeds_tool_answers_back() -> None:
    import sys

    sys.path.insert(0, str(EXAMPLES))
    try:
        import agent_tool_loop
    finally:
        sys.path.remove(str(EXAMPLES))
    fake = standard_server()
    shown: List[List[Dict[str, Any]]] = []
    script: List[Dict[str, Any]] = [
        {"role": "assistant", "tool_call": {"name": "run_code", "arguments": {"code": "1/0"}}},
        {"role": "assistant", "tool_call": {"name": "nope", "arguments": {}}},
        {"role": "assistant", "content": "the answer"},
    ]
    replay = agent_tool_loop.scripted_llm(script)

    def llm(messages: List[Dict[str, Any]]) -> Dict[str, Any]:
        shown.append(list(messages))
        return replay(messages)

    with sandbox(fake) as sbx:
        answer = agent_tool_loop.run_agent("task", llm, sbx)
    assert answer == "the answer"
    tool = json.loads(shown[1][-1]["content"])
    assert tool == {
        "stdout": "1\n2\n",
        "stderr": "warn\n",
        "result": "42",
        "error": "ZeroDivisionError: division by zero",
        "images": 1,
    }
    assert shown[2][-1] == {"role": "tool", "content": "unknown tool 'nope'"}
    assert json.loads(fake.requests[1].content) == {"code": "1/0", "timeout": 60}
