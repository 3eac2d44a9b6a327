//! The OpenAPI schemas of stateful code execution (requests, the collected
//! result, streamed events and contexts), split from `openapi.rs` for size.

use serde_json::{json, Value};

fn reference(component: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{component}")})
}

const LANGUAGE: &str =
    "python, javascript, typescript or bash (aliases: python3, py, js, node, ts, sh)";

/// Every code-execution schema.
pub fn schemas() -> Vec<(&'static str, Value)> {
    let mut schemas = requests();
    schemas.extend(results());
    schemas.extend(events());
    schemas
}

fn requests() -> Vec<(&'static str, Value)> {
    vec![
        (
            "ExecuteRequest",
            json!({
                "type": "object", "additionalProperties": false, "required": ["code"],
                "properties": {
                    "code": {"type": "string", "description": "At most MAX_CODE_SIZE bytes (413 PAYLOAD_TOO_LARGE beyond)", "examples": ["x + 1"]},
                    "language": {"type": "string", "description": format!("{LANGUAGE}. Default: the context's language, else the sandbox runtime's, else python")},
                    "context_id": {"type": ["string", "null"], "description": "A context from POST /contexts; the language's default context (created on first use) when absent"},
                    "timeout": {"type": "integer", "minimum": 1, "description": "Seconds from the start of the execution (default 30, at most 300). On expiry the code is interrupted and the context's state survives"},
                    "env_vars": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Environment of this execution only"}
                }
            }),
        ),
        (
            "CreateContextRequest",
            json!({
                "type": "object", "additionalProperties": false,
                "properties": {
                    "language": {"type": "string", "description": format!("{LANGUAGE}. Default: the sandbox runtime's language, else python")},
                    "cwd": {"type": "string", "description": "Absolute working directory (default /home/user)"},
                    "env_vars": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Environment of the context's interpreter"}
                }
            }),
        ),
    ]
}

fn results() -> Vec<(&'static str, Value)> {
    let outcome = json!({"type": "string", "enum": ["ok", "error", "timeout", "interrupted", "crashed", "unknown"]});
    vec![
        (
            "ExecutionResultBundle",
            json!({
                "type": "object", "required": ["is_main_result"],
                "description": "A MIME bundle: keys are MIME types (text/plain, text/html, image/png as base64, image/svg+xml, text/markdown, text/latex, application/json, ...)",
                "properties": {
                    "is_main_result": {"type": "boolean", "description": "The value of the cell's last expression"},
                    "truncated": {"type": "boolean", "description": "The bundle was over the cap and replaced by a shortened text/plain (absent when false)"}
                },
                "additionalProperties": {"type": "string"}
            }),
        ),
        (
            "ExecutionError",
            json!({
                "type": "object", "required": ["name", "value", "traceback"],
                "properties": {
                    "name": {"type": "string", "examples": ["ZeroDivisionError", "KeyboardInterrupt", "ExitCode"]},
                    "value": {"type": "string"}, "traceback": {"type": "string"}
                }
            }),
        ),
        (
            "CodeExecution",
            json!({
                "type": "object",
                "required": ["execution_id", "context_id", "language", "execution_count", "text", "results", "logs", "error", "duration_ms", "truncated", "outcome", "restarted"],
                "properties": {
                    "execution_id": {"type": "string"}, "context_id": {"type": "string"},
                    "language": {"type": "string"},
                    "execution_count": {"type": "integer", "description": "Executions of the context since its interpreter (re)started, this one included"},
                    "text": {"type": ["string", "null"], "description": "text/plain of the main result"},
                    "results": {"type": "array", "items": reference("ExecutionResultBundle")},
                    "logs": {"type": "object", "required": ["stdout", "stderr"], "properties": {
                        "stdout": {"type": "array", "items": {"type": "string"}},
                        "stderr": {"type": "array", "items": {"type": "string"}}}},
                    "error": {"oneOf": [reference("ExecutionError"), {"type": "null"}]},
                    "duration_ms": {"type": "integer"},
                    "truncated": {"type": "boolean", "description": "Output beyond the per-stream cap was dropped, or a result was shortened"},
                    "outcome": outcome,
                    "restarted": {"type": "boolean", "description": "The interpreter was restarted (crash, or an ignored interrupt): the context's state is gone"}
                }
            }),
        ),
        (
            "Context",
            json!({
                "type": "object", "required": ["id", "language", "cwd", "is_default"],
                "properties": {
                    "id": {"type": "string", "examples": ["default-python", "ctx-0123456789abcdef"]},
                    "language": {"type": "string"}, "cwd": {"type": ["string", "null"]},
                    "is_default": {"type": "boolean", "description": "Created by the server on first use of a language"}
                }
            }),
        ),
        (
            "ContextList",
            json!({"type": "object", "required": ["contexts"], "properties": {"contexts": {"type": "array", "items": reference("Context")}}}),
        ),
        (
            "ContextAction",
            json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "deleted": {"type": "boolean"}, "interrupted": {"type": "boolean"}}}),
        ),
    ]
}

fn events() -> Vec<(&'static str, Value)> {
    vec![(
        "ExecutionEvent",
        json!({
            "description": "One streamed event: a line of application/x-ndjson, or the data of a text/event-stream event named after `type`. The last event is always `end`. A stream silent for 15 s gets a keep-alive: the NDJSON event {\"type\": \"keepalive\"} (skip it), or the SSE comment line `: keep-alive`.",
            "oneOf": [
                {"type": "object", "required": ["type"], "properties": {"type": {"const": "keepalive"}}, "description": "NDJSON only: nothing happened for 15 s"},
                {"type": "object", "required": ["type", "text"], "properties": {"type": {"const": "stdout"}, "text": {"type": "string"}}},
                {"type": "object", "required": ["type", "text"], "properties": {"type": {"const": "stderr"}, "text": {"type": "string"}}},
                {"allOf": [{"type": "object", "required": ["type"], "properties": {"type": {"const": "result"}}}, reference("ExecutionResultBundle")]},
                {"allOf": [{"type": "object", "required": ["type"], "properties": {"type": {"const": "error"}}}, reference("ExecutionError")]},
                {"type": "object", "required": ["type", "execution_id", "context_id", "execution_count", "duration_ms", "outcome", "restarted", "truncated"],
                 "properties": {
                    "type": {"const": "end"}, "execution_id": {"type": "string"}, "context_id": {"type": "string"},
                    "execution_count": {"type": "integer"}, "duration_ms": {"type": "integer"},
                    "outcome": {"type": "string"}, "restarted": {"type": "boolean"}, "truncated": {"type": "boolean"},
                    "reason": {"type": "string", "enum": ["server_shutdown", "sandbox_lost"], "description": "Present when the stream ended before the code did"}
                 }}
            ]
        }),
    )]
}
