/**
 * An interactive terminal in the sandbox (`sbx.pty`) over the WebSocket
 * `GET /api/v1/sandboxes/{id}/pty`: binary frames carry terminal bytes both
 * ways, a text frame `{"type":"resize","cols","rows"}` resizes, and closing
 * the socket ends the shell.
 *
 * The socket is the platform's `WebSocket` (Node 22+) or the constructor
 * given as `webSocket` (the `ws` package on Node 20). The API key goes in the
 * handshake's `X-API-Key` header, as with every other call; the server takes
 * no other credential on the handshake, and a browser's WebSocket cannot
 * send headers, so there is no PTY from a web page.
 */

import { isNode } from "./config.js";
import * as api from "./endpoints.js";
import { APIConnectionError } from "./errors.js";
import type { StringMap } from "./requests.js";
import type { Transport } from "./transport.js";

/** The part of the WHATWG `WebSocket` this SDK uses (the `ws` package has it too). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | ArrayBuffer | Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (event: never) => void): void;
}

/**
 * A WebSocket constructor: the platform's, or one that takes a second
 * argument `{headers}` (the `ws` package, Node's undici) so the API key can
 * be sent as a header.
 */
export type WebSocketConstructor = new (url: string, options?: never) => WebSocketLike;

/** Options of `sbx.pty.create`. */
export interface PtyCreateOptions {
  /** Columns (default 80). */
  cols?: number | undefined;
  /** Rows (default 24). */
  rows?: number | undefined;
  /** The terminal's output, as raw bytes (decode with a streaming `TextDecoder`). */
  onData: (data: Uint8Array) => void;
  /** Aborting it closes the terminal. */
  signal?: AbortSignal | undefined;
  /** A WebSocket constructor when the platform has none (Node 20: `import WebSocket from "ws"`). */
  webSocket?: WebSocketConstructor | undefined;
  /** The program (`bash -c cmd`; default a login shell). */
  cmd?: string | undefined;
  /** Working directory (default /home/user). */
  cwd?: string | undefined;
  /** Added to the sandbox's environment. */
  envs?: StringMap | undefined;
  /** Seconds; then the program is killed (default: as long as the sandbox). */
  timeout?: number | undefined;
}

/**
 * How a terminal ended. The server closes with 1000 and the reason
 * `{"exit_code", "signal", "timed_out"}` when the program exits, 1011 when
 * the sandbox ended, 1001 on shutdown.
 */
export interface PtyExit {
  /** The WebSocket close code. */
  readonly code: number;
  /** The close frame's reason, as the server wrote it. */
  readonly reason: string;
  /** The program's exit status, when the server reported one. */
  readonly exitCode: number | null;
  /** The signal that ended the program, when the server reported one. */
  readonly signal: number | null;
}

const OPEN = 1;

/** A running terminal. */
export class PtyHandle {
  readonly #socket: WebSocketLike;
  readonly #exit: Promise<PtyExit>;

  constructor(socket: WebSocketLike, exit: Promise<PtyExit>) {
    this.#socket = socket;
    this.#exit = exit;
    this.#exit.catch(() => undefined);
  }

  /** Sends keystrokes (a string is sent as UTF-8). */
  sendInput(data: string | Uint8Array): void {
    this.#ensureOpen();
    this.#socket.send(typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  /** Resizes the terminal. */
  resize(cols: number, rows: number): void {
    checkSize(cols, rows);
    this.#ensureOpen();
    this.#socket.send(JSON.stringify({ type: "resize", cols, rows }));
  }

  /** Closes the socket, which ends the shell. */
  close(): void {
    this.#socket.close(1000, "closed by the client");
  }

  /** Alias of {@link close}. */
  kill(): void {
    this.close();
  }

  /** Resolves when the socket closes (the shell exited, or `close()`). */
  wait(): Promise<PtyExit> {
    return this.#exit;
  }

  #ensureOpen(): void {
    if (this.#socket.readyState !== OPEN) {
      throw new APIConnectionError("the terminal's socket is closed");
    }
  }
}

function checkSize(cols: number, rows: number): void {
  for (const [name, value] of [
    ["cols", cols],
    ["rows", rows],
  ] as const) {
    if (!Number.isInteger(value) || value < 1 || value > 1000) {
      throw new RangeError(`${name} must be an integer from 1 to 1000`);
    }
  }
}

