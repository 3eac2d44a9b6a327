"""run_code, contexts, files, processes and the terminal against a real
``codebox serve`` (see the ``server`` fixture in conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest

import codebox
from codebox import AsyncSandbox, Sandbox

from _server import RunningServer

pytestmark = pytest.mark.server

# How long the python3 template (ipython, numpy, pandas, matplotlib) may take to
# build on a first run with an empty pip cache. A bound, not an assertion.
TEMPLATE_DEADLINE_SECONDS = 1200.0
TEMPLATE_MOUNT = "/opt/codebox/python3"


@pytest.fixture
def conn(server: RunningServer) -> Dict[str, Any]:
    return {"api_url": server.url, "api_key": server.admin_key}


@pytest.fixture
def sbx(conn: Dict[str, Any]) -> Iterator[Sandbox]:
    with Sandbox.create("python3", timeout=600, **conn) as sandbox:
        yield sandbox


def png_chunks(data: bytes) -> List[Tuple[bytes, bytes]]:
    """The chunks of a PNG, each CRC checked; raises AssertionError if invalid."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "no PNG signature"
    chunks: List[Tuple[bytes, bytes]] = []
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    return chunks


# --- run_code ------------------------------------------------------------------------


def test_state_persists_across_run_code(sbx: Sandbox) -> None:
    first = sbx.run_code("x = 41\nprint('set')")
    assert first.error is None and first.stdout == "set\n" and first.text is None
    second = sbx.run_code("x + 1")
    assert second.text == "42" and second.error is None and second.outcome == "ok"
    assert second.execution_count == first.execution_count + 1
    assert second.context_id == first.context_id == "default-python"


def test_callbacks_arrive_in_the_order_the_code_produced_them(sbx: Sandbox) -> None:
    seen: List[Tuple[str, str]] = []
    code = (
        "import sys\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "print('oops', file=sys.stderr, flush=True)\n"
        "'done'"
    )
    execution = sbx.run_code(
        code,
        on_stdout=lambda text: seen.append(("stdout", text)),
        on_stderr=lambda text: seen.append(("stderr", text)),
        on_result=lambda result: seen.append(("result", result.text or "")),
    )
    stdout = "".join(text for kind, text in seen if kind == "stdout")
    assert stdout == "0\n1\n2\n3\n4\n"
    # Each stream keeps its order; stdout, stderr and results are separate
    # pipes, so their interleaving is not promised. The callbacks saw exactly
    # what the execution holds, in the same order.
    assert [text for kind, text in seen if kind == "stdout"] == list(execution.logs.stdout)
    assert [text for kind, text in seen if kind == "stderr"] == list(execution.logs.stderr)
    assert [text for kind, text in seen if kind == "result"] == ["'done'"]
    assert execution.stdout == stdout and execution.stderr == "oops\n"
    assert execution.text == "'done'"


def test_an_error_in_the_code_is_an_execution_error(sbx: Sandbox) -> None:
    errors: List[codebox.ExecutionError] = []
    sbx.run_code("y = 1")
    execution = sbx.run_code("print('before')\n1 / 0", on_error=errors.append)
    assert execution.error is not None and errors == [execution.error]
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "ZeroDivisionError" in execution.error.traceback
    assert execution.outcome == "error" and execution.stdout == "before\n"
    # The context survives its code's errors.
    assert sbx.run_code("y").text == "1"


def test_a_timeout_interrupts_and_keeps_state(sbx: Sandbox) -> None:
    sbx.run_code("kept = 'yes'")
    execution = sbx.run_code("import time\nwhile True: time.sleep(0.1)", timeout=1)
    assert execution.outcome == "timeout" and not execution.restarted
    assert sbx.run_code("kept").text == "'yes'"


def test_other_languages_and_env_vars(sbx: Sandbox) -> None:
    bash = sbx.run_code("echo $GREETING", language="bash", env_vars={"GREETING": "hi"})
    assert bash.stdout == "hi\n" and bash.context_id == "default-bash"
    failing = sbx.run_code("(exit 3)", language="bash")
    assert failing.error is not None and failing.error.name == "ExitCode"


def test_api_errors_are_exceptions(sbx: Sandbox) -> None:
    with pytest.raises(codebox.ValidationError) as bad:
        sbx.run_code("1", language="cobol")
    assert bad.value.field == "language"
    with pytest.raises(codebox.NotFoundError):
        sbx.run_code("1", context="ctx-doesnotexist")


# --- contexts ---------------------------------------------------------------------------


