/**
 * What the API returns, as typed, frozen values with camelCase names.
 *
 * Parsing is strict about the fields the API documents as required (a missing
 * or mistyped one is an {@link UnexpectedResponseError}) and ignores fields it
 * does not know, so a newer server does not break an older SDK.
 */

import { UnexpectedResponseError } from "./errors.js";

/** The statuses the API documents; a newer server may add more. */
export const SANDBOX_STATUSES = ["creating", "running", "terminated", "failed"] as const;
export type SandboxStatus = (typeof SANDBOX_STATUSES)[number];

/** Why a sandbox ended, as the API documents it; a newer server may add more. */
export const TERMINATION_REASONS = [
  "killed",
  "timeout",
  "oom",
  "server_shutdown",
  "server_restart",
  "agent_lost",
  "node_lost",
  "create_failed",
] as const;
export type TerminationReason = (typeof TERMINATION_REASONS)[number];

/** CPU in cores and memory in MiB (there is no swap). */
export interface Resources {
  readonly cpu: number;
  readonly memory: number;
}

/** A sandbox as the server reports it. */
export interface SandboxInfo {
  readonly id: string;
  // `string & {}` keeps editor completion for the known values while a newer
  // server's new value still type-checks.
  readonly status: SandboxStatus | (string & {});
  readonly runtime: string;
  readonly resources: Resources;
  readonly isolation: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly createdAt: Date;
  readonly expiresAt: Date;
  readonly endedAt: Date | null;
  readonly terminationReason: TerminationReason | (string & {}) | null;
  /** `creating` or `running`: counted against the quota. */
  readonly isLive: boolean;
}

/** One page of a listing; `nextCursor` is `null` on the last. */
export interface SandboxPage {
  readonly sandboxes: readonly SandboxInfo[];
  readonly nextCursor: string | null;
}

/**
 * The outcome of `sbx.commands.run`.
 *
 * A command that outlived its timeout was killed with its whole process tree:
 * `timedOut` is set and `exitCode` is what the kill left (128 + signal).
 * `truncated` means output beyond the server's per-stream cap was dropped.
 */
export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
  readonly timedOut: boolean;
  readonly truncated: boolean;
  readonly durationMs: number;
  /** Exited 0 in time. */
  readonly ok: boolean;
}

/** A runtime the server offers: pass `name` or an alias to `Sandbox.create`. */
export interface RuntimeInfo {
  readonly name: string;
  readonly language: string;
  readonly version: string;
  readonly aliases: readonly string[];
}

type Json = Record<string, unknown>;

// RFC 3339 with any number of fractional digits. Date.parse alone is not
// enough: engines differ on more than 3 digits and on lower-case letters.
const RFC3339 = /^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$/;

/** An RFC 3339 timestamp as a Date (millisecond precision: further digits are dropped). */
export function parseTimestamp(value: unknown, what: string): Date {
  const match = typeof value === "string" ? RFC3339.exec(value) : null;
  if (match === null) {
    throw new UnexpectedResponseError(
      `${what} is not an RFC 3339 timestamp: ${JSON.stringify(value)}`,
    );
  }
  const [, date, time, fraction, offset] = match;
  const millis = (fraction ?? "").slice(0, 3).padEnd(3, "0");
  const zone = offset === "Z" || offset === "z" ? "Z" : (offset as string);
  const parsed = new Date(`${date}T${time}.${millis}${zone}`);
  if (Number.isNaN(parsed.getTime())) {
    throw new UnexpectedResponseError(`${what} is not a valid date: ${JSON.stringify(value)}`);
  }
  return parsed;
}

function object(data: unknown, what: string): Json {
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new UnexpectedResponseError(`${what} is not a JSON object`);
  }
  return data as Json;
}

function string(data: Json, key: string, what: string): string {
  const value = data[key];
  if (typeof value !== "string") throw missing(what, key, "string");
  return value;
}

function integer(data: Json, key: string, what: string): number {
  const value = data[key];
  if (typeof value !== "number" || !Number.isInteger(value)) throw missing(what, key, "integer");
  return value;
}

function boolean(data: Json, key: string, what: string): boolean {
  const value = data[key];
  if (typeof value !== "boolean") throw missing(what, key, "boolean");
  return value;
}

function missing(what: string, key: string, kind: string): UnexpectedResponseError {
  return new UnexpectedResponseError(`${what}.${key} is missing or not a ${kind}`);
}

function stringMap(data: Json, key: string, what: string): Readonly<Record<string, string>> {
  const value = data[key] ?? {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UnexpectedResponseError(`${what}.${key} is not a map of strings`);
  }
  const entries = Object.entries(value as Json);
  if (!entries.every(([, v]) => typeof v === "string")) {
    throw new UnexpectedResponseError(`${what}.${key} is not a map of strings`);
  }
  // A null prototype: keys like "__proto__" from the server stay plain keys.
  return Object.freeze(
    Object.assign(Object.create(null) as Record<string, string>, Object.fromEntries(entries)),
  );
}

