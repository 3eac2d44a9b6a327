//! The OpenAPI 3.1 document, built from the route table ([`crate::routes`]) and
//! hand-written schemas. The router and the document come from the same table,
//! so an operation cannot exist in one and not the other; the checked-in copy
//! at `openapi/openapi.json` is compared with this output by a test.

use codebox_types::ErrorCode;
use serde_json::{json, Map, Value};

/// Where an operation's parameter lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamLocation {
    Path,
    Query,
}

/// One documented parameter.
#[derive(Debug, Clone, Copy)]
pub struct ParamDoc {
    pub name: &'static str,
    pub location: ParamLocation,
    pub description: &'static str,
    /// A JSON schema type: `string` or `integer`.
    pub schema_type: &'static str,
}

/// What a successful response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessBody {
    /// `{"success": true, "data": <component>}`.
    Envelope(&'static str),
    /// A bare component (the OpenAPI document itself).
    Raw(&'static str),
    /// A non-JSON body of this media type.
    Text(&'static str),
    /// The envelope with this component as JSON, or a stream of events of the
    /// second component as NDJSON or server-sent events (chosen by `Accept`).
    Streamed(&'static str, &'static str),
    /// `101 Switching Protocols`: the connection becomes a WebSocket (the
    /// operation's description says what travels on it).
    Upgrade,
}

/// Everything the document says about one operation.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// Lowercase HTTP method, as OpenAPI spells it.
    pub method: &'static str,
    /// axum's path syntax, which is OpenAPI's: `/api/v1/sandboxes/{id}`.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    pub authenticated: bool,
    pub params: &'static [ParamDoc],
    /// Component name of the JSON body, if the operation takes one; a media type
    /// (`application/octet-stream`) for a raw body.
    pub request: Option<&'static str>,
    pub success_status: u16,
    pub success: SuccessBody,
    /// Codes this operation documents beyond the ones every route can return.
    pub errors: &'static [ErrorCode],
}

/// Codes any authenticated route can return.
const AUTHENTICATED_ERRORS: [ErrorCode; 4] = [
    ErrorCode::Unauthorized,
    ErrorCode::RateLimited,
    ErrorCode::ServiceUnavailable,
    ErrorCode::InternalError,
];

/// The whole document for `routes`.
pub fn document(routes: &[RouteDoc]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(route.method.to_owned(), operation(route));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "codebox API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A self-hosted Code Interpreter: create isolated Linux sandboxes and run commands in them. Every JSON response is an envelope: {\"success\": true, \"data\": ...} or {\"success\": false, \"error\": {...}}; the error codes are listed in docs/api-errors.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "servers": [{"url": "http://127.0.0.1:3000"}],
        "tags": [
            {"name": "sandboxes", "description": "Sandbox lifecycle and commands"},
            {"name": "code", "description": "Stateful code execution in contexts (python, javascript, typescript, bash)"},
            {"name": "files", "description": "Files inside a sandbox: streamed download and upload, list, stat, mkdir, move, delete"},
            {"name": "processes", "description": "Background and streamed processes: start, list, reattach, stdin, signals"},
            {"name": "runtimes", "description": "What sandboxes can be created from"},
            {"name": "system", "description": "Health, readiness, metrics and documentation"}
        ],
        "paths": Value::Object(paths),
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": schemas(),
            "headers": {
                "RetryAfter": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}},
                "RequestId": {"description": "The request id, also in error bodies.", "schema": {"type": "string"}}
            }
        }
    })
}

fn operation(route: &RouteDoc) -> Value {
    let mut operation = json!({
        "operationId": route.operation_id,
        "tags": [route.tag],
        "summary": route.summary,
        "description": route.description,
        "responses": responses(route),
    });
    let object = operation
        .as_object_mut()
        .expect("json! of an object literal is an object");
    if !route.params.is_empty() {
        object.insert(
            "parameters".into(),
            route.params.iter().map(parameter).collect(),
        );
    }
    if let Some(component) = route.request {
        // A media type instead of a component: a raw (binary) body.
        let content = if component == "multipart/form-data" {
            json!({component: {"schema": {
                "type": "object",
                "description": "One part per file; the part's filename (or field name) is its destination path",
                "additionalProperties": {"type": "string", "format": "binary"}
            }}})
        } else if component.contains('/') {
            json!({component: {"schema": {"type": "string", "format": "binary"}}})
        } else {
            json!({"application/json": {"schema": reference(component)}})
        };
        object.insert(
            "requestBody".into(),
            json!({"required": true, "content": content}),
        );
    }
    let security = if route.authenticated {
        json!([{"apiKey": []}, {"bearer": []}])
    } else {
        json!([])
    };
    object.insert("security".into(), security);
    operation
}

