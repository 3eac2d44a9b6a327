/**
 * Request bodies and query parameters. Range checks are the server's job (one
 * source of truth, a typed ValidationError with `field`); this module only
 * shapes what is sent, in the API's snake_case.
 */

// The server's documented defaults (docs/api.md), used to complete `resources`
// when only one of cpu/memory is given: the API takes both or neither.
export const DEFAULT_CPU = 1;
export const DEFAULT_MEMORY_MB = 512;
// A command's own default timeout on the server, and how much longer than the
// command the HTTP request may take (sandbox scheduling, the answer's transfer).
export const DEFAULT_COMMAND_TIMEOUT_S = 30;
export const COMMAND_HTTP_MARGIN_MS = 30_000;

export type StringMap = Readonly<Record<string, string>>;

export interface CreateFields {
  runtime: string;
  cpu?: number | undefined;
  memory?: number | undefined;
  timeout?: number | undefined;
  metadata?: StringMap | undefined;
  envVars?: StringMap | undefined;
}

export function createBody(fields: CreateFields): Record<string, unknown> {
  const body: Record<string, unknown> = { runtime: fields.runtime };
  if (fields.cpu !== undefined || fields.memory !== undefined) {
    body["resources"] = {
      cpu: fields.cpu ?? DEFAULT_CPU,
      memory: fields.memory ?? DEFAULT_MEMORY_MB,
    };
  }
  if (fields.timeout !== undefined) body["timeout"] = fields.timeout;
  if (fields.metadata !== undefined) body["metadata"] = { ...fields.metadata };
  if (fields.envVars !== undefined) body["env_vars"] = { ...fields.envVars };
  return body;
}

export interface ListFields {
  status?: string | undefined;
  metadata?: StringMap | undefined;
  limit?: number | undefined;
  cursor?: string | null | undefined;
}

export function listParams(fields: ListFields): URLSearchParams {
  const params = new URLSearchParams();
  if (fields.status !== undefined) params.append("status", fields.status);
  for (const [key, value] of Object.entries(fields.metadata ?? {})) {
    params.append(`metadata.${key}`, value);
  }
  if (fields.limit !== undefined) params.append("limit", String(fields.limit));
  if (fields.cursor !== undefined && fields.cursor !== null) params.append("cursor", fields.cursor);
  return params;
}

export interface CommandFields {
  timeout?: number | undefined;
  env?: StringMap | undefined;
  cwd?: string | undefined;
  stdin?: string | undefined;
}

export function commandBody(cmd: string, fields: CommandFields): Record<string, unknown> {
  const body: Record<string, unknown> = { cmd };
  if (fields.timeout !== undefined) body["timeout"] = fields.timeout;
  if (fields.env !== undefined) body["env"] = { ...fields.env };
  if (fields.cwd !== undefined) body["cwd"] = fields.cwd;
  if (fields.stdin !== undefined) body["stdin"] = fields.stdin;
  return body;
}

/** How long to wait for the answer of a command that may run `timeoutS` seconds. */
export function commandHttpTimeoutMs(
  timeoutS: number | undefined,
  requestTimeoutMs: number,
): number {
  const command = timeoutS ?? DEFAULT_COMMAND_TIMEOUT_S;
  return Math.max(requestTimeoutMs, command * 1000 + COMMAND_HTTP_MARGIN_MS);
}
