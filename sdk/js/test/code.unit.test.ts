/**
 * runCode, Result and contexts against a scripted fake server: the request,
 * the streamed events, the callbacks and their order, and failures.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  APIConnectionError,
  NotFoundError,
  Result,
  Sandbox,
  SandboxGoneError,
  UnexpectedResponseError,
} from "@codebox/sdk";

import {
  BASE,
  CONTEXT_JSON,
  END_EVENT,
  fail,
  ndjson,
  pushStream,
  standardServer,
} from "./fakes.js";

// A 1x1 PNG.
const PNG_B64 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

async function sandbox(fake = standardServer()): Promise<Sandbox> {
  return Sandbox.create(fake.connection());
}

test("runCode streams NDJSON and folds the events", async () => {
  const fake = standardServer();
  const sbx = await sandbox(fake);
  const seen: string[] = [];
  const execution = await sbx.runCode("print(1)\n2", {
    onStdout: (text) => seen.push(`out:${text}`),
    onStderr: (text) => seen.push(`err:${text}`),
    onResult: (result) => seen.push(`result:${result.text}`),
    onError: (error) => seen.push(`error:${error.name}`),
  });
  const request = fake.requests.at(-1)!;
  assert.equal(request.url.pathname, `${BASE}/execute`);
  assert.equal(request.headers.get("accept"), "application/x-ndjson");
  assert.deepEqual(JSON.parse(request.body!), { code: "print(1)\n2" });
  assert.deepEqual(seen, ["out:1\n", "err:warn\n", "result:2", "error:ValueError"]);
  assert.equal(execution.text, "2");
  assert.equal(execution.results.length, 1);
  assert.equal(execution.results[0]!.html, "<b>2</b>");
  assert.deepEqual(execution.logs, { stdout: ["1\n"], stderr: ["warn\n"] });
  assert.equal(execution.stdout, "1\n");
  assert.deepEqual(execution.error, {
    name: "ValueError",
    value: "bad",
    traceback: "Traceback...",
  });
  assert.equal(execution.executionCount, 3);
  assert.equal(execution.durationMs, 12);
  assert.equal(execution.executionId, "ex1");
  assert.equal(execution.contextId, "default-python");
  assert.equal(execution.outcome, "ok");
  assert.equal(execution.truncated, false);
  assert.equal(execution.restarted, false);
  assert.equal(execution.reason, null);
  assert.ok(Object.isFrozen(execution));
});

test("runCode sends its options in the API's names", async () => {
  const fake = standardServer();
  const sbx = await sandbox(fake);
  await sbx.runCode("x", {
    language: "typescript",
    context: "ctx-1",
    timeoutMs: 1500,
    envVars: { A: "1" },
  });
  assert.deepEqual(fake.body(), {
    code: "x",
    language: "typescript",
    context_id: "ctx-1",
    timeout: 2,
    env_vars: { A: "1" },
  });
  await sbx.runCode("x", { context: { ...parseCtx(), id: "ctx-2" } });
  assert.deepEqual(fake.body(), { code: "x", context_id: "ctx-2" });
  await assert.rejects(sbx.runCode("x", { timeoutMs: 0 }), RangeError);
  await assert.rejects(sbx.runCode("x", { timeoutMs: Number.NaN }), RangeError);
});

function parseCtx(): { id: string; language: string; cwd: string | null; isDefault: boolean } {
  return { id: String(CONTEXT_JSON["id"]), language: "python", cwd: null, isDefault: false };
}

test("callbacks run as events arrive, before the execution ends", async () => {
  const fake = standardServer();
  const { stream, push, end } = pushStream();
  fake.set("POST", `${BASE}/execute`, { status: 200, body: stream });
  const sbx = await sandbox(fake);
  const first = new Promise<string>((resolve) => {
    const running = sbx.runCode("slow", { onStdout: resolve });
    void running.then((execution) => assert.equal(execution.stdout, "a\nb\n"));
  });
  // An event split across chunks, and two events in one chunk.
  push('{"type":"stdout",');
  push('"text":"a\\n"}\n');
  assert.equal(await first, "a\n");
  push(`{"type":"stdout","text":"b\\n"}\n${JSON.stringify(END_EVENT)}\n`);
  end();
});

test("unknown event types are skipped", async () => {
  const fake = standardServer();
  fake.set(
    "POST",
    `${BASE}/execute`,
    ndjson({ type: "keepalive" }, { type: "stdout", text: "x" }, END_EVENT),
  );
  const execution = await (await sandbox(fake)).runCode("x");
  assert.deepEqual(execution.logs.stdout, ["x"]);
});

test("an end with a reason is reported", async () => {
  const fake = standardServer();
  fake.set(
    "POST",
    `${BASE}/execute`,
    ndjson({ ...END_EVENT, outcome: "interrupted", reason: "server_shutdown" }),
  );
  const execution = await (await sandbox(fake)).runCode("x");
  assert.equal(execution.reason, "server_shutdown");
  assert.equal(execution.outcome, "interrupted");
});

test("a stream without its end is an UnexpectedResponseError", async () => {
  const fake = standardServer();
  fake.set("POST", `${BASE}/execute`, ndjson({ type: "stdout", text: "x" }));
  await assert.rejects((await sandbox(fake)).runCode("x"), UnexpectedResponseError);
  fake.set("POST", `${BASE}/execute`, { status: 200, body: "not json\n" });
  await assert.rejects((await sandbox(fake)).runCode("x"), UnexpectedResponseError);
});

test("API errors before the code starts are typed errors", async () => {
  const fake = standardServer();
  fake.set("POST", `${BASE}/execute`, fail(404, "NOT_FOUND", "no such context"));
  await assert.rejects((await sandbox(fake)).runCode("x", { context: "ctx-x" }), NotFoundError);
  fake.set("POST", `${BASE}/execute`, fail(410, "SANDBOX_GONE", "gone", { reason: "timeout" }));
  await assert.rejects((await sandbox(fake)).runCode("x"), (error) => {
    assert.ok(error instanceof SandboxGoneError);
    assert.equal(error.reason, "timeout");
    return true;
  });
});

test("a stream that breaks off is an APIConnectionError", async () => {
  const fake = standardServer();
  let fail_: (error: Error) => void = () => undefined;
  const broken = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode('{"type":"stdout","text":"a"}\n'));
      fail_ = (error) => controller.error(error);
    },
  });
  fake.set("POST", `${BASE}/execute`, { status: 200, body: broken });
  const sbx = await sandbox(fake);
  const running = sbx.runCode("x", { onStdout: () => fail_(new TypeError("terminated")) });
  await assert.rejects(running, (error) => {
    assert.ok(error instanceof APIConnectionError, String(error));
    assert.match(error.message, /broke off/);
    return true;
  });
});

test("aborting the signal closes the stream and rejects with the reason", async () => {
  const fake = standardServer();
  let cancelled = false;
  const endless = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode('{"type":"stdout","text":"tick"}\n'));
    },
    cancel() {
      cancelled = true;
    },
  });
  fake.set("POST", `${BASE}/execute`, { status: 200, body: endless });
  const sbx = await sandbox(fake);
  const controller = new AbortController();
  const running = sbx.runCode("while True: pass", {
    signal: controller.signal,
    onStdout: () => controller.abort(new Error("enough")),
  });
  await assert.rejects(running, /enough/);
  assert.ok(fake.requests.at(-1)!.signal!.aborted, "the request was aborted");
  assert.ok(cancelled, "the response body was cancelled");
});

test("Result accessors, formats and bytes", () => {
  const result = new Result({
    "text/plain": "<Figure>",
    "image/png": PNG_B64,
    "image/svg+xml": "<svg/>",
    "application/vnd.custom": "x",
    is_main_result: false,
  });
  assert.equal(result.text, "<Figure>");
  assert.equal(result.svg, "<svg/>");
  assert.equal(result.html, undefined);
  assert.equal(result.isMainResult, false);
  assert.equal(result.truncated, false);
  assert.deepEqual(result.formats(), ["text", "svg", "png", "application/vnd.custom"]);
  assert.deepEqual({ ...result.extra }, { "application/vnd.custom": "x" });
  const png = result.bytes("png")!;
  assert.deepEqual([...png.slice(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.equal(result.bytes("jpeg"), undefined);
  assert.equal(String(result), "<Figure>");
  assert.throws(
    () => new Result({ "text/plain": 1, is_main_result: true }),
    UnexpectedResponseError,
  );
  assert.throws(() => new Result({ "text/plain": "x" }), UnexpectedResponseError);
  assert.throws(
    () => new Result({ "image/png": "***", is_main_result: true }).bytes("png"),
    UnexpectedResponseError,
  );
});

test("contexts: create, list, restart, interrupt, remove", async () => {
  const fake = standardServer();
  const sbx = await sandbox(fake);
  const context = await sbx.contexts.create({
    language: "python",
    cwd: "/tmp",
    envVars: { A: "1" },
  });
  assert.deepEqual(fake.body(), { language: "python", cwd: "/tmp", env_vars: { A: "1" } });
  assert.deepEqual(context, {
    id: "ctx-0123456789abcdef",
    language: "python",
    cwd: "/home/user",
    isDefault: false,
  });
  assert.deepEqual(await sbx.contexts.list(), [context]);
  assert.deepEqual(await sbx.contexts.restart(context), context);
  await sbx.contexts.interrupt(context.id);
  await sbx.contexts.remove(context);
  assert.deepEqual(fake.calls().slice(-5), [
    ["POST", `${BASE}/contexts`],
    ["GET", `${BASE}/contexts`],
    ["POST", `${BASE}/contexts/${context.id}/restart`],
    ["POST", `${BASE}/contexts/${context.id}/interrupt`],
    ["DELETE", `${BASE}/contexts/${context.id}`],
  ]);
  // A context id stays one path segment.
  await assert.rejects(sbx.contexts.remove("../x"), NotFoundError);
  assert.equal(fake.requests.at(-1)!.url.pathname, `${BASE}/contexts/%2E%2E%2Fx`);
});

test("a default empty create sends an empty body", async () => {
  const fake = standardServer();
  await (await sandbox(fake)).contexts.create();
  assert.deepEqual(fake.body(), {});
});
