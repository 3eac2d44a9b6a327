/**
 * Typed errors, one per error code of the codebox API.
 *
 * The server answers every failure with the envelope
 * `{"success": false, "error": {"code", "message", "field"?, "reason"?, "request_id"}}`
 * (docs/api-errors.md). {@link errorFromResponse} turns such an answer into the
 * matching class, so callers switch on `instanceof` instead of strings. Answers
 * that are not an envelope (a proxy's HTML 502, say) are mapped by HTTP status,
 * with `code` left `null`.
 */

/** What every error of this SDK carries besides its message. */
export interface CodeboxErrorOptions {
  /** The API's stable error code, or `null` when the failure came without one. */
  code?: string | null;
  /** The HTTP status, when there was an answer. */
  status?: number | null;
  /** The server's id for the request: quote it when reporting a problem. */
  requestId?: string | null;
  /** The underlying failure (a fetch TypeError, a JSON SyntaxError...). */
  cause?: unknown;
}

/**
 * Base of every error this SDK throws.
 *
 * `code` is the API's stable error code (`"NOT_FOUND"`...), or `null` when the
 * failure did not come with one (a transport failure, a non-JSON answer).
 * `status` is the HTTP status when there was an answer. `requestId` is the
 * server's id for the request.
 */
export class CodeboxError extends Error {
  readonly code: string | null;
  readonly status: number | null;
  readonly requestId: string | null;

  constructor(message: string, options: CodeboxErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code ?? null;
    this.status = options.status ?? null;
    this.requestId = options.requestId ?? null;
  }

  /** The message with code, status and request id, as logs want it. */
  override toString(): string {
    const parts: string[] = [];
    if (this.code !== null) parts.push(`code=${this.code}`);
    if (this.status !== null) parts.push(`status=${this.status}`);
    if (this.requestId) parts.push(`requestId=${this.requestId}`);
    const text = `${this.name}: ${this.message}`;
    return parts.length === 0 ? text : `${text} (${parts.join(", ")})`;
  }
}

/**
 * The request itself was malformed (`INVALID_JSON`, `METHOD_NOT_ALLOWED`,
 * `UNSUPPORTED_MEDIA_TYPE`): usually a bug in the caller or this SDK.
 */
export class InvalidRequestError extends CodeboxError {}

/** What {@link ValidationError} adds. */
export interface ValidationErrorOptions extends CodeboxErrorOptions {
  field?: string | null;
}

/**
 * `VALIDATION_ERROR`: a value is missing, unknown or out of range. `field` is
 * the offending field as a dotted path (`resources.cpu`) when the server knows it.
 */
export class ValidationError extends InvalidRequestError {
  readonly field: string | null;

  constructor(message: string, options: ValidationErrorOptions = {}) {
    super(message, options);
    this.field = options.field ?? null;
  }
}

/** `UNAUTHORIZED`: missing, unknown, revoked or expired credentials. */
export class AuthenticationError extends CodeboxError {}

/** `NOT_FOUND`: no such sandbox or route. Another user's sandbox is also not found, on purpose. */
export class NotFoundError extends CodeboxError {}

/** `CONFLICT`: the request does not fit the resource's current state. */
export class ConflictError extends CodeboxError {}

/** What {@link SandboxGoneError} adds. */
export interface SandboxGoneErrorOptions extends CodeboxErrorOptions {
  reason?: string | null;
}

/**
 * `SANDBOX_GONE`: the sandbox existed and has ended. `reason` says why:
 * `killed`, `timeout`, `oom`, `server_shutdown`, `server_restart`,
 * `agent_lost`, `node_lost`, `create_failed`. Create a new sandbox; never
 * retry on the same id.
 */
export class SandboxGoneError extends CodeboxError {
  readonly reason: string | null;

  constructor(message: string, options: SandboxGoneErrorOptions = {}) {
    super(message, options);
    this.reason = options.reason ?? null;
  }
}

/** `PAYLOAD_TOO_LARGE`: the body or the command is larger than allowed. */
export class PayloadTooLargeError extends CodeboxError {}

