/**
 * Starting and stopping a real `codebox serve` for the contract tests.
 *
 * `$CODEBOX_BIN` (default target/release/codebox) runs with `serve --port
 * <free port> --data-dir <fresh dir>` and the agent from `$CODEBOX_AGENT_PATH`
 * (scripts/build-agent); it is ready when /health answers, and its admin key
 * is read from <data dir>/admin.key. `$CODEBOX_SDK_TEMPLATES_DIR` (set by
 * scripts/test) is the prebuilt language templates' directory. Without a binary, an agent or root the
 * tests skip, unless CODEBOX_REQUIRE_SERVER=1 (set by scripts/test) turns that
 * into a failure so CI cannot go green on nothing.
 */

import { type ChildProcess, execFile, spawn } from "node:child_process";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

import { REPO_ROOT } from "./fakes.js";

// How long the server may take to answer /health after starting, and to stop.
const STARTUP_DEADLINE_MS = 120_000;
const SHUTDOWN_GRACE_MS = 40_000;
// Small enough that the quota test is cheap, large enough for the other tests.
export const MAX_SANDBOXES_PER_USER = 4;
// Server settings that must come from here, not from the caller's shell.
const SERVER_ENV_BLOCKLIST = new Set([
  "DATABASE_URL",
  "REDIS_URL",
  "API_KEY_SECRET",
  "JWT_SECRET",
  "MAX_SANDBOXES_PER_USER",
  "DEFAULT_TIMEOUT",
  "MAX_CODE_SIZE",
]);

const run = promisify(execFile);

/** Why the contract tests cannot run here; a failure when a server is required. */
export class ServerUnavailable extends Error {}

export class RunningServer {
  constructor(
    readonly url: string,
    readonly adminKey: string,
    readonly dataDir: string,
    private readonly binary: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly child: ChildProcess,
    private readonly scratch: string,
    private readonly log: string,
  ) {}

  /** A fresh user with an API key, through the admin CLI. */
  async createUserKey(name: string): Promise<string> {
    const common = ["--data-dir", this.dataDir];
    await this.cli(["users", "create", name, ...common]);
    const output = await this.cli(["keys", "create", "--user", name, ...common]);
    const key = output.split("\n")[0]?.trim();
    if (!key) throw new Error(`codebox keys create printed no key: ${output}`);
    return key;
  }

  private async cli(args: string[]): Promise<string> {
    const { stdout } = await run(this.binary, args, { env: this.env, timeout: 60_000 });
    return stdout;
  }

  /** SIGTERM (the server destroys its sandboxes first), SIGKILL after the grace period. */
  async stop(): Promise<void> {
    await stopProcess(this.child);
    // Only once the server is gone: it unmounts what it mounted there.
    rmSync(this.scratch, { recursive: true, force: true });
  }

  logTail(): string {
    return logTail(this.log);
  }
}

function serverBinary(): string {
  const binary = process.env["CODEBOX_BIN"] || join(REPO_ROOT, "target", "release", "codebox");
  if (!isFile(binary))
    throw new ServerUnavailable(`no codebox binary at ${binary} (build it or set CODEBOX_BIN)`);
  return binary;
}

function agentPath(): string {
  const agent = process.env["CODEBOX_AGENT_PATH"];
  if (!agent || !isFile(agent)) {
    throw new ServerUnavailable(
      "CODEBOX_AGENT_PATH is not set to a built agent (scripts/build-agent)",
    );
  }
  return agent;
}

function isFile(path: string): boolean {
  return existsSync(path) && statSync(path).isFile();
}

function serverEnv(agent: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("CODEBOX_") && !SERVER_ENV_BLOCKLIST.has(key)) env[key] = value;
  }
  env["CODEBOX_AGENT_PATH"] = agent;
  env["MAX_SANDBOXES_PER_USER"] = String(MAX_SANDBOXES_PER_USER);
  // A prebuilt python3 template (scripts/test builds it): ipython and
  // matplotlib without a PyPI download per test server.
  const templates = process.env["CODEBOX_SDK_TEMPLATES_DIR"];
  if (templates) env["CODEBOX_TEMPLATES_DIR"] = templates;
  return env;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

function logTail(log: string): string {
  try {
    return readFileSync(log, "utf8").split("\n").slice(-30).join("\n");
  } catch {
    return "(no log)";
  }
}

async function waitHealthy(url: string, child: ChildProcess, log: string): Promise<void> {
  const deadline = Date.now() + STARTUP_DEADLINE_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `codebox serve exited with ${child.exitCode ?? child.signalCode}:\n${logTail(log)}`,
      );
    }
    try {
      const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`codebox serve did not answer /health:\n${logTail(log)}`);
}

function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const killer = setTimeout(() => child.kill("SIGKILL"), SHUTDOWN_GRACE_MS);
    child.once("exit", () => {
      clearTimeout(killer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/**
 * A fresh directory the sandbox user can traverse: under a 0700 directory the
 * jail cannot mount the runtime's root file system from the data directory.
 */
function scratchDir(): string {
  const scratch = mkdtempSync(join(tmpdir(), "codebox-sdk-js-test-"));
  chmodSync(scratch, 0o711);
  return scratch;
}

/** Runs a server with fresh data (and `extraEnv`, e.g. CORS origins); call `stop()` at the end. */
export async function startServer(extraEnv: NodeJS.ProcessEnv = {}): Promise<RunningServer> {
  if (typeof process.geteuid === "function" && process.geteuid() !== 0) {
    throw new ServerUnavailable("the codebox server needs root (namespaces and cgroups)");
  }
  const binary = serverBinary();
  const env = { ...serverEnv(agentPath()), ...extraEnv };
  const scratch = scratchDir();
  const dataDir = join(scratch, "data");
  const log = join(scratch, "codebox-serve.log");
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const logFd = openSync(log, "w");
  const child = spawn(binary, ["serve", "--port", String(port), "--data-dir", dataDir], {
    env,
    stdio: ["ignore", logFd, logFd],
  });
  closeSync(logFd);
  try {
    await waitHealthy(url, child, log);
    const adminKey = readFileSync(join(dataDir, "admin.key"), "utf8").trim();
    return new RunningServer(url, adminKey, dataDir, binary, env, child, scratch, log);
  } catch (error) {
    await stopProcess(child);
    rmSync(scratch, { recursive: true, force: true });
    throw error;
  }
}

/** Whether a missing server must fail the run (CI) rather than skip. */
export function serverRequired(): boolean {
  return process.env["CODEBOX_REQUIRE_SERVER"] === "1";
}
