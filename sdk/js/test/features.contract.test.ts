/**
 * Contract tests of code execution, contexts, files, processes and the PTY
 * against a real `codebox serve` (see server.ts), with the python3 template
 * (ipython, matplotlib) mounted when scripts/test built it.
 */

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { after, afterEach, before, describe, test } from "node:test";
import { crc32 } from "node:zlib";

import WebSocket from "ws";

import {
  ConflictError,
  type ConnectionOptions,
  NotFoundError,
  Sandbox,
  SandboxGoneError,
  type WebSocketConstructor,
} from "@codebox/sdk";

import { type RunningServer, ServerUnavailable, serverRequired, startServer } from "./server.js";

let server: RunningServer | null = null;
let skipReason: string | null = null;
let startError: unknown = null;
const created: Sandbox[] = [];

function conn(): ConnectionOptions {
  assert.ok(server !== null);
  return { apiUrl: server.url, apiKey: server.adminKey };
}

async function fresh(): Promise<Sandbox> {
  const sbx = await Sandbox.create({ timeout: 600, ...conn() });
  created.push(sbx);
  return sbx;
}

function serverTest(name: string, body: (server: RunningServer) => Promise<void>): void {
  test(name, async (t) => {
    if (server === null) {
      if (skipReason === null) throw startError;
      t.skip(skipReason);
      return;
    }
    await body(server);
  });
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Checks the PNG signature and its IHDR chunk (length, type, CRC); returns width and height. */
function decodePngHeader(png: Uint8Array): { width: number; height: number } {
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  assert.deepEqual([...png.subarray(0, 8)], signature, "PNG signature");
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  assert.equal(view.getUint32(8), 13, "IHDR length");
  assert.equal(new TextDecoder().decode(png.subarray(12, 16)), "IHDR");
  const width = view.getUint32(16);
  const height = view.getUint32(20);
  assert.equal(view.getUint32(29), crc32(png.subarray(12, 29)), "IHDR CRC");
  const end = new TextDecoder().decode(png.subarray(png.length - 8, png.length - 4));
  assert.equal(end, "IEND", "the PNG is complete");
  return { width, height };
}

/** A stream of `size` bytes from `data`, in 64 KiB chunks, produced as it is read. */
function chunked(data: Uint8Array): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= data.length) {
        controller.close();
        return;
      }
      const end = Math.min(offset + 65536, data.length);
      controller.enqueue(data.slice(offset, end));
      offset = end;
    },
  });
}

