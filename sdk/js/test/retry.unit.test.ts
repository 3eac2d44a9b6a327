/**
 * Retries: 429 RATE_LIMITED and 503 SERVICE_UNAVAILABLE are retried honouring
 * Retry-After, within maxAttempts and maxTotalWaitMs; nothing else is.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ConnectionConfig,
  InternalServerError,
  RateLimitError,
  ResourceLimitError,
  RetryPolicy,
  Sandbox,
  SandboxGoneError,
  ServiceUnavailableError,
  TimeoutError,
  ValidationError,
} from "@codebox/sdk";

import { parseRetryAfter } from "../dist/config.js";
import * as api from "../dist/endpoints.js";
import { Transport, abortableSleep } from "../dist/transport.js";
import {
  API_KEY,
  API_URL,
  FakeServer,
  RUNTIMES_JSON,
  type Reply,
  fail,
  ok,
  sandboxJson,
} from "./fakes.js";

const RUNTIMES = "/api/v1/runtimes";

function rateLimited(retryAfter: string | null = "2"): Reply {
  return fail(
    429,
    "RATE_LIMITED",
    "slow down",
    {},
    retryAfter === null ? undefined : { "Retry-After": retryAfter },
  );
}

function unavailable(retryAfter: string | null = null): Reply {
  return fail(
    503,
    "SERVICE_UNAVAILABLE",
    "busy",
    {},
    retryAfter === null ? undefined : { "Retry-After": retryAfter },
  );
}

/** A transport whose waits are recorded (in ms) instead of slept. */
function transport(fake: FakeServer, retry: RetryPolicy, sleeps: number[]): Transport {
  const config = ConnectionConfig.resolve({
    apiUrl: API_URL,
    apiKey: API_KEY,
    retry,
    fetch: fake.fetch,
  });
  return new Transport(config, async (ms) => {
    sleeps.push(ms);
  });
}

function fixedJitter(value: number): RetryPolicy {
  return new RetryPolicy({ jitter: () => value });
}

for (const [header, expected] of [
  ["3", 3],
  [" 1.5 ", 1.5],
  ["0", 0],
  ["-1", null],
  ["soon", null],
  ["nan", null],
  ["inf", null],
  ["Infinity", null],
  ["1e3", null],
  ["", null],
  [null, null],
] as const) {
  test(`Retry-After ${JSON.stringify(header)} is ${expected}`, () => {
    assert.equal(parseRetryAfter(header), expected);
  });
}

test("Retry-After as an HTTP date", () => {
  const now = new Date(Date.UTC(2026, 10, 29, 10, 0, 0));
  assert.equal(parseRetryAfter("Sun, 29 Nov 2026 10:00:12 GMT", now), 12);
  assert.equal(parseRetryAfter("Sun, 29 Nov 2026 09:59:00 GMT", now), 0);
  assert.equal(parseRetryAfter("29 Nov 2026", now), null);
});

test("rate limited is retried after Retry-After", async () => {
  const fake = new FakeServer().on(
    "GET",
    RUNTIMES,
    rateLimited("2"),
    rateLimited("3"),
    ok(RUNTIMES_JSON),
  );
  const sleeps: number[] = [];
  const data = await transport(fake, new RetryPolicy(), sleeps).request(api.LIST_RUNTIMES);
  assert.deepEqual(data, RUNTIMES_JSON);
  assert.deepEqual(sleeps, [2000, 3000]);
  assert.equal(fake.requests.length, 3);
});

test("unavailable without Retry-After backs off exponentially", async () => {
  let fake = new FakeServer().on(
    "GET",
    RUNTIMES,
    unavailable(),
    unavailable(),
    unavailable(),
    ok(RUNTIMES_JSON),
  );
  const sleeps: number[] = [];
  await transport(fake, fixedJitter(1), sleeps).request(api.LIST_RUNTIMES);
  assert.deepEqual(sleeps, [500, 1000, 2000]);
  sleeps.length = 0;
  fake = new FakeServer().on("GET", RUNTIMES, unavailable(), unavailable(), ok(RUNTIMES_JSON));
  await transport(fake, fixedJitter(0), sleeps).request(api.LIST_RUNTIMES);
  // Jitter never goes below half the step, so waits still grow.
  assert.deepEqual(sleeps, [250, 500]);
});

test("backoff is capped", () => {
  const policy = new RetryPolicy({ backoffInitialMs: 1000, backoffMaxMs: 3000, jitter: () => 1 });
  assert.deepEqual(
    [1, 2, 3, 4, 5].map((n) => policy.delayMs(n, null)),
    [1000, 2000, 3000, 3000, 3000],
  );
});

test("attempts are bounded", async () => {
  const fake = new FakeServer().on("GET", RUNTIMES, unavailable("1"));
  const sleeps: number[] = [];
  await assert.rejects(
    transport(fake, new RetryPolicy({ maxAttempts: 3 }), sleeps).request(api.LIST_RUNTIMES),
    (error) => {
      assert.ok(error instanceof ServiceUnavailableError);
      assert.equal(error.retryAfter, 1);
      return true;
    },
  );
  assert.equal(fake.requests.length, 3);
  assert.deepEqual(sleeps, [1000, 1000]);
});

