/** Error mapping: every API error code becomes its class, with its extras. */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  APIConnectionError,
  AuthenticationError,
  CodeboxError,
  ConflictError,
  InternalServerError,
  InvalidRequestError,
  NotFoundError,
  PayloadTooLargeError,
  RateLimitError,
  ResourceLimitError,
  Sandbox,
  SandboxGoneError,
  ServiceUnavailableError,
  TimeoutError,
  UnexpectedResponseError,
  ValidationError,
} from "@codebox/sdk";

import { errorFromResponse } from "../dist/errors.js";
import { API_KEY, API_URL, FakeServer, type Reply, fail, ok, standardServer } from "./fakes.js";

const CATALOGUE = [
  ["VALIDATION_ERROR", 400, ValidationError],
  ["INVALID_JSON", 400, InvalidRequestError],
  ["UNAUTHORIZED", 401, AuthenticationError],
  ["NOT_FOUND", 404, NotFoundError],
  ["METHOD_NOT_ALLOWED", 405, InvalidRequestError],
  ["CONFLICT", 409, ConflictError],
  ["SANDBOX_GONE", 410, SandboxGoneError],
  ["PAYLOAD_TOO_LARGE", 413, PayloadTooLargeError],
  ["UNSUPPORTED_MEDIA_TYPE", 415, InvalidRequestError],
  ["RESOURCE_LIMIT_ERROR", 429, ResourceLimitError],
  ["RATE_LIMITED", 429, RateLimitError],
  ["INTERNAL_ERROR", 500, InternalServerError],
  ["SERVICE_UNAVAILABLE", 503, ServiceUnavailableError],
  ["TIMEOUT", 504, TimeoutError],
] as const;

function envelope(code: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    success: false,
    error: { code, message: "it failed", request_id: "req-9", ...extra },
  });
}

for (const [code, status, expected] of CATALOGUE) {
  test(`${code} maps to ${expected.name}`, () => {
    const error = errorFromResponse(status, envelope(code));
    assert.equal(error.constructor, expected);
    assert.ok(error instanceof CodeboxError && error instanceof Error);
    assert.deepEqual([error.code, error.status, error.requestId], [code, status, "req-9"]);
    assert.equal(error.message, "it failed");
    assert.equal(error.name, expected.name);
    assert.ok(String(error).includes("req-9") && String(error).includes(code));
    assert.ok(error.stack?.startsWith(`${expected.name}: it failed`));
  });
}

test("a ValidationError carries the field", () => {
  const error = errorFromResponse(400, envelope("VALIDATION_ERROR", { field: "resources.cpu" }));
  assert.ok(error instanceof ValidationError);
  assert.equal(error.field, "resources.cpu");
  const without = errorFromResponse(400, envelope("VALIDATION_ERROR"));
  assert.ok(without instanceof ValidationError);
  assert.equal(without.field, null);
});

test("a SandboxGoneError carries the reason", () => {
  const error = errorFromResponse(410, envelope("SANDBOX_GONE", { reason: "oom" }));
  assert.ok(error instanceof SandboxGoneError);
  assert.equal(error.reason, "oom");
});

for (const [code, status, cls] of [
  ["RATE_LIMITED", 429, RateLimitError],
  ["SERVICE_UNAVAILABLE", 503, ServiceUnavailableError],
] as const) {
  test(`${code} carries retryAfter`, () => {
    const error = errorFromResponse(status, envelope(code), { retryAfter: 7 });
    assert.ok(error instanceof cls);
    assert.equal(error.retryAfter, 7);
  });
}

test("the request id falls back to the header", () => {
  const body = JSON.stringify({
    success: false,
    error: { code: "NOT_FOUND", message: "x", request_id: null },
  });
  assert.equal(errorFromResponse(404, body, { headerRequestId: "hdr-1" }).requestId, "hdr-1");
});

