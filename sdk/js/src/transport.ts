/**
 * HTTP plumbing over `fetch`: sends one API operation, unwraps the
 * `{"success": true, "data": ...}` envelope, turns failures into typed errors
 * and retries `429 RATE_LIMITED` / `503 SERVICE_UNAVAILABLE` within the
 * {@link RetryPolicy} bounds. Knows nothing about sandboxes.
 */

import { type ConnectionConfig, type RetryPolicy, parseRetryAfter } from "./config.js";
import type { Endpoint } from "./endpoints.js";
import {
  APIConnectionError,
  type CodeboxError,
  RateLimitError,
  ServiceUnavailableError,
  TimeoutError,
  UnexpectedResponseError,
  errorFromResponse,
} from "./errors.js";

// Statuses worth retrying unchanged: the server refused before doing the work.
// A 429 RESOURCE_LIMIT_ERROR (quota) is not retried: waiting does not free it.
const RETRYABLE_STATUSES: readonly number[] = [429, 503];
// setTimeout fires at once for delays past 2^31 - 1 ms: never ask for more.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Per-call settings every public method accepts. */
export interface CallOptions {
  /** Aborts the call (and any retry wait); it then rejects with the signal's reason, as fetch does. */
  signal?: AbortSignal | undefined;
  /** Milliseconds to wait for this call's answer, instead of the connection's `requestTimeoutMs`. */
  requestTimeoutMs?: number | undefined;
}

export interface RequestOptions extends CallOptions {
  pathParams?: Readonly<Record<string, string>>;
  query?: URLSearchParams;
  body?: unknown;
}

/** Waits `ms`, or rejects with the signal's reason once it aborts. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

interface Answer {
  readonly status: number;
  readonly ok: boolean;
  readonly text: string;
  readonly headers: Headers;
}

/** Counts attempts and waits for one logical request. */
class RetryBudget {
  #attempts = 1;
  #waitedMs = 0;

  constructor(private readonly policy: RetryPolicy) {}

  /** Milliseconds to wait before trying again, or `null` to throw `error`. */
  delayBeforeRetry(error: CodeboxError): number | null {
    if (!(error instanceof RateLimitError || error instanceof ServiceUnavailableError)) return null;
    if (error.status === null || !RETRYABLE_STATUSES.includes(error.status)) return null;
    if (this.#attempts >= this.policy.maxAttempts) return null;
    const delay = this.policy.delayMs(this.#attempts, error.retryAfter);
    if (this.#waitedMs + delay > this.policy.maxTotalWaitMs) return null;
    this.#attempts += 1;
    this.#waitedMs += delay;
    return delay;
  }
}

export const abortableSleep: Sleep = (ms, signal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(
      () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      },
      Math.min(ms, MAX_TIMER_MS),
    );
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** Sends API operations for one {@link ConnectionConfig}. */
export class Transport {
  constructor(
    readonly config: ConnectionConfig,
    private readonly sleep: Sleep = abortableSleep,
  ) {}

  /** Runs `endpoint` and resolves to the envelope's `data`. */
  async request(endpoint: Endpoint, options: RequestOptions = {}): Promise<unknown> {
    const budget = new RetryBudget(this.config.retry);
    const url = this.url(endpoint, options);
    for (;;) {
      const answer = await this.send(endpoint, url, options);
      if (answer.ok) return decodeSuccess(answer);
      const error = errorOf(answer);
      const delay = budget.delayBeforeRetry(error);
      if (delay === null) throw error;
      await this.sleep(delay, options.signal);
    }
  }

  private url(endpoint: Endpoint, options: RequestOptions): string {
    const path = endpoint.path(options.pathParams);
    const query = options.query?.toString();
    return `${this.config.apiUrl}${path}${query ? `?${query}` : ""}`;
  }

  private async send(endpoint: Endpoint, url: string, options: RequestOptions): Promise<Answer> {
    const caller = options.signal;
    caller?.throwIfAborted();
    const timeoutMs = options.requestTimeoutMs ?? this.config.requestTimeoutMs;
    if (!(timeoutMs > 0)) throw new RangeError("requestTimeoutMs must be a positive number");
    const controller = new AbortController();
    // Built before the timer starts: a body JSON cannot encode is the caller's
    // TypeError, not a connection failure.
    const init = this.init(endpoint, options, controller.signal);
    let timedOut = false;
    const timer = setTimeout(
      () => {
        timedOut = true;
        controller.abort();
      },
      Math.min(timeoutMs, MAX_TIMER_MS),
    );
    const onAbort = (): void => controller.abort(caller?.reason);
    caller?.addEventListener("abort", onAbort, { once: true });
    try {
      const response = await this.config.fetch(url, init);
      // The body is read under the same deadline: a server that stalls
      // mid-answer is a timeout too, not a hang.
      const text = await response.text();
      return { status: response.status, ok: response.ok, text, headers: response.headers };
    } catch (error) {
      if (caller?.aborted) throw caller.reason;
      const what = `${endpoint.method} ${endpoint.template}`;
      if (timedOut) {
        const message = `no answer in ${timeoutMs} ms from ${this.config.apiUrl} for ${what}`;
        throw new TimeoutError(message, { cause: error });
      }
      throw new APIConnectionError(
        `cannot reach the codebox server at ${this.config.apiUrl} for ${what}: ${describe(error)}`,
        { cause: error },
      );
    } finally {
      clearTimeout(timer);
      caller?.removeEventListener("abort", onAbort);
    }
  }

  private init(endpoint: Endpoint, options: RequestOptions, signal: AbortSignal): RequestInit {
    const headers = this.config.headers();
    const init: RequestInit = { method: endpoint.method, headers, signal };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    return init;
  }
}

function describe(error: unknown): string {
  // Node's fetch says "fetch failed" and puts the reason (ECONNREFUSED...) in `cause`.
  const cause = error instanceof Error ? error.cause : undefined;
  const code =
    typeof cause === "object" && cause !== null ? (cause as { code?: unknown }).code : undefined;
  if (typeof code === "string") return code;
  return error instanceof Error ? error.message : String(error);
}

function decodeSuccess(answer: Answer): unknown {
  const requestId = answer.headers.get("x-request-id");
  let body: unknown;
  try {
    body = JSON.parse(answer.text);
  } catch (error) {
    throw new UnexpectedResponseError("the server's answer is not JSON", {
      status: answer.status,
      requestId,
      cause: error,
    });
  }
  if (
    typeof body !== "object" ||
    body === null ||
    (body as Record<string, unknown>)["success"] !== true ||
    !("data" in body)
  ) {
    throw new UnexpectedResponseError("the server's answer is not the API's success envelope", {
      status: answer.status,
      requestId,
    });
  }
  return (body as Record<string, unknown>)["data"];
}

function errorOf(answer: Answer): CodeboxError {
  return errorFromResponse(answer.status, answer.text, {
    retryAfter: parseRetryAfter(answer.headers.get("retry-after")),
    headerRequestId: answer.headers.get("x-request-id"),
  });
}