def test_contexts_are_isolated_and_can_be_restarted_and_removed(sbx: Sandbox) -> None:
    sbx.run_code("shared = 'default'")
    ctx = sbx.contexts.create("python")
    assert ctx.language == "python" and not ctx.is_default and ctx.id.startswith("ctx-")
    leaked = sbx.run_code("shared", context=ctx)
    assert leaked.error is not None and leaked.error.name == "NameError"
    sbx.run_code("mine = 1", context=ctx)
    assert sbx.run_code("mine", context=ctx.id).text == "1"
    ids = {c.id: c.is_default for c in sbx.contexts.list()}
    assert ids[ctx.id] is False and ids["default-python"] is True
    sbx.contexts.restart(ctx)
    gone = sbx.run_code("mine", context=ctx)
    assert gone.error is not None and gone.error.name == "NameError"
    sbx.contexts.interrupt(ctx)  # nothing running: harmless
    sbx.contexts.remove(ctx)
    assert ctx.id not in {c.id for c in sbx.contexts.list()}
    with pytest.raises(codebox.NotFoundError):
        sbx.run_code("1", context=ctx)
    assert sbx.run_code("shared").text == "'default'"


# --- files ------------------------------------------------------------------------------


def test_files_text_bytes_and_metadata(sbx: Sandbox) -> None:
    info = sbx.files.write("notes/hello.txt", "héllo\n")
    assert info.size == 7 and info.path.endswith("notes/hello.txt")
    assert sbx.files.read("notes/hello.txt") == "héllo\n"
    sbx.files.write("bin.dat", bytes(range(256)))
    assert sbx.files.read_bytes("/home/user/bin.dat") == bytes(range(256))
    entry = sbx.files.stat("bin.dat")
    assert entry.is_file and entry.size == 256 and entry.path == "/home/user/bin.dat"
    assert sbx.files.exists("notes") and not sbx.files.exists("nope")
    assert sbx.files.mkdir("a/b/c").is_dir
    moved = sbx.files.move("notes/hello.txt", "a/b/c/hello.txt")
    assert moved.path == "/home/user/a/b/c/hello.txt"
    with pytest.raises(codebox.ConflictError):
        sbx.files.move("bin.dat", "a/b/c/hello.txt")
    names = {e.path for e in sbx.files.list("a", depth=3)}
    assert "/home/user/a/b/c/hello.txt" in names
    with pytest.raises(codebox.ConflictError):
        sbx.files.remove("a")
    sbx.files.remove("a", recursive=True)
    assert not sbx.files.exists("a")
    with pytest.raises(codebox.NotFoundError):
        sbx.files.read("a/b/c/hello.txt")
    # Code sees the files, and the files API sees what code wrote.
    sbx.run_code("open('from_code.txt', 'w').write('42')")
    assert sbx.files.read("from_code.txt") == "42"


def test_paths_cannot_leave_the_sandbox(sbx: Sandbox) -> None:
    """Hostile paths: ``..`` and a symlink to ``/`` stay inside the sandbox, so
    a host file is never read and a host path never written."""
    marker = Path(tempfile.mkdtemp(prefix="codebox-sdk-host-"))
    marker.chmod(0o755)
    secret = marker / "secret.txt"
    secret.write_text("host secret")
    secret.chmod(0o644)
    try:
        sbx.run_code("import os\nos.symlink('/', 'root_link')")
        relative = "../" * 12 + str(secret).lstrip("/")
        for path in (relative, "root_link" + str(secret), str(secret)):
            try:
                content = sbx.files.read_bytes(path)
            except (codebox.NotFoundError, codebox.ValidationError):
                continue
            assert content != b"host secret", f"{path} read a host file"
        escape = "../" * 12 + str(marker / "written.txt").lstrip("/")
        try:
            sbx.files.write(escape, "from the sandbox")
        except (codebox.NotFoundError, codebox.ValidationError, codebox.ConflictError):
            pass
        try:
            sbx.files.write("root_link" + str(marker / "linked.txt"), "x")
        except (codebox.NotFoundError, codebox.ValidationError, codebox.ConflictError):
            pass
        assert sorted(p.name for p in marker.iterdir()) == ["secret.txt"]
    finally:
        shutil.rmtree(marker, ignore_errors=True)


