/**
 * Contract tests against a real `codebox serve` (see server.ts): the SDK's
 * calls, answers and error mapping as the server really behaves.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";

import {
  AuthenticationError,
  type ConnectionOptions,
  NotFoundError,
  PayloadTooLargeError,
  ResourceLimitError,
  Sandbox,
  SandboxGoneError,
  ValidationError,
} from "@codebox/sdk";

import { withEnv } from "./fakes.js";
import {
  MAX_SANDBOXES_PER_USER,
  type RunningServer,
  ServerUnavailable,
  serverRequired,
  startServer,
} from "./server.js";

let server: RunningServer | null = null;
// Why there is no server: a reason to skip, or (when required) the error.
let skipReason: string | null = null;
let startError: unknown = null;
// Sandboxes a test creates; whatever is still live at its end is killed, so
// one failing test cannot eat the next one's quota.
const created: Sandbox[] = [];

/** Metadata unique to one test, to find exactly its sandboxes in listings. */
function label(): Record<string, string> {
  return { test: randomUUID().replaceAll("-", "").slice(0, 12) };
}

function conn(): ConnectionOptions {
  assert.ok(server !== null);
  return { apiUrl: server.url, apiKey: server.adminKey };
}

async function track(sandbox: Promise<Sandbox>): Promise<Sandbox> {
  const sbx = await sandbox;
  created.push(sbx);
  return sbx;
}

async function expectGone(call: Promise<unknown>, reason = "killed"): Promise<void> {
  await assert.rejects(call, (error) => {
    assert.ok(error instanceof SandboxGoneError, String(error));
    assert.equal(error.reason, reason);
    assert.equal(error.status, 410);
    assert.ok(error.requestId);
    return true;
  });
}

/** A test that needs the server: skipped (or failed, when required) without one. */
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

