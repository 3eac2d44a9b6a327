/**
 * The client: {@link Sandbox}, with its code execution (`runCode`,
 * `contexts`), `files`, `commands` and `pty`.
 *
 * One `Sandbox` object is a handle on one server-side sandbox. It holds no
 * connection of its own (fetch pools them), so there is nothing to close:
 * `kill()` ends the sandbox, and dropping the object only forgets it.
 */

import { ConnectionConfig, type ConnectionOptions } from "./config.js";
import * as api from "./endpoints.js";
import { Commands } from "./commands.js";
import { Contexts, type Execution, type RunCodeOptions, runCode } from "./execution.js";
import { Files } from "./files.js";
import {
  type RuntimeInfo,
  type SandboxInfo,
  type SandboxMetrics,
  type SandboxStatus,
  parseMetrics,
  parseRuntimes,
  parseSandbox,
  parseSandboxPage,
} from "./models.js";
import { Pty } from "./pty.js";
import { type StringMap, createBody, listParams } from "./requests.js";
import { type CallOptions, Transport } from "./transport.js";

/** Options of {@link Sandbox.create}. */
export interface SandboxCreateOptions extends ConnectionOptions, CallOptions {
  /** A runtime name or alias from {@link Sandbox.runtimes} (default `python3`). */
  runtime?: string | undefined;
  /** Cores; when only one of cpu/memory is given the other takes its default (1 core / 512 MiB). */
  cpu?: number | undefined;
  /** MiB. */
  memory?: number | undefined;
  /** Lifetime in seconds (server default 300). */
  timeout?: number | undefined;
  /** Labels, to find sandboxes with {@link Sandbox.list}. */
  metadata?: StringMap | undefined;
  /** The environment of every command. */
  envVars?: StringMap | undefined;
}

/** Options of {@link Sandbox.list}. */
export interface SandboxListOptions extends ConnectionOptions, CallOptions {
  status?: SandboxStatus | (string & {}) | undefined;
  /** Only sandboxes with all these labels. */
  metadata?: StringMap | undefined;
  /** Sandboxes per request (server default 50, at most 200). */
  pageSize?: number | undefined;
}

export const DEFAULT_RUNTIME = "python3";

/** A handle on one sandbox. Get one with {@link Sandbox.create} or {@link Sandbox.connect}. */
export class Sandbox {
  readonly #transport: Transport;
  #info: SandboxInfo;
  /** Shell commands and background processes in this sandbox. */
  readonly commands: Commands;
  /** The sandbox's file system. */
  readonly files: Files;
  /** Code contexts (interpreters) of this sandbox. */
  readonly contexts: Contexts;
  /** Interactive terminals (WebSocket). */
  readonly pty: Pty;

  /** Use {@link Sandbox.create} or {@link Sandbox.connect}. */
  protected constructor(info: SandboxInfo, transport: Transport) {
    this.#info = info;
    this.#transport = transport;
    this.commands = new Commands(info.id, transport);
    this.files = new Files(info.id, transport);
    this.contexts = new Contexts(info.id, transport);
    this.pty = new Pty(info.id, transport);
  }

  get id(): string {
    return this.#info.id;
  }

  /** Alias of {@link id} (the name E2B's SDK uses). */
  get sandboxId(): string {
    return this.#info.id;
  }

  /** The view from the last call that returned one (create, connect, info, setTimeout, kill). */
  get lastKnownInfo(): SandboxInfo {
    return this.#info;
  }

  toString(): string {
    return `Sandbox(id=${this.id}, runtime=${this.#info.runtime})`;
  }

  /**
   * Creates and starts a sandbox. Settings are checked before any request;
   * validation happens on the server (a `ValidationError` names the `field`).
   */
  static async create(options: SandboxCreateOptions = {}): Promise<Sandbox> {
    const transport = open(options);
    const body = createBody({ ...options, runtime: options.runtime ?? DEFAULT_RUNTIME });
    const data = await transport.request(api.CREATE_SANDBOX, { body, ...callOptions(options) });
    return new Sandbox(parseSandbox(data), transport);
  }