/**
 * `RESOURCE_LIMIT_ERROR`: a quota (live sandboxes per user) is exhausted.
 * Waiting alone does not help: free something first. Never retried.
 */
export class ResourceLimitError extends CodeboxError {}

/** What {@link RateLimitError} and {@link ServiceUnavailableError} add. */
export interface RetryableErrorOptions extends CodeboxErrorOptions {
  /** The server's `Retry-After`, in seconds. */
  retryAfter?: number | null;
}

/**
 * `RATE_LIMITED`: too many requests. Retried automatically (bounded); thrown
 * when the retries are used up. `retryAfter` is the server's hint in seconds,
 * when it gave one.
 */
export class RateLimitError extends CodeboxError {
  readonly retryAfter: number | null;

  constructor(message: string, options: RetryableErrorOptions = {}) {
    super(message, options);
    this.retryAfter = options.retryAfter ?? null;
  }
}

/** `INTERNAL_ERROR`: a bug or an unexpected failure on the server. */
export class InternalServerError extends CodeboxError {}

/**
 * `SERVICE_UNAVAILABLE`: a dependency or capacity is unavailable. Retried
 * automatically (bounded); `retryAfter` is the server's hint in seconds.
 */
export class ServiceUnavailableError extends CodeboxError {
  readonly retryAfter: number | null;

  constructor(message: string, options: RetryableErrorOptions = {}) {
    super(message, options);
    this.retryAfter = options.retryAfter ?? null;
  }
}

/** `TIMEOUT` (the server's request timeout), or the client gave up waiting for an answer. */
export class TimeoutError extends CodeboxError {}

/** The server could not be reached, or the connection broke before an answer. */
export class APIConnectionError extends CodeboxError {}

/**
 * The server answered something that is not the documented API (wrong shape,
 * not JSON): a version mismatch or something in between.
 */
export class UnexpectedResponseError extends CodeboxError {}

// `name` on the prototypes, not from `constructor.name`: minifiers rename
// classes, and stack traces and toString() should still say what failed.
for (const [cls, name] of [
  [CodeboxError, "CodeboxError"],
  [InvalidRequestError, "InvalidRequestError"],
  [ValidationError, "ValidationError"],
  [AuthenticationError, "AuthenticationError"],
  [NotFoundError, "NotFoundError"],
  [ConflictError, "ConflictError"],
  [SandboxGoneError, "SandboxGoneError"],
  [PayloadTooLargeError, "PayloadTooLargeError"],
  [ResourceLimitError, "ResourceLimitError"],
  [RateLimitError, "RateLimitError"],
  [InternalServerError, "InternalServerError"],
  [ServiceUnavailableError, "ServiceUnavailableError"],
  [TimeoutError, "TimeoutError"],
  [APIConnectionError, "APIConnectionError"],
  [UnexpectedResponseError, "UnexpectedResponseError"],
] as const) {
  Object.defineProperty(cls.prototype, "name", {
    value: name,
    writable: true,
    configurable: true,
    enumerable: false,
  });
}

type ErrorClass = new (message: string, options?: CodeboxErrorOptions) => CodeboxError;

/** Every error code of the API and its class (the OpenAPI test checks the list). */
export const ERROR_CLASSES_BY_CODE: Readonly<Record<string, ErrorClass>> = Object.freeze({
  VALIDATION_ERROR: ValidationError,
  INVALID_JSON: InvalidRequestError,
  METHOD_NOT_ALLOWED: InvalidRequestError,
  UNSUPPORTED_MEDIA_TYPE: InvalidRequestError,
  UNAUTHORIZED: AuthenticationError,
  NOT_FOUND: NotFoundError,
  CONFLICT: ConflictError,
  SANDBOX_GONE: SandboxGoneError,
  PAYLOAD_TOO_LARGE: PayloadTooLargeError,
  RESOURCE_LIMIT_ERROR: ResourceLimitError,
  RATE_LIMITED: RateLimitError,
  INTERNAL_ERROR: InternalServerError,
  SERVICE_UNAVAILABLE: ServiceUnavailableError,
  TIMEOUT: TimeoutError,
});

