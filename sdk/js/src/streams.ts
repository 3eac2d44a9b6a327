/**
 * Reading the API's streamed answers: NDJSON (one JSON document per line) and
 * server-sent events, from a `ReadableStream<Uint8Array>` as `fetch` gives it.
 * Platform-only: `TextDecoder` and web streams, no Node API.
 */

import { UnexpectedResponseError } from "./errors.js";

// A line (an event) longer than this is not the documented API: the server's
// own caps keep events far smaller. Bounded so a broken peer cannot make the
// client buffer without end.
export const MAX_LINE_CHARS = 64 * 1024 * 1024;

/**
 * The lines of a UTF-8 byte stream, without their `\n` (or `\r\n`).
 * Aborting `signal` cancels the stream and throws the signal's reason (also
 * when the `fetch` in use does not abort bodies itself).
 */
export async function* readLines(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<string, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  let pending = "";
  const onAbort = (): void => {
    reader.cancel(signal?.reason).catch(() => undefined);
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      signal?.throwIfAborted();
      const { done, value } = await reader.read();
      signal?.throwIfAborted();
      pending += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let newline = pending.indexOf("\n");
      while (newline >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        yield line.endsWith("\r") ? line.slice(0, -1) : line;
        newline = pending.indexOf("\n");
      }
      if (pending.length > MAX_LINE_CHARS) {
        throw new UnexpectedResponseError(`a streamed line is over ${MAX_LINE_CHARS} characters`);
      }
      if (done) break;
    }
    if (pending !== "") yield pending;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // Stops the download when the consumer leaves early (break, throw).
    await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

/** One JSON object per non-blank line. */
export async function* readNdjson(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<Record<string, unknown>, void, undefined> {
  for await (const line of readLines(body, signal)) {
    if (line.trim() === "") continue;
    yield parseObject(line);
  }
}

/** A server-sent event: its `event:` name (default `message`) and its `data:` lines joined. */
export interface SseEvent {
  readonly event: string;
  readonly data: string;
}

/** Server-sent events as the WHATWG spec frames them (comments and `id:`/`retry:` ignored). */
export async function* readSse(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<SseEvent, void, undefined> {
  let event = "";
  let data: string[] = [];
  for await (const line of readLines(body, signal)) {
    if (line === "") {
      if (data.length > 0) yield { event: event || "message", data: data.join("\n") };
      event = "";
      data = [];
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (data.length > 0) yield { event: event || "message", data: data.join("\n") };
}

export function parseObject(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UnexpectedResponseError("a streamed event is not JSON", { cause: error });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UnexpectedResponseError("a streamed event is not a JSON object");
  }
  return value as Record<string, unknown>;
}
