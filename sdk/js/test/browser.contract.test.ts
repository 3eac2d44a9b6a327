/**
 * The built package in a real browser (headless Chromium) against a real
 * server with CORS on: a page imports dist/index.js as an ES module, creates
 * a sandbox, runs a command, lists, kills, and maps errors. Skipped without a
 * Chromium (`$CODEBOX_CHROMIUM`, or chromium on PATH) unless
 * CODEBOX_REQUIRE_BROWSER=1; without a server, as the other contract tests.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { type Server, createServer } from "node:http";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { type RunningServer, ServerUnavailable, serverRequired, startServer } from "./server.js";

const DIST = fileURLToPath(new URL("../dist/", import.meta.url));
const BROWSER_DEADLINE_MS = 120_000;

// Runs in the page: every outcome goes into one JSON object in <pre id="out">.
const PAGE_SCRIPT = `
import { Sandbox, SandboxGoneError, ValidationError } from "/dist/index.js";
const params = new URLSearchParams(location.search);
const conn = { apiUrl: params.get("api"), apiKey: params.get("key") };
const out = {};
try {
  out.processGlobal = typeof globalThis.process;
  out.runtimes = (await Sandbox.runtimes(conn)).map((r) => r.name);
  const sbx = await Sandbox.create({ ...conn, metadata: { from: "browser" } });
  const result = await sbx.commands.run("python3 -c 'print(6*7)'; echo err >&2", { timeout: 10 });
  out.run = [result.stdout, result.stderr, result.exitCode, result.ok];
  out.listed = [];
  for await (const info of Sandbox.list({ ...conn, metadata: { from: "browser" } })) {
    out.listed.push(info.id === sbx.id);
  }
  out.killed = (await sbx.kill()).terminationReason;
  try {
    await sbx.info();
  } catch (error) {
    out.gone = [error instanceof SandboxGoneError, error.reason, Boolean(error.requestId)];
  }
  try {
    await Sandbox.create({ ...conn, runtime: "cobol" });
  } catch (error) {
    out.validation = [error instanceof ValidationError, error.field];
  }
} catch (error) {
  out.failed = String(error) + "\\n" + error.stack;
}
document.getElementById("out").textContent = JSON.stringify(out);
`;

const PAGE = `<!doctype html><html><body><pre id="out">pending</pre>
<script type="module">${PAGE_SCRIPT}</script></body></html>`;

// The browser talks to this machine only: no name resolves (the page uses IP
// addresses), everything but loopback goes to a dead local proxy, and the
// background services that would phone home are off.
const LOOPBACK_ONLY = [
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
  "--proxy-server=http://127.0.0.1:9",
  "--proxy-bypass-list=127.0.0.1",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-domain-reliability",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-client-side-phishing-detection",
  "--no-first-run",
  "--no-pings",
  "--metrics-recording-only",
];

function chromium(): string | null {
  const configured = process.env["CODEBOX_CHROMIUM"];
  if (configured) return configured;
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
      if (dir && existsSync(join(dir, name))) return join(dir, name);
    }
  }
  return null;
}

/** Serves the page and dist/ (the package as it ships) on a loopback port. */
function servePage(): Promise<Server> {
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    if (path === "/page.html") {
      response.writeHead(200, { "content-type": "text/html" }).end(PAGE);
      return;
    }
    const name = path.startsWith("/dist/") ? path.slice("/dist/".length) : "";
    if (!/^[a-z]+\.js$/.test(name)) {
      response.writeHead(404).end();
      return;
    }
    response
      .writeHead(200, { "content-type": "text/javascript" })
      .end(readFileSync(join(DIST, name)));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

function origin(server: Server): string {
  const address = server.address();
  assert.ok(typeof address === "object" && address !== null);
  return `http://127.0.0.1:${address.port}`;
}

async function runPage(browser: string, url: string): Promise<Record<string, unknown>> {
  const profile = mkdtempSync(join(tmpdir(), "codebox-sdk-js-chromium-"));
  try {
    const { stdout } = await promisify(execFile)(
      browser,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        `--user-data-dir=${profile}`,
        ...LOOPBACK_ONLY,
        // Virtual time runs on while requests are pending: the page finishes.
        "--virtual-time-budget=60000",
        "--dump-dom",
        url,
      ],
      { timeout: BROWSER_DEADLINE_MS, maxBuffer: 16 * 1024 * 1024 },
    );
    const match = /<pre id="out">([\s\S]*?)<\/pre>/.exec(stdout);
    assert.ok(match, `no output in the page:\n${stdout.slice(0, 2000)}`);
    const text = (match[1] ?? "").replaceAll("&lt;", "<").replaceAll("&gt;", ">");
    return JSON.parse(text.replaceAll("&amp;", "&"));
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

describe("in a browser", () => {
  const browser = chromium();
  let page: Server | null = null;
  let api: RunningServer | null = null;
  let skipReason: string | null = null;
  let startError: unknown = null;

  before(async () => {
    if (browser === null) {
      if (process.env["CODEBOX_REQUIRE_BROWSER"] === "1") startError = new Error("no Chromium");
      else skipReason = "no Chromium (set CODEBOX_CHROMIUM or put chromium on PATH)";
      return;
    }
    page = await servePage();
    try {
      api = await startServer({ CODEBOX_CORS_ALLOWED_ORIGINS: origin(page) });
    } catch (error) {
      if (error instanceof ServerUnavailable && !serverRequired()) skipReason = error.message;
      else startError = error;
    }
  });

  after(async () => {
    await api?.stop();
    await new Promise((resolve) => (page === null ? resolve(undefined) : page.close(resolve)));
  });

  test("the package works in Chromium against a real server", async (t) => {
    if (skipReason !== null) {
      t.skip(skipReason);
      return;
    }
    if (api === null || page === null || browser === null) throw startError;
    const query = new URLSearchParams({ api: api.url, key: api.adminKey });
    const out = await runPage(browser, `${origin(page)}/page.html?${query}`);
    assert.equal(out["failed"], undefined, String(out["failed"]));
    assert.deepEqual(out, {
      processGlobal: "undefined",
      runtimes: out["runtimes"],
      run: ["42\n", "err\n", 0, true],
      listed: [true],
      killed: "killed",
      gone: [true, "killed", true],
      validation: [true, "runtime"],
    });
    assert.ok((out["runtimes"] as string[]).includes("python3"));
  });
});
