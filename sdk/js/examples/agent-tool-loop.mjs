// A sketch of an agent's tool loop: a language model proposes Python code,
// the sandbox runs it, and the outcome goes back to the model until it
// answers. The model here is a scripted stand-in (no network call); replace
// `scriptedModel` with a call to your LLM provider, keeping the same shape.
//
//   export CODEBOX_API_KEY=$(cat .codebox/admin.key)
//   node sdk/js/examples/agent-tool-loop.mjs

import { Sandbox } from "@codebox/sdk";

/** The tool the model can call, described as most LLM APIs want it. */
export const RUN_PYTHON_TOOL = {
  name: "run_python",
  description:
    "Run Python code in a persistent sandbox (variables survive between calls). " +
    "Returns stdout, stderr, the value of the last expression and any error.",
  parameters: {
    type: "object",
    properties: { code: { type: "string", description: "The Python code to run" } },
    required: ["code"],
  },
};

/** What the model sees of an execution: short, textual, errors included. */
export function toolResult(execution, limit = 4000) {
  const parts = [];
  if (execution.stdout) parts.push(`stdout:\n${execution.stdout}`);
  if (execution.stderr) parts.push(`stderr:\n${execution.stderr}`);
  if (execution.text !== undefined) parts.push(`result: ${execution.text}`);
  const images = execution.results.filter((r) => r.png !== undefined).length;
  if (images > 0) parts.push(`(${images} image(s) produced)`);
  if (execution.error) {
    parts.push(
      `error: ${execution.error.name}: ${execution.error.value}\n${execution.error.traceback}`,
    );
  }
  if (execution.outcome === "timeout") parts.push("the code timed out (the state is kept)");
  const text = parts.join("\n") || "(no output)";
  return text.length > limit ? `${text.slice(0, limit)}\n[truncated]` : text;
}

/**
 * Runs the loop: `model(messages)` returns either `{tool: "run_python", code}`
 * or `{answer}`. At most `maxSteps` tool calls.
 */
export async function agentLoop({ model, sandbox, task, maxSteps = 5 }) {
  const messages = [{ role: "user", content: task }];
  for (let step = 0; step < maxSteps; step += 1) {
    const reply = await model(messages, [RUN_PYTHON_TOOL]);
    if (reply.answer !== undefined) return { answer: reply.answer, messages };
    messages.push({ role: "assistant", tool: reply.tool, content: reply.code });
    const execution = await sandbox.runCode(reply.code, { timeoutMs: 30_000 });
    messages.push({ role: "tool", content: toolResult(execution) });
  }
  return { answer: null, messages };
}

/** A stand-in for an LLM: writes code, sees an error, fixes it, answers. */
export function scriptedModel() {
  const turns = [
    {
      tool: "run_python",
      code: "primes = [n for n in range(2, 100) if all(n % d for d in range(2, n))]\nlen(primes",
    },
    {
      tool: "run_python",
      code: "primes = [n for n in range(2, 100) if all(n % d for d in range(2, n))]\nlen(primes)",
    },
  ];
  return async (messages) => {
    const turn = turns.shift();
    if (turn) return turn;
    const last = messages.at(-1)?.content ?? "";
    const count = /result: (\d+)/.exec(last)?.[1];
    return { answer: `There are ${count} primes below 100.` };
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const sandbox = await Sandbox.create({ runtime: "python3", timeout: 300 });
  try {
    const { answer, messages } = await agentLoop({
      model: scriptedModel(),
      sandbox,
      task: "How many primes are there below 100?",
    });
    for (const message of messages) console.log(`[${message.role}] ${message.content}\n`);
    console.log(answer);
  } finally {
    await sandbox.kill();
  }
}
