/**
 * The package runs where there is no Node: it imports no Node module, and
 * without a `process` global it reads no environment and sends no User-Agent
 * (a browser owns that header).
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const dist = new URL("../dist/", import.meta.url);

test("the built package imports only its own modules", () => {
  const files = readdirSync(dist).filter((name) => name.endsWith(".js"));
  assert.ok(files.includes("index.js"));
  for (const name of files) {
    const source = readFileSync(new URL(name, dist), "utf8");
    // Statements start a line (tsc output); doc comments, which show usage, do not.
    const imports = [
      ...source.matchAll(
        /^(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"|\bimport\s*\(\s*"([^"]+)"/gm,
      ),
    ].map((m) => m[1] ?? m[2]);
    for (const specifier of imports) {
      assert.match(specifier ?? "", /^\.\/[a-z]+\.js$/, `${name} imports ${specifier}`);
    }
    assert.doesNotMatch(source, /\brequire\(|\bBuffer\b/, name);
  }
});

// Runs in a child: deleting `process` in this test process would break the runner.
const WITHOUT_PROCESS = `
const write = (text) => process.stdout.write(text);
const saved = globalThis.process;
const { Sandbox } = await import(${JSON.stringify(new URL("index.js", dist).href)});
delete globalThis.process;
const sent = [];
const fetch = async (url, init) => {
  sent.push(new Headers(init.headers));
  return new Response(JSON.stringify({ success: true, data: { runtimes: [] } }));
};
let withoutKey;
try {
  await Sandbox.runtimes({ fetch });
  withoutKey = "sent";
} catch (error) {
  withoutKey = error.name;
}
await Sandbox.runtimes({ fetch, apiKey: "cbx_given" });
globalThis.process = saved;
write(JSON.stringify({ withoutKey, userAgent: sent[0].get("user-agent"), key: sent[0].get("x-api-key") }));
`;

test("without a process global: no environment, no User-Agent", async () => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--input-type=module", "-e", WITHOUT_PROCESS],
    {
      env: { ...process.env, CODEBOX_API_KEY: "cbx_from_env" },
      cwd: fileURLToPath(dist),
    },
  );
  // The environment had a key, but a browser has no environment: it must not be found.
  assert.deepEqual(JSON.parse(stdout), {
    withoutKey: "AuthenticationError",
    userAgent: null,
    key: "cbx_given",
  });
});

test("the version is package.json's", async () => {
  const { VERSION } = await import("@codebox/sdk");
  const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  assert.equal(VERSION, manifest.version);
});