// For answers without an envelope (something between us and the server).
const BY_STATUS: Readonly<Record<number, ErrorClass>> = Object.freeze({
  400: InvalidRequestError,
  401: AuthenticationError,
  403: AuthenticationError,
  404: NotFoundError,
  405: InvalidRequestError,
  409: ConflictError,
  410: SandboxGoneError,
  413: PayloadTooLargeError,
  415: InvalidRequestError,
  429: RateLimitError,
  500: InternalServerError,
  502: ServiceUnavailableError,
  503: ServiceUnavailableError,
  504: TimeoutError,
});

/** Header values that complete an error answer. */
export interface ErrorContext {
  /** Seconds from the `Retry-After` header, when present and readable. */
  retryAfter?: number | null;
  /** The `x-request-id` header, used when the body has no request id. */
  headerRequestId?: string | null;
}

/**
 * The error for a failed answer: by `error.code` when the body is the API's
 * envelope, else by HTTP status.
 */
export function errorFromResponse(
  status: number,
  body: string,
  context: ErrorContext = {},
): CodeboxError {
  const envelope = errorObject(body);
  const headerRequestId = context.headerRequestId ?? null;
  if (envelope === null) {
    return fromStatus(status, context.retryAfter ?? null, headerRequestId);
  }
  const code = envelope["code"] as string;
  const message = envelope["message"];
  const bodyRequestId = envelope["request_id"];
  // A code this SDK version does not know yet: fall back to the status class
  // but keep the code, so callers can still switch on it.
  const cls = Object.hasOwn(ERROR_CLASSES_BY_CODE, code)
    ? (ERROR_CLASSES_BY_CODE[code] as ErrorClass)
    : classForStatus(status);
  const options: ValidationErrorOptions & SandboxGoneErrorOptions & RetryableErrorOptions = {
    code,
    status,
    requestId: typeof bodyRequestId === "string" && bodyRequestId ? bodyRequestId : headerRequestId,
    ...extraFields(cls, envelope, context.retryAfter ?? null),
  };
  const text = typeof message === "string" && message ? message : `HTTP ${status}`;
  return new cls(text, options);
}

function errorObject(body: string): Record<string, unknown> | null {
  let decoded: unknown;
  try {
    decoded = JSON.parse(body);
  } catch {
    return null;
  }
  if (!isObject(decoded) || decoded["success"] !== false) return null;
  const error = decoded["error"];
  if (!isObject(error) || typeof error["code"] !== "string") return null;
  return error;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function extraFields(
  cls: ErrorClass,
  envelope: Record<string, unknown>,
  retryAfter: number | null,
): ValidationErrorOptions & SandboxGoneErrorOptions & RetryableErrorOptions {
  if (isSubclass(cls, ValidationError)) {
    const field = envelope["field"];
    return { field: typeof field === "string" ? field : null };
  }
  if (isSubclass(cls, SandboxGoneError)) {
    const reason = envelope["reason"];
    return { reason: typeof reason === "string" ? reason : null };
  }
  if (isSubclass(cls, RateLimitError) || isSubclass(cls, ServiceUnavailableError)) {
    return { retryAfter };
  }
  return {};
}

function isSubclass(cls: ErrorClass, base: ErrorClass): boolean {
  return cls === base || cls.prototype instanceof base;
}

function classForStatus(status: number): ErrorClass {
  return BY_STATUS[status] ?? (status >= 500 ? InternalServerError : CodeboxError);
}

function fromStatus(
  status: number,
  retryAfter: number | null,
  requestId: string | null,
): CodeboxError {
  const cls = classForStatus(status);
  const options: RetryableErrorOptions = { status, requestId };
  if (isSubclass(cls, RateLimitError) || isSubclass(cls, ServiceUnavailableError)) {
    options.retryAfter = retryAfter;
  }
  return new cls(`HTTP ${status} without an API error body`, options);
}