describe("code, files, processes and the PTY against a real server", () => {
  before(async () => {
    try {
      server = await startServer();
    } catch (error) {
      if (error instanceof ServerUnavailable && !serverRequired()) skipReason = error.message;
      else startError = error;
    }
  });

  afterEach(async () => {
    for (const sbx of created.splice(0)) {
      try {
        await sbx.kill();
      } catch (error) {
        if (!(error instanceof SandboxGoneError)) throw error;
      }
    }
  });

  after(async () => {
    await server?.stop();
  });

  serverTest("runCode keeps state, counts executions and streams stdout in order", async () => {
    const sbx = await fresh();
    const first = await sbx.runCode("x = 41");
    assert.equal(first.error, null);
    assert.equal(first.text, undefined);
    const second = await sbx.runCode("x + 1");
    assert.equal(second.text, "42");
    assert.equal(second.executionCount, first.executionCount + 1);
    assert.equal(second.contextId, first.contextId);
    assert.equal(second.outcome, "ok");

    const chunks: string[] = [];
    const streamed = await sbx.runCode(
      "import sys\nfor i in range(5):\n    print(i, flush=True)\nprint('e', file=sys.stderr)",
      { onStdout: (text) => chunks.push(text) },
    );
    assert.equal(chunks.join(""), "0\n1\n2\n3\n4\n");
    assert.equal(streamed.stdout, "0\n1\n2\n3\n4\n");
    assert.equal(streamed.stderr, "e\n");
  });

  serverTest("a code error is execution.error, with its fields", async () => {
    const sbx = await fresh();
    const errors: string[] = [];
    const execution = await sbx.runCode("def f():\n    return 1 / 0\nf()", {
      onError: (error) => errors.push(error.name),
    });
    assert.deepEqual(errors, ["ZeroDivisionError"]);
    assert.ok(execution.error);
    assert.equal(execution.error.name, "ZeroDivisionError");
    assert.match(execution.error.value, /division by zero/);
    assert.match(execution.error.traceback, /ZeroDivisionError/);
    assert.equal(execution.outcome, "error");
    // The context survives its error.
    assert.equal((await sbx.runCode("2 * 21")).text, "42");
    // An unknown context is an API error, thrown.
    await assert.rejects(sbx.runCode("1", { context: "ctx-nope" }), NotFoundError);
  });

  serverTest("a matplotlib chart comes back as a valid PNG", async () => {
    const sbx = await fresh();
    const execution = await sbx.runCode(
      "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('chart')\nplt.show()",
      { timeoutMs: 120_000 },
    );
    assert.equal(execution.error, null, execution.error?.traceback);
    const chart = execution.results.find((r) => r.png !== undefined);
    assert.ok(chart, `no PNG result: ${JSON.stringify(execution.results.map((r) => r.formats()))}`);
    assert.ok(chart.formats().includes("png"));
    const { width, height } = decodePngHeader(chart.bytes("png")!);
    assert.ok(width >= 100 && height >= 100, `${width}x${height}`);
  });

  serverTest("aborting runCode interrupts the code and keeps the context", async () => {
    const sbx = await fresh();
    await sbx.runCode("y = 7");
    const controller = new AbortController();
    const running = sbx.runCode("import time\nprint('started', flush=True)\ntime.sleep(120)", {
      signal: controller.signal,
      onStdout: () => controller.abort(new Error("enough")),
    });
    await assert.rejects(running, /enough/);
    // The next execution of the same context runs: the sleep was interrupted.
    const after = await sbx.runCode("y * 6", { timeoutMs: 60_000 });
    assert.equal(after.text, "42");
  });

  serverTest("contexts are isolated, restartable and removable", async () => {
    const sbx = await fresh();
    const a = await sbx.contexts.create({ language: "python" });
    const b = await sbx.contexts.create({ language: "python", cwd: "/tmp" });
    assert.notEqual(a.id, b.id);
    assert.equal(a.isDefault, false);
    await sbx.runCode("secret = 1", { context: a });
    const inB = await sbx.runCode("secret", { context: b });
    assert.equal(inB.error?.name, "NameError");
    assert.equal((await sbx.runCode("import os\nos.getcwd()", { context: b })).text, "'/tmp'");
    assert.equal((await sbx.runCode("secret", { context: a })).text, "1");

    const ids = (await sbx.contexts.list()).map((c) => c.id);
    assert.ok(ids.includes(a.id) && ids.includes(b.id));

    await sbx.contexts.restart(a);
    assert.equal((await sbx.runCode("secret", { context: a })).error?.name, "NameError");

    let interrupting: Promise<void> | null = null;
    const interrupted = await sbx.runCode("import time\nprint('go', flush=True)\ntime.sleep(120)", {
      context: b,
      onStdout: () => {
        interrupting ??= sbx.contexts.interrupt(b);
      },
    });
    await interrupting;
    assert.ok(
      interrupted.outcome === "interrupted" || interrupted.error?.name === "KeyboardInterrupt",
      JSON.stringify(interrupted),
    );
    // Interrupted, not restarted: the context's state is still there.
    assert.equal((await sbx.runCode("os.getcwd()", { context: b })).text, "'/tmp'");

    await sbx.contexts.remove(a);
    await assert.rejects(sbx.runCode("1", { context: a }), NotFoundError);
    await assert.rejects(sbx.contexts.remove(a), NotFoundError);
  });

  serverTest("files: round trip, list, stat, mkdir, move, remove", async () => {
    const sbx = await fresh();
    const written = await sbx.files.write("notes/hello.txt", "héllo\n");
    assert.equal(written.path, "notes/hello.txt");
    assert.equal(written.size, Buffer.byteLength("héllo\n"));
    assert.equal(await sbx.files.read("notes/hello.txt"), "héllo\n");
    const binary = new Uint8Array([0, 1, 2, 253, 254, 255]);
    await sbx.files.write("/home/user/notes/bin", binary);
    assert.deepEqual([...(await sbx.files.read("notes/bin", { format: "bytes" }))], [...binary]);
    assert.equal((await sbx.files.read("notes/bin", { format: "blob" })).size, 6);
    assert.equal((await sbx.commands.run("cat notes/hello.txt")).stdout, "héllo\n");

    const listing = await sbx.files.list("notes");
    assert.deepEqual(
      listing.map((e) => [e.name, e.type]),
      [
        ["bin", "file"],
        ["hello.txt", "file"],
      ],
    );
    assert.equal(listing.truncated, false);
    const info = await sbx.files.getInfo("notes/bin");
    assert.equal(info.size, 6);
    assert.ok(info.modifiedAt instanceof Date);
    assert.equal(await sbx.files.exists("notes/bin"), true);
    assert.equal(await sbx.files.exists("notes/none"), false);

    const dir = await sbx.files.makeDir("a/b/c");
    assert.equal(dir.type, "dir");
    assert.equal(dir.path, "/home/user/a/b/c");
    const deep = await sbx.files.list("a", { depth: 3 });
    assert.deepEqual(
      deep.map((e) => e.path),
      ["/home/user/a/b", "/home/user/a/b/c"],
    );
    const moved = await sbx.files.rename("notes/bin", "a/bin");
    assert.equal(moved.path, "/home/user/a/bin");
    await sbx.files.write("notes/other", "x");
    await assert.rejects(sbx.files.move("notes/other", "a/bin"), ConflictError);
    await sbx.files.move("notes/other", "a/bin", { overwrite: true });
    assert.equal(await sbx.files.read("a/bin"), "x");
    await assert.rejects(sbx.files.remove("a"), ConflictError);
    await sbx.files.remove("a", { recursive: true });
    assert.equal(await sbx.files.exists("a"), false);
    await assert.rejects(sbx.files.read("a/bin"), NotFoundError);
    // `..` stops at the sandbox's root: this lands in the sandbox's /tmp, not the host's.
    const name = `codebox-sdk-js-escape-${randomBytes(6).toString("hex")}`;
    await sbx.files.write(`../../../../../tmp/${name}`, "x");
    assert.equal((await sbx.files.getInfo(`/tmp/${name}`)).size, 1);
    assert.equal(existsSync(`/tmp/${name}`), false, "the write reached the host");
  });

  serverTest("several files in one multipart upload", async () => {
    const sbx = await fresh();
    const written = await sbx.files.write([
      { path: "multi/a.txt", data: "first" },
      { path: "/tmp/multi.bin", data: new Uint8Array([9, 8, 7]) },
      { path: "multi/b.txt", data: new Blob(["second"]) },
    ]);
    assert.deepEqual(
      written.map((w) => [w.path, w.size]),
      [
        ["multi/a.txt", 5],
        ["/tmp/multi.bin", 3],
        ["multi/b.txt", 6],
      ],
    );
    assert.equal(await sbx.files.read("multi/a.txt"), "first");
    assert.deepEqual([...(await sbx.files.read("/tmp/multi.bin", { format: "bytes" }))], [9, 8, 7]);
    assert.equal(await sbx.files.read("multi/b.txt"), "second");
  });

  serverTest("a 20 MiB file streams up and down intact", async () => {
    const sbx = await fresh();
    const data = new Uint8Array(randomBytes(20 * 1024 * 1024));
    const written = await sbx.files.write("big.bin", chunked(data), { requestTimeoutMs: 300_000 });
    assert.equal(written.size, data.length);
    const download = await sbx.files.read("big.bin", { format: "stream" });
    const hash = createHash("sha256");
    let received = 0;
    for await (const chunk of download as unknown as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      received += chunk.length;
    }
    assert.equal(received, data.length);
    assert.equal(hash.digest("hex"), sha256(data));
    const inside = await sbx.commands.run("sha256sum big.bin");
    assert.equal(inside.stdout.split(" ")[0], sha256(data));
  });

  serverTest("watch reports changes and closes", async () => {
    const sbx = await fresh();
    await sbx.files.makeDir("watched");
    const watcher = await sbx.files.watch("watched");
    await sbx.files.write("watched/new.txt", "x");
    const seen: string[] = [];
    for await (const event of watcher) {
      seen.push(`${event.type} ${event.path}`);
      if (event.path === "/home/user/watched/new.txt") watcher.close();
    }
    assert.ok(
      seen.some((line) => line.endsWith(" /home/user/watched/new.txt")),
      seen.join("\n"),
    );
  });

  serverTest("a background process: stdin, output, close, kill and reattach", async () => {
    const sbx = await fresh();
    let echoed: (text: string) => void = () => undefined;
    const firstLine = new Promise<string>((resolve) => {
      echoed = resolve;
    });
    const cat = await sbx.commands.run("cat", {
      background: true,
      stdin: true,
      tag: "echo",
      onStdout: (data) => echoed(data),
    });
    assert.ok(cat.pid > 0);
    const listed = await sbx.commands.list();
    const mine = listed.find((p) => p.pid === cat.pid);
    assert.ok(mine, JSON.stringify(listed));
    assert.equal(mine.tag, "echo");
    assert.equal(mine.stdinOpen, true);
    assert.equal(await cat.sendStdin("hello\n"), 6);
    assert.equal(await firstLine, "hello\n");
    await cat.closeStdin();
    const exit = await cat.wait();
    assert.equal(exit.exitCode, 0);
    assert.ok(exit.ok);
    assert.equal(exit.stdout, "hello\n");

    const sleeper = await sbx.commands.run("echo up; sleep 600", { background: true });
    sleeper.disconnect();
    await assert.rejects(sleeper.wait());
    const again = await sbx.commands.connect(sleeper.pid);
    assert.equal(await again.kill(), true);
    const killed = await again.wait();
    assert.equal(killed.exitCode, null);
    assert.equal(killed.signal, 9);
    assert.equal(killed.ok, false);
    assert.equal(await sbx.commands.kill(sleeper.pid), false);
    assert.ok(!(await sbx.commands.list()).some((p) => p.pid === sleeper.pid));
  });

  serverTest("metrics report the sandbox's limits", async () => {
    const sbx = await fresh();
    const metrics = await sbx.metrics();
    assert.equal(metrics.memoryLimitBytes, 512 * 1024 * 1024);
    assert.equal(metrics.cpuLimit, 1);
    assert.ok(metrics.pids >= 1);
  });

  serverTest("the PTY sees its size and a resize", async () => {
    const sbx = await fresh();
    let output = "";
    const decoder = new TextDecoder();
    const waiters: [RegExp, () => void][] = [];
    const pty = await sbx.pty.create({
      cols: 101,
      rows: 33,
      webSocket: WebSocket as unknown as WebSocketConstructor,
      onData: (data) => {
        output += decoder.decode(data, { stream: true });
        for (const [pattern, resolve] of waiters) if (pattern.test(output)) resolve();
      },
    });
    const seen = (pattern: RegExp): Promise<void> =>
      new Promise((resolve) => {
        if (pattern.test(output)) resolve();
        else waiters.push([pattern, resolve]);
      });
    pty.sendInput("stty size\n");
    await seen(/33 101/);
    pty.resize(120, 40);
    pty.sendInput("stty size\n");
    await seen(/40 120/);
    pty.sendInput("exit 3\n");
    const exit = await pty.wait();
    assert.equal(exit.code, 1000, JSON.stringify(exit));
    assert.equal(exit.exitCode, 3, JSON.stringify(exit));
  });
});