fn parameter(param: &ParamDoc) -> Value {
    let location = match param.location {
        ParamLocation::Path => "path",
        ParamLocation::Query => "query",
    };
    json!({
        "name": param.name,
        "in": location,
        "required": param.location == ParamLocation::Path,
        "description": param.description,
        "schema": {"type": param.schema_type}
    })
}

fn responses(route: &RouteDoc) -> Value {
    let mut responses = Map::new();
    responses.insert(route.success_status.to_string(), success_response(route));
    let mut codes: Vec<ErrorCode> = route.errors.to_vec();
    if route.authenticated {
        codes.extend(AUTHENTICATED_ERRORS);
    }
    for code in ErrorCode::ALL {
        if !codes.contains(&code) {
            continue;
        }
        let status = code.http_status().to_string();
        let entry = responses.entry(status).or_insert_with(|| {
            json!({"description": "", "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
                   "content": {"application/json": {"schema": reference("ErrorEnvelope")}}})
        });
        append_code(entry, code);
    }
    Value::Object(responses)
}

/// Adds `code` to a shared error response's description (several codes share
/// one status) and `Retry-After` where the code carries it.
fn append_code(entry: &mut Value, code: ErrorCode) {
    let description = entry["description"].as_str().unwrap_or_default();
    let joined = if description.is_empty() {
        code.as_str().to_owned()
    } else {
        format!("{description}, {}", code.as_str())
    };
    entry["description"] = Value::String(joined);
    if matches!(code, ErrorCode::RateLimited | ErrorCode::ServiceUnavailable) {
        entry["headers"]["Retry-After"] = json!({"$ref": "#/components/headers/RetryAfter"});
    }
}

fn success_response(route: &RouteDoc) -> Value {
    let content = match route.success {
        SuccessBody::Upgrade => {
            return json!({
                "description": "Switching Protocols: the connection is now a WebSocket",
                "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}}
            })
        }
        SuccessBody::Envelope(component) => json!({"application/json": {"schema": {
            "type": "object",
            "required": ["success", "data"],
            "properties": {"success": {"const": true}, "data": reference(component)}
        }}}),
        SuccessBody::Raw(component) => {
            json!({"application/json": {"schema": reference(component)}})
        }
        SuccessBody::Text(media_type) => json!({media_type: {"schema": {"type": "string"}}}),
        SuccessBody::Streamed(component, event) => json!({
            "application/json": {"schema": {
                "type": "object",
                "required": ["success", "data"],
                "properties": {"success": {"const": true}, "data": reference(component)}
            }},
            "application/x-ndjson": {"schema": reference(event)},
            "text/event-stream": {"schema": {"type": "string", "description": format!(
                "`event: <type>` and `data: <{event} as JSON>` per event")}}
        }),
    };
    json!({
        "description": "Success",
        "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
        "content": content
    })
}

fn reference(component: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{component}")})
}

fn string_map(description: &str) -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}, "description": description})
}

fn schemas() -> Value {
    let mut schemas = Map::new();
    for (name, schema) in request_schemas()
        .into_iter()
        .chain(view_schemas())
        .chain(crate::openapi_code::schemas())
        .chain(crate::openapi_files::schemas())
        .chain(crate::openapi_files::process_schemas())
        .chain(system_schemas())
    {
        schemas.insert(name.to_owned(), schema);
    }
    Value::Object(schemas)
}