export function parseResources(data: unknown): Resources {
  const obj = object(data, "resources");
  const cpu = obj["cpu"];
  if (typeof cpu !== "number" || !Number.isFinite(cpu)) {
    throw new UnexpectedResponseError("resources.cpu is missing or not a number");
  }
  return Object.freeze({ cpu, memory: integer(obj, "memory", "resources") });
}

export function parseSandbox(data: unknown): SandboxInfo {
  const obj = object(data, "sandbox");
  const status = string(obj, "status", "sandbox");
  const endedAt = obj["ended_at"];
  const reason = obj["termination_reason"];
  return Object.freeze({
    id: string(obj, "id", "sandbox"),
    status,
    runtime: string(obj, "runtime", "sandbox"),
    resources: parseResources(obj["resources"]),
    isolation: string(obj, "isolation", "sandbox"),
    metadata: stringMap(obj, "metadata", "sandbox"),
    createdAt: parseTimestamp(obj["created_at"], "sandbox.created_at"),
    expiresAt: parseTimestamp(obj["expires_at"], "sandbox.expires_at"),
    endedAt:
      endedAt === null || endedAt === undefined
        ? null
        : parseTimestamp(endedAt, "sandbox.ended_at"),
    terminationReason: typeof reason === "string" ? reason : null,
    isLive: status === "creating" || status === "running",
  });
}

export function parseSandboxPage(data: unknown): SandboxPage {
  const obj = object(data, "sandbox list");
  const items = obj["sandboxes"];
  if (!Array.isArray(items))
    throw new UnexpectedResponseError("sandbox list has no sandboxes array");
  const cursor = obj["next_cursor"];
  if (cursor !== null && cursor !== undefined && typeof cursor !== "string") {
    throw new UnexpectedResponseError("sandbox list next_cursor is not a string");
  }
  return Object.freeze({
    sandboxes: Object.freeze(items.map(parseSandbox)),
    nextCursor: typeof cursor === "string" ? cursor : null,
  });
}

export function parseCommandResult(data: unknown): CommandResult {
  const what = "command result";
  const obj = object(data, what);
  const exitCode = integer(obj, "exit_code", what);
  const timedOut = boolean(obj, "timed_out", what);
  return Object.freeze({
    stdout: string(obj, "stdout", what),
    stderr: string(obj, "stderr", what),
    exitCode,
    timedOut,
    truncated: boolean(obj, "truncated", what),
    durationMs: integer(obj, "duration_ms", what),
    ok: exitCode === 0 && !timedOut,
  });
}

export function parseRuntime(data: unknown): RuntimeInfo {
  const obj = object(data, "runtime");
  const aliases = obj["aliases"] ?? [];
  if (!Array.isArray(aliases) || !aliases.every((a) => typeof a === "string")) {
    throw new UnexpectedResponseError("runtime.aliases is not a list of strings");
  }
  return Object.freeze({
    name: string(obj, "name", "runtime"),
    language: string(obj, "language", "runtime"),
    version: string(obj, "version", "runtime"),
    aliases: Object.freeze([...(aliases as string[])]),
  });
}

export function parseRuntimes(data: unknown): RuntimeInfo[] {
  const obj = object(data, "runtime list");
  const items = obj["runtimes"];
  if (!Array.isArray(items))
    throw new UnexpectedResponseError("runtime list has no runtimes array");
  return items.map(parseRuntime);
}

/** A sandbox's resource use, from its cgroup and workspace. */
export interface SandboxMetrics {
  /** CPU time used since the sandbox started, in microseconds. */
  readonly cpuUsageUsec: number;
  /** Cores. */
  readonly cpuLimit: number;
  readonly memoryUsedBytes: number;
  readonly memoryPeakBytes: number;
  readonly memoryLimitBytes: number;
  /** Bytes used under /home/user. */
  readonly diskUsedBytes: number;
  readonly diskLimitBytes: number;
  readonly pids: number;
  readonly pidsLimit: number;
}

export function parseMetrics(data: unknown): SandboxMetrics {
  const what = "metrics";
  const obj = object(data, what);
  const cpuLimit = obj["cpu_limit"];
  if (typeof cpuLimit !== "number" || !Number.isFinite(cpuLimit)) {
    throw new UnexpectedResponseError("metrics.cpu_limit is missing or not a number");
  }
  return Object.freeze({
    cpuUsageUsec: integer(obj, "cpu_usage_usec", what),
    cpuLimit,
    memoryUsedBytes: integer(obj, "memory_used_bytes", what),
    memoryPeakBytes: integer(obj, "memory_peak_bytes", what),
    memoryLimitBytes: integer(obj, "memory_limit_bytes", what),
    diskUsedBytes: integer(obj, "disk_used_bytes", what),
    diskLimitBytes: integer(obj, "disk_limit_bytes", what),
    pids: integer(obj, "pids", what),
    pidsLimit: integer(obj, "pids_limit", what),
  });
}