test("total wait is bounded", async () => {
  const fake = new FakeServer().on("GET", RUNTIMES, rateLimited("20"));
  const sleeps: number[] = [];
  const policy = new RetryPolicy({ maxAttempts: 10, maxTotalWaitMs: 30_000 });
  await assert.rejects(transport(fake, policy, sleeps).request(api.LIST_RUNTIMES), (error) => {
    assert.ok(error instanceof RateLimitError);
    assert.equal(error.retryAfter, 20);
    return true;
  });
  // 20 s fits the 30 s budget once; a second 20 s would not.
  assert.deepEqual(sleeps, [20_000]);
  assert.equal(fake.requests.length, 2);
});

test("a wait longer than the budget is thrown at once", async () => {
  const fake = new FakeServer().on("GET", RUNTIMES, rateLimited("3600"));
  const sleeps: number[] = [];
  await assert.rejects(
    transport(fake, new RetryPolicy(), sleeps).request(api.LIST_RUNTIMES),
    (error) => {
      assert.ok(error instanceof RateLimitError);
      assert.equal(error.retryAfter, 3600);
      return true;
    },
  );
  assert.deepEqual(sleeps, []);
  assert.equal(fake.requests.length, 1);
});

test("retries can be disabled", async () => {
  const fake = new FakeServer().on("GET", RUNTIMES, rateLimited("1"), ok(RUNTIMES_JSON));
  const sleeps: number[] = [];
  await assert.rejects(
    transport(fake, new RetryPolicy({ maxAttempts: 1 }), sleeps).request(api.LIST_RUNTIMES),
    RateLimitError,
  );
  assert.deepEqual(sleeps, []);
  assert.equal(fake.requests.length, 1);
});

for (const [answer, expected] of [
  [fail(429, "RESOURCE_LIMIT_ERROR", "sandboxes limit exceeded: 10"), ResourceLimitError],
  [fail(500, "INTERNAL_ERROR"), InternalServerError],
  [fail(504, "TIMEOUT"), TimeoutError],
  [fail(400, "VALIDATION_ERROR", "bad", { field: "runtime" }), ValidationError],
  [fail(410, "SANDBOX_GONE", "gone", { reason: "killed" }), SandboxGoneError],
  [{ status: 502, body: "bad gateway" }, ServiceUnavailableError],
] as const) {
  test(`${answer.status} ${expected.name} is not retried`, async () => {
    const fake = new FakeServer().on("GET", RUNTIMES, answer, ok(RUNTIMES_JSON));
    const sleeps: number[] = [];
    await assert.rejects(
      transport(fake, new RetryPolicy(), sleeps).request(api.LIST_RUNTIMES),
      expected,
    );
    assert.deepEqual(sleeps, []);
    assert.equal(fake.requests.length, 1);
  });
}

test("Sandbox.create is retried when rate limited", async () => {
  const created = ok(sandboxJson(), 201);
  const fake = new FakeServer().on("POST", "/api/v1/sandboxes", rateLimited("0"), created);
  const sbx = await Sandbox.create(fake.connection());
  assert.equal(sbx.id, sandboxJson()["id"]);
  assert.deepEqual(fake.calls(), [
    ["POST", "/api/v1/sandboxes"],
    ["POST", "/api/v1/sandboxes"],
  ]);
  assert.deepEqual(fake.body(0), { runtime: "python3" });
  assert.deepEqual(fake.body(1), { runtime: "python3" });
});

test("the caller's signal ends a retry wait", async () => {
  const fake = new FakeServer().on("GET", RUNTIMES, rateLimited("20"), ok(RUNTIMES_JSON));
  const controller = new AbortController();
  const config = ConnectionConfig.resolve({ apiUrl: API_URL, apiKey: API_KEY, fetch: fake.fetch });
  const waiting = new Transport(config, (ms, signal) => {
    // The wait starts: abort it now, as a caller's timeout would.
    controller.abort(new Error("stop waiting"));
    return abortableSleep(ms, signal);
  }).request(api.LIST_RUNTIMES, { signal: controller.signal });
  await assert.rejects(waiting, /stop waiting/);
  assert.equal(fake.requests.length, 1);
});

test("abortableSleep resolves, or rejects on abort", async () => {
  await abortableSleep(0);
  await assert.rejects(abortableSleep(10, AbortSignal.abort(new Error("early"))), /early/);
});

test("retry options are plain objects too", () => {
  const config = ConnectionConfig.resolve({
    apiUrl: API_URL,
    apiKey: API_KEY,
    retry: { maxAttempts: 2 },
  });
  assert.equal(config.retry.maxAttempts, 2);
  assert.equal(config.retry.maxTotalWaitMs, 30_000);
});

test("a policy rejects nonsense", () => {
  assert.throws(() => new RetryPolicy({ maxAttempts: 0 }), RangeError);
  assert.throws(() => new RetryPolicy({ maxAttempts: 1.5 }), RangeError);
  assert.throws(() => new RetryPolicy({ maxTotalWaitMs: -1 }), RangeError);
  assert.throws(() => new RetryPolicy({ backoffMaxMs: Number.NaN }), RangeError);
  assert.throws(
    () => ConnectionConfig.resolve({ apiKey: API_KEY, requestTimeoutMs: 0 }),
    RangeError,
  );
});
