/**
 * Stateful code execution: `sbx.runCode` (streamed NDJSON from
 * `POST /execute`), what it returns ({@link Execution}, {@link Result},
 * {@link ExecutionError}) and the contexts it runs in (`sbx.contexts`).
 */

import * as api from "./endpoints.js";
import { UnexpectedResponseError } from "./errors.js";
import type { StringMap } from "./requests.js";
import { readNdjson } from "./streams.js";
import type { CallOptions, Transport } from "./transport.js";

/** The error the code raised (`ZeroDivisionError`..., `ExitCode` for a failing bash cell). */
export interface ExecutionError {
  readonly name: string;
  readonly value: string;
  readonly traceback: string;
}

/** Output chunks in the order they arrived, per stream. */
export interface Logs {
  readonly stdout: readonly string[];
  readonly stderr: readonly string[];
}

/** How an execution ended, as the API reports it; a newer server may add more. */
export type ExecutionOutcome =
  "ok" | "error" | "timeout" | "interrupted" | "crashed" | "unknown" | (string & {});

// MIME type -> accessor name, as E2B's SDK names them.
const FORMATS: readonly (readonly [string, ResultFormat])[] = [
  ["text/plain", "text"],
  ["text/html", "html"],
  ["text/markdown", "markdown"],
  ["image/svg+xml", "svg"],
  ["image/png", "png"],
  ["image/jpeg", "jpeg"],
  ["application/pdf", "pdf"],
  ["text/latex", "latex"],
  ["application/json", "json"],
  ["application/javascript", "javascript"],
];

/** The named formats a {@link Result} may have. */
export type ResultFormat =
  "text" | "html" | "markdown" | "svg" | "png" | "jpeg" | "pdf" | "latex" | "json" | "javascript";

/**
 * One rich result of an execution: a MIME bundle. `text` is its `text/plain`,
 * `png`/`jpeg`/`pdf` are base64 (see {@link Result.bytes}), the others text.
 * `isMainResult` marks the value of the cell's last expression; other results
 * come from `display(...)` or a figure. MIME types without an accessor are in
 * `extra`.
 */
export class Result {
  readonly text: string | undefined;
  readonly html: string | undefined;
  readonly markdown: string | undefined;
  readonly svg: string | undefined;
  /** base64 */
  readonly png: string | undefined;
  /** base64 */
  readonly jpeg: string | undefined;
  /** base64 */
  readonly pdf: string | undefined;
  readonly latex: string | undefined;
  readonly json: string | undefined;
  readonly javascript: string | undefined;
  readonly isMainResult: boolean;
  /** The bundle was over the server's cap and replaced by a shortened `text/plain`. */
  readonly truncated: boolean;
  /** MIME types without an accessor, e.g. `application/vnd.plotly.v1+json`. */
  readonly extra: Readonly<Record<string, string>>;
  /** The whole bundle, by MIME type. */
  readonly data: Readonly<Record<string, string>>;

  constructor(bundle: Readonly<Record<string, unknown>>) {
    const data: Record<string, string> = Object.create(null) as Record<string, string>;
    for (const [key, value] of Object.entries(bundle)) {
      if (key === "type" || key === "is_main_result" || key === "truncated") continue;
      if (typeof value !== "string") {
        throw new UnexpectedResponseError(`result ${key} is not a string`);
      }
      data[key] = value;
    }
    const main = bundle["is_main_result"];
    if (typeof main !== "boolean") {
      throw new UnexpectedResponseError("result.is_main_result is missing or not a boolean");
    }
    this.isMainResult = main;
    this.truncated = bundle["truncated"] === true;
    this.data = Object.freeze(data);
    const known = new Set(FORMATS.map(([mime]) => mime));
    this.extra = Object.freeze(
      Object.fromEntries(Object.entries(data).filter(([mime]) => !known.has(mime))),
    );
    this.text = data["text/plain"];
    this.html = data["text/html"];
    this.markdown = data["text/markdown"];
    this.svg = data["image/svg+xml"];
    this.png = data["image/png"];
    this.jpeg = data["image/jpeg"];
    this.pdf = data["application/pdf"];
    this.latex = data["text/latex"];
    this.json = data["application/json"];
    this.javascript = data["application/javascript"];
    Object.freeze(this);
  }

