"""The shape of an LLM agent's tool loop around a sandbox.

The model proposes Python to run; the sandbox runs it (state persists between
steps, like a notebook); the output, the error or the chart goes back to the
model as the tool's answer, until the model answers in plain text. Errors in
the code are data for the model, never exceptions; API errors are real
failures.

``llm`` is any callable from the conversation so far to the model's next
message: plug in your provider's client. ``scripted_llm`` below is a stand-in
that needs no network, so the example (and its test) runs anywhere a codebox
server does:

    export CODEBOX_API_KEY=$(cat .codebox/admin.key)
    python sdk/python/examples/agent_tool_loop.py
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

from codebox import Execution, Sandbox

Message = Dict[str, Any]
LLM = Callable[[List[Message]], Message]

# What the model is told it can call (the JSON-schema shape most providers take).
RUN_CODE_TOOL: Dict[str, Any] = {
    "name": "run_code",
    "description": "Run Python in a persistent sandbox; returns stdout, the result and errors.",
    "parameters": {
        "type": "object",
        "properties": {"code": {"type": "string"}},
        "required": ["code"],
    },
}
# What goes back to the model is bounded: long outputs cost tokens.
MAX_TOOL_OUTPUT = 4000


def tool_answer(execution: Execution) -> str:
    """The execution as the tool's answer to the model."""
    answer: Dict[str, Any] = {"stdout": execution.stdout[-MAX_TOOL_OUTPUT:]}
    if execution.stderr:
        answer["stderr"] = execution.stderr[-MAX_TOOL_OUTPUT:]
    if execution.text is not None:
        answer["result"] = execution.text[:MAX_TOOL_OUTPUT]
    if execution.error is not None:
        answer["error"] = f"{execution.error.name}: {execution.error.value}"
    images = sum(1 for r in execution.results if r.png is not None)
    if images:
        answer["images"] = images
    return json.dumps(answer)


def run_agent(task: str, llm: LLM, sbx: Sandbox, max_steps: int = 8) -> str:
    """Loops model -> tool -> model until the model answers without a tool call."""
    messages: List[Message] = [
        {
            "role": "system",
            "content": "Solve the task. Use run_code to compute.",
            "tools": [RUN_CODE_TOOL],
        },
        {"role": "user", "content": task},
    ]
    for _ in range(max_steps):
        reply = llm(messages)
        messages.append(reply)
        call: Optional[Dict[str, Any]] = reply.get("tool_call")
        if call is None:
            return str(reply.get("content", ""))
        if call.get("name") != "run_code":
            messages.append({"role": "tool", "content": f"unknown tool {call.get('name')!r}"})
            continue
        execution = sbx.run_code(str(call["arguments"]["code"]), timeout=60)
        messages.append({"role": "tool", "content": tool_answer(execution)})
    return "stopped: too many steps"


def scripted_llm(script: List[Message]) -> LLM:
    """A stand-in model that replays ``script``, one message per turn (then
    says "done"), whatever it is shown."""
    turns = iter(script)

    def reply(messages: List[Message]) -> Message:
        return next(turns, {"role": "assistant", "content": "done"})

    return reply


def main() -> None:
    script: List[Message] = [
        {
            "role": "assistant",
            "tool_call": {
                "name": "run_code",
                "arguments": {
                    "code": "primes = [n for n in range(2, 50) if all(n % d for d in range(2, n))]"
                },
            },
        },
        {
            "role": "assistant",
            "tool_call": {"name": "run_code", "arguments": {"code": "1 / len([])"}},
        },
        {
            "role": "assistant",
            "tool_call": {"name": "run_code", "arguments": {"code": "sum(primes)"}},
        },
        {"role": "assistant", "content": "The primes below 50 add up to 328."},
    ]
    with Sandbox.create("python3", timeout=120) as sbx:
        print(run_agent("What is the sum of the primes below 50?", scripted_llm(script), sbx))


if __name__ == "__main__":
    main()
