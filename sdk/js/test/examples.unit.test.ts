/**
 * The examples run without a network: the agent tool loop against the fake
 * server (its scripted model writes code, sees the error, fixes it, answers),
 * and every example parses.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Sandbox } from "@codebox/sdk";

import { BASE, END_EVENT, type Recorded, ndjson, standardServer } from "./fakes.js";

const EXAMPLES = new URL("../examples/", import.meta.url);

function executeLikePython(request: Recorded) {
  const code = (JSON.parse(request.body ?? "{}") as { code: string }).code;
  if (!code.trim().endsWith(")")) {
    return ndjson(
      { type: "error", name: "SyntaxError", value: "'(' was never closed", traceback: "..." },
      { ...END_EVENT, outcome: "error" },
    );
  }
  return ndjson({ type: "result", "text/plain": "25", is_main_result: true }, END_EVENT);
}

test("the agent tool loop sketch runs its model against a sandbox", async () => {
  const fake = standardServer().set("POST", `${BASE}/execute`, executeLikePython);
  const example = await import(new URL("agent-tool-loop.mjs", EXAMPLES).href);
  const sandbox = await Sandbox.create(fake.connection());
  const { answer, messages } = await example.agentLoop({
    model: example.scriptedModel(),
    sandbox,
    task: "How many primes are there below 100?",
  });
  assert.equal(answer, "There are 25 primes below 100.");
  const tools = messages.filter((m: { role: string }) => m.role === "tool");
  assert.equal(tools.length, 2);
  assert.match(tools[0].content, /error: SyntaxError/);
  assert.match(tools[1].content, /result: 25/);
  assert.equal(fake.requests.filter((r) => r.url.pathname === `${BASE}/execute`).length, 2);
});

test("every example is valid JavaScript", async () => {
  const names = readdirSync(EXAMPLES).filter((name) => name.endsWith(".mjs"));
  assert.deepEqual(names.sort(), ["agent-tool-loop.mjs", "chart.mjs"]);
  for (const name of names) {
    await promisify(execFile)(process.execPath, [
      "--check",
      fileURLToPath(new URL(name, EXAMPLES)),
    ]);
  }
});