  /** The formats present: the accessor names, then the `extra` MIME types. */
  formats(): string[] {
    const named = FORMATS.filter(([mime]) => mime in this.data).map(([, name]) => name);
    return [...named, ...Object.keys(this.extra)];
  }

  /** The decoded bytes of a base64 format (`png`, `jpeg`, `pdf`), or `undefined` when absent. */
  bytes(format: "png" | "jpeg" | "pdf"): Uint8Array | undefined {
    const encoded = this[format];
    return encoded === undefined ? undefined : decodeBase64(encoded);
  }

  toString(): string {
    return this.text ?? `Result(${this.formats().join(", ")})`;
  }

  toJSON(): Record<string, unknown> {
    return { ...this.data, is_main_result: this.isMainResult };
  }
}

/** Base64 to bytes with the platform's `atob` (Node 16+, browsers). */
export function decodeBase64(encoded: string): Uint8Array {
  let binary: string;
  try {
    binary = atob(encoded.replace(/\s+/g, ""));
  } catch (error) {
    throw new UnexpectedResponseError("a result is not valid base64", { cause: error });
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * The outcome of `sbx.runCode`. A code error is `error` (not a thrown
 * exception); `outcome` says how it ended (`ok`, `error`, `timeout`,
 * `interrupted`, `crashed`). After a `timeout` the context's state survives
 * unless `restarted` is set.
 */
export class Execution {
  /** The plain text of the main result (the value of the last expression), if any. */
  readonly text: string | undefined;
  readonly results: readonly Result[];
  readonly logs: Logs;
  readonly error: ExecutionError | null;
  readonly executionId: string;
  readonly contextId: string;
  /** Executions of the context since its interpreter (re)started, this one included. */
  readonly executionCount: number;
  readonly durationMs: number;
  /** Output beyond the server's per-stream cap was dropped, or a result was shortened. */
  readonly truncated: boolean;
  readonly outcome: ExecutionOutcome;
  /** The interpreter was restarted (a crash, or an ignored interrupt): the context's state is gone. */
  readonly restarted: boolean;
  /** Set when the stream ended before the code did (`server_shutdown`, `sandbox_lost`). */
  readonly reason: string | null;

  constructor(fields: {
    results: readonly Result[];
    logs: Logs;
    error: ExecutionError | null;
    end: Readonly<Record<string, unknown>>;
  }) {
    const end = fields.end;
    this.results = Object.freeze([...fields.results]);
    this.text = this.results.find((r) => r.isMainResult)?.text;
    this.logs = Object.freeze({
      stdout: Object.freeze([...fields.logs.stdout]),
      stderr: Object.freeze([...fields.logs.stderr]),
    });
    this.error = fields.error;
    this.executionId = str(end, "execution_id", "end");
    this.contextId = str(end, "context_id", "end");
    this.executionCount = int(end, "execution_count", "end");
    this.durationMs = int(end, "duration_ms", "end");
    this.truncated = bool(end, "truncated", "end");
    this.outcome = str(end, "outcome", "end");
    this.restarted = bool(end, "restarted", "end");
    const reason = end["reason"];
    this.reason = typeof reason === "string" ? reason : null;
    Object.freeze(this);
  }

  /** `logs.stdout` joined. */
  get stdout(): string {
    return this.logs.stdout.join("");
  }

  /** `logs.stderr` joined. */
  get stderr(): string {
    return this.logs.stderr.join("");
  }
}

/** A context: one long-lived interpreter whose state persists between executions. */
export interface Context {
  readonly id: string;
  readonly language: string;
  readonly cwd: string | null;
  /** Created by the server on first use of a language (`default-<language>`). */
  readonly isDefault: boolean;
}

/** Options of `sbx.runCode`. */
export interface RunCodeOptions extends CallOptions {
  /** `python`, `javascript`, `typescript` or `bash` (default: the context's, else the runtime's). */
  language?: string | undefined;
  /** A context from `sbx.contexts.create()`, or its id (default: the language's default context). */
  context?: Context | string | undefined;
  /** Milliseconds the code may run, counted from its start (server default 30 s, at most 300 s; whole seconds are sent, rounded up). */
  timeoutMs?: number | undefined;
  /** Environment of this execution only. */
  envVars?: StringMap | undefined;
  /** Each chunk of standard output, as it arrives. */
  onStdout?: ((text: string) => void) | undefined;
  /** Each chunk of standard error, as it arrives. */
  onStderr?: ((text: string) => void) | undefined;
  /** Each rich result, as it arrives. */
  onResult?: ((result: Result) => void) | undefined;
  /** The error the code raised, when it arrives. */
  onError?: ((error: ExecutionError) => void) | undefined;
}

/** Options of `sbx.contexts.create`. */
export interface CreateContextOptions extends CallOptions {
  language?: string | undefined;
  /** Absolute working directory (default /home/user). */
  cwd?: string | undefined;
  /** Environment of the context's interpreter. */
  envVars?: StringMap | undefined;
}

type Json = Record<string, unknown>;

function str(data: Json, key: string, what: string): string {
  const value = data[key];
  if (typeof value !== "string") {
    throw new UnexpectedResponseError(`${what}.${key} is missing or not a string`);
  }
  return value;
}

function int(data: Json, key: string, what: string): number {
  const value = data[key];
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new UnexpectedResponseError(`${what}.${key} is missing or not an integer`);
  }
  return value;
}

function bool(data: Json, key: string, what: string): boolean {
  const value = data[key];
  if (typeof value !== "boolean") {
    throw new UnexpectedResponseError(`${what}.${key} is missing or not a boolean`);
  }
  return value;
}

function object(data: unknown, what: string): Json {
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new UnexpectedResponseError(`${what} is not a JSON object`);
  }
  return data as Json;
}

