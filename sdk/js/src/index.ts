/**
 * TypeScript SDK for codebox, a self-hosted Code Interpreter.
 *
 * This package owns the client side of the native `/api/v1` HTTP API (see the
 * server's openapi/openapi.json): sandbox lifecycle, shell commands, typed
 * errors and bounded retries, over the platform's `fetch` (Node 20+ and
 * browsers, no runtime dependencies). It must not grow methods for endpoints
 * the server does not publish; test/openapi.unit.test.ts holds it to that.
 *
 * ```ts
 * import { Sandbox } from "@codebox/sdk";
 *
 * const sbx = await Sandbox.create({ runtime: "python3" });
 * try {
 *   console.log((await sbx.commands.run("python3 -c 'print(6*7)'")).stdout);
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
  type CommandResult,
  type Resources,
  type RuntimeInfo,
  SANDBOX_STATUSES,
  type SandboxInfo,
  type SandboxStatus,
  TERMINATION_REASONS,
  type TerminationReason,
} from "./models.js";
export {
  Commands,
  DEFAULT_RUNTIME,
  type RunCommandOptions,
  Sandbox,
  type SandboxCreateOptions,
  type SandboxListOptions,
} from "./sandbox.js";
export type { CallOptions } from "./transport.js";
export { VERSION } from "./version.js";