def test_large_file_round_trip_is_streamed(sbx: Sandbox, tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as out:
        for _ in range(size // (1024 * 1024)):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            out.write(block)
    info = sbx.files.upload(source, "big.bin")
    assert info.size == size
    inside = sbx.commands.run("sha256sum big.bin", timeout=60)
    assert inside.stdout.split()[0] == digest.hexdigest()
    target = tmp_path / "back.bin"
    assert sbx.files.download("big.bin", target) == size
    back = hashlib.sha256()
    with open(target, "rb") as stream:
        for block in iter(lambda: stream.read(1024 * 1024), b""):
            back.update(block)
    assert back.hexdigest() == digest.hexdigest()
    assert not (tmp_path / "back.bin.part").exists()


def test_watch_sees_changes(sbx: Sandbox) -> None:
    sbx.files.mkdir("watched")
    with sbx.files.watch("watched", timeout=60) as changes:
        sbx.files.write("watched/new.txt", "x")
        seen = []
        for event in changes:
            seen.append(event)
            if event.path == "/home/user/watched/new.txt":
                break
    assert any(e.type in ("create", "write") for e in seen)


# --- processes ----------------------------------------------------------------------------


def test_background_process_stdin_and_kill(sbx: Sandbox) -> None:
    code = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n"
    sbx.files.write("upper.py", code)
    handle = sbx.commands.run("python3 upper.py", background=True, stdin=True, tag="upper")
    listed = {p.pid: p for p in sbx.commands.list()}
    assert listed[handle.pid].tag == "upper" and listed[handle.pid].stdin_open
    output = ""
    with handle.stream() as events:
        assert handle.send_stdin("hello\n") == 6
        for event in events:
            if event.type == "stdout":
                output += event.data
                if "HELLO\n" in output:
                    break
        handle.kill()
        end = [event for event in events if event.type == "end"]
    assert output == "HELLO\n"
    assert end and end[0].signal == 9 and end[0].exit_code is None
    assert handle.pid not in {p.pid for p in sbx.commands.list()}
    with pytest.raises(codebox.NotFoundError):
        handle.send_stdin("late\n")


def test_wait_collects_a_process_and_close_stdin_ends_it(sbx: Sandbox) -> None:
    handle = sbx.commands.run("cat; echo done >&2; exit 4", background=True, stdin=True)
    chunks: List[str] = []
    with handle.stream() as events:
        handle.send_stdin(b"abc\n")
        handle.close_stdin()
        collected = [e for e in events]
    stdout = "".join(e.data for e in collected if e.type == "stdout")
    stderr = "".join(e.data for e in collected if e.type == "stderr")
    assert stdout == "abc\n" and stderr == "done\n"
    assert collected[-1].type == "end" and collected[-1].exit_code == 4
    # The process waits for a line that the callback sends once `wait` has
    # subscribed and seen it ready, so it cannot end before anyone listens.
    gated = sbx.commands.run("echo ready; read x; echo got $x", background=True, stdin=True)

    def on_stdout(data: str) -> None:
        chunks.append(data)
        if "ready" in data:
            gated.send_stdin("go\n")

    result = gated.wait(on_stdout=on_stdout)
    assert result.stdout == "ready\ngot go\n" and "".join(chunks) == result.stdout
    assert result.exit_code == 0 and result.ok and result.dropped_bytes == 0


# --- the rest -------------------------------------------------------------------------------


def test_metrics(sbx: Sandbox) -> None:
    metrics = sbx.metrics()
    assert metrics.memory_limit_bytes > 0 and metrics.pids >= 1
    assert metrics.cpu_limit > 0 and metrics.pids_limit >= metrics.pids


def test_context_manager_kills_the_sandbox(conn: Dict[str, Any]) -> None:
    with Sandbox.create(**conn) as sandbox:
        assert sandbox.run_code("1 + 1").text == "2"
    with pytest.raises(codebox.SandboxGoneError) as gone:
        Sandbox.connect(sandbox.id, **conn)
    assert gone.value.reason == "killed"


def test_async_run_code_files_and_processes(conn: Dict[str, Any]) -> None:
    async def main() -> None:
        async with await AsyncSandbox.create(**conn) as sandbox:
            seen: List[str] = []

            async def on_stdout(text: str) -> None:
                seen.append(text)

            await sandbox.run_code("z = 5")
            execution = await sandbox.run_code("print(z)\nz * 2", on_stdout=on_stdout)
            assert execution.text == "10" and seen == ["5\n"]
            ctx = await sandbox.contexts.create()
            other = await sandbox.run_code("z", context=ctx)
            assert other.error is not None and other.error.name == "NameError"
            await sandbox.files.write("a.txt", b"async")
            assert await sandbox.files.read("a.txt") == "async"
            handle = await sandbox.commands.run("cat", background=True, stdin=True)
            async with await handle.stream() as events:
                await handle.send_stdin("42\n")
                await handle.close_stdin()
                collected = [event async for event in events]
            assert "".join(e.data for e in collected if e.type == "stdout") == "42\n"
            assert collected[-1].exit_code == 0
        with pytest.raises(codebox.SandboxGoneError):
            await AsyncSandbox.connect(sandbox.id, **conn)

    asyncio.run(main())


def _pty_route_exists(server: RunningServer, sandbox_id: str) -> bool:
    """A plain GET of the route: 400 (not a WebSocket upgrade) when the
    server has it, 404 when it does not."""
    answer = httpx.get(
        f"{server.url}/api/v1/sandboxes/{sandbox_id}/pty",
        headers={"X-API-Key": server.admin_key},
        timeout=30,
    )
    return answer.status_code != 404


def test_pty_runs_a_shell(server: RunningServer, sbx: Sandbox) -> None:
    pytest.importorskip("websockets")
    if not _pty_route_exists(server, sbx.id):
        pytest.skip("this server has no PTY route yet (GET /api/v1/sandboxes/{id}/pty)")

    def read_until(terminal: codebox.Terminal, needle: bytes, output: bytes) -> bytes:
        while needle not in output:
            chunk = terminal.recv(timeout=60)
            assert chunk is not None, f"the terminal closed: {output!r}"
            output += chunk
        return output

    with sbx.pty.create(cols=100, rows=30, env={"MARK": "pty-ok"}) as terminal:
        terminal.send("stty size; echo $MARK-$((6*7))\n")
        output = read_until(terminal, b"pty-ok-42", b"")
        assert b"30 100" in output
        terminal.resize(120, 40)
        terminal.send("stty size\n")
        read_until(terminal, b"40 120", output)
        terminal.send("exit 5\n")
        while terminal.recv(timeout=60) is not None:
            pass
        assert terminal.exit_code == 5 and terminal.closed
    with pytest.raises(codebox.ValidationError):
        sbx.pty.create(cols=5000)


# --- the python3 template: charts ------------------------------------------------------------


@pytest.fixture(scope="module")
def template_ready(server: RunningServer) -> None:
    """Waits (bounded) until the server's background build of the python3
    template is done: a new sandbox then has it mounted."""
    conn: Dict[str, Any] = {"api_url": server.url, "api_key": server.admin_key}
    deadline = time.monotonic() + TEMPLATE_DEADLINE_SECONDS
    while True:
        with Sandbox.create(**conn) as probe:
            if probe.commands.run(f"test -x {TEMPLATE_MOUNT}/bin/python").exit_code == 0:
                return
        if time.monotonic() > deadline:
            pytest.fail("the python3 template was not built in time (see the server log)")
        time.sleep(5)


def test_matplotlib_chart_is_a_valid_png(
    template_ready: None, conn: Dict[str, Any], tmp_path: Path
) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots(figsize=(4, 3), dpi=50)\n"
        "ax.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.show()\n"
    )
    with Sandbox.create(**conn) as sandbox:
        results: List[codebox.Result] = []
        execution = sandbox.run_code(code, on_result=results.append, timeout=120)
        assert execution.error is None, execution.error
        charts = [r for r in execution.results if r.png is not None]
        assert len(charts) == 1 and results == list(execution.results)
        data = charts[0].png_bytes
        assert data is not None
        chunks = png_chunks(data)
        width, height = struct.unpack(">II", chunks[0][1][:8])
        # Figures are saved with bbox_inches="tight": about 4 x 3 in at 50 dpi.
        assert 100 <= width <= 220 and 80 <= height <= 170
        assert any(kind == b"IDAT" for kind, _ in chunks)
        assert charts[0]._repr_png_() == data
        target = tmp_path / "chart.png"
        assert charts[0].save_png(target) == len(data)
        assert target.read_bytes() == data
        frame = sandbox.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
        assert frame.main_result is not None and "<table" in (frame.main_result.html or "")


def test_data_analysis_example(template_ready: None, conn: Dict[str, Any]) -> None:
    import sys

    examples = str(Path(__file__).resolve().parents[1] / "examples")
    sys.path.insert(0, examples)
    try:
        import data_analysis
    finally:
        sys.path.remove(examples)
    with Sandbox.create(**conn) as sandbox:
        summary, chart = data_analysis.analyse(sandbox, data_analysis.make_csv())
    assert "count" in summary and "mean" in summary
    assert chart is not None
    width, height = struct.unpack(">II", png_chunks(chart)[0][1][:8])
    assert 300 <= width <= 500 and 150 <= height <= 260
