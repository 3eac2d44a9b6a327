/**
 * Shell commands and processes in one sandbox (`sbx.commands`): one-shot
 * commands that answer when done, and background processes with a handle
 * (stdin, signals, output as it comes, the exit) that can be reattached.
 */

import * as api from "./endpoints.js";
import { NotFoundError, UnexpectedResponseError } from "./errors.js";
import { type CommandResult, parseCommandResult } from "./models.js";
import { type StringMap, commandBody, commandHttpTimeoutMs } from "./requests.js";
import { readNdjson } from "./streams.js";
import type { CallOptions, OpenedResponse, Transport } from "./transport.js";

/** The signals a process may be sent. */
export type ProcessSignal =
  | "SIGTERM"
  | "SIGKILL"
  | "SIGINT"
  | "SIGHUP"
  | "SIGQUIT"
  | "SIGUSR1"
  | "SIGUSR2"
  | "SIGSTOP"
  | "SIGCONT";

/** Options of {@link Commands.run}. */
export interface RunCommandOptions extends CallOptions {
  /**
   * Seconds; an overrun is `timedOut`, not an error. One-shot: server default
   * 30, at most 300. Background: none by default (the process lives as long
   * as the sandbox).
   */
  timeout?: number | undefined;
  /** Added to the sandbox's environment for this command. */
  env?: StringMap | undefined;
  /** Working directory (default the user's home). */
  cwd?: string | undefined;
  /** Written to the command's standard input, then closed. */
  stdin?: string | undefined;
}

/** Options of a background {@link Commands.run}. */
export interface BackgroundCommandOptions extends Omit<RunCommandOptions, "stdin"> {
  background: true;
  /** Keep stdin open for {@link CommandHandle.sendStdin} (default false: /dev/null). */
  stdin?: boolean | undefined;
  /** A label shown in {@link Commands.list}. */
  tag?: string | undefined;
  /** Each chunk of standard output (UTF-8), as it arrives. */
  onStdout?: ((data: string) => void) | undefined;
  /** Each chunk of standard error (UTF-8), as it arrives. */
  onStderr?: ((data: string) => void) | undefined;
}

/** Options of {@link Commands.connect}. */
export interface ConnectOptions extends CallOptions {
  onStdout?: ((data: string) => void) | undefined;
  onStderr?: ((data: string) => void) | undefined;
}

/** A running background process, as {@link Commands.list} shows it. */
export interface ProcessInfo {
  readonly pid: number;
  /** The argv (`["bash", "-c", cmd]` for a shell command). */
  readonly cmd: readonly string[];
  readonly tag: string | null;
  readonly stdinOpen: boolean;
}

/** How a background process ended. */
export interface CommandExit {
  /** The exit status, or `null` when a signal ended it. */
  readonly exitCode: number | null;
  /** The signal that ended it, or `null`. */
  readonly signal: number | null;
  /** Killed because it outlived its `timeout`. */
  readonly timedOut: boolean;
  /** Output received while this handle listened. */
  readonly stdout: string;
  readonly stderr: string;
  /** Output lost before this handle listened (the server buffers up to 1 MiB). */
  readonly droppedBytes: number;
  /** Exited 0 in time. */
  readonly ok: boolean;
}

type Json = Record<string, unknown>;

export function parseProcess(data: unknown): ProcessInfo {
  if (typeof data !== "object" || data === null) {
    throw new UnexpectedResponseError("process is not a JSON object");
  }
  const obj = data as Json;
  const pid = obj["pid"];
  const cmd = obj["cmd"];
  const tag = obj["tag"];
  const stdinOpen = obj["stdin_open"];
  if (typeof pid !== "number" || !Number.isInteger(pid)) {
    throw new UnexpectedResponseError("process.pid is missing or not an integer");
  }
  if (!Array.isArray(cmd) || !cmd.every((part) => typeof part === "string")) {
    throw new UnexpectedResponseError("process.cmd is not a list of strings");
  }
  if (typeof stdinOpen !== "boolean") {
    throw new UnexpectedResponseError("process.stdin_open is missing or not a boolean");
  }
  return Object.freeze({
    pid,
    cmd: Object.freeze([...(cmd as string[])]),
    tag: typeof tag === "string" ? tag : null,
    stdinOpen,
  });
}

function nullableInt(event: Json, key: string): number | null {
  const value = event[key];
  if (value === null || value === undefined) return null;
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new UnexpectedResponseError(`process event ${key} is not an integer`);
  }
  return value;
}

/**
 * A background process. Its output is read from the moment it started (or
 * from the reattach), passed to the callbacks and kept in `stdout`/`stderr`;
 * {@link wait} resolves when it ends. {@link disconnect} stops listening
 * and leaves the process running.
 */
export class CommandHandle {
  readonly pid: number;
  readonly #sandboxId: string;
  readonly #transport: Transport;
  readonly #stdout: string[] = [];
  readonly #stderr: string[] = [];
  readonly #listener: AbortController;
  readonly #exit: Promise<CommandExit>;
  #droppedBytes = 0;