fn request_schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Resources",
            json!({
                "type": "object", "additionalProperties": false, "required": ["cpu", "memory"],
                "properties": {
                    "cpu": {"type": "number", "minimum": 0.1, "maximum": 16, "description": "CPU cores"},
                    "memory": {"type": "integer", "minimum": 128, "maximum": 32768, "description": "Memory in MiB (no swap)"}
                }
            }),
        ),
        (
            "CreateSandboxRequest",
            json!({
                "type": "object", "additionalProperties": false, "required": ["runtime"],
                "properties": {
                    "runtime": {"type": "string", "description": "A runtime name or alias from GET /api/v1/runtimes", "examples": ["python3"]},
                    "resources": reference("Resources"),
                    "timeout": {"type": "integer", "minimum": 1, "description": "Lifetime in seconds (default 300, at most 24 h)"},
                    "metadata": string_map("Free-form labels, filterable in listings (bounded count and lengths)"),
                    "env_vars": string_map("Environment of every command in the sandbox")
                }
            }),
        ),
        (
            "SetTimeoutRequest",
            json!({
                "type": "object", "additionalProperties": false, "required": ["timeout"],
                "properties": {"timeout": {"type": "integer", "minimum": 1, "description": "New remaining lifetime in seconds, from now"}}
            }),
        ),
        (
            "RunCommandRequest",
            json!({
                "type": "object", "additionalProperties": false, "required": ["cmd"],
                "properties": {
                    "cmd": {"type": "string", "description": "Run as `bash -c cmd` by the unprivileged user; at most MAX_CODE_SIZE bytes"},
                    "timeout": {"type": "integer", "minimum": 1, "description": "Seconds (default 30, at most 300)"},
                    "env": string_map("Extra environment for this command"),
                    "cwd": {"type": "string", "description": "Working directory (default /home/user)"},
                    "stdin": {"type": "string", "description": "Written to the command's standard input, then closed"}
                }
            }),
        ),
    ]
}

fn view_schemas() -> Vec<(&'static str, Value)> {
    let timestamp = json!({"type": "string", "format": "date-time"});
    let statuses = json!(["creating", "running", "terminated", "failed"]);
    let reasons = json!([
        "killed",
        "timeout",
        "oom",
        "server_shutdown",
        "server_restart",
        "agent_lost",
        "node_lost",
        "create_failed"
    ]);
    vec![
        (
            "Sandbox",
            json!({
                "type": "object",
                "required": ["id", "status", "runtime", "resources", "isolation", "metadata", "created_at", "expires_at"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z2-7]{26}$"},
                    "status": {"type": "string", "enum": statuses},
                    "runtime": {"type": "string"},
                    "resources": reference("Resources"),
                    "isolation": {"type": "string", "examples": ["namespaces"]},
                    "metadata": string_map("Labels given at creation"),
                    "created_at": timestamp,
                    "expires_at": timestamp,
                    "ended_at": timestamp,
                    "termination_reason": {"type": "string", "enum": reasons}
                }
            }),
        ),
        (
            "SandboxList",
            json!({
                "type": "object", "required": ["sandboxes", "next_cursor"],
                "properties": {
                    "sandboxes": {"type": "array", "items": reference("Sandbox")},
                    "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last"}
                }
            }),
        ),
        (
            "CommandResult",
            json!({
                "type": "object",
                "required": ["stdout", "stderr", "exit_code", "timed_out", "truncated", "duration_ms"],
                "properties": {
                    "stdout": {"type": "string"}, "stderr": {"type": "string"},
                    "exit_code": {"type": "integer", "description": "The exit status; 128 + signal when killed by a signal (as shells report)"},
                    "timed_out": {"type": "boolean"},
                    "truncated": {"type": "boolean", "description": "Output beyond the per-stream cap was dropped"},
                    "duration_ms": {"type": "integer"}
                }
            }),
        ),
        (
            "Execution",
            json!({
                "type": "object",
                "required": ["id", "sandbox_id", "context_id", "language", "status", "exit_code", "execution_count", "duration_ms", "code_size", "created_at"],
                "properties": {
                    "id": {"type": "string"}, "sandbox_id": {"type": "string"},
                    "context_id": {"type": ["string", "null"], "description": "The context of a code execution; null for a command"},
                    "language": {"type": "string", "examples": ["command", "python"]},
                    "status": {"type": "string", "examples": ["succeeded", "failed", "timed_out", "cancelled", "crashed"]},
                    "exit_code": {"type": ["integer", "null"]},
                    "execution_count": {"type": ["integer", "null"], "description": "The context's counter for a code execution; null for a command"},
                    "duration_ms": {"type": "integer"},
                    "code_size": {"type": "integer"}, "created_at": timestamp,
                    "code": {"type": "string", "description": "The code (the command for a command); only when the server keeps it (retention.store_code)"},
                    "output": {
                        "type": "object",
                        "description": "The output, at most 64 KiB of text together; only when the server keeps it (retention.store_code)",
                        "required": ["stdout", "stderr", "truncated"],
                        "properties": {
                            "stdout": {"type": "string"},
                            "stderr": {"type": "string"},
                            "text": {"type": "string", "description": "The main result's text/plain"},
                            "error": {"type": "object", "required": ["name", "value"], "properties": {"name": {"type": "string"}, "value": {"type": "string"}}},
                            "truncated": {"type": "boolean"}
                        }
                    }
                }
            }),
        ),
        (
            "ExecutionList",
            json!({
                "type": "object", "required": ["executions", "next_cursor"],
                "properties": {
                    "executions": {"type": "array", "items": reference("Execution")},
                    "next_cursor": {"type": ["string", "null"]}
                }
            }),
        ),
        (
            "Runtime",
            json!({
                "type": "object", "required": ["name", "language", "version", "aliases"],
                "properties": {
                    "name": {"type": "string", "examples": ["python3"]},
                    "language": {"type": "string", "examples": ["python"]},
                    "version": {"type": "string", "examples": ["3.11.2"]},
                    "aliases": {"type": "array", "items": {"type": "string"}}
                }
            }),
        ),
        (
            "RuntimeList",
            json!({
                "type": "object", "required": ["runtimes"],
                "properties": {"runtimes": {"type": "array", "items": reference("Runtime")}}
            }),
        ),
    ]
}

