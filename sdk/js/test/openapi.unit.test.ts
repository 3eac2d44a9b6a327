/**
 * The SDK against the published OpenAPI document (openapi/openapi.json, or
 * $CODEBOX_OPENAPI), so the two cannot drift: every operation the SDK calls
 * exists with that method, the bodies and query parameters it sends are
 * documented, the fields its parsers require are required by the response
 * schemas, and every error code has its class.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { Sandbox } from "@codebox/sdk";

import { parseProcess } from "../dist/commands.js";
import { Execution, Result, parseContext, parseExecutionError } from "../dist/execution.js";
import { parseFileEntry, parseFileList, parseWriteInfo } from "../dist/files.js";

import * as api from "../dist/endpoints.js";
import { ERROR_CLASSES_BY_CODE } from "../dist/errors.js";
import {
  SANDBOX_STATUSES,
  TERMINATION_REASONS,
  parseCommandResult,
  parseMetrics,
  parseResources,
  parseRuntime,
  parseSandbox,
} from "../dist/models.js";
import {
  COMMAND_JSON,
  CONTEXT_JSON,
  END_EVENT,
  ENTRY_JSON,
  type FakeServer,
  METRICS_JSON,
  PROCESS_JSON,
  REPO_ROOT,
  RUNTIMES_JSON,
  SANDBOX_ID,
  killedJson,
  standardServer,
} from "./fakes.js";

// The document is untyped JSON: the assertions are its type checks.
type Json = Record<string, any>;

const documentPath = process.env["CODEBOX_OPENAPI"] ?? join(REPO_ROOT, "openapi", "openapi.json");
const document: Json = JSON.parse(readFileSync(documentPath, "utf8"));

function schema(name: string): Json {
  const found = document["components"]["schemas"][name];
  assert.ok(found, `the document has no schema ${name}`);
  return found;
}

function templateRegex(template: string): RegExp {
  const escaped = template.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`^${escaped.replace(/\\\{[a-z_]+\\\}/g, "[^/]+")}$`);
}

function matchOperation(method: string, path: string): string {
  for (const [template, operations] of Object.entries<Json>(document["paths"])) {
    if (templateRegex(template).test(path) && method.toLowerCase() in operations) {
      return `${method} ${template}`;
    }
  }
  assert.fail(`${method} ${path} is not an operation of the OpenAPI document`);
}

/** Calls every public method against the fake server. */
async function exerciseEverything(): Promise<FakeServer> {
  const fake = standardServer();
  const connection = fake.connection();
  for await (const info of Sandbox.list({
    status: "running",
    metadata: { k: "v" },
    pageSize: 5,
    ...connection,
  })) {
    assert.equal(info.id, SANDBOX_ID);
  }
  await Sandbox.runtimes(connection);
  await Sandbox.connect(SANDBOX_ID, connection);
  const sbx = await Sandbox.create({
    runtime: "python3",
    cpu: 1,
    memory: 512,
    timeout: 60,
    metadata: { a: "b" },
    envVars: { E: "1" },
    ...connection,
  });
  await sbx.info();
  await sbx.setTimeout(60);
  await sbx.metrics();
  await sbx.commands.run("true", { timeout: 5, env: { X: "1" }, cwd: "/tmp", stdin: "" });

  const context = await sbx.contexts.create({
    language: "python",
    cwd: "/tmp",
    envVars: { A: "1" },
  });
  await sbx.contexts.list();
  await sbx.runCode("1", {
    language: "python",
    context,
    timeoutMs: 5000,
    envVars: { B: "2" },
  });
  await sbx.contexts.interrupt(context);
  await sbx.contexts.restart(context);
  await sbx.contexts.remove(context);

  await sbx.files.write("a.txt", "abc");
  await sbx.files.write([
    { path: "a.txt", data: "abc" },
    { path: "/tmp/b.bin", data: new Uint8Array([1, 2]) },
  ]);
  await sbx.files.read("a.txt");
  await sbx.files.list("/home/user", { depth: 2 });
  await sbx.files.getInfo("a.txt");
  await sbx.files.makeDir("d", { parents: true });
  await sbx.files.rename("a.txt", "b.txt", { overwrite: true });
  await sbx.files.remove("d", { recursive: true });
  const watcher = await sbx.files.watch("/home/user", { recursive: true });
  for await (const event of watcher) assert.equal(event.type, "create");

  const handle = await sbx.commands.run("sleep 100", {
    background: true,
    env: { C: "3" },
    cwd: "/tmp",
    stdin: true,
    timeout: 60,
    tag: "t",
  });
  await handle.sendStdin("abc");
  await handle.closeStdin();
  await handle.kill();
  await handle.wait();
  await (await sbx.commands.connect(42)).wait();
  await sbx.commands.list();

  const pty = await sbx.pty.create({
    cols: 80,
    rows: 24,
    onData: () => undefined,
    webSocket: fake.webSocket,
  });
  pty.resize(100, 30);
  pty.close();
  await sbx.kill();
  return fake;
}