describe("against a real codebox server", () => {
  before(async () => {
    try {
      server = await startServer();
    } catch (error) {
      // Every test then fails with this error (or skips): one clear line each,
      // rather than a failed hook and cancelled tests.
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

  serverTest("runtimes offer python3", async () => {
    const runtimes = await Sandbox.runtimes(conn());
    const names = new Set(runtimes.flatMap((r) => [r.name, ...r.aliases]));
    assert.ok(names.has("python3"));
    const python = runtimes.find((r) => r.name === "python3");
    assert.equal(python?.language, "python");
    assert.ok(python?.version.startsWith("3."));
  });

  serverTest("create, run and kill", async () => {
    const tags = label();
    const sbx = await track(
      Sandbox.create({
        runtime: "python3",
        cpu: 0.5,
        memory: 256,
        timeout: 120,
        metadata: tags,
        envVars: { GREETING: "hello" },
        ...conn(),
      }),
    );
    const info = await sbx.info();
    assert.equal(info.id, sbx.id);
    assert.equal(info.status, "running");
    assert.equal(info.runtime, "python3");
    assert.deepEqual(info.resources, { cpu: 0.5, memory: 256 });
    assert.deepEqual({ ...info.metadata }, tags);
    assert.ok(info.isolation);
    const lifetime = (info.expiresAt.getTime() - info.createdAt.getTime()) / 1000;
    assert.ok(lifetime >= 100 && lifetime <= 120, `lifetime ${lifetime}`);

    const result = await sbx.commands.run(
      "python3 -c 'print(6*7)'; echo $GREETING; echo oops >&2; exit 3",
    );
    assert.equal(result.stdout, "42\nhello\n");
    assert.equal(result.stderr, "oops\n");
    assert.equal(result.exitCode, 3);
    assert.equal(result.timedOut, false);
    assert.equal(result.truncated, false);
    assert.equal(result.ok, false);

    const final = await sbx.kill();
    assert.equal(final.status, "terminated");
    assert.equal(final.terminationReason, "killed");
    assert.ok(final.endedAt instanceof Date);
    await expectGone(sbx.info());
  });

  serverTest("command options", async () => {
    const sbx = await track(Sandbox.create(conn()));
    const result = await sbx.commands.run("cat; pwd; echo $COLOR", {
      stdin: "piped\n",
      cwd: "/tmp",
      env: { COLOR: "blue" },
    });
    assert.equal(result.stdout, "piped\n/tmp\nblue\n");
    assert.ok(result.ok);
    assert.equal((await sbx.commands.run("whoami")).stdout.trim(), "user");
  });

  serverTest("a command timeout is a result, not an error", async () => {
    const sbx = await track(Sandbox.create(conn()));
    const result = await sbx.commands.run("echo started; sleep 60", { timeout: 1 });
    assert.ok(result.timedOut);
    assert.equal(result.ok, false);
    assert.equal(result.stdout, "started\n");
    // The sandbox is still usable after a command was killed.
    assert.equal((await sbx.commands.run("echo after")).stdout, "after\n");
  });

  serverTest("large output is truncated", async () => {
    const sbx = await track(Sandbox.create(conn()));
    const result = await sbx.commands.run("head -c 3000000 /dev/zero | tr '\\0' a");
    assert.ok(result.truncated);
    assert.equal(result.exitCode, 0);
    assert.ok(result.stdout.length > 0 && result.stdout.length < 3_000_000);
    assert.match(result.stdout, /^a+$/);
  });

  serverTest("concurrent commands in one sandbox", async () => {
    const sbx = await track(Sandbox.create(conn()));
    const outputs = await Promise.all([sbx.commands.run("echo one"), sbx.commands.run("echo two")]);
    assert.deepEqual(
      outputs.map((o) => o.stdout),
      ["one\n", "two\n"],
    );
  });

  serverTest("connect, list and setTimeout", async () => {
    const tags = label();
    const mine: Sandbox[] = [];
    for (let i = 0; i < 3; i += 1)
      mine.push(await track(Sandbox.create({ metadata: tags, ...conn() })));
    const newestFirst = mine.map((s) => s.id).reverse();

    // pageSize 1 makes the listing follow next_cursor across three pages.
    const listed: string[] = [];
    for await (const info of Sandbox.list({ metadata: tags, pageSize: 1, ...conn() }))
      listed.push(info.id);
    assert.deepEqual(listed, newestFirst);
    assert.deepEqual(
      await ids(Sandbox.list({ status: "running", metadata: tags, ...conn() })),
      new Set(newestFirst),
    );

    const connected = await Sandbox.connect(mine[0]!.id, conn());
    const before = (await connected.info()).expiresAt;
    const extended = (await connected.setTimeout(3600)).expiresAt;
    assert.ok(extended > before);
    assert.equal((await connected.commands.run("echo via connect")).stdout, "via connect\n");

    await mine[0]!.kill();
    assert.deepEqual(
      await ids(Sandbox.list({ status: "running", metadata: tags, ...conn() })),
      new Set(newestFirst.slice(0, 2)),
    );
    const terminated: [string, string | null][] = [];
    for await (const info of Sandbox.list({ status: "terminated", metadata: tags, ...conn() })) {
      terminated.push([info.id, info.terminationReason]);
    }
    assert.deepEqual(terminated, [[mine[0]!.id, "killed"]]);
  });

  serverTest("an aborted command leaves the sandbox usable", async () => {
    const sbx = await track(Sandbox.create(conn()));
    const controller = new AbortController();
    const running = sbx.commands.run("sleep 30", { timeout: 60, signal: controller.signal });
    setTimeout(() => controller.abort(new Error("caller gave up")), 200);
    await assert.rejects(running, /caller gave up/);
    assert.equal((await sbx.commands.run("echo still here")).stdout, "still here\n");
  });

  serverTest("config from the environment", async (srv) => {
    const runtimes = await withEnv(
      { CODEBOX_API_URL: srv.url, CODEBOX_API_KEY: srv.adminKey },
      () => Sandbox.runtimes(),
    );
    assert.ok(runtimes.length > 0);
  });

  for (const [options, field] of [
    [{ runtime: "cobol" }, "runtime"],
    [{ cpu: 64 }, "resources.cpu"],
    [{ memory: 1 }, "resources.memory"],
    [{ envVars: { "1BAD": "x" } }, "env_vars.1BAD"],
  ] as const) {
    serverTest(`a validation error names the field ${field}`, async () => {
      await assert.rejects(Sandbox.create({ ...options, ...conn() }), (error) => {
        assert.ok(error instanceof ValidationError, String(error));
        assert.equal(error.status, 400);
        assert.equal(error.code, "VALIDATION_ERROR");
        assert.equal(error.field, field);
        return true;
      });
    });
  }

  serverTest("an unknown runtime lists the available ones", async () => {
    await assert.rejects(Sandbox.create({ runtime: "cobol", ...conn() }), (error) => {
      assert.ok(error instanceof ValidationError);
      assert.match(error.message, /python3/);
      return true;
    });
  });

  serverTest("a bad key is an authentication error", async (srv) => {
    await assert.rejects(
      Sandbox.create({ apiUrl: srv.url, apiKey: "cbx_not_a_real_key" }),
      (error) => {
        assert.ok(error instanceof AuthenticationError);
        assert.equal(error.status, 401);
        assert.equal(error.code, "UNAUTHORIZED");
        return true;
      },
    );
  });

  serverTest("unknown and foreign sandboxes are not found", async (srv) => {
    await assert.rejects(Sandbox.connect("a".repeat(26), conn()), NotFoundError);
    await assert.rejects(Sandbox.connect("../runtimes", conn()), NotFoundError);

    const mine = await track(Sandbox.create(conn()));
    const otherKey = await srv.createUserKey(`other-${randomUUID().slice(0, 8)}`);
    const other = { apiUrl: srv.url, apiKey: otherKey };
    await assert.rejects(Sandbox.connect(mine.id, other), (error) => {
      assert.ok(error instanceof NotFoundError);
      assert.equal(error.status, 404);
      return true;
    });
    assert.deepEqual(await ids(Sandbox.list(other)), new Set());
    // Still alive for its owner.
    assert.equal((await mine.info()).status, "running");
  });

  serverTest("a killed sandbox is gone everywhere", async () => {
    const sbx = await Sandbox.create(conn());
    await sbx.kill();
    await expectGone(sbx.info());
    await expectGone(sbx.kill());
    await expectGone(sbx.setTimeout(60));
    await expectGone(sbx.commands.run("true"));
    await expectGone(Sandbox.connect(sbx.id, conn()));
  });

  serverTest("a too large command is refused", async () => {
    const sbx = await track(Sandbox.create(conn()));
    await assert.rejects(sbx.commands.run("#".repeat(1024 * 1024 + 1)), (error) => {
      assert.ok(error instanceof PayloadTooLargeError);
      assert.equal(error.status, 413);
      return true;
    });
  });

  serverTest("the quota is a ResourceLimitError and is not retried", async (srv) => {
    const key = await srv.createUserKey(`quota-${randomUUID().slice(0, 8)}`);
    const user = { apiUrl: srv.url, apiKey: key };
    for (let i = 0; i < MAX_SANDBOXES_PER_USER; i += 1) await track(Sandbox.create(user));
    await assert.rejects(Sandbox.create({ retry: { maxAttempts: 4 }, ...user }), (error) => {
      assert.ok(error instanceof ResourceLimitError);
      assert.equal(error.status, 429);
      assert.equal(error.code, "RESOURCE_LIMIT_ERROR");
      return true;
    });
    for (const sbx of created.splice(0)) await sbx.kill();
    // Freed: creating works again.
    const again = await track(Sandbox.create(user));
    assert.equal((await again.info()).status, "running");
  });
});

async function ids(listing: AsyncIterable<{ id: string }>): Promise<Set<string>> {
  const found = new Set<string>();
  for await (const info of listing) found.add(info.id);
  return found;
}