  /** Use `sbx.commands.run(cmd, {background: true})` or `sbx.commands.connect(pid)`. */
  constructor(
    pid: number,
    sandboxId: string,
    transport: Transport,
    opened: OpenedResponse,
    events: AsyncGenerator<Json, void, undefined>,
    listener: AbortController,
    callbacks: ConnectOptions,
  ) {
    this.pid = pid;
    this.#sandboxId = sandboxId;
    this.#transport = transport;
    this.#listener = listener;
    this.#exit = this.#listen(opened, events, callbacks);
    // Nobody may ever wait: a failure then must not be an unhandled rejection.
    this.#exit.catch(() => undefined);
  }

  /** Standard output received so far. */
  get stdout(): string {
    return this.#stdout.join("");
  }

  /** Standard error received so far. */
  get stderr(): string {
    return this.#stderr.join("");
  }

  async #listen(
    opened: OpenedResponse,
    events: AsyncGenerator<Json, void, undefined>,
    callbacks: ConnectOptions,
  ): Promise<CommandExit> {
    try {
      for await (const event of events) {
        switch (event["type"]) {
          case "start":
            this.#droppedBytes += nullableInt(event, "dropped_bytes") ?? 0;
            break;
          case "stdout":
          case "stderr": {
            const data = event["data"];
            if (typeof data !== "string") {
              throw new UnexpectedResponseError("a process output event has no data");
            }
            if (event["type"] === "stdout") {
              this.#stdout.push(data);
              callbacks.onStdout?.(data);
            } else {
              this.#stderr.push(data);
              callbacks.onStderr?.(data);
            }
            break;
          }
          case "end": {
            const exitCode = nullableInt(event, "exit_code");
            const timedOut = event["timed_out"] === true;
            return Object.freeze({
              exitCode,
              signal: nullableInt(event, "signal"),
              timedOut,
              stdout: this.stdout,
              stderr: this.stderr,
              droppedBytes: this.#droppedBytes,
              ok: exitCode === 0 && !timedOut,
            });
          }
          default:
            break;
        }
      }
    } catch (error) {
      throw this.#transport.streamFailure(error, api.PROCESS_STREAM, this.#listener.signal);
    } finally {
      opened.release();
    }
    throw new UnexpectedResponseError(
      `the output stream of process ${this.pid} ended without its end`,
    );
  }

  /**
   * Resolves when the process ends, with its exit status and output. A
   * non-zero exit is not an error (check `ok`). After {@link disconnect} it
   * rejects with the disconnect reason.
   */
  wait(): Promise<CommandExit> {
    return this.#exit;
  }

  /** Stops listening; the process keeps running (reattach with `sbx.commands.connect(pid)`). */
  disconnect(): void {
    this.#listener.abort(new Error(`stopped listening to process ${this.pid}`));
  }

  /** Writes to the process's stdin (it must have been started with `stdin: true`); resolves to the bytes written. */
  async sendStdin(data: string | Uint8Array, options: CallOptions = {}): Promise<number> {
    // fetch sends any Uint8Array; the DOM types only name ArrayBuffer-backed ones.
    const bytes = (typeof data === "string" ? new TextEncoder().encode(data) : data) as BodyInit;
    const answer = await this.#transport.request(api.PROCESS_STDIN, {
      pathParams: { id: this.#sandboxId, pid: String(this.pid) },
      rawBody: bytes,
      ...callOptions(options),
    });
    const written = (answer as Json | null)?.["written"];
    if (typeof written !== "number") {
      throw new UnexpectedResponseError("the stdin answer has no written count");
    }
    return written;
  }

  /** Closes the process's stdin: it reads end of file. */
  async closeStdin(options: CallOptions = {}): Promise<void> {
    await this.#transport.request(api.PROCESS_CLOSE_STDIN, {
      pathParams: { id: this.#sandboxId, pid: String(this.pid) },
      ...callOptions(options),
    });
  }

  /** Sends a signal to the process's group. */
  async signal(signal: ProcessSignal, options: CallOptions = {}): Promise<void> {
    await this.#transport.request(api.PROCESS_SIGNAL, {
      pathParams: { id: this.#sandboxId, pid: String(this.pid) },
      body: { signal },
      ...callOptions(options),
    });
  }

  /** SIGKILL to the process's group: `true` when sent, `false` when it had already ended. */
  async kill(options: CallOptions = {}): Promise<boolean> {
    try {
      await this.signal("SIGKILL", options);
      return true;
    } catch (error) {
      if (error instanceof NotFoundError) return false;
      throw error;
    }
  }
}

function callOptions(options: CallOptions): CallOptions {
  return { signal: options.signal, requestTimeoutMs: options.requestTimeoutMs };
}

/** Shell commands and processes in one sandbox (`sbx.commands`). */
export class Commands {
  readonly #sandboxId: string;
  readonly #transport: Transport;

  constructor(sandboxId: string, transport: Transport) {
    this.#sandboxId = sandboxId;
    this.#transport = transport;
  }