test("every endpoint exists with its method", () => {
  for (const endpoint of api.ALL) {
    const operations = document["paths"][endpoint.template];
    assert.ok(operations, `${endpoint.template} is not in openapi.json`);
    assert.ok(
      endpoint.method.toLowerCase() in operations,
      `${endpoint.method} ${endpoint.template}`,
    );
  }
});

test("the endpoint table is complete", () => {
  const declared = new Set(Object.values(api).filter((value) => value instanceof api.Endpoint));
  assert.deepEqual(declared, new Set(api.ALL));
});

test("every request the SDK sends is a documented operation", async () => {
  const fake = await exerciseEverything();
  const used = new Set(fake.requests.map((r) => matchOperation(r.method, r.url.pathname)));
  // And the exercise really covers the table, so the check means something.
  assert.deepEqual(used, new Set(api.ALL.map((e) => `${e.method} ${e.template}`)));
});

function requestSchemaName(method: string, template: string): string {
  const body = document["paths"][template][method.toLowerCase()]["requestBody"];
  const ref: string = body["content"]["application/json"]["schema"]["$ref"];
  return ref.slice(ref.lastIndexOf("/") + 1);
}

function isJson(request: { headers: Headers }): boolean {
  return request.headers.get("content-type") === "application/json";
}

function checkBody(name: string, body: Json): void {
  const spec = schema(name);
  for (const field of spec["required"] ?? [])
    assert.ok(field in body, `${name}: missing required ${field}`);
  const unknown = Object.keys(body).filter((key) => !(key in spec["properties"]));
  assert.deepEqual(unknown, [], `${name} does not document ${unknown.join(", ")}`);
  if ("resources" in body) checkBody("Resources", body["resources"]);
}

test("request bodies fit their schemas", async () => {
  const fake = await exerciseEverything();
  const checked = new Set<string>();
  for (const request of fake.requests) {
    if (request.body === null || !isJson(request)) continue;
    const [method, template] = matchOperation(request.method, request.url.pathname).split(" ") as [
      string,
      string,
    ];
    const name = requestSchemaName(method, template);
    checkBody(name, JSON.parse(request.body));
    checked.add(name);
  }
  assert.deepEqual(
    checked,
    new Set([
      "CreateSandboxRequest",
      "SetTimeoutRequest",
      "RunCommandRequest",
      "ExecuteRequest",
      "CreateContextRequest",
      "MakeDirRequest",
      "MoveRequest",
      "StartProcessRequest",
      "SignalRequest",
    ]),
  );
});

test("raw bodies go where the document takes application/octet-stream", async () => {
  const fake = await exerciseEverything();
  const raw = fake.requests.filter((r) => r.rawBody !== undefined && !isJson(r));
  const kinds = new Set<string>();
  for (const request of raw) {
    const [method, template] = matchOperation(request.method, request.url.pathname).split(" ") as [
      string,
      string,
    ];
    const operation = document["paths"][template][method.toLowerCase()];
    const content = operation["requestBody"]?.["content"] ?? {};
    // A FormData is sent as multipart (fetch writes its Content-Type).
    const kind =
      request.rawBody instanceof FormData ? "multipart/form-data" : "application/octet-stream";
    kinds.add(kind);
    assert.ok(kind in content, `${method} ${template} does not take ${kind}`);
    if (kind === "application/octet-stream") {
      assert.equal(request.headers.get("content-type"), kind);
    } else {
      assert.equal(request.headers.get("content-type"), null);
    }
  }
  assert.deepEqual(kinds, new Set(["application/octet-stream", "multipart/form-data"]));
});

test("query parameters are documented", async () => {
  const fake = await exerciseEverything();
  let sent = 0;
  for (const request of fake.requests) {
    const [method, template] = matchOperation(request.method, request.url.pathname).split(" ") as [
      string,
      string,
    ];
    const parameters: Json[] =
      document["paths"][template][method.toLowerCase()]["parameters"] ?? [];
    const documented = new Set(parameters.filter((p) => p["in"] === "query").map((p) => p["name"]));
    for (const name of request.url.searchParams.keys()) {
      sent += 1;
      const generic = name.startsWith("metadata.")
        ? "metadata.KEY"
        : name.startsWith("env.")
          ? "env.NAME"
          : name;
      assert.ok(documented.has(generic), `${method} ${template} does not document ?${name}`);
    }
  }
  assert.ok(sent > 5, "the exercise sent almost no query parameters");
});