  /** A handle on an existing live sandbox. Throws `NotFoundError` (or `SandboxGoneError` once it has ended). */
  static async connect(
    sandboxId: string,
    options: ConnectionOptions & CallOptions = {},
  ): Promise<Sandbox> {
    const transport = open(options);
    const data = await transport.request(api.GET_SANDBOX, {
      pathParams: { id: sandboxId },
      ...callOptions(options),
    });
    return new Sandbox(parseSandbox(data), transport);
  }

  /**
   * Your sandboxes, newest first: `for await (const info of Sandbox.list()) ...`.
   * Settings are checked now (a missing key throws here); pages are fetched
   * as the iteration goes.
   */
  static list(options: SandboxListOptions = {}): AsyncGenerator<SandboxInfo, void, undefined> {
    return iteratePages(open(options), options);
  }

  /** The runtimes the server offers. */
  static async runtimes(options: ConnectionOptions & CallOptions = {}): Promise<RuntimeInfo[]> {
    const data = await open(options).request(api.LIST_RUNTIMES, callOptions(options));
    return parseRuntimes(data);
  }

  /**
   * Runs code statefully, like a notebook cell: variables survive between
   * calls in the same context. Output streams to the callbacks while the code
   * runs; resolves to the {@link Execution}. An exception in the code is
   * `execution.error`, not a rejection; API failures reject with the typed
   * errors. Aborting `signal` closes the stream, and the server then
   * interrupts the code (the context's state is kept).
   */
  async runCode(code: string, options: RunCodeOptions = {}): Promise<Execution> {
    return runCode(this.#transport, this.id, code, options);
  }

  /** CPU, memory, disk and process counts from the sandbox's cgroup. */
  async metrics(options: CallOptions = {}): Promise<SandboxMetrics> {
    const data = await this.#transport.request(api.SANDBOX_METRICS, {
      pathParams: { id: this.id },
      ...callOptions(options),
    });
    return parseMetrics(data);
  }

  /** The sandbox's current view. Throws `SandboxGoneError` once it ended. */
  async info(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#update(api.GET_SANDBOX, undefined, options);
  }

  /** The sandbox now expires `seconds` from now. */
  async setTimeout(seconds: number, options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#update(api.SET_SANDBOX_TIMEOUT, { timeout: seconds }, options);
  }

  /** Kills the sandbox and returns its final view. Throws `SandboxGoneError` if it had already ended. */
  async kill(options: CallOptions = {}): Promise<SandboxInfo> {
    return this.#update(api.DELETE_SANDBOX, undefined, options);
  }

  async #update(endpoint: api.Endpoint, body: unknown, options: CallOptions): Promise<SandboxInfo> {
    const data = await this.#transport.request(endpoint, {
      pathParams: { id: this.id },
      body,
      ...callOptions(options),
    });
    this.#info = parseSandbox(data);
    return this.#info;
  }
}

function open(options: ConnectionOptions): Transport {
  return new Transport(ConnectionConfig.resolve(options));
}

function callOptions(options: CallOptions): CallOptions {
  return { signal: options.signal, requestTimeoutMs: options.requestTimeoutMs };
}

async function* iteratePages(
  transport: Transport,
  options: SandboxListOptions,
): AsyncGenerator<SandboxInfo, void, undefined> {
  let cursor: string | null = null;
  for (;;) {
    const query = listParams({
      status: options.status,
      metadata: options.metadata,
      limit: options.pageSize,
      cursor,
    });
    const page = parseSandboxPage(
      await transport.request(api.LIST_SANDBOXES, { query, ...callOptions(options) }),
    );
    yield* page.sandboxes;
    if (page.nextCursor === null) return;
    cursor = page.nextCursor;
  }
}
