/**
 * Connection settings: where the server is, which key to use, how long to wait
 * and how to retry. Options win over the environment (`CODEBOX_API_URL`,
 * `CODEBOX_API_KEY`, read only where a `process` global exists), which wins
 * over the defaults.
 */

import { AuthenticationError } from "./errors.js";
import { VERSION } from "./version.js";

export const API_URL_ENV = "CODEBOX_API_URL";
export const API_KEY_ENV = "CODEBOX_API_KEY";
export const DEFAULT_API_URL = "http://127.0.0.1:3000";
/**
 * How long to wait for an ordinary API answer. Creating a sandbox builds a
 * jail, and a busy host can take a few seconds: this leaves room for that.
 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;

/** The tunable parts of a {@link RetryPolicy}; every field has a default. */
export interface RetryOptions {
  /** Requests in all, the first included (default 4); 1 disables retries. */
  maxAttempts?: number | undefined;
  /** Milliseconds spent waiting between attempts, at most (default 30 000). */
  maxTotalWaitMs?: number | undefined;
  /** First backoff step without `Retry-After` (default 500 ms). */
  backoffInitialMs?: number | undefined;
  /** Largest backoff step (default 8 000 ms). */
  backoffMaxMs?: number | undefined;
  /** A number in [0, 1) (default `Math.random`); tests pin it. */
  jitter?: (() => number) | undefined;
}

/**
 * How `429 RATE_LIMITED` and `503 SERVICE_UNAVAILABLE` are retried.
 *
 * A `Retry-After` header is honoured as the wait; without one the wait grows
 * exponentially from `backoffInitialMs` up to `backoffMaxMs` (with jitter, so
 * many clients do not come back in step). Both bounds hold: at most
 * `maxAttempts` requests in all, and at most `maxTotalWaitMs` spent waiting;
 * an answer asking for a longer wait than what is left is thrown at once
 * instead (its `retryAfter` tells the caller). `new RetryPolicy({maxAttempts: 1})`
 * disables retries.
 */
export class RetryPolicy {
  readonly maxAttempts: number;
  readonly maxTotalWaitMs: number;
  readonly backoffInitialMs: number;
  readonly backoffMaxMs: number;
  readonly #jitter: () => number;

  constructor(options: RetryOptions = {}) {
    this.maxAttempts = options.maxAttempts ?? 4;
    this.maxTotalWaitMs = options.maxTotalWaitMs ?? 30_000;
    this.backoffInitialMs = options.backoffInitialMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 8_000;
    this.#jitter = options.jitter ?? Math.random;
    if (!Number.isInteger(this.maxAttempts) || this.maxAttempts < 1) {
      throw new RangeError("RetryPolicy.maxAttempts must be an integer of at least 1");
    }
    for (const wait of [this.maxTotalWaitMs, this.backoffInitialMs, this.backoffMaxMs]) {
      if (!(wait >= 0) || !Number.isFinite(wait)) {
        throw new RangeError("RetryPolicy waits must be finite and not negative");
      }
    }
  }

  /** Milliseconds to wait before retry `retryNumber` (1 for the first). */
  delayMs(retryNumber: number, retryAfterSeconds: number | null): number {
    if (retryAfterSeconds !== null) return retryAfterSeconds * 1000;
    const ceiling = Math.min(this.backoffInitialMs * 2 ** (retryNumber - 1), this.backoffMaxMs);
    // "Equal jitter": at least half the exponential step, so waits still grow.
    return ceiling / 2 + (ceiling / 2) * this.#jitter();
  }
}

/**
 * Seconds from a `Retry-After` header: delta-seconds or an HTTP date. `null`
 * when absent or unreadable (then backoff applies).
 */
export function parseRetryAfter(
  value: string | null | undefined,
  now: Date = new Date(),
): number | null {
  if (value === null || value === undefined) return null;
  const text = value.trim();
  if (text === "") return null;
  if (/^[+-]?(\d+\.?\d*|\.\d+)$/.test(text)) {
    const seconds = Number(text);
    return seconds >= 0 && Number.isFinite(seconds) ? seconds : null;
  }
  // An HTTP date has a weekday and a month name; a bare word ("soon", "inf")
  // must not become whatever Date.parse makes of it.
  if (!/^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(text)) return null;
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.max(0, (when - now.getTime()) / 1000);
}

/** A `fetch` as the platform has it; pass your own for proxies, custom TLS or tests. */
export type FetchFunction = (input: string, init: RequestInit) => Promise<Response>;