/** The API fields a parser reads, and those it cannot do without. */
function fieldsOf(
  parse: (data: unknown) => unknown,
  full: Json,
): { read: Set<string>; required: Set<string> } {
  const read = new Set<string>();
  const tracking = new Proxy(full, {
    get(target, key, receiver) {
      if (typeof key === "string") read.add(key);
      return Reflect.get(target, key, receiver);
    },
  });
  parse(tracking);
  const required = new Set<string>();
  for (const key of read) {
    const without = { ...full };
    delete without[key];
    try {
      parse(without);
    } catch {
      required.add(key);
    }
  }
  return { read, required };
}

// The streamed `end` event is one branch of the ExecutionEvent schema.
function endEventSchema(): Json {
  const branches: Json[] = schema("ExecutionEvent")["oneOf"];
  const end = branches.find((b) => b["properties"]?.["type"]?.["const"] === "end");
  assert.ok(end, "ExecutionEvent has no end branch");
  return end;
}

const RESPONSE_MODELS: [string, (data: unknown) => unknown, Json, () => Json][] = [
  ["Sandbox", parseSandbox, killedJson(), () => schema("Sandbox")],
  ["Resources", parseResources, { cpu: 1, memory: 512 }, () => schema("Resources")],
  ["CommandResult", parseCommandResult, { ...COMMAND_JSON }, () => schema("CommandResult")],
  [
    "Runtime",
    parseRuntime,
    { ...(RUNTIMES_JSON["runtimes"] as Json[])[0] },
    () => schema("Runtime"),
  ],
  ["SandboxMetrics", parseMetrics, { ...METRICS_JSON }, () => schema("SandboxMetrics")],
  ["Context", parseContext, { ...CONTEXT_JSON }, () => schema("Context")],
  [
    "ExecutionError",
    parseExecutionError,
    { name: "E", value: "v", traceback: "t" },
    () => schema("ExecutionError"),
  ],
  [
    "ExecutionResultBundle",
    (data) => new Result(data as Json),
    { is_main_result: true, truncated: true },
    () => schema("ExecutionResultBundle"),
  ],
  [
    "ExecutionEvent end",
    (data) =>
      new Execution({
        results: [],
        logs: { stdout: [], stderr: [] },
        error: null,
        end: data as Json,
      }),
    { ...END_EVENT, reason: "server_shutdown" },
    endEventSchema,
  ],
  ["FileEntry", parseFileEntry, { ...ENTRY_JSON }, () => schema("FileEntry")],
  [
    "FileListing",
    parseFileList,
    { entries: [{ ...ENTRY_JSON }], truncated: false },
    () => schema("FileListing"),
  ],
  ["FileUpload", parseWriteInfo, { path: "/a", size: 1 }, () => schema("FileUpload")],
  ["Process", parseProcess, { ...PROCESS_JSON }, () => schema("Process")],
];

for (const [name, parse, full, spec_] of RESPONSE_MODELS) {
  test(`the fields the SDK reads from ${name} are documented, and those it requires are required`, () => {
    const spec = spec_();
    const { read, required } = fieldsOf(parse, full);
    const documented = new Set(Object.keys(spec["properties"]));
    assert.ok(read.size > 0);
    for (const field of read)
      assert.ok(documented.has(field), `${name}.${field} is not documented`);
    for (const field of required) {
      assert.ok(
        (spec["required"] ?? []).includes(field),
        `${name}.${field} is required by the SDK, optional in the API`,
      );
    }
  });
}

test("every error code is mapped", () => {
  const codes: string[] =
    schema("ErrorEnvelope")["properties"]["error"]["properties"]["code"]["enum"];
  assert.deepEqual(new Set(codes), new Set(Object.keys(ERROR_CLASSES_BY_CODE)));
});

test("statuses and termination reasons are the documented ones", () => {
  const sandbox = schema("Sandbox")["properties"];
  assert.deepEqual(new Set(sandbox["status"]["enum"]), new Set(SANDBOX_STATUSES));
  assert.deepEqual(new Set(sandbox["termination_reason"]["enum"]), new Set(TERMINATION_REASONS));
  // And the error that carries a reason lists them in the declarations that ship.
  const declarations = readFileSync(new URL("../dist/errors.d.ts", import.meta.url), "utf8");
  const start = declarations.indexOf("`SANDBOX_GONE`");
  const doc = declarations.slice(start, declarations.indexOf("class SandboxGoneError", start));
  assert.ok(start >= 0 && doc.length > 0);
  for (const reason of TERMINATION_REASONS)
    assert.ok(doc.includes(`\`${reason}\``), `SandboxGoneError: ${reason}`);
});
