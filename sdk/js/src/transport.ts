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
  CodeboxError,
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
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as is instead of `body`: bytes, a Blob or a stream as `application/octet-stream`, a FormData as multipart. */
  rawBody?: BodyInit | undefined;
  /** Extra headers (`Accept`, `Range`). */
  headers?: Readonly<Record<string, string>>;
}

/**
 * A successful answer whose body is still to be read (a download, a stream
 * of events). Call `release()` once done with it (or on giving up).
 */
export interface OpenedResponse {
  readonly response: Response;
  /** The body as a stream; an empty stream when the answer had none. */
  readonly body: ReadableStream<Uint8Array>;
  readonly release: () => void;
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
      // Not streaming: the answer is always read whole.
      const answer = (await this.send(endpoint, url, options, false)) as Answer;
      if (answer.ok) return decodeSuccess(answer);
      const error = errorOf(answer);
      const delay = retryable(options) ? budget.delayBeforeRetry(error) : null;
      if (delay === null) throw error;
      await this.sleep(delay, options.signal);
    }
  }

  /**
   * Runs `endpoint` and resolves once a successful answer's head has arrived,
   * leaving its body to the caller. `requestTimeoutMs` bounds the wait for
   * the head only; the caller's signal aborts the body too. Failures are the
   * same typed errors as {@link request}, and retried the same way (unless
   * the request body is a stream, which cannot be sent twice).
   */
  async open(endpoint: Endpoint, options: RequestOptions = {}): Promise<OpenedResponse> {
    const budget = new RetryBudget(this.config.retry);
    const url = this.url(endpoint, options);
    for (;;) {
      const answer = await this.send(endpoint, url, options, true);
      if (!("text" in answer)) return answer;
      const error = errorOf(answer);
      const delay = retryable(options) ? budget.delayBeforeRetry(error) : null;
      if (delay === null) throw error;
      await this.sleep(delay, options.signal);
    }
  }

  /**
   * The error for a body that broke off mid-stream: the caller's abort
   * reason when it aborted, else an {@link APIConnectionError}.
   */
  streamFailure(error: unknown, endpoint: Endpoint, signal?: AbortSignal): unknown {
    if (signal?.aborted) return signal.reason;
    if (error instanceof CodeboxError) return error;
    const what = `${endpoint.method} ${endpoint.template}`;
    return new APIConnectionError(
      `the answer of ${this.config.apiUrl} to ${what} broke off: ${describe(error)}`,
      { cause: error },
    );
  }

  private url(endpoint: Endpoint, options: RequestOptions): string {
    const path = endpoint.path(options.pathParams);
    const query = options.query?.toString();
    return `${this.config.apiUrl}${path}${query ? `?${query}` : ""}`;
  }

  private async send(
    endpoint: Endpoint,
    url: string,
    options: RequestOptions,
    streaming: boolean,
  ): Promise<Answer | OpenedResponse> {
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
    let handedOver = false;
    try {
      const response = await this.config.fetch(url, init);
      if (streaming && response.ok) {
        // The head is in: the deadline is over, the caller's signal stays.
        clearTimeout(timer);
        handedOver = true;
        let released = false;
        const release = (): void => {
          if (released) return;
          released = true;
          caller?.removeEventListener("abort", onAbort);
          // Frees the connection when the body was not read to its end.
          response.body?.cancel().catch(() => undefined);
        };
        return { response, body: response.body ?? emptyStream(), release };
      }
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
      if (!handedOver) {
        clearTimeout(timer);
        caller?.removeEventListener("abort", onAbort);
      }
    }
  }

  private init(endpoint: Endpoint, options: RequestOptions, signal: AbortSignal): RequestInit {
    const headers = { ...this.config.headers(), ...options.headers };
    const init: RequestInit & { duplex?: "half" } = { method: endpoint.method, headers, signal };
    if (options.rawBody !== undefined) {
      // fetch writes a FormData's multipart Content-Type, with its boundary.
      if (!(typeof FormData !== "undefined" && options.rawBody instanceof FormData)) {
        headers["Content-Type"] = "application/octet-stream";
      }
      init.body = options.rawBody;
      // fetch sends a stream only when told it is one-way (Node, Chromium).
      if (isStream(options.rawBody)) init.duplex = "half";
    } else if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    return init;
  }
}

function isStream(body: unknown): body is ReadableStream {
  return typeof ReadableStream !== "undefined" && body instanceof ReadableStream;
}

/** A request whose body can be sent again (a stream is consumed by the first try). */
function retryable(options: RequestOptions): boolean {
  return !isStream(options.rawBody);
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({ start: (controller) => controller.close() });
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
