// Round-trip latency of the SDK against a running server (not a test: numbers
// vary with the machine). Uses CODEBOX_API_URL / CODEBOX_API_KEY; run
// `npm run build` first.
//
//   CODEBOX_API_KEY=$(cat .codebox/admin.key) node sdk/js/scripts/bench.mjs --iterations 20

import { parseArgs } from "node:util";

import { Sandbox } from "../dist/index.js";

const { values } = parseArgs({
  options: {
    iterations: { type: "string", default: "20" },
    runtime: { type: "string", default: "python3" },
  },
});
const iterations = Number(values.iterations);
if (!Number.isInteger(iterations) || iterations < 1) {
  throw new RangeError("--iterations must be a positive integer");
}

async function timed(samples, call) {
  const start = performance.now();
  const result = await call();
  samples.push(performance.now() - start);
  return result;
}

function percentile(samples, fraction) {
  const ordered = [...samples].sort((a, b) => a - b);
  return ordered[Math.min(ordered.length - 1, Math.floor(fraction * ordered.length))];
}

const samples = { create: [], "commands.run": [], kill: [] };
for (let i = 0; i < iterations; i += 1) {
  const sbx = await timed(samples.create, () => Sandbox.create({ runtime: values.runtime }));
  try {
    for (let j = 0; j < 5; j += 1) {
      await timed(samples["commands.run"], () => sbx.commands.run("true"));
    }
  } finally {
    await timed(samples.kill, () => sbx.kill());
  }
}

const pad = (text, width) => String(text).padStart(width);
console.log(
  `${"operation".padEnd(14)}${pad("n", 5)}${pad("p50 ms", 10)}${pad("p90 ms", 10)}${pad("max ms", 10)}`,
);
for (const [name, values] of Object.entries(samples)) {
  console.log(
    `${name.padEnd(14)}${pad(values.length, 5)}${pad(percentile(values, 0.5).toFixed(1), 10)}` +
      `${pad(percentile(values, 0.9).toFixed(1), 10)}${pad(Math.max(...values).toFixed(1), 10)}`,
  );
}
