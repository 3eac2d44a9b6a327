/**
 * Sandbox against a scripted fake server: what is sent, how answers are read,
 * and what per-call signals and timeouts do.
 */

import assert from "node:assert/strict";
import { inspect } from "node:util";
import { test } from "node:test";

import {
  AuthenticationError,
  NotFoundError,
  Sandbox,
  SandboxGoneError,
  TimeoutError,
  UnexpectedResponseError,
  VERSION,
  ValidationError,
} from "@codebox/sdk";

import { parseCommandResult, parseSandbox, parseTimestamp } from "../dist/models.js";
import { commandHttpTimeoutMs } from "../dist/requests.js";
import {
  API_KEY,
  BASE,
  COMMAND_JSON,
  FakeServer,
  RUNTIMES_JSON,
  SANDBOX_ID,
  fail,
  killedJson,
  ok,
  sandboxJson,
  stall,
  standardServer,
  withEnv,
} from "./fakes.js";

test("create sends only the runtime by default", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.create(fake.connection());
  assert.equal(sbx.id, SANDBOX_ID);
  assert.equal(sbx.sandboxId, SANDBOX_ID);
  assert.deepEqual(fake.body(0), { runtime: "python3" });
  const request = fake.requests[0]!;
  assert.equal(request.headers.get("x-api-key"), API_KEY);
  assert.equal(request.headers.get("user-agent"), `codebox-js/${VERSION}`);
  assert.equal(request.headers.get("content-type"), "application/json");
  assert.equal(request.headers.get("accept"), "application/json");
});

test("create sends every option", async () => {
  const fake = standardServer();
  await Sandbox.create({
    runtime: "node",
    cpu: 0.5,
    memory: 256,
    timeout: 600,
    metadata: { team: "data" },
    envVars: { A: "1" },
    ...fake.connection(),
  });
  assert.deepEqual(fake.body(0), {
    runtime: "node",
    resources: { cpu: 0.5, memory: 256 },
    timeout: 600,
    metadata: { team: "data" },
    env_vars: { A: "1" },
  });
});

test("one resource completes with the documented default", async () => {
  const fake = standardServer();
  await Sandbox.create({ cpu: 2, ...fake.connection() });
  await Sandbox.create({ memory: 1024, ...fake.connection() });
  assert.deepEqual((fake.body(0) as { resources: unknown }).resources, { cpu: 2, memory: 512 });
  assert.deepEqual((fake.body(1) as { resources: unknown }).resources, { cpu: 1, memory: 1024 });
});

test("config comes from the environment", async () => {
  const fake = new FakeServer().on("GET", "/prefix/api/v1/runtimes", ok(RUNTIMES_JSON));
  await withEnv(
    { CODEBOX_API_URL: "http://env-host:9999/prefix/", CODEBOX_API_KEY: "cbx_from_env" },
    () => Sandbox.runtimes({ fetch: fake.fetch }),
  );
  const request = fake.requests[0]!;
  assert.equal(request.url.href, "http://env-host:9999/prefix/api/v1/runtimes");
  assert.equal(request.headers.get("x-api-key"), "cbx_from_env");
});

test("options win over the environment", async () => {
  const fake = standardServer();
  await withEnv({ CODEBOX_API_URL: "http://env-host:9999", CODEBOX_API_KEY: "cbx_from_env" }, () =>
    Sandbox.runtimes(fake.connection()),
  );
  assert.equal(fake.requests[0]!.url.host, "codebox.test");
  assert.equal(fake.requests[0]!.headers.get("x-api-key"), API_KEY);
});

test("the default url is the local server", async () => {
  const fake = standardServer();
  await Sandbox.runtimes({ apiKey: API_KEY, fetch: fake.fetch });
  assert.equal(fake.requests[0]!.url.href, "http://127.0.0.1:3000/api/v1/runtimes");
});

for (const url of [
  "ftp://host",
  "127.0.0.1:3000",
  "http://host/?q=1",
  "http://host/#x",
  "http://u:p@host",
]) {
  test(`a bad url is refused before any request: ${url}`, async () => {
    const fake = standardServer();
    await assert.rejects(
      Sandbox.runtimes({ apiUrl: url, apiKey: API_KEY, fetch: fake.fetch }),
      TypeError,
    );
    assert.equal(fake.requests.length, 0);
  });
}