  /**
   * Runs `bash -c cmd` as the sandbox's unprivileged user.
   *
   * One-shot (default): waits and resolves to a {@link CommandResult}. A
   * command that outlives `timeout` is killed and comes back with
   * `timedOut: true`, not as an error; a non-zero exit is not an error
   * either: check `exitCode` (or `ok`). The HTTP wait outlasts the command's
   * own timeout unless `requestTimeoutMs` says otherwise.
   *
   * `background: true`: resolves as soon as the process started, to a
   * {@link CommandHandle} that listens to its output from its very start.
   */
  run(cmd: string, options: BackgroundCommandOptions): Promise<CommandHandle>;
  run(
    cmd: string,
    options?: RunCommandOptions & { background?: false | undefined },
  ): Promise<CommandResult>;
  async run(
    cmd: string,
    options:
      (RunCommandOptions & { background?: false | undefined }) | BackgroundCommandOptions = {},
  ): Promise<CommandResult | CommandHandle> {
    if (options.background === true) return this.#start(cmd, options);
    if (options.stdin !== undefined && typeof options.stdin !== "string") {
      throw new TypeError(
        "a one-shot command takes stdin as a string; stdin: true is for background",
      );
    }
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

  // Started with `background: false` on the wire: the answer streams the
  // process's output from its first byte (nothing can be missed) and the
  // process keeps running when this client stops listening.
  async #start(cmd: string, options: BackgroundCommandOptions): Promise<CommandHandle> {
    const body: Json = { cmd, background: false };
    if (options.env !== undefined) body["env"] = { ...options.env };
    if (options.cwd !== undefined) body["cwd"] = options.cwd;
    if (options.stdin !== undefined) body["stdin"] = options.stdin;
    if (options.timeout !== undefined) body["timeout"] = options.timeout;
    if (options.tag !== undefined) body["tag"] = options.tag;
    return this.#attach(api.START_PROCESS, { id: this.#sandboxId }, body, options);
  }

  /** Reattaches to a running background process: its output from now on, and its end. */
  async connect(pid: number, options: ConnectOptions = {}): Promise<CommandHandle> {
    return this.#attach(
      api.PROCESS_STREAM,
      { id: this.#sandboxId, pid: String(pid) },
      undefined,
      options,
    );
  }

  async #attach(
    endpoint: api.Endpoint,
    pathParams: Record<string, string>,
    body: Json | undefined,
    options: ConnectOptions,
  ): Promise<CommandHandle> {
    // The listener outlives this call: the caller's signal only bounds the start.
    const listener = new AbortController();
    const caller = options.signal;
    caller?.throwIfAborted();
    const onAbort = (): void => listener.abort(caller?.reason);
    caller?.addEventListener("abort", onAbort, { once: true });
    let opened: OpenedResponse;
    let events: AsyncGenerator<Json, void, undefined>;
    let first: Json | undefined;
    try {
      opened = await this.#transport.open(endpoint, {
        pathParams,
        body,
        headers: { Accept: "application/x-ndjson" },
        signal: listener.signal,
        requestTimeoutMs: options.requestTimeoutMs,
      });
      events = readNdjson(opened.body, listener.signal);
      try {
        first = (await events.next()).value ?? undefined;
      } catch (error) {
        opened.release();
        throw this.#transport.streamFailure(error, endpoint, listener.signal);
      }
    } finally {
      caller?.removeEventListener("abort", onAbort);
    }
    const pid = first?.["pid"];
    if (first?.["type"] !== "start" || typeof pid !== "number") {
      opened.release();
      throw new UnexpectedResponseError("a process stream did not begin with its start event");
    }
    const replay = async function* (): AsyncGenerator<Json, void, undefined> {
      yield first as Json;
      yield* events;
    };
    return new CommandHandle(
      pid,
      this.#sandboxId,
      this.#transport,
      opened,
      replay(),
      listener,
      options,
    );
  }

  /** The sandbox's running background processes. */
  async list(options: CallOptions = {}): Promise<ProcessInfo[]> {
    const data = await this.#transport.request(api.LIST_PROCESSES, {
      pathParams: { id: this.#sandboxId },
      ...callOptions(options),
    });
    const items = (data as Json | null)?.["processes"];
    if (!Array.isArray(items)) throw new UnexpectedResponseError("process list has no processes");
    return items.map(parseProcess);
  }

  /** Sends a signal to a background process by pid. */
  async sendSignal(pid: number, signal: ProcessSignal, options: CallOptions = {}): Promise<void> {
    await this.#transport.request(api.PROCESS_SIGNAL, {
      pathParams: { id: this.#sandboxId, pid: String(pid) },
      body: { signal },
      ...callOptions(options),
    });
  }

  /** SIGKILL to a background process by pid: `false` when it had already ended. */
  async kill(pid: number, options: CallOptions = {}): Promise<boolean> {
    try {
      await this.sendSignal(pid, "SIGKILL", options);
      return true;
    } catch (error) {
      if (error instanceof NotFoundError) return false;
      throw error;
    }
  }
}