export function parseExecutionError(data: unknown): ExecutionError {
  const obj = object(data, "error");
  return Object.freeze({
    name: str(obj, "name", "error"),
    value: str(obj, "value", "error"),
    traceback: str(obj, "traceback", "error"),
  });
}

export function parseContext(data: unknown): Context {
  const obj = object(data, "context");
  const cwd = obj["cwd"];
  if (cwd !== null && cwd !== undefined && typeof cwd !== "string") {
    throw new UnexpectedResponseError("context.cwd is not a string");
  }
  return Object.freeze({
    id: str(obj, "id", "context"),
    language: str(obj, "language", "context"),
    cwd: typeof cwd === "string" ? cwd : null,
    isDefault: bool(obj, "is_default", "context"),
  });
}

export function parseContexts(data: unknown): Context[] {
  const items = object(data, "context list")["contexts"];
  if (!Array.isArray(items)) throw new UnexpectedResponseError("context list has no contexts");
  return items.map(parseContext);
}

/** The request body of `POST /execute`. */
export function executeBody(code: string, options: RunCodeOptions): Json {
  const body: Json = { code };
  if (options.language !== undefined) body["language"] = options.language;
  if (options.context !== undefined) {
    body["context_id"] = typeof options.context === "string" ? options.context : options.context.id;
  }
  if (options.timeoutMs !== undefined) {
    if (!(options.timeoutMs > 0) || !Number.isFinite(options.timeoutMs)) {
      throw new RangeError("timeoutMs must be a positive number");
    }
    body["timeout"] = Math.ceil(options.timeoutMs / 1000);
  }
  if (options.envVars !== undefined) body["env_vars"] = { ...options.envVars };
  return body;
}

/**
 * Folds streamed execution events into an {@link Execution}, calling the
 * callbacks as each event arrives. Unknown event types (a newer server's
 * keep-alives, say) are skipped.
 */
export class ExecutionBuilder {
  readonly #results: Result[] = [];
  readonly #stdout: string[] = [];
  readonly #stderr: string[] = [];
  #error: ExecutionError | null = null;
  #end: Json | null = null;

  constructor(private readonly options: RunCodeOptions) {}