/** How to reach the server: accepted by every entry point of the SDK. */
export interface ConnectionOptions {
  /** The server, e.g. `http://127.0.0.1:3000` (default: `$CODEBOX_API_URL`, then that). */
  apiUrl?: string | undefined;
  /** The API key (default: `$CODEBOX_API_KEY`). */
  apiKey?: string | undefined;
  /** Milliseconds to wait for an ordinary answer (default 60 000). */
  requestTimeoutMs?: number | undefined;
  /** Retries of 429/503; a {@link RetryPolicy} or its options. */
  retry?: RetryPolicy | RetryOptions | undefined;
  /** The `fetch` to use (default: the global one). */
  fetch?: FetchFunction | undefined;
}

/** Everything needed to talk to one server. Build it with {@link ConnectionConfig.resolve}. */
export class ConnectionConfig {
  readonly apiUrl: string;
  readonly requestTimeoutMs: number;
  readonly retry: RetryPolicy;
  readonly fetch: FetchFunction;
  // Private: the key is a secret, never shown by console.log, util.inspect or JSON.
  readonly #apiKey: string;

  private constructor(
    apiUrl: string,
    apiKey: string,
    requestTimeoutMs: number,
    retry: RetryPolicy,
    fetch: FetchFunction,
  ) {
    this.apiUrl = apiUrl;
    this.#apiKey = apiKey;
    this.requestTimeoutMs = requestTimeoutMs;
    this.retry = retry;
    this.fetch = fetch;
  }

  /** Options, then the environment, then the defaults. Throws before any request when incomplete. */
  static resolve(options: ConnectionOptions = {}): ConnectionConfig {
    const url = options.apiUrl || environment(API_URL_ENV) || DEFAULT_API_URL;
    const key = options.apiKey || environment(API_KEY_ENV);
    if (!key) {
      throw new AuthenticationError(
        `no API key: pass apiKey or set ${API_KEY_ENV} ` +
          "(a local server writes its admin key to <data dir>/admin.key)",
      );
    }
    const timeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    if (!(timeout > 0) || !Number.isFinite(timeout)) {
      throw new RangeError("requestTimeoutMs must be a positive number");
    }
    const retry =
      options.retry instanceof RetryPolicy ? options.retry : new RetryPolicy(options.retry);
    return new ConnectionConfig(
      normaliseUrl(url),
      key,
      timeout,
      retry,
      options.fetch ?? globalFetch,
    );
  }

  /** The headers of every request. */
  headers(): Record<string, string> {
    const headers: Record<string, string> = {
      "X-API-Key": this.#apiKey,
      Accept: "application/json",
    };
    // Browsers own their User-Agent (and some refuse to let a page set it).
    if (isNode()) headers["User-Agent"] = `codebox-js/${VERSION}`;
    return headers;
  }

  toJSON(): Record<string, unknown> {
    return { apiUrl: this.apiUrl, apiKey: "***", requestTimeoutMs: this.requestTimeoutMs };
  }
}

// Looked up at call time, and called as a plain function: browsers refuse a
// fetch detached from its `window` ("Illegal invocation").
const globalFetch: FetchFunction = (input, init) => globalThis.fetch(input, init);

interface ProcessLike {
  env?: Record<string, string | undefined>;
  versions?: Record<string, string | undefined>;
}

function processGlobal(): ProcessLike | undefined {
  return (globalThis as { process?: ProcessLike }).process;
}

function environment(name: string): string | undefined {
  return processGlobal()?.env?.[name] || undefined;
}

/** Whether this runs on Node (which has a `process` global with `versions.node`). */
export function isNode(): boolean {
  return typeof processGlobal()?.versions?.["node"] === "string";
}

function normaliseUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new TypeError(`apiUrl must be an http(s) URL, got ${JSON.stringify(url)}`, {
      cause: error,
    });
  }
  if ((parsed.protocol !== "http:" && parsed.protocol !== "https:") || !parsed.host) {
    throw new TypeError(`apiUrl must be an http(s) URL, got ${JSON.stringify(url)}`);
  }
  if (parsed.search || parsed.hash || url.includes("?") || url.includes("#")) {
    throw new TypeError("apiUrl must not have a query or a fragment");
  }
  if (parsed.username || parsed.password) {
    throw new TypeError("apiUrl must not carry credentials: pass apiKey");
  }
  return parsed.href.replace(/\/+$/, "");
}