test("a missing api key fails before any request", async () => {
  const fake = standardServer();
  await assert.rejects(
    Sandbox.create({ apiUrl: "http://codebox.test", fetch: fake.fetch }),
    (error) => {
      assert.ok(error instanceof AuthenticationError);
      assert.match(error.message, /CODEBOX_API_KEY/);
      return true;
    },
  );
  assert.deepEqual(fake.requests, []);
});

test("info reads every field", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.create(fake.connection());
  const info = await sbx.info();
  assert.equal(info.status, "running");
  assert.ok(info.isLive);
  assert.deepEqual(info.resources, { cpu: 1, memory: 512 });
  assert.equal(info.createdAt.toISOString(), "2026-11-29T10:00:00.123Z");
  assert.equal(info.expiresAt.toISOString(), "2026-11-29T10:05:00.000Z");
  assert.equal(info.endedAt, null);
  assert.equal(info.terminationReason, null);
  assert.equal(sbx.lastKnownInfo, info);
  assert.ok(Object.isFrozen(info));
});

test("connect gets the sandbox and encodes the id", async () => {
  const fake = standardServer();
  await Sandbox.connect(SANDBOX_ID, fake.connection());
  assert.deepEqual(fake.calls(), [["GET", BASE]]);
  await assert.rejects(Sandbox.connect("../runtimes", fake.connection()), NotFoundError);
  // The id stays one path segment: it cannot reach another route.
  assert.equal(fake.requests.at(-1)!.url.pathname, "/api/v1/sandboxes/%2E%2E%2Fruntimes");
});

for (const [sandboxId, raw] of [
  ["a b?c#d", "a%20b%3Fc%23d"],
  ["x.y", "x%2Ey"],
  ["it's(*)!", "it%27s%28%2A%29%21"],
  ["ü/~", "%C3%BC%2F~"],
]) {
  test(`ids stay one segment: ${sandboxId}`, async () => {
    const fake = new FakeServer();
    await assert.rejects(Sandbox.connect(sandboxId!, fake.connection()), NotFoundError);
    assert.equal(fake.requests.at(-1)!.url.pathname, `/api/v1/sandboxes/${raw}`);
  });
}

for (const sandboxId of ["..", ".", ""]) {
  test(`an id URL parsing would drop is not found without a request: ${JSON.stringify(sandboxId)}`, async () => {
    const fake = standardServer();
    await assert.rejects(Sandbox.connect(sandboxId, fake.connection()), (error) => {
      assert.ok(error instanceof NotFoundError);
      assert.equal(error.status, null);
      return true;
    });
    assert.deepEqual(fake.requests, []);
  });
}

test("list follows cursors and sends filters", async () => {
  const first = ok({
    sandboxes: [sandboxJson("a".repeat(26)), sandboxJson("b".repeat(26))],
    next_cursor: "c1",
  });
  const last = ok({ sandboxes: [sandboxJson("c".repeat(26))], next_cursor: null });
  const fake = new FakeServer().on("GET", "/api/v1/sandboxes", first, last);
  const ids: string[] = [];
  for await (const info of Sandbox.list({
    status: "running",
    metadata: { team: "data", env: "dev" },
    pageSize: 2,
    ...fake.connection(),
  })) {
    ids.push(info.id);
  }
  assert.deepEqual(ids, ["a".repeat(26), "b".repeat(26), "c".repeat(26)]);
  const params = fake.requests.map((r) => Object.fromEntries(r.url.searchParams));
  const common = { status: "running", "metadata.team": "data", "metadata.env": "dev", limit: "2" };
  assert.deepEqual(params, [common, { ...common, cursor: "c1" }]);
});

test("list checks settings at once", () => {
  assert.throws(() => Sandbox.list({ apiUrl: "http://codebox.test" }), AuthenticationError);
});

test("list is lazy", async () => {
  const fake = new FakeServer().on(
    "GET",
    "/api/v1/sandboxes",
    ok({ sandboxes: [sandboxJson()], next_cursor: "x" }),
  );
  const pages = Sandbox.list(fake.connection());
  assert.equal(fake.requests.length, 0);
  const first = await pages.next();
  assert.equal(first.done, false);
  assert.equal(first.value?.id, SANDBOX_ID);
  assert.equal(fake.requests.length, 1);
  // Stopping early fetches nothing more.
  await pages.return(undefined);
  assert.equal(fake.requests.length, 1);
});