  /** Takes one event; `true` once the final `end` has come. */
  add(event: Json): boolean {
    switch (event["type"]) {
      case "stdout": {
        const text = str(event, "text", "stdout event");
        this.#stdout.push(text);
        this.options.onStdout?.(text);
        break;
      }
      case "stderr": {
        const text = str(event, "text", "stderr event");
        this.#stderr.push(text);
        this.options.onStderr?.(text);
        break;
      }
      case "result": {
        const result = new Result(event);
        this.#results.push(result);
        this.options.onResult?.(result);
        break;
      }
      case "error": {
        const error = parseExecutionError(event);
        this.#error = error;
        this.options.onError?.(error);
        break;
      }
      case "end":
        this.#end = event;
        return true;
      default:
        break;
    }
    return false;
  }

  finish(): Execution {
    if (this.#end === null) {
      throw new UnexpectedResponseError("the execution stream ended without its end event");
    }
    return new Execution({
      results: this.#results,
      logs: { stdout: this.#stdout, stderr: this.#stderr },
      error: this.#error,
      end: this.#end,
    });
  }
}

/** Runs code in a sandbox, streaming its events; see `Sandbox.runCode`. */
export async function runCode(
  transport: Transport,
  sandboxId: string,
  code: string,
  options: RunCodeOptions,
): Promise<Execution> {
  const builder = new ExecutionBuilder(options);
  const opened = await transport.open(api.EXECUTE, {
    pathParams: { id: sandboxId },
    body: executeBody(code, options),
    headers: { Accept: "application/x-ndjson" },
    signal: options.signal,
    requestTimeoutMs: options.requestTimeoutMs,
  });
  try {
    for await (const event of readNdjson(opened.body, options.signal)) {
      if (builder.add(event)) break;
    }
  } catch (error) {
    throw transport.streamFailure(error, api.EXECUTE, options.signal);
  } finally {
    opened.release();
  }
  return builder.finish();
}

/** The contexts of one sandbox (`sbx.contexts`). */
export class Contexts {
  readonly #sandboxId: string;
  readonly #transport: Transport;

  constructor(sandboxId: string, transport: Transport) {
    this.#sandboxId = sandboxId;
    this.#transport = transport;
  }

  /** A new interpreter (ready when this resolves); contexts never share state. */
  async create(options: CreateContextOptions = {}): Promise<Context> {
    const body: Json = {};
    if (options.language !== undefined) body["language"] = options.language;
    if (options.cwd !== undefined) body["cwd"] = options.cwd;
    if (options.envVars !== undefined) body["env_vars"] = { ...options.envVars };
    const data = await this.#transport.request(api.CREATE_CONTEXT, {
      pathParams: { id: this.#sandboxId },
      body,
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
    return parseContext(data);
  }

  /** Every context, the default ones included. */
  async list(options: CallOptions = {}): Promise<Context[]> {
    const data = await this.#transport.request(api.LIST_CONTEXTS, {
      pathParams: { id: this.#sandboxId },
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
    return parseContexts(data);
  }

  /** A fresh interpreter for the context: its state is gone. */
  async restart(context: Context | string, options: CallOptions = {}): Promise<Context> {
    const data = await this.#transport.request(api.RESTART_CONTEXT, {
      pathParams: { id: this.#sandboxId, cid: contextId(context) },
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
    return parseContext(data);
  }

  /** Interrupts the running execution of the context (its state is kept). */
  async interrupt(context: Context | string, options: CallOptions = {}): Promise<void> {
    await this.#transport.request(api.INTERRUPT_CONTEXT, {
      pathParams: { id: this.#sandboxId, cid: contextId(context) },
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
  }

  /** Kills the context's interpreter; its running and queued executions end `interrupted`. */
  async remove(context: Context | string, options: CallOptions = {}): Promise<void> {
    await this.#transport.request(api.DELETE_CONTEXT, {
      pathParams: { id: this.#sandboxId, cid: contextId(context) },
      signal: options.signal,
      requestTimeoutMs: options.requestTimeoutMs,
    });
  }
}

function contextId(context: Context | string): string {
  return typeof context === "string" ? context : context.id;
}