/** The exit status and signal a close reason `{"exit_code", "signal", ...}` reports. */
export function exitOf(reason: string): { exitCode: number | null; signal: number | null } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(reason);
  } catch {
    return { exitCode: null, signal: null };
  }
  const field = (key: string): number | null => {
    if (typeof parsed !== "object" || parsed === null) return null;
    const value = (parsed as Record<string, unknown>)[key];
    return typeof value === "number" && Number.isInteger(value) ? value : null;
  };
  return { exitCode: field("exit_code"), signal: field("signal") };
}

/** The PTY of one sandbox (`sbx.pty`). */
export class Pty {
  readonly #sandboxId: string;
  readonly #transport: Transport;

  constructor(sandboxId: string, transport: Transport) {
    this.#sandboxId = sandboxId;
    this.#transport = transport;
  }

  /**
   * Opens a login shell as the sandbox user on a new terminal; resolves once
   * connected. A WebSocket handshake refused by the server carries no API
   * error, so the sandbox is looked up first: an unknown, ended or foreign
   * sandbox, or a bad key, is the same typed error as anywhere else.
   */
  async create(options: PtyCreateOptions): Promise<PtyHandle> {
    const cols = options.cols ?? 80;
    const rows = options.rows ?? 24;
    checkSize(cols, rows);
    options.signal?.throwIfAborted();
    if (!isNode() && options.webSocket === undefined) {
      throw new TypeError(
        "the PTY needs the API key in a WebSocket header, which a browser's WebSocket cannot send",
      );
    }
    const Constructor = options.webSocket ?? platformWebSocket();
    if (Constructor === undefined) {
      throw new TypeError(
        'no WebSocket on this platform: pass webSocket (Node 20: `import WebSocket from "ws"`)',
      );
    }
    await this.#transport.request(api.GET_SANDBOX, {
      pathParams: { id: this.#sandboxId },
      signal: options.signal,
    });
    const config = this.#transport.config;
    const url = new URL(`${config.apiUrl}${api.PTY.path({ id: this.#sandboxId })}`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("cols", String(cols));
    url.searchParams.set("rows", String(rows));
    if (options.cmd !== undefined) url.searchParams.set("cmd", options.cmd);
    if (options.cwd !== undefined) url.searchParams.set("cwd", options.cwd);
    if (options.timeout !== undefined) url.searchParams.set("timeout", String(options.timeout));
    for (const [name, value] of Object.entries(options.envs ?? {})) {
      url.searchParams.set(`env.${name}`, value);
    }
    // Node's sockets (ws, undici) take `{headers}` as their second argument.
    const socket = new Constructor(url.href, { headers: config.headers() } as never);
    socket.binaryType = "arraybuffer";
    return connect(socket, options);
  }
}

function platformWebSocket(): WebSocketConstructor | undefined {
  return (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
}

interface CloseEventLike {
  code?: number;
  reason?: string;
}

interface MessageEventLike {
  data?: unknown;
}

function connect(socket: WebSocketLike, options: PtyCreateOptions): Promise<PtyHandle> {
  return new Promise<PtyHandle>((resolve, reject) => {
    let opened = false;
    let resolveExit: (exit: PtyExit) => void = () => undefined;
    const exit = new Promise<PtyExit>((done) => {
      resolveExit = done;
    });
    const onAbort = (): void => socket.close(1000, "aborted by the client");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    socket.addEventListener("open", () => {
      opened = true;
      resolve(new PtyHandle(socket, exit));
    });
    socket.addEventListener("message", (event: MessageEventLike) => {
      const data = event.data;
      if (data instanceof ArrayBuffer) options.onData(new Uint8Array(data));
      else if (ArrayBuffer.isView(data)) {
        options.onData(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      } else if (typeof data === "string") options.onData(new TextEncoder().encode(data));
    });
    socket.addEventListener("error", () => {
      if (!opened) {
        reject(
          new APIConnectionError(
            "the terminal's WebSocket could not be opened (an unknown sandbox, a bad key, or no PTY route)",
          ),
        );
      }
    });
    socket.addEventListener("close", (event: CloseEventLike) => {
      options.signal?.removeEventListener("abort", onAbort);
      const code = event.code ?? 1005;
      const reason = event.reason ?? "";
      if (!opened) {
        reject(
          new APIConnectionError(
            `the terminal's WebSocket closed before it opened (code ${code}${reason ? `: ${reason}` : ""})`,
          ),
        );
      }
      resolveExit(Object.freeze({ code, reason, ...exitOf(reason) }));
    });
  });
}