test("setTimeout and kill", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.create(fake.connection());
  await sbx.setTimeout(1800);
  const final = await sbx.kill();
  assert.deepEqual(fake.calls().slice(1), [
    ["POST", `${BASE}/timeout`],
    ["DELETE", BASE],
  ]);
  assert.deepEqual(fake.body(1), { timeout: 1800 });
  assert.equal(fake.requests[2]!.body, null);
  assert.equal(fake.requests[2]!.headers.get("content-type"), null);
  assert.equal(final.status, "terminated");
  assert.equal(final.terminationReason, "killed");
  assert.ok(final.endedAt instanceof Date);
  assert.equal(final.isLive, false);
});

test("commands.run sends its options", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.create(fake.connection());
  const result = await sbx.commands.run("cat", {
    timeout: 120,
    env: { X: "1" },
    cwd: "/tmp",
    stdin: "hi",
  });
  await sbx.commands.run("true");
  assert.deepEqual(result, {
    stdout: "42\n",
    stderr: "",
    exitCode: 0,
    timedOut: false,
    truncated: false,
    durationMs: 18,
    ok: true,
  });
  assert.deepEqual(fake.body(1), {
    cmd: "cat",
    timeout: 120,
    env: { X: "1" },
    cwd: "/tmp",
    stdin: "hi",
  });
  assert.deepEqual(fake.body(2), { cmd: "true" });
});

test("the HTTP wait of a command outlasts the command's own timeout", () => {
  // Server default 30 s plus a 30 s margin; never below the request timeout.
  assert.equal(commandHttpTimeoutMs(undefined, 60_000), 60_000);
  assert.equal(commandHttpTimeoutMs(120, 60_000), 150_000);
  assert.equal(commandHttpTimeoutMs(5, 90_000), 90_000);
});

test("a command may take longer than the request timeout", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.create({ ...fake.connection(), requestTimeoutMs: 5 });
  const slowly = async (): Promise<ReturnType<typeof ok>> => {
    await new Promise((resolve) => setTimeout(resolve, 50));
    return ok(COMMAND_JSON);
  };
  fake.set("POST", `${BASE}/commands`, slowly);
  fake.set("GET", BASE, slowly);
  assert.equal((await sbx.commands.run("sleep 0.05")).exitCode, 0);
  await assert.rejects(sbx.info(), TimeoutError);
});

test("an answer that never comes is a TimeoutError", async () => {
  const fake = standardServer().set("GET", "/api/v1/runtimes", stall);
  await assert.rejects(Sandbox.runtimes({ ...fake.connection(), requestTimeoutMs: 1 }), (error) => {
    assert.ok(error instanceof TimeoutError);
    assert.equal(error.code, null);
    assert.match(error.message, /GET \/api\/v1\/runtimes/);
    return true;
  });
});

test("a per-call requestTimeoutMs wins over the connection's", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.create(fake.connection());
  fake.set("GET", BASE, stall);
  await assert.rejects(sbx.info({ requestTimeoutMs: 1 }), TimeoutError);
});

test("a per-call requestTimeoutMs must be positive", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.create(fake.connection());
  await assert.rejects(sbx.info({ requestTimeoutMs: 0 }), RangeError);
  await assert.rejects(sbx.commands.run("true", { requestTimeoutMs: -1 }), RangeError);
  assert.equal(fake.requests.length, 1);
  assert.equal(String(sbx), `Sandbox(id=${SANDBOX_ID}, runtime=python3)`);
});

test("the caller's signal aborts a call with its reason", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.create(fake.connection());
  fake.set("POST", `${BASE}/commands`, stall);
  const controller = new AbortController();
  const running = sbx.commands.run("sleep 100", { signal: controller.signal });
  controller.abort(new Error("user gave up"));
  await assert.rejects(running, /user gave up/);
  // An already aborted signal sends nothing.
  const before = fake.requests.length;
  await assert.rejects(sbx.kill({ signal: AbortSignal.abort() }), { name: "AbortError" });
  assert.equal(fake.requests.length, before);
});

test("command results are read strictly", () => {
  assert.equal(parseCommandResult({ ...COMMAND_JSON, exit_code: 1 }).ok, false);
  assert.equal(parseCommandResult({ ...COMMAND_JSON, timed_out: true }).ok, false);
  for (const patch of [
    { exit_code: true },
    { exit_code: "0" },
    { stdout: null },
    { timed_out: 0 },
    { duration_ms: 1.5 },
  ]) {
    assert.throws(
      () => parseCommandResult({ ...COMMAND_JSON, ...patch }),
      UnexpectedResponseError,
      JSON.stringify(patch),
    );
  }
});

