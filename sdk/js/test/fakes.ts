/**
 * A scripted fake server for unit tests: a `fetch` that records every request
 * the SDK sends and answers from queued replies.
 */

import { fileURLToPath } from "node:url";

import type { FetchFunction, WebSocketConstructor, WebSocketLike } from "@codebox/sdk";

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
  /** The body as sent: a string, bytes, a Blob, a stream... */
  readonly rawBody: unknown;
  readonly init: RequestInit;
  readonly signal: AbortSignal | null;
}

export interface Reply {
  status: number;
  body: string | Uint8Array | ReadableStream<Uint8Array>;
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
      rawBody: init.body,
      init,
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
    const body =
      reply.body instanceof Uint8Array
        ? new Blob([reply.body as Uint8Array<ArrayBuffer>])
        : reply.body;
    return new Response(body, { status: reply.status, headers: reply.headers ?? {} });
  };

  /** Sockets opened through {@link webSocket}, in order. */
  readonly sockets: FakeSocket[] = [];

  /** A WebSocket constructor that records the handshake and opens at once. */
  readonly webSocket: WebSocketConstructor = (() => {
    const server = this;
    return class extends FakeSocket {
      constructor(url: string, options?: unknown) {
        super(url, options);
        server.sockets.push(this);
        server.requests.push({
          method: "GET",
          url: new URL(url.replace(/^ws/, "http")),
          headers: new Headers((options as { headers?: HeadersInit } | undefined)?.headers),
          body: null,
          rawBody: undefined,
          init: {},
          signal: null,
        });
        queueMicrotask(() => this.emit("open", {}));
      }
    } as unknown as WebSocketConstructor;
  })();

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

/** A WebSocket as the SDK sees it; the test plays the server with `emit`. */
export class FakeSocket implements WebSocketLike {
  binaryType = "blob";
  readyState = 0;
  readonly sent: (string | Uint8Array)[] = [];
  readonly listeners = new Map<string, ((event: never) => void)[]>();
  closedWith: [number | undefined, string | undefined] | null = null;

  constructor(
    readonly url: string,
    readonly options?: unknown,
  ) {}

  send(data: string | ArrayBuffer | Uint8Array): void {
    this.sent.push(typeof data === "string" ? data : new Uint8Array(data as ArrayBuffer));
  }

  close(code?: number, reason?: string): void {
    this.closedWith = [code, reason];
    this.emit("close", { code: code ?? 1005, reason: reason ?? "" });
  }

