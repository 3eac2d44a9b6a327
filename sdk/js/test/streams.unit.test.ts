/**
 * The stream readers under runCode, processes and watch: lines split across
 * chunks and multi-byte characters, SSE framing, abort.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { UnexpectedResponseError } from "@codebox/sdk";

import { readLines, readNdjson, readSse } from "../dist/streams.js";

function bytesStream(...chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) {
        controller.enqueue(typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk);
      }
      controller.close();
    },
  });
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

test("lines survive chunk boundaries, CRLF and split UTF-8 characters", async () => {
  const euro = new TextEncoder().encode("€"); // three bytes
  const lines = await collect(
    readLines(bytesStream("a\r\nb", "c\n", euro.subarray(0, 1), euro.subarray(1), "\nlast")),
  );
  assert.deepEqual(lines, ["a", "bc", "€", "last"]);
});

test("NDJSON skips blank lines and refuses what is not an object", async () => {
  assert.deepEqual(await collect(readNdjson(bytesStream('{"a":1}\n\n{"b":2}\n'))), [
    { a: 1 },
    { b: 2 },
  ]);
  await assert.rejects(collect(readNdjson(bytesStream("[1]\n"))), UnexpectedResponseError);
  await assert.rejects(collect(readNdjson(bytesStream("{oops\n"))), UnexpectedResponseError);
});

test("SSE: event names, multi-line data, comments and a last unterminated event", async () => {
  const events = await collect(
    readSse(
      bytesStream(
        ": keep-alive\n\n",
        'event: create\ndata: {"a":\n',
        "data: 1}\nid: 7\n\n",
        "data:no-space\n\n",
        "event: end\ndata: x",
      ),
    ),
  );
  assert.deepEqual(events, [
    { event: "create", data: '{"a":\n1}' },
    { event: "message", data: "no-space" },
    { event: "end", data: "x" },
  ]);
});

test("an abort cancels the stream and throws the reason", async () => {
  let cancelled: unknown = null;
  const endless = new ReadableStream<Uint8Array>({
    pull: () => new Promise(() => undefined),
    cancel: (reason) => {
      cancelled = reason;
    },
  });
  const controller = new AbortController();
  const reading = collect(readLines(endless, controller.signal));
  const reason = new Error("stop");
  controller.abort(reason);
  await assert.rejects(reading, /stop/);
  assert.equal(cancelled, reason);
});