for (const [status, expected] of [
  [502, ServiceUnavailableError],
  [503, ServiceUnavailableError],
  [404, NotFoundError],
  [401, AuthenticationError],
  [504, TimeoutError],
  [500, InternalServerError],
  [599, InternalServerError],
  [418, CodeboxError],
] as const) {
  test(`an answer without an envelope maps by status: ${status}`, () => {
    const error = errorFromResponse(status, "<html>Bad Gateway</html>", { headerRequestId: "h" });
    assert.equal(error.constructor, expected);
    assert.deepEqual([error.code, error.status, error.requestId], [null, status, "h"]);
  });
}

test("a success-shaped body on an error status is not an envelope", () => {
  const error = errorFromResponse(500, '{"success": true, "data": {}}');
  assert.equal(error.constructor, InternalServerError);
  assert.equal(error.code, null);
});

for (const [status, expected] of [
  [400, InvalidRequestError],
  [500, InternalServerError],
  [418, CodeboxError],
] as const) {
  test(`an unknown code keeps the code: ${status}`, () => {
    const error = errorFromResponse(status, envelope("SOMETHING_NEW"));
    assert.equal(error.constructor, expected);
    assert.equal(error.code, "SOMETHING_NEW");
  });
}

test("codes that are Object.prototype names are unknown codes", () => {
  const error = errorFromResponse(400, envelope("constructor"));
  assert.equal(error.constructor, InvalidRequestError);
  assert.equal(error.code, "constructor");
});

test("toString adds code, status and request id", () => {
  assert.equal(
    String(new TimeoutError("slow", { code: "TIMEOUT", status: 504 })),
    "TimeoutError: slow (code=TIMEOUT, status=504)",
  );
  assert.equal(String(new CodeboxError("plain")), "CodeboxError: plain");
});

test("errors through the client keep the server's message and request id", async () => {
  const fake = standardServer().on(
    "GET",
    "/api/v1/sandboxes/missing",
    fail(404, "NOT_FOUND", "no such sandbox"),
  );
  await assert.rejects(Sandbox.connect("missing", fake.connection()), (error) => {
    assert.ok(error instanceof NotFoundError);
    assert.equal(error.requestId, "req-123");
    assert.equal(error.message, "no such sandbox");
    return true;
  });
});

test("transport failures are typed", async () => {
  const refused = new TypeError("fetch failed", {
    cause: Object.assign(new Error("connect"), { code: "ECONNREFUSED" }),
  });
  const refuse = async (): Promise<Response> => {
    throw refused;
  };
  await assert.rejects(
    Sandbox.runtimes({ apiUrl: API_URL, apiKey: API_KEY, fetch: refuse }),
    (error) => {
      assert.ok(error instanceof APIConnectionError);
      assert.equal(error.cause, refused);
      assert.ok(error.message.includes(API_URL) && error.message.includes("ECONNREFUSED"));
      return true;
    },
  );
});

test("a connection refused by a real socket is an APIConnectionError", async () => {
  // Port 9 (discard) on loopback: nothing listens there on a test machine.
  await assert.rejects(
    Sandbox.runtimes({ apiUrl: "http://127.0.0.1:9", apiKey: API_KEY, retry: { maxAttempts: 1 } }),
    APIConnectionError,
  );
});

for (const [label, answer] of [
  ["not JSON", { status: 200, body: "not json" }],
  ["no success", { status: 200, body: '{"data": {}}' }],
  ["no data", { status: 200, body: '{"success": true}' }],
  ["runtimes not a list", ok({ runtimes: "python3" })],
  ["runtime incomplete", ok({ runtimes: [{ name: "python3" }] })],
] as [string, Reply][]) {
  test(`a malformed success answer is unexpected: ${label}`, async () => {
    const fake = new FakeServer().on("GET", "/api/v1/runtimes", answer);
    await assert.rejects(Sandbox.runtimes(fake.connection()), UnexpectedResponseError);
  });
}