  addEventListener(type: string, listener: (event: never) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  emit(type: string, event: unknown): void {
    if (type === "open") this.readyState = 1;
    if (type === "close") this.readyState = 3;
    for (const listener of this.listeners.get(type) ?? []) listener(event as never);
  }
}

/** NDJSON lines as one reply body. */
export function ndjson(...events: unknown[]): Reply {
  return {
    status: 200,
    body: events.map((e) => JSON.stringify(e) + "\n").join(""),
    headers: { "content-type": "application/x-ndjson" },
  };
}

/** A reply body the test writes to piece by piece. */
export function pushStream(): {
  stream: ReadableStream<Uint8Array>;
  push: (text: string) => void;
  end: () => void;
} {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const stream = new ReadableStream<Uint8Array>({
    start: (c) => {
      controller = c;
    },
  });
  return {
    stream,
    push: (text) => controller.enqueue(new TextEncoder().encode(text)),
    end: () => controller.close(),
  };
}

export const CONTEXT_JSON: Json = Object.freeze({
  id: "ctx-0123456789abcdef",
  language: "python",
  cwd: "/home/user",
  is_default: false,
});

export const ENTRY_JSON: Json = Object.freeze({
  name: "a.txt",
  path: "/home/user/a.txt",
  type: "file",
  size: 3,
  mode: 420,
  modified_at: "2026-11-29T10:00:00Z",
  symlink_target: null,
});

export const METRICS_JSON: Json = Object.freeze({
  cpu_usage_usec: 1000,
  cpu_limit: 1.0,
  memory_used_bytes: 1,
  memory_peak_bytes: 2,
  memory_limit_bytes: 3,
  disk_used_bytes: 4,
  disk_limit_bytes: 5,
  pids: 6,
  pids_limit: 7,
});

export const PROCESS_JSON: Json = Object.freeze({
  pid: 42,
  cmd: ["bash", "-c", "sleep 100"],
  tag: "t",
  stdin_open: true,
});

export const END_EVENT: Json = Object.freeze({
  type: "end",
  execution_id: "ex1",
  context_id: "default-python",
  execution_count: 3,
  duration_ms: 12,
  outcome: "ok",
  restarted: false,
  truncated: false,
});

export const EXECUTION_EVENTS: readonly Json[] = Object.freeze([
  { type: "stdout", text: "1\n" },
  { type: "stderr", text: "warn\n" },
  { type: "result", "text/plain": "2", "text/html": "<b>2</b>", is_main_result: true },
  { type: "error", name: "ValueError", value: "bad", traceback: "Traceback..." },
  END_EVENT,
]);

export const PROCESS_EVENTS: readonly Json[] = Object.freeze([
  { type: "start", pid: 42, dropped_bytes: 0 },
  { type: "stdout", data: "out" },
  { type: "stderr", data: "err" },
  { type: "end", exit_code: 0, signal: null, timed_out: false },
]);

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
    .on("GET", "/api/v1/runtimes", ok(RUNTIMES_JSON))
    .on("GET", `${base}/metrics`, ok(METRICS_JSON))
    .on("POST", `${base}/execute`, () => ndjson(...EXECUTION_EVENTS))
    .on("POST", `${base}/contexts`, ok(CONTEXT_JSON, 201))
    .on("GET", `${base}/contexts`, ok({ contexts: [CONTEXT_JSON] }))
    .on(
      "DELETE",
      `${base}/contexts/${CONTEXT_JSON["id"]}`,
      ok({ id: CONTEXT_JSON["id"], deleted: true }),
    )
    .on("POST", `${base}/contexts/${CONTEXT_JSON["id"]}/restart`, ok(CONTEXT_JSON))
    .on(
      "POST",
      `${base}/contexts/${CONTEXT_JSON["id"]}/interrupt`,
      ok({ id: CONTEXT_JSON["id"], interrupted: true }),
    )
    .on("GET", `${base}/files`, () => ({ status: 200, body: "abc" }))
    .on("PUT", `${base}/files`, ok({ path: "/home/user/a.txt", size: 3 }, 201))
    .on(
      "POST",
      `${base}/files`,
      ok(
        {
          files: [
            { path: "/home/user/a.txt", size: 3 },
            { path: "/tmp/b.bin", size: 2 },
          ],
        },
        201,
      ),
    )
    .on("DELETE", `${base}/files`, ok({ path: "/home/user/a.txt", deleted: true }))
    .on("GET", `${base}/files/list`, ok({ entries: [ENTRY_JSON], truncated: false }))
    .on("GET", `${base}/files/stat`, ok(ENTRY_JSON))
    .on("POST", `${base}/files/mkdir`, ok({ ...ENTRY_JSON, type: "dir" }, 201))
    .on("POST", `${base}/files/move`, ok(ENTRY_JSON))
    .on("GET", `${base}/files/watch`, () => ({
      status: 200,
      body: 'event: create\ndata: {"type":"create","path":"/home/user/a.txt","is_dir":false}\n\n',
      headers: { "content-type": "text/event-stream" },
    }))
    .on("POST", `${base}/processes`, () => ndjson(...PROCESS_EVENTS))
    .on("GET", `${base}/processes`, ok({ processes: [PROCESS_JSON] }))
    .on("GET", `${base}/processes/42/stream`, () => ndjson(...PROCESS_EVENTS))
    .on("POST", `${base}/processes/42/stdin`, ok({ written: 3 }))
    .on("POST", `${base}/processes/42/close-stdin`, ok({ closed: true }))
    .on("POST", `${base}/processes/42/signal`, ok({ signal: "SIGKILL", sent: true }));
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
