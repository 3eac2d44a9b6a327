"""A data analysis in a sandbox: upload a CSV, summarise it with pandas, plot it
with matplotlib, and save the chart locally.

    export CODEBOX_API_KEY=$(cat .codebox/admin.key)
    python sdk/python/examples/data_analysis.py            # writes sales.png

The python3 template (pandas, matplotlib) must be built on the server
(``codebox template build python3``; ``serve`` builds it on first start).
"""

from __future__ import annotations

import random
import sys
from typing import Optional, Tuple

from codebox import Sandbox

ANALYSIS = """
import pandas as pd
import matplotlib
import matplotlib.pyplot as plt

sales = pd.read_csv("sales.csv", parse_dates=["day"])
monthly = sales.groupby(sales["day"].dt.to_period("M"))["amount"].sum()
print(monthly.describe().to_string())

fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
monthly.plot(kind="bar", ax=ax, color="#4c72b0")
ax.set_title("Sales per month")
ax.set_ylabel("amount")
fig.tight_layout()
plt.show()
"""


def make_csv(rows: int = 365, seed: int = 7) -> str:
    """A year of made-up daily sales."""
    rng = random.Random(seed)
    lines = ["day,amount"]
    for day in range(rows):
        month, dom = divmod(day, 28)
        lines.append(f"2026-{month % 12 + 1:02d}-{dom + 1:02d},{rng.randint(50, 500)}")
    return "\n".join(lines) + "\n"


def analyse(sbx: Sandbox, csv_text: str) -> Tuple[str, Optional[bytes]]:
    """Runs the analysis; returns the printed summary and the chart's PNG."""
    sbx.files.write("sales.csv", csv_text)
    execution = sbx.run_code(ANALYSIS, timeout=120)
    if execution.error is not None:
        raise RuntimeError(f"{execution.error.name}: {execution.error.value}")
    chart = next((r.png_bytes for r in execution.results if r.png is not None), None)
    return execution.stdout, chart


def main() -> int:
    with Sandbox.create("python3", timeout=300) as sbx:
        summary, chart = analyse(sbx, make_csv())
    print(summary)
    if chart is None:
        print("no chart: is the python3 template built on the server?", file=sys.stderr)
        return 1
    with open("sales.png", "wb") as out:
        out.write(chart)
    print(f"wrote sales.png ({len(chart)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
