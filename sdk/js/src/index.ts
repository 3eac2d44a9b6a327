/**
 * TypeScript SDK for codebox, a self-hosted Code Interpreter.
 *
 * This package owns the client side of the native `/api/v1` HTTP API (see the
 * server's openapi/openapi.json): sandbox lifecycle, stateful code execution
 * and contexts, files, shell commands and background processes, the PTY,
 * typed errors and bounded retries, over the platform's `fetch` and
 * `WebSocket` (Node 20+ and browsers, no runtime dependencies). It must not grow methods for endpoints
 * the server does not publish; test/openapi.unit.test.ts holds it to that.
 *
 * ```ts
 * import { Sandbox } from "@codebox/sdk";
 *
 * const sbx = await Sandbox.create({ runtime: "python3" });
 * try {
 *   await sbx.runCode("x = 41");
 *   console.log((await sbx.runCode("x + 1")).text); // "42"
 * } finally {
 *   await sbx.kill();
 * }
 * ```
 */

export {
  API_KEY_ENV,
  API_URL_ENV,
  ConnectionConfig,
  type ConnectionOptions,
  DEFAULT_API_URL,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type FetchFunction,
  RetryPolicy,
  type RetryOptions,
} from "./config.js";
export {
  APIConnectionError,
  AuthenticationError,
  CodeboxError,
  type CodeboxErrorOptions,
  ConflictError,
  InternalServerError,
  InvalidRequestError,
  NotFoundError,
  PayloadTooLargeError,
  RateLimitError,
  ResourceLimitError,
  SandboxGoneError,
  ServiceUnavailableError,
  TimeoutError,
  UnexpectedResponseError,
  ValidationError,
} from "./errors.js";
export {
  type BackgroundCommandOptions,
  type CommandExit,
  CommandHandle,
  Commands,
  type ConnectOptions,
  type ProcessInfo,
  type ProcessSignal,
  type RunCommandOptions,
} from "./commands.js";
export {
  type Context,
  Contexts,
  type CreateContextOptions,
  Execution,
  type ExecutionError,
  type ExecutionOutcome,
  type Logs,
  Result,
  type ResultFormat,
  type RunCodeOptions,
} from "./execution.js";
export {
  type FileData,
  type FileEntry,
  type FileEvent,
  type FileList,
  type FileType,
  type FileWatcher,
  Files,
  type ReadOptions,
  type WatchOptions,
  type WriteEntry,
  type WriteInfo,
} from "./files.js";
export {
  type CommandResult,
  type Resources,
  type RuntimeInfo,
  SANDBOX_STATUSES,
  type SandboxInfo,
  type SandboxMetrics,
  type SandboxStatus,
  TERMINATION_REASONS,
  type TerminationReason,
} from "./models.js";
export {
  Pty,
  type PtyCreateOptions,
  type PtyExit,
  PtyHandle,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./pty.js";
export {
  DEFAULT_RUNTIME,
  Sandbox,
  type SandboxCreateOptions,
  type SandboxListOptions,
} from "./sandbox.js";
export type { CallOptions } from "./transport.js";
export { VERSION } from "./version.js";
