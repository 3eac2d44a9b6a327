/**
 * sbx.files against a scripted fake server: paths in the query, bodies sent
 * as raw bytes or streams, the read formats, listings and the watch stream.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { ConflictError, NotFoundError, Sandbox, UnexpectedResponseError } from "@codebox/sdk";

import { BASE, ENTRY_JSON, fail, ok, pushStream, standardServer } from "./fakes.js";

async function setup() {
  const fake = standardServer();
  const sbx = await Sandbox.create(fake.connection());
  return { fake, sbx };
}

async function bodyBytes(body: unknown): Promise<Uint8Array> {
  return new Uint8Array(await new Response(body as BodyInit).arrayBuffer());
}

test("write sends raw bytes with the path in the query", async () => {
  const { fake, sbx } = await setup();
  const info = await sbx.files.write("dir/a b&c.txt", "héllo");
  assert.deepEqual(info, { path: "/home/user/a.txt", size: 3 });
  const request = fake.requests.at(-1)!;
  assert.equal(request.method, "PUT");
  assert.equal(request.url.pathname, `${BASE}/files`);
  assert.equal(request.url.searchParams.get("path"), "dir/a b&c.txt");
  assert.equal(request.headers.get("content-type"), "application/octet-stream");
  assert.deepEqual([...(await bodyBytes(request.rawBody))], [...new TextEncoder().encode("héllo")]);
});

test("write takes bytes, ArrayBuffers, Blobs and streams (a stream is sent as one)", async () => {
  const { fake, sbx } = await setup();
  const bytes = new Uint8Array([0, 1, 2, 255]);
  await sbx.files.write("a", bytes);
  assert.deepEqual([...(await bodyBytes(fake.requests.at(-1)!.rawBody))], [0, 1, 2, 255]);
  await sbx.files.write("a", bytes.buffer);
  assert.deepEqual([...(await bodyBytes(fake.requests.at(-1)!.rawBody))], [0, 1, 2, 255]);
  await sbx.files.write("a", new Blob([bytes]));
  assert.deepEqual([...(await bodyBytes(fake.requests.at(-1)!.rawBody))], [0, 1, 2, 255]);
  const stream = new Blob([bytes]).stream();
  await sbx.files.write("a", stream);
  const request = fake.requests.at(-1)!;
  assert.ok(request.rawBody instanceof ReadableStream, "a stream is not buffered on Node");
  assert.equal((request.init as { duplex?: string }).duplex, "half");
  await assert.rejects(sbx.files.write("a", 42 as unknown as string), TypeError);
});

test("several files go in one multipart request, each named by its path", async () => {
  const { fake, sbx } = await setup();
  const written = await sbx.files.write([
    { path: "a.txt", data: "abc" },
    { path: "/tmp/b.bin", data: new Blob([new Uint8Array([1, 2])]) },
    { path: "dir/s.bin", data: new Blob(["xy"]).stream() },
  ]);
  assert.deepEqual(written, [
    { path: "/home/user/a.txt", size: 3 },
    { path: "/tmp/b.bin", size: 2 },
  ]);
  const request = fake.requests.at(-1)!;
  assert.equal(request.method, "POST");
  assert.equal(request.url.pathname, `${BASE}/files`);
  assert.ok(request.rawBody instanceof FormData);
  // What the server parses: the encoded multipart body.
  const encoded = new Request("http://x/", { method: "POST", body: request.rawBody });
  assert.match(encoded.headers.get("content-type") ?? "", /^multipart\/form-data; boundary=/);
  const parsed = await encoded.formData();
  const parts = parsed.getAll("file") as File[];
  assert.deepEqual(
    parts.map((part) => part.name),
    ["a.txt", "/tmp/b.bin", "dir/s.bin"],
  );
  assert.deepEqual(await Promise.all(parts.map((part) => part.text())), [
    "abc",
    "\u0001\u0002",
    "xy",
  ]);
  assert.deepEqual(await sbx.files.write([]), []);
  const before = fake.requests.length;
  await assert.rejects(sbx.files.write([{ path: "", data: "x" }]), TypeError);
  assert.equal(fake.requests.length, before);
});

test("a streamed upload is not retried (it cannot be sent twice)", async () => {
  const { fake, sbx } = await setup();
  fake.set(
    "PUT",
    `${BASE}/files`,
    fail(503, "SERVICE_UNAVAILABLE", "busy", {}, { "retry-after": "0" }),
    ok({ path: "/home/user/a", size: 1 }, 201),
  );
  const before = fake.requests.length;
  await assert.rejects(sbx.files.write("a", new Blob(["x"]).stream()), /busy/);
  assert.equal(fake.requests.length - before, 1);
  // Bytes can be sent again: retried.
  await sbx.files.write("a", "x");
});

test("read formats: text, bytes, blob and stream", async () => {
  const { fake, sbx } = await setup();
  fake.set("GET", `${BASE}/files`, () => ({ status: 200, body: new Uint8Array([104, 105, 0xff]) }));
  assert.equal(await sbx.files.read("a"), "hi\ufffd");
  assert.equal(fake.requests.at(-1)!.url.searchParams.get("path"), "a");
  assert.deepEqual([...(await sbx.files.read("a", { format: "bytes" }))], [104, 105, 0xff]);
  const blob = await sbx.files.read("a", { format: "blob" });
  assert.equal(blob.size, 3);
  const stream = await sbx.files.read("a", { format: "stream" });
  assert.deepEqual([...(await bodyBytes(stream))], [104, 105, 0xff]);
});

test("a download stream can be cancelled", async () => {
  const { fake, sbx } = await setup();
  const { stream, push } = pushStream();
  fake.set("GET", `${BASE}/files`, { status: 200, body: stream });
  const download = await sbx.files.read("big", { format: "stream" });
  push("chunk");
  const reader = download.getReader();
  const first = await reader.read();
  assert.equal(new TextDecoder().decode(first.value), "chunk");
  await reader.cancel();
});

test("a missing file is a NotFoundError, and exists() says false", async () => {
  const { fake, sbx } = await setup();
  fake.set("GET", `${BASE}/files`, fail(404, "NOT_FOUND", "no such file or directory"));
  await assert.rejects(sbx.files.read("nope"), NotFoundError);
  assert.equal(await sbx.files.exists("a.txt"), true);
  fake.set("GET", `${BASE}/files/stat`, fail(404, "NOT_FOUND", "no such file or directory"));
  assert.equal(await sbx.files.exists("nope"), false);
  fake.set("GET", `${BASE}/files/stat`, fail(409, "CONFLICT", "not a directory"));
  await assert.rejects(sbx.files.exists("f/x"), ConflictError);
});

test("list, getInfo, makeDir, rename and remove", async () => {
  const { fake, sbx } = await setup();
  const list = await sbx.files.list("/home/user", { depth: 3 });
  assert.equal(list.truncated, false);
  assert.equal(list.length, 1);
  const entry = list[0]!;
  assert.equal(entry.name, "a.txt");
  assert.equal(entry.type, "file");
  assert.equal(entry.mode, 0o644);
  assert.equal(entry.modifiedAt.toISOString(), "2026-11-29T10:00:00.000Z");
  assert.equal(entry.symlinkTarget, null);
  let query = fake.requests.at(-1)!.url.searchParams;
  assert.equal(query.get("path"), "/home/user");
  assert.equal(query.get("depth"), "3");
  await sbx.files.list();
  assert.equal(fake.requests.at(-1)!.url.search, "");

  assert.deepEqual(await sbx.files.stat("a.txt"), entry);
  const dir = await sbx.files.makeDir("d/e");
  assert.equal(dir.type, "dir");
  assert.deepEqual(fake.body(), { path: "d/e" });
  await sbx.files.makeDir("d", { parents: false });
  assert.deepEqual(fake.body(), { path: "d", parents: false });
  await sbx.files.move("a", "b");
  assert.deepEqual(fake.body(), { from: "a", to: "b" });
  await sbx.files.rename("a", "b", { overwrite: true });
  assert.deepEqual(fake.body(), { from: "a", to: "b", overwrite: true });
  await sbx.files.remove("d", { recursive: true });
  query = fake.requests.at(-1)!.url.searchParams;
  assert.equal(fake.requests.at(-1)!.method, "DELETE");
  assert.equal(query.get("path"), "d");
  assert.equal(query.get("recursive"), "true");
});

test("a listing the API does not document is an UnexpectedResponseError", async () => {
  const { fake, sbx } = await setup();
  fake.set(
    "GET",
    `${BASE}/files/list`,
    ok({ entries: [{ ...ENTRY_JSON, size: "3" }], truncated: false }),
  );
  await assert.rejects(sbx.files.list(), UnexpectedResponseError);
  fake.set("GET", `${BASE}/files/list`, ok({ entries: [] }));
  await assert.rejects(sbx.files.list(), UnexpectedResponseError);
});

test("watch yields events as they come and close() ends the iteration", async () => {
  const { fake, sbx } = await setup();
  const { stream, push } = pushStream();
  fake.set("GET", `${BASE}/files/watch`, {
    status: 200,
    body: stream,
    headers: { "content-type": "text/event-stream" },
  });
  const watcher = await sbx.files.watch("data", { recursive: true });
  const request = fake.requests.at(-1)!;
  assert.equal(request.headers.get("accept"), "text/event-stream");
  assert.equal(request.url.searchParams.get("path"), "data");
  assert.equal(request.url.searchParams.get("recursive"), "true");
  push(': keep-alive\n\nevent: create\ndata: {"type":"create","path":"/home/user/data/x",');
  push(
    '"is_dir":false}\n\nevent: remove\ndata: {"type":"remove","path":"/home/user/data/x","is_dir":false}\n\n',
  );
  const seen: string[] = [];
  for await (const event of watcher) {
    seen.push(`${event.type} ${event.path} ${event.isDir}`);
    if (seen.length === 2) watcher.close();
  }
  assert.deepEqual(seen, ["create /home/user/data/x false", "remove /home/user/data/x false"]);
});

test("aborting a watch ends its iteration with the reason", async () => {
  const { fake, sbx } = await setup();
  const { stream, push } = pushStream();
  fake.set("GET", `${BASE}/files/watch`, { status: 200, body: stream });
  const controller = new AbortController();
  const watcher = await sbx.files.watch(undefined, { signal: controller.signal });
  assert.equal(fake.requests.at(-1)!.url.search, "");
  push('event: write\ndata: {"type":"write","path":"/home/user/f","is_dir":false}\n\n');
  await assert.rejects(
    (async () => {
      for await (const event of watcher) {
        assert.equal(event.type, "write");
        controller.abort(new Error("stop watching"));
      }
    })(),
    /stop watching/,
  );
});
