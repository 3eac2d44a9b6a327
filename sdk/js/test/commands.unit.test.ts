/**
 * Background processes and the PTY against fakes: what is sent, how the
 * output stream is read, stdin, signals, reattach, and the WebSocket frames.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { APIConnectionError, NotFoundError, Sandbox, SandboxGoneError } from "@codebox/sdk";

import { exitOf } from "../dist/pty.js";
import { API_KEY, BASE, fail, ndjson, pushStream, standardServer } from "./fakes.js";

async function setup(fake = standardServer()) {
  const sbx = await Sandbox.create(fake.connection());
  return { fake, sbx };
}

test("a background command streams from its start and resolves to a handle", async () => {
  const { fake, sbx } = await setup();
  const { stream, push, end } = pushStream();
  fake.set("POST", `${BASE}/processes`, { status: 200, body: stream });
  push('{"type":"start","pid":42,"dropped_bytes":0}\n');
  const out: string[] = [];
  const handle = await sbx.commands.run("cat", {
    background: true,
    stdin: true,
    tag: "t",
    env: { A: "1" },
    cwd: "/tmp",
    timeout: 60,
    onStdout: (data) => out.push(`out:${data}`),
    onStderr: (data) => out.push(`err:${data}`),
  });
  assert.equal(handle.pid, 42);
  assert.deepEqual(fake.body(), {
    cmd: "cat",
    background: false,
    stdin: true,
    tag: "t",
    env: { A: "1" },
    cwd: "/tmp",
    timeout: 60,
  });
  assert.equal(fake.requests.at(-1)!.headers.get("accept"), "application/x-ndjson");
  push(
    '{"type":"stdout","data":"a"}\n{"type":"stderr","data":"b"}\n{"type":"stdout","data":"c"}\n',
  );
  push('{"type":"end","exit_code":3,"signal":null,"timed_out":false}\n');
  end();
  const exit = await handle.wait();
  assert.deepEqual(out, ["out:a", "err:b", "out:c"]);
  assert.deepEqual(exit, {
    exitCode: 3,
    signal: null,
    timedOut: false,
    stdout: "ac",
    stderr: "b",
    droppedBytes: 0,
    ok: false,
  });
  assert.equal(handle.stdout, "ac");
});

test("stdin, close-stdin, signals and kill", async () => {
  const { fake, sbx } = await setup();
  const handle = await sbx.commands.run("cat", { background: true, stdin: true });
  assert.equal(await handle.sendStdin("abc"), 3);
  let request = fake.requests.at(-1)!;
  assert.equal(request.url.pathname, `${BASE}/processes/42/stdin`);
  assert.equal(request.headers.get("content-type"), "application/octet-stream");
  assert.equal(new TextDecoder().decode(request.rawBody as Uint8Array), "abc");
  await handle.sendStdin(new Uint8Array([1, 2, 3]));
  await handle.closeStdin();
  assert.equal(fake.requests.at(-1)!.url.pathname, `${BASE}/processes/42/close-stdin`);
  await handle.signal("SIGTERM");
  assert.deepEqual(fake.body(), { signal: "SIGTERM" });
  assert.equal(await handle.kill(), true);
  assert.deepEqual(fake.body(), { signal: "SIGKILL" });
  fake.set("POST", `${BASE}/processes/42/signal`, fail(404, "NOT_FOUND", "no such process"));
  assert.equal(await handle.kill(), false);
  assert.equal(await sbx.commands.kill(42), false);
  request = fake.requests.at(-1)!;
  assert.equal(request.url.pathname, `${BASE}/processes/42/signal`);
  await handle.wait();
});

test("reattach reads the stream route; list reads the processes", async () => {
  const { fake, sbx } = await setup();
  const handle = await sbx.commands.connect(42);
  assert.deepEqual(fake.calls().at(-1), ["GET", `${BASE}/processes/42/stream`]);
  assert.equal((await handle.wait()).stdout, "out");
  assert.deepEqual(await sbx.commands.list(), [
    { pid: 42, cmd: ["bash", "-c", "sleep 100"], tag: "t", stdinOpen: true },
  ]);
  fake.set("GET", `${BASE}/processes/7/stream`, fail(404, "NOT_FOUND", "no such process"));
  await assert.rejects(sbx.commands.connect(7), NotFoundError);
});

test("disconnect stops listening; the failure surfaces only through wait", async () => {
  const { fake, sbx } = await setup();
  const { stream, push } = pushStream();
  fake.set("POST", `${BASE}/processes`, { status: 200, body: stream });
  push('{"type":"start","pid":42,"dropped_bytes":5}\n');
  const handle = await sbx.commands.run("sleep 100", { background: true });
  handle.disconnect();
  await assert.rejects(handle.wait(), /stopped listening/);
});

test("a stream that does not start with start is refused; one without end fails wait", async () => {
  const { fake, sbx } = await setup();
  fake.set("POST", `${BASE}/processes`, ndjson({ type: "stdout", data: "x" }));
  await assert.rejects(sbx.commands.run("x", { background: true }), /start event/);
  fake.set("POST", `${BASE}/processes`, ndjson({ type: "start", pid: 1, dropped_bytes: 0 }));
  const handle = await sbx.commands.run("x", { background: true });
  await assert.rejects(handle.wait(), /ended without its end/);
});

test("a gone sandbox is a SandboxGoneError when starting", async () => {
  const { fake, sbx } = await setup();
  fake.set("POST", `${BASE}/processes`, fail(410, "SANDBOX_GONE", "gone", { reason: "killed" }));
  await assert.rejects(sbx.commands.run("x", { background: true }), SandboxGoneError);
});

test("a one-shot command refuses stdin: true", async () => {
  const { sbx } = await setup();
  await assert.rejects(sbx.commands.run("x", { stdin: true as unknown as string }), TypeError);
});

test("the pty opens a WebSocket with the key, sends input and resizes", async () => {
  const { fake, sbx } = await setup();
  const received: string[] = [];
  const pty = await sbx.pty.create({
    cols: 100,
    rows: 40,
    cmd: "bash -l",
    cwd: "/tmp",
    timeout: 60,
    envs: { TERM: "xterm-256color" },
    onData: (data) => received.push(new TextDecoder().decode(data)),
    webSocket: fake.webSocket,
  });
  const socket = fake.sockets.at(-1)!;
  const url = new URL(socket.url);
  assert.equal(url.protocol, "ws:");
  assert.equal(url.pathname, `${BASE}/pty`);
  assert.equal(url.searchParams.get("cols"), "100");
  assert.equal(url.searchParams.get("rows"), "40");
  assert.equal(url.searchParams.get("cmd"), "bash -l");
  assert.equal(url.searchParams.get("cwd"), "/tmp");
  assert.equal(url.searchParams.get("timeout"), "60");
  assert.equal(url.searchParams.get("env.TERM"), "xterm-256color");
  assert.equal(fake.requests.at(-1)!.headers.get("x-api-key"), API_KEY);
  assert.equal(socket.binaryType, "arraybuffer");
  // The sandbox was checked first, so a refusal is a typed error.
  assert.deepEqual(fake.calls().at(-2), ["GET", BASE]);

  pty.sendInput("ls\n");
  pty.resize(120, 50);
  assert.deepEqual(new TextDecoder().decode(socket.sent[0] as Uint8Array), "ls\n");
  assert.deepEqual(JSON.parse(socket.sent[1] as string), { type: "resize", cols: 120, rows: 50 });
  assert.throws(() => pty.resize(0, 10), RangeError);

  socket.emit("message", { data: new TextEncoder().encode("out").buffer });
  socket.emit("message", { data: "text" });
  assert.deepEqual(received, ["out", "text"]);
  const reason = '{"exit_code":3,"signal":null,"timed_out":false}';
  socket.emit("close", { code: 1000, reason });
  assert.deepEqual(await pty.wait(), { code: 1000, reason, exitCode: 3, signal: null });
  assert.throws(() => pty.sendInput("x"), APIConnectionError);
});

test("a pty on a gone sandbox is a typed error before any WebSocket", async () => {
  const fake = standardServer();
  const { sbx } = await setup(fake);
  fake.set("GET", BASE, fail(410, "SANDBOX_GONE", "gone", { reason: "timeout" }));
  await assert.rejects(
    sbx.pty.create({ onData: () => undefined, webSocket: fake.webSocket }),
    SandboxGoneError,
  );
  assert.equal(fake.sockets.length, 0);
});

test("a socket that closes before opening rejects; no WebSocket is a TypeError", async () => {
  const fake = standardServer();
  const { sbx } = await setup(fake);
  const refusing = class {
    binaryType = "";
    readyState = 0;
    listeners: Record<string, (event: never) => void> = {};
    constructor() {
      queueMicrotask(() => {
        this.listeners["error"]?.({} as never);
        this.listeners["close"]?.({ code: 1006, reason: "" } as never);
      });
    }
    send(): void {}
    close(): void {}
    addEventListener(type: string, listener: (event: never) => void): void {
      this.listeners[type] = listener;
    }
  };
  await assert.rejects(
    sbx.pty.create({ onData: () => undefined, webSocket: refusing }),
    APIConnectionError,
  );
  const saved = (globalThis as { WebSocket?: unknown }).WebSocket;
  delete (globalThis as { WebSocket?: unknown }).WebSocket;
  try {
    await assert.rejects(sbx.pty.create({ onData: () => undefined }), TypeError);
  } finally {
    if (saved !== undefined) (globalThis as { WebSocket?: unknown }).WebSocket = saved;
  }
});

test("exit statuses in close reasons", () => {
  assert.deepEqual(exitOf('{"exit_code":7,"signal":null,"timed_out":false}'), {
    exitCode: 7,
    signal: null,
  });
  assert.deepEqual(exitOf('{"exit_code":null,"signal":9,"timed_out":true}'), {
    exitCode: null,
    signal: 9,
  });
  assert.deepEqual(exitOf("the sandbox ended"), { exitCode: null, signal: null });
  assert.deepEqual(exitOf(""), { exitCode: null, signal: null });
  assert.deepEqual(exitOf("[1]"), { exitCode: null, signal: null });
});
