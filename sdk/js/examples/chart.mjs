// A data-analysis script: upload a CSV, analyse it with pandas in a sandbox,
// plot it with matplotlib and save the chart here as chart.png.
//
//   (cd sdk/js && npm ci && npm run build)
//   export CODEBOX_API_KEY=$(cat .codebox/admin.key)   # and CODEBOX_API_URL if not local
//   node sdk/js/examples/chart.mjs [out.png]

import { writeFile } from "node:fs/promises";

import { Sandbox } from "@codebox/sdk";

const CSV = `month,revenue,costs
2026-01,120,80
2026-02,135,82
2026-03,128,90
2026-04,160,95
2026-05,172,99
2026-06,190,104
`;

const ANALYSIS = `
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv("sales.csv", parse_dates=["month"])
df["margin"] = df["revenue"] - df["costs"]
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(df["month"], df["revenue"], marker="o", label="revenue")
ax.plot(df["month"], df["costs"], marker="o", label="costs")
ax.bar(df["month"], df["margin"], width=12, alpha=0.3, label="margin")
ax.set_title("Revenue and costs")
ax.legend()
plt.show()
print(f"total margin: {df['margin'].sum()}")
df.describe()
`;

const out = process.argv[2] ?? "chart.png";
const sbx = await Sandbox.create({ runtime: "python3", timeout: 300 });
try {
  await sbx.files.write("sales.csv", CSV);
  const execution = await sbx.runCode(ANALYSIS, {
    timeoutMs: 120_000,
    onStdout: (text) => process.stdout.write(text),
    onStderr: (text) => process.stderr.write(text),
  });
  if (execution.error) {
    console.error(
      `${execution.error.name}: ${execution.error.value}\n${execution.error.traceback}`,
    );
    process.exitCode = 1;
  } else {
    const chart = execution.results.find((result) => result.png !== undefined);
    if (!chart) throw new Error("the analysis produced no chart");
    await writeFile(out, chart.bytes("png"));
    console.log(`chart saved to ${out}`);
    console.log(execution.text); // df.describe() as text
  }
} finally {
  await sbx.kill();
}
