/**
 * A scripted fake server for unit tests: a `fetch` that records every request
 * the SDK sends and answers from queued replies.
 */

import { fileURLToPath } from "node:url";

import type { FetchFunction } from "@codebox/sdk";

// Tests pass their connection explicitly unless they set these themselves
// (withEnv): a developer's shell must not change what they test.
delete process.env["CODEBOX_API_URL"];
delete process.env["CODEBOX_API_KEY"];

// sdk/js/test-dist -> the repository root.
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const SANDBOX_ID = "k3v7q2m4x5a6b7c2d3e4f5g6h7";
export const API_URL = "http://codebox.test";
export const API_KEY = "cbx_test_key";
export const BASE = `/api/v1/sandboxes/${SANDBOX_ID}`;

/** One request as the server would see it. */
export interface Recorded {
  readonly method: string;
  readonly url: URL;
  readonly headers: Headers;
  readonly body: string | null;
  readonly signal: AbortSignal | null;
}

export interface Reply {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

export type Answer = Reply | ((request: Recorded) => Reply | Promise<Reply>);

type Json = Record<string, unknown>;

export function sandboxJson(sandboxId: string = SANDBOX_ID, overrides: Json = {}): Json {
  return {
    id: sandboxId,
    status: "running",
    runtime: "python3",
    resources: { cpu: 1.0, memory: 512 },
    isolation: "namespaces",
    metadata: {},
    created_at: "2026-11-29T10:00:00.123456789Z",
    expires_at: "2026-11-29T10:05:00Z",
    ...overrides,
  };
}

export function killedJson(sandboxId: string = SANDBOX_ID): Json {
  return sandboxJson(sandboxId, {
    status: "terminated",
    termination_reason: "killed",
    ended_at: "2026-11-29T10:01:00Z",
  });
}

export const COMMAND_JSON: Json = Object.freeze({
  stdout: "42\n",
  stderr: "",
  exit_code: 0,
  timed_out: false,
  truncated: false,
  duration_ms: 18,
});

export const RUNTIMES_JSON: Json = Object.freeze({
  runtimes: [{ name: "python3", language: "python", version: "3.11.2", aliases: ["python3.11"] }],
});

export function ok(data: unknown, status = 200, headers?: Record<string, string>): Reply {
  return { status, body: JSON.stringify({ success: true, data }), ...(headers ? { headers } : {}) };
}

export function fail(
  status: number,
  code: string,
  message = "failed",
  extra: Json = {},
  headers?: Record<string, string>,
): Reply {
  const error = { code, message, request_id: "req-123", ...extra };
  return {
    status,
    body: JSON.stringify({ success: false, error }),
    ...(headers ? { headers } : {}),
  };
}

/** An answer that never comes: the request ends only when it is aborted. */
export function stall(): Promise<Reply> {
  return new Promise<Reply>(() => undefined);
}

/** As fetch: a pending answer rejects with the signal's reason once it aborts. */
function abortable<T>(answer: T | Promise<T>, signal: AbortSignal | null): Promise<T> {
  if (signal === null) return Promise.resolve(answer);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    if (signal.aborted) onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    Promise.resolve(answer)
      .then(resolve, reject)
      .finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Routes `METHOD path` to queued answers; the last answer of a route repeats.
 * Unrouted requests get a 404 envelope, as the real server does.
 */
export class FakeServer {
  readonly routes = new Map<string, Answer[]>();
  readonly requests: Recorded[] = [];

  on(method: string, path: string, ...answers: Answer[]): this {
    const key = `${method} ${path}`;
    this.routes.set(key, [...(this.routes.get(key) ?? []), ...answers]);
    return this;
  }

  /** Replaces a route's answers. */
  set(method: string, path: string, ...answers: Answer[]): this {
    this.routes.set(`${method} ${path}`, answers);
    return this;
  }

  readonly fetch: FetchFunction = async (input, init) => {
    // Parsed as fetch would: dot segments are resolved here, as on the wire.
    const url = new URL(input);
    const request: Recorded = {
      method: init.method ?? "GET",
      url,
      headers: new Headers(init.headers),
      body: typeof init.body === "string" ? init.body : null,
      signal: init.signal ?? null,
    };
    this.requests.push(request);
    init.signal?.throwIfAborted();
    const queue = this.routes.get(`${request.method} ${url.pathname}`);
    const answer =
      queue === undefined || queue.length === 0
        ? undefined
        : queue.length > 1
          ? queue.shift()
          : queue[0];
    const reply =
      answer === undefined
        ? fail(404, "NOT_FOUND", `no route ${request.method} ${url.pathname}`)
        : typeof answer === "function"
          ? await abortable(answer(request), request.signal)
          : answer;
    return new Response(reply.body, { status: reply.status, headers: reply.headers ?? {} });
  };

  calls(): [string, string][] {
    return this.requests.map((r) => [r.method, r.url.pathname]);
  }

  body(index = -1): unknown {
    const request = this.requests.at(index);
    if (request?.body == null) throw new Error(`request ${index} has no body`);
    return JSON.parse(request.body);
  }

  /** The options that point the SDK at this fake. */
  connection(): { apiUrl: string; apiKey: string; fetch: FetchFunction } {
    return { apiUrl: API_URL, apiKey: API_KEY, fetch: this.fetch };
  }
}

/** Every route the SDK uses, answering as the documented API does. */
export function standardServer(sandboxId: string = SANDBOX_ID): FakeServer {
  const base = `/api/v1/sandboxes/${sandboxId}`;
  return new FakeServer()
    .on("POST", "/api/v1/sandboxes", ok(sandboxJson(sandboxId), 201))
    .on("GET", "/api/v1/sandboxes", ok({ sandboxes: [sandboxJson(sandboxId)], next_cursor: null }))
    .on("GET", base, ok(sandboxJson(sandboxId)))
    .on("DELETE", base, ok(killedJson(sandboxId)))
    .on("POST", `${base}/timeout`, ok(sandboxJson(sandboxId)))
    .on("POST", `${base}/commands`, ok(COMMAND_JSON))
    .on("GET", "/api/v1/runtimes", ok(RUNTIMES_JSON));
}

/** Runs `body` with CODEBOX_API_URL / CODEBOX_API_KEY set (or unset), then restores them. */
export async function withEnv<T>(
  values: Record<string, string | undefined>,
  body: () => Promise<T>,
): Promise<T> {
  const saved = Object.fromEntries(Object.keys(values).map((k) => [k, process.env[k]]));
  const apply = (entries: Record<string, string | undefined>): void => {
    for (const [key, value] of Object.entries(entries)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  };
  apply(values);
  try {
    return await body();
  } finally {
    apply(saved);
  }
}