test("the sandbox view tolerates new fields but not missing ones", () => {
  assert.equal(parseSandbox({ ...sandboxJson(), gpu: 1 }).id, SANDBOX_ID);
  const broken = sandboxJson();
  delete broken["expires_at"];
  assert.throws(() => parseSandbox(broken), UnexpectedResponseError);
  assert.throws(
    () => parseSandbox({ ...sandboxJson(), metadata: { a: 1 } }),
    UnexpectedResponseError,
  );
  assert.throws(
    () => parseSandbox({ ...sandboxJson(), resources: { cpu: "1", memory: 512 } }),
    UnexpectedResponseError,
  );
});

test("metadata keys stay plain keys", () => {
  const info = parseSandbox({
    ...sandboxJson(),
    metadata: JSON.parse('{"__proto__": "x", "a": "b"}'),
  });
  assert.equal(info.metadata["__proto__"], "x");
  assert.equal(info.metadata["a"], "b");
});

for (const [text, expected] of [
  ["2026-11-29T10:00:00Z", "2026-11-29T10:00:00.000Z"],
  ["2026-11-29T10:00:00.5Z", "2026-11-29T10:00:00.500Z"],
  ["2026-11-29T10:00:00.123456789Z", "2026-11-29T10:00:00.123Z"],
  ["2026-11-29t10:00:00z", "2026-11-29T10:00:00.000Z"],
  ["2026-11-29T12:00:00+02:00", "2026-11-29T10:00:00.000Z"],
]) {
  test(`timestamp ${text}`, () => {
    assert.equal(parseTimestamp(text, "t").toISOString(), expected);
  });
}

for (const text of ["2026-11-29", "yesterday", 12, null, "2026-13-45T10:00:00Z"]) {
  test(`bad timestamp ${JSON.stringify(text)}`, () => {
    assert.throws(() => parseTimestamp(text, "t"), UnexpectedResponseError);
  });
}

test("create failure throws the typed error", async () => {
  const fake = new FakeServer().on(
    "POST",
    "/api/v1/sandboxes",
    fail(400, "VALIDATION_ERROR", "unknown runtime", { field: "runtime" }),
  );
  await assert.rejects(Sandbox.create({ runtime: "cobol", ...fake.connection() }), (error) => {
    assert.ok(error instanceof ValidationError);
    assert.equal(error.field, "runtime");
    assert.equal(error.status, 400);
    return true;
  });
});

test("a killed sandbox is gone", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.create(fake.connection());
  fake.set("GET", BASE, fail(410, "SANDBOX_GONE", "gone", { reason: "killed" }));
  await assert.rejects(sbx.info(), (error) => {
    assert.ok(error instanceof SandboxGoneError);
    assert.equal(error.reason, "killed");
    return true;
  });
});

test("runtimes", async () => {
  const fake = standardServer();
  const runtimes = await Sandbox.runtimes(fake.connection());
  assert.deepEqual(
    runtimes.map((r) => [r.name, r.version, r.aliases]),
    [["python3", "3.11.2", ["python3.11"]]],
  );
});

test("the api key never shows in logs", async () => {
  const secret = "cbx_secret_value";
  const fake = standardServer();
  const sbx = await Sandbox.create({ ...fake.connection(), apiKey: secret });
  assert.ok(!inspect(sbx, { depth: 10, showHidden: true }).includes(secret));
  assert.ok(!String(sbx).includes(secret));
  assert.ok(!JSON.stringify(sbx).includes(secret));
  const { ConnectionConfig } = await import("@codebox/sdk");
  const config = ConnectionConfig.resolve({ apiUrl: "http://codebox.test", apiKey: secret });
  assert.ok(!inspect(config, { depth: 10, showHidden: true }).includes(secret));
  assert.ok(!JSON.stringify(config).includes(secret));
  assert.equal(config.headers()["X-API-Key"], secret);
});

test("kill returns the final view", async () => {
  const fake = standardServer();
  const sbx = await Sandbox.connect(SANDBOX_ID, fake.connection());
  assert.deepEqual(await sbx.kill(), parseSandbox(killedJson()));
});
