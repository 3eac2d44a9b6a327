//! The OpenAPI schemas of files and processes inside a sandbox, split from
//! `openapi.rs` for size.

use serde_json::{json, Value};

fn reference(component: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{component}")})
}

const PATH: &str = "A path inside the sandbox: relative ones start at /home/user, `..` never \
    leaves the sandbox; 1 to 4096 bytes without NUL";

/// Every file schema.
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "FileEntry",
            json!({
                "type": "object",
                "required": ["name", "path", "type", "size", "mode", "modified_at", "symlink_target"],
                "properties": {
                    "name": {"type": "string"},
                    "path": {"type": "string", "description": "Absolute, normalised path inside the sandbox"},
                    "type": {"type": "string", "enum": ["file", "dir", "symlink", "other"], "description": "`other`: a FIFO, socket or device (never read or written)"},
                    "size": {"type": "integer", "minimum": 0},
                    "mode": {"type": "integer", "description": "Permission bits, e.g. 420 (0o644)"},
                    "modified_at": {"type": "string", "format": "date-time"},
                    "symlink_target": {"type": ["string", "null"]}
                }
            }),
        ),
        (
            "FileListing",
            json!({
                "type": "object", "required": ["entries", "truncated"],
                "properties": {
                    "entries": {"type": "array", "items": reference("FileEntry")},
                    "truncated": {"type": "boolean", "description": "Cut at 10 000 entries"}
                }
            }),
        ),
        (
            "FileUpload",
            json!({
                "type": "object", "required": ["path", "size"],
                "properties": {"path": {"type": "string"}, "size": {"type": "integer", "description": "Bytes written"}}
            }),
        ),
        (
            "FileUploads",
            json!({
                "type": "object", "required": ["files"],
                "properties": {"files": {"type": "array", "items": reference("FileUpload"), "description": "The files written, in the order of the parts"}}
            }),
        ),
        (
            "FileDeleted",
            json!({
                "type": "object", "required": ["path", "deleted"],
                "properties": {"path": {"type": "string"}, "deleted": {"const": true}}
            }),
        ),
        (
            "MakeDirRequest",
            json!({
                "type": "object", "additionalProperties": false, "required": ["path"],
                "properties": {
                    "path": {"type": "string", "description": PATH},
                    "parents": {"type": "boolean", "description": "Create missing parents; an existing directory is then fine (default true)"}
                }
            }),
        ),
        (
            "MoveRequest",
            json!({
                "type": "object", "additionalProperties": false, "required": ["from", "to"],
                "properties": {
                    "from": {"type": "string", "description": PATH},
                    "to": {"type": "string", "description": PATH},
                    "overwrite": {"type": "boolean", "description": "Replace an existing `to` (default false)"}
                }
            }),
        ),
    ]
}

/// Every process schema.
pub fn process_schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "StartProcessRequest",
            json!({
                "type": "object", "additionalProperties": false, "required": ["cmd"],
                "properties": {
                    "cmd": {"type": "string", "description": "A shell command (bash -c), or the program when `args` is given", "examples": ["python3 -m http.server 8000"]},
                    "args": {"type": "array", "items": {"type": "string"}, "description": "Arguments: `cmd` then runs as an argv, without a shell"},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Over the sandbox's env"},
                    "cwd": {"type": "string", "description": "Absolute working directory (default /home/user)"},
                    "user": {"type": "string", "enum": ["user"], "description": "Only the sandbox's unprivileged user"},
                    "stdin": {"type": "boolean", "description": "Keep stdin open for POST .../stdin (default false: /dev/null)"},
                    "timeout": {"type": "integer", "minimum": 1, "description": "Seconds; then the process and its children are killed. Absent: it lives as long as the sandbox"},
                    "tag": {"type": "string", "maxLength": 256, "description": "A label shown in listings"},
                    "background": {"type": "boolean", "description": "true (default): answer with the pid at once; false: stream the output"}
                }
            }),
        ),
        (
            "Process",
            json!({
                "type": "object", "required": ["pid", "cmd", "tag", "stdin_open"],
                "properties": {
                    "pid": {"type": "integer"},
                    "cmd": {"type": "array", "items": {"type": "string"}, "description": "The argv (`[\"bash\", \"-c\", cmd]` for a shell command)"},
                    "tag": {"type": ["string", "null"]},
                    "stdin_open": {"type": "boolean"}
                }
            }),
        ),
        (
            "ProcessList",
            json!({"type": "object", "required": ["processes"], "properties": {"processes": {"type": "array", "items": reference("Process")}}}),
        ),
        (
            "ProcessEvent",
            json!({
                "type": "object", "required": ["type"],
                "description": "`start` {pid, dropped_bytes}, `stdout`/`stderr` {data (UTF-8)}, `end` {exit_code, signal, timed_out}",
                "properties": {
                    "type": {"type": "string", "enum": ["start", "stdout", "stderr", "end"]},
                    "pid": {"type": "integer"},
                    "dropped_bytes": {"type": "integer"},
                    "data": {"type": "string"},
                    "exit_code": {"type": ["integer", "null"]},
                    "signal": {"type": ["integer", "null"]},
                    "timed_out": {"type": "boolean"}
                }
            }),
        ),
        (
            "SignalRequest",
            json!({
                "type": "object", "additionalProperties": false, "required": ["signal"],
                "properties": {"signal": {"type": "string", "enum": ["SIGTERM", "SIGKILL", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGSTOP", "SIGCONT"]}}
            }),
        ),
        (
            "StdinWritten",
            json!({"type": "object", "required": ["written"], "properties": {"written": {"type": "integer", "description": "Bytes written"}}}),
        ),
        (
            "StdinClosed",
            json!({"type": "object", "required": ["closed"], "properties": {"closed": {"const": true}}}),
        ),
        (
            "SandboxMetrics",
            json!({
                "type": "object",
                "required": ["cpu_usage_usec", "cpu_limit", "memory_used_bytes", "memory_peak_bytes", "memory_limit_bytes", "disk_used_bytes", "disk_limit_bytes", "pids", "pids_limit"],
                "properties": {
                    "cpu_usage_usec": {"type": "integer", "description": "CPU time used since the sandbox started"},
                    "cpu_limit": {"type": "number", "description": "Cores"},
                    "memory_used_bytes": {"type": "integer"},
                    "memory_peak_bytes": {"type": "integer"},
                    "memory_limit_bytes": {"type": "integer"},
                    "disk_used_bytes": {"type": "integer", "description": "Bytes used under /home/user"},
                    "disk_limit_bytes": {"type": "integer"},
                    "pids": {"type": "integer"},
                    "pids_limit": {"type": "integer"}
                }
            }),
        ),
        (
            "SignalSent",
            json!({"type": "object", "required": ["signal", "sent"], "properties": {"signal": {"type": "string"}, "sent": {"const": true}}}),
        ),
    ]
}