fn system_schemas() -> Vec<(&'static str, Value)> {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    vec![
        (
            "Health",
            json!({
                "type": "object", "required": ["status"],
                "properties": {"status": {"const": "ok"}}
            }),
        ),
        (
            "ReadyReport",
            json!({
                "type": "object", "required": ["ready", "checks"],
                "properties": {
                    "ready": {"type": "boolean"},
                    "checks": {"type": "array", "items": {
                        "type": "object", "required": ["name", "ok"],
                        "properties": {
                            "name": {"type": "string", "examples": ["database", "redis", "runtime"]},
                            "ok": {"type": "boolean"},
                            "error": {"type": "string", "description": "Why the check failed"}
                        }
                    }}
                }
            }),
        ),
        (
            "OpenApiDocument",
            json!({"type": "object", "description": "This document"}),
        ),
        (
            "ErrorEnvelope",
            json!({
                "type": "object", "required": ["success", "error"],
                "properties": {
                    "success": {"const": false},
                    "data": {"description": "Only on GET /ready: the readiness report (ReadyReport)"},
                    "error": {
                        "type": "object", "required": ["code", "message", "request_id"],
                        "properties": {
                            "code": {"type": "string", "enum": codes},
                            "message": {"type": "string", "description": "Human-readable; never contains internals"},
                            "field": {"type": "string", "description": "The offending field (VALIDATION_ERROR), dotted: resources.cpu"},
                            "reason": {"type": "string", "description": "Why the sandbox ended (SANDBOX_GONE)"},
                            "request_id": {"type": ["string", "null"]}
                        }
                    }
                }
            }),
        ),
    ]
}

/// Every `(METHOD, path)` the document describes, uppercase methods.
pub fn operations(document: &Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            for method in item.as_object().into_iter().flat_map(|item| item.keys()) {
                operations.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    operations.sort();
    operations
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: RouteDoc = RouteDoc {
        method: "post",
        path: "/api/v1/things/{id}",
        operation_id: "create_thing",
        tag: "sandboxes",
        summary: "s",
        description: "d",
        authenticated: true,
        params: &[ParamDoc {
            name: "id",
            location: ParamLocation::Path,
            description: "id",
            schema_type: "string",
        }],
        request: Some("SetTimeoutRequest"),
        success_status: 201,
        success: SuccessBody::Envelope("Sandbox"),
        errors: &[ErrorCode::ValidationError, ErrorCode::InvalidJson],
    };

    #[test]
    fn codes_sharing_a_status_share_one_response() {
        let document = document(&[ROUTE]);
        let operation = &document["paths"]["/api/v1/things/{id}"]["post"];
        assert_eq!(
            operation["responses"]["400"]["description"],
            "VALIDATION_ERROR, INVALID_JSON"
        );
        assert!(operation["responses"]["429"]["headers"]["Retry-After"].is_object());
        assert_eq!(operation["parameters"][0]["required"], true);
    }

    #[test]
    fn every_reference_resolves() {
        let document = document(&[ROUTE]);
        let text = document.to_string();
        for part in text.split("\"$ref\":\"").skip(1) {
            let target = part.split('"').next().expect("a reference string");
            let pointer = target.trim_start_matches('#');
            assert!(document.pointer(pointer).is_some(), "dangling {target}");
        }
    }

    #[test]
    fn operations_lists_method_and_path() {
        let document = document(&[ROUTE]);
        assert_eq!(
            operations(&document),
            vec![("POST".to_owned(), "/api/v1/things/{id}".to_owned())]
        );
    }
}
