/**
 * The client: {@link Sandbox} and its {@link Commands}.
 *
 * One `Sandbox` object is a handle on one server-side sandbox. It holds no
 * connection of its own (fetch pools them), so there is nothing to close:
 * `kill()` ends the sandbox, and dropping the object only forgets it. Code
 * execution, files, processes and the PTY will join this class as the server
 * grows those endpoints.
 */

import { ConnectionConfig, type ConnectionOptions } from "./config.js";
import * as api from "./endpoints.js";
import {
  type CommandResult,
  type RuntimeInfo,
  type SandboxInfo,
  type SandboxStatus,
  parseCommandResult,
  parseRuntimes,
  parseSandbox,
  parseSandboxPage,
} from "./models.js";
import {
  type StringMap,
  commandBody,
  commandHttpTimeoutMs,
  createBody,
  listParams,
} from "./requests.js";
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

/** Options of {@link Commands.run}. */
export interface RunCommandOptions extends CallOptions {
  /** Seconds (server default 30, at most 300); an overrun is `timedOut`, not an error. */
  timeout?: number | undefined;
  /** Added to the sandbox's environment for this command. */
  env?: StringMap | undefined;
  /** Working directory (default the user's home). */
  cwd?: string | undefined;
  /** Written to the command's standard input, then closed. */
  stdin?: string | undefined;
}

export const DEFAULT_RUNTIME = "python3";

/** Shell commands in one sandbox (`sbx.commands`). */
export class Commands {
  readonly #sandboxId: string;
  readonly #transport: Transport;

  constructor(sandboxId: string, transport: Transport) {
    this.#sandboxId = sandboxId;
    this.#transport = transport;
  }

  /**
   * Runs `bash -c cmd` as the sandbox's unprivileged user and waits.
   *
   * A command that outlives `timeout` is killed and comes back with
   * `timedOut: true`, not as an error. A non-zero exit is not an error either:
   * check `exitCode` (or `ok`). The HTTP wait outlasts the command's own
   * timeout unless `requestTimeoutMs` says otherwise.
   */
  async run(cmd: string, options: RunCommandOptions = {}): Promise<CommandResult> {
    const data = await this.#transport.request(api.RUN_COMMAND, {
      pathParams: { id: this.#sandboxId },
      body: commandBody(cmd, options),
      signal: options.signal,
      requestTimeoutMs:
        options.requestTimeoutMs ??
        commandHttpTimeoutMs(options.timeout, this.#transport.config.requestTimeoutMs),
    });
    return parseCommandResult(data);
  }
}

/** A handle on one sandbox. Get one with {@link Sandbox.create} or {@link Sandbox.connect}. */
export class Sandbox {
  readonly #transport: Transport;
  #info: SandboxInfo;
  /** Shell commands in this sandbox. */
  readonly commands: Commands;

  /** Use {@link Sandbox.create} or {@link Sandbox.connect}. */
  protected constructor(info: SandboxInfo, transport: Transport) {
    this.#info = info;
    this.#transport = transport;
    this.commands = new Commands(info.id, transport);
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
