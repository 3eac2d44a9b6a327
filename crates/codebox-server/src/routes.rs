//! The route table: every operation's method, path, handler and documentation
//! in one place. [`router`] and [`openapi_document`] are both built from it.

use axum::handler::Handler;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use codebox_types::ErrorCode;

use crate::openapi::{ParamDoc, ParamLocation, RouteDoc, SuccessBody};
use crate::state::AppState;
use crate::{auth, code_handlers, cors, file_routes, handlers, middleware, process_routes};

pub const CREATE_SANDBOX_PATH: &str = "/api/v1/sandboxes";
const SANDBOX_PATH: &str = "/api/v1/sandboxes/{id}";

/// One operation: its documentation and its handler.
pub struct ApiRoute {
    pub doc: RouteDoc,
    handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for ApiRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRoute")
            .field("doc", &self.doc)
            .finish_non_exhaustive()
    }
}

pub(crate) fn route<H, T>(doc: RouteDoc, handler: H) -> ApiRoute
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = match doc.method {
        "get" => MethodFilter::GET,
        "post" => MethodFilter::POST,
        "delete" => MethodFilter::DELETE,
        "put" => MethodFilter::PUT,
        other => panic!("route table uses an unsupported method {other:?}"),
    };
    ApiRoute {
        doc,
        handler: on(filter, handler),
    }
}

pub(crate) const ID_PARAM: ParamDoc = ParamDoc {
    name: "id",
    location: ParamLocation::Path,
    description:
        "Sandbox id (26 characters of a-z2-7). Unknown, malformed and other users' ids are all 404.",
    schema_type: "string",
};
const CURSOR_PARAM: ParamDoc = ParamDoc {
    name: "cursor",
    location: ParamLocation::Query,
    description: "The next_cursor of the previous page",
    schema_type: "string",
};
const LIMIT_PARAM: ParamDoc = ParamDoc {
    name: "limit",
    location: ParamLocation::Query,
    description: "Page size, 1 to 200 (default 50)",
    schema_type: "integer",
};

/// Codes of routes that take a sandbox id.
const SANDBOX_ERRORS: &[ErrorCode] = &[ErrorCode::NotFound, ErrorCode::SandboxGone];

pub(crate) const fn authenticated(
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    description: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        operation_id,
        tag: "sandboxes",
        summary,
        description,
        authenticated: true,
        params: &[],
        request: None,
        success_status: 200,
        success: SuccessBody::Envelope("Sandbox"),
        errors: &[],
    }
}

const fn public(
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    description: &'static str,
    success: SuccessBody,
) -> RouteDoc {
    RouteDoc {
        method: "get",
        path,
        operation_id,
        tag: "system",
        summary,
        description,
        authenticated: false,
        params: &[],
        request: None,
        success_status: 200,
        success,
        errors: &[],
    }
}

/// Every operation of the API.
pub fn table() -> Vec<ApiRoute> {
    let mut routes = sandbox_routes();
    routes.extend(code_routes());
    routes.extend(file_routes::file_routes());
    routes.extend(process_routes::process_routes());
    routes.extend(system_routes());
    routes
}

const CREATE_DESCRIPTION: &str = "Creates and starts a sandbox. Only `runtime` is required; \
    an unknown runtime is a VALIDATION_ERROR listing the available ones. The sandbox lives \
    `timeout` seconds (default 300). At most MAX_SANDBOXES_PER_USER live sandboxes per user \
    (RESOURCE_LIMIT_ERROR beyond).";
const LIST_DESCRIPTION: &str =
    "Newest first, cursor-paginated. Unknown query parameters are a VALIDATION_ERROR.";
const GET_DESCRIPTION: &str =
    "A live sandbox's view. An ended sandbox answers SANDBOX_GONE (410) with its `reason`.";
const DELETE_DESCRIPTION: &str = "Kills everything in the sandbox and frees its resources. \
    Answers 200 with the final view (status `terminated`, `termination_reason` `killed`). \
    Deleting an ended sandbox answers SANDBOX_GONE.";
const TIMEOUT_DESCRIPTION: &str = "The sandbox now expires `timeout` seconds from now, never \
    beyond its hard maximum lifetime (24 h by default).";
const COMMAND_DESCRIPTION: &str = "Runs `bash -c cmd` as the unprivileged `user` and waits for \
    it. A command that exceeds its `timeout` is killed (whole process tree) and answers 200 with \
    `timed_out: true`. Output beyond the per-stream cap is dropped and `truncated` is set.";
const EXECUTIONS_DESCRIPTION: &str = "Newest first, cursor-paginated; also for ended sandboxes. \
    Code and output are not stored.";
const RUNTIMES_DESCRIPTION: &str =
    "The runtimes this server offers, with their exact versions and aliases.";

const CREATE_ERRORS: &[ErrorCode] = &[
    ErrorCode::ValidationError,
    ErrorCode::InvalidJson,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::ResourceLimitError,
];
const TIMEOUT_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::ValidationError,
    ErrorCode::InvalidJson,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
];
const COMMAND_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
    ErrorCode::ValidationError,
    ErrorCode::InvalidJson,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::Timeout,
];
const LIST_PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "status",
        location: ParamLocation::Query,
        description: "creating, running, terminated or failed",
        schema_type: "string",
    },
    ParamDoc {
        name: "metadata.KEY",
        location: ParamLocation::Query,
        description: "Only sandboxes whose metadata KEY equals the value; repeatable",
        schema_type: "string",
    },
    CURSOR_PARAM,
    LIMIT_PARAM,
];

fn sandbox_routes() -> Vec<ApiRoute> {
    let create = authenticated(
        "post",
        CREATE_SANDBOX_PATH,
        "create_sandbox",
        "Create a sandbox",
        CREATE_DESCRIPTION,
    );
    let list = authenticated(
        "get",
        CREATE_SANDBOX_PATH,
        "list_sandboxes",
        "List your sandboxes",
        LIST_DESCRIPTION,
    );
    let get = authenticated(
        "get",
        SANDBOX_PATH,
        "get_sandbox",
        "Get a sandbox",
        GET_DESCRIPTION,
    );
    let delete = authenticated(
        "delete",
        SANDBOX_PATH,
        "delete_sandbox",
        "Delete a sandbox",
        DELETE_DESCRIPTION,
    );
    let timeout = authenticated(
        "post",
        "/api/v1/sandboxes/{id}/timeout",
        "set_sandbox_timeout",
        "Extend a sandbox's lifetime",
        TIMEOUT_DESCRIPTION,
    );
    let command = authenticated(
        "post",
        "/api/v1/sandboxes/{id}/commands",
        "run_command",
        "Run a command",
        COMMAND_DESCRIPTION,
    );
    let executions = authenticated(
        "get",
        "/api/v1/sandboxes/{id}/executions",
        "list_executions",
        "List a sandbox's executions",
        EXECUTIONS_DESCRIPTION,
    );
    let runtimes = authenticated(
        "get",
        "/api/v1/runtimes",
        "list_runtimes",
        "List runtimes",
        RUNTIMES_DESCRIPTION,
    );
    vec![
        route(
            RouteDoc {
                request: Some("CreateSandboxRequest"),
                success_status: 201,
                errors: CREATE_ERRORS,
                ..create
            },
            handlers::create_sandbox,
        ),
        route(
            RouteDoc {
                params: LIST_PARAMS,
                success: SuccessBody::Envelope("SandboxList"),
                errors: &[ErrorCode::ValidationError],
                ..list
            },
            handlers::list_sandboxes,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                errors: SANDBOX_ERRORS,
                ..get
            },
            handlers::get_sandbox,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                errors: SANDBOX_ERRORS,
                ..delete
            },
            handlers::delete_sandbox,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                request: Some("SetTimeoutRequest"),
                errors: TIMEOUT_ERRORS,
                ..timeout
            },
            handlers::set_timeout,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                request: Some("RunCommandRequest"),
                success: SuccessBody::Envelope("CommandResult"),
                errors: COMMAND_ERRORS,
                ..command
            },
            handlers::run_command,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM, CURSOR_PARAM, LIMIT_PARAM],
                success: SuccessBody::Envelope("ExecutionList"),
                errors: &[ErrorCode::NotFound, ErrorCode::ValidationError],
                ..executions
            },
            handlers::list_executions,
        ),
        route(
            RouteDoc {
                tag: "runtimes",
                success: SuccessBody::Envelope("RuntimeList"),
                ..runtimes
            },
            handlers::list_runtimes,
        ),
    ]
}

const CID_PARAM: ParamDoc = ParamDoc {
    name: "cid",
    location: ParamLocation::Path,
    description: "Context id, from POST /contexts or `default-<language>`",
    schema_type: "string",
};
const CONTEXT_PARAMS: &[ParamDoc] = &[ID_PARAM, CID_PARAM];

const EXECUTE_DESCRIPTION: &str = "Runs code in a context whose state persists between calls \
    (like a notebook kernel) and answers its output, rich results (MIME bundles) and error. \
    Without `context_id` the language's default context is used, created on first use. \
    Executions of one context run one at a time in arrival order; contexts run in parallel. \
    With `Accept: application/x-ndjson` (one JSON event per line) or `Accept: \
    text/event-stream` the events `stdout`, `stderr`, `result`, `error` stream while the code \
    runs, and a final `end` carries `execution_count`, `duration_ms` and the `outcome`; a \
    client that disconnects interrupts the code. On timeout the code is interrupted and the \
    context's state survives. Every execution is recorded (GET /executions).";
const CREATE_CONTEXT_DESCRIPTION: &str = "Starts a new interpreter (python, javascript, \
    typescript or bash) and returns once it is ready. Contexts do not share state.";
const LIST_CONTEXTS_DESCRIPTION: &str = "The sandbox's live contexts, default ones included.";
const DELETE_CONTEXT_DESCRIPTION: &str =
    "Kills the context's interpreter (running and queued executions end `interrupted`).";
const RESTART_CONTEXT_DESCRIPTION: &str =
    "Replaces the context's interpreter with a fresh one: its state is gone.";
const INTERRUPT_CONTEXT_DESCRIPTION: &str = "Interrupts the running execution of the context \
    (KeyboardInterrupt in Python, SIGINT otherwise); the context's state survives.";

const EXECUTE_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
    ErrorCode::ValidationError,
    ErrorCode::InvalidJson,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::Timeout,
];
const CONTEXT_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
];

const fn code_route(
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    description: &'static str,
) -> RouteDoc {
    RouteDoc {
        tag: "code",
        params: &[ID_PARAM],
        errors: CONTEXT_ERRORS,
        ..authenticated(method, path, operation_id, summary, description)
    }
}

fn code_routes() -> Vec<ApiRoute> {
    const CONTEXTS: &str = "/api/v1/sandboxes/{id}/contexts";
    const CONTEXT: &str = "/api/v1/sandboxes/{id}/contexts/{cid}";
    let execute = code_route(
        "post",
        "/api/v1/sandboxes/{id}/execute",
        "execute_code",
        "Execute code",
        EXECUTE_DESCRIPTION,
    );
    let create = code_route(
        "post",
        CONTEXTS,
        "create_context",
        "Create a context",
        CREATE_CONTEXT_DESCRIPTION,
    );
    let list = code_route(
        "get",
        CONTEXTS,
        "list_contexts",
        "List contexts",
        LIST_CONTEXTS_DESCRIPTION,
    );
    let delete = code_route(
        "delete",
        CONTEXT,
        "delete_context",
        "Delete a context",
        DELETE_CONTEXT_DESCRIPTION,
    );
    let restart = code_route(
        "post",
        "/api/v1/sandboxes/{id}/contexts/{cid}/restart",
        "restart_context",
        "Restart a context",
        RESTART_CONTEXT_DESCRIPTION,
    );
    let interrupt = code_route(
        "post",
        "/api/v1/sandboxes/{id}/contexts/{cid}/interrupt",
        "interrupt_context",
        "Interrupt a context",
        INTERRUPT_CONTEXT_DESCRIPTION,
    );
    vec![
        route(
            RouteDoc {
                request: Some("ExecuteRequest"),
                success: SuccessBody::Streamed("CodeExecution", "ExecutionEvent"),
                errors: EXECUTE_ERRORS,
                ..execute
            },
            code_handlers::execute,
        ),
        route(
            RouteDoc {
                request: Some("CreateContextRequest"),
                success_status: 201,
                success: SuccessBody::Envelope("Context"),
                errors: EXECUTE_ERRORS,
                ..create
            },
            code_handlers::create_context,
        ),
        route(
            RouteDoc {
                success: SuccessBody::Envelope("ContextList"),
                ..list
            },
            code_handlers::list_contexts,
        ),
        route(
            RouteDoc {
                params: CONTEXT_PARAMS,
                success: SuccessBody::Envelope("ContextAction"),
                ..delete
            },
            code_handlers::delete_context,
        ),
        route(
            RouteDoc {
                params: CONTEXT_PARAMS,
                success: SuccessBody::Envelope("Context"),
                ..restart
            },
            code_handlers::restart_context,
        ),
        route(
            RouteDoc {
                params: CONTEXT_PARAMS,
                success: SuccessBody::Envelope("ContextAction"),
                ..interrupt
            },
            code_handlers::interrupt_context,
        ),
    ]
}

const READY_DESCRIPTION: &str = "Checks the database, Redis (when configured) and the \
    runtime. 503 with Retry-After and the same report under `data` when any check fails.";
const METRICS_DESCRIPTION: &str = "The text exposition format (OpenMetrics). 404 when \
    monitoring is disabled or served on a separate port.";
const HEALTH_DESCRIPTION: &str = "200 while the process serves requests; checks no dependency.";
const DOCS_DESCRIPTION: &str = "A self-contained HTML rendering of this document (no scripts).";

fn system_routes() -> Vec<ApiRoute> {
    let health = public(
        "/health",
        "health",
        "Liveness",
        HEALTH_DESCRIPTION,
        SuccessBody::Envelope("Health"),
    );
    let ready = public(
        "/ready",
        "ready",
        "Readiness",
        READY_DESCRIPTION,
        SuccessBody::Envelope("ReadyReport"),
    );
    let metrics = public(
        "/metrics",
        "metrics",
        "Prometheus metrics",
        METRICS_DESCRIPTION,
        SuccessBody::Text("application/openmetrics-text"),
    );
    let openapi = public(
        "/openapi.json",
        "openapi",
        "This OpenAPI document",
        "OpenAPI 3.1.",
        SuccessBody::Raw("OpenApiDocument"),
    );
    let docs = public(
        "/docs",
        "docs",
        "API documentation",
        DOCS_DESCRIPTION,
        SuccessBody::Text("text/html"),
    );
    vec![
        route(health, handlers::health),
        route(
            RouteDoc {
                errors: &[ErrorCode::ServiceUnavailable],
                ..ready
            },
            handlers::ready,
        ),
        route(
            RouteDoc {
                errors: &[ErrorCode::NotFound],
                ..metrics
            },
            handlers::metrics,
        ),
        route(openapi, handlers::openapi),
        route(docs, handlers::docs),
    ]
}

/// Whether a route template is public (no credentials, no rate limit).
pub fn is_public_path(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/ready" | "/metrics" | "/openapi.json" | "/docs"
    )
}

/// The documentation of every route.
pub fn route_docs() -> Vec<RouteDoc> {
    table().into_iter().map(|route| route.doc).collect()
}

/// The OpenAPI document of this server.
pub fn openapi_document() -> serde_json::Value {
    crate::openapi::document(&route_docs())
}

/// The whole API: routes, fallback and middleware, outermost last:
/// observe (request id, span, metrics, envelope) > catch panic > request
/// timeout > CORS (when configured) > authentication and rate limits.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for route in table() {
        router = router.route(route.doc.path, route.handler);
    }
    let mut router = router
        .fallback(middleware::not_found)
        .layer(from_fn_with_state(state.clone(), auth::authenticate));
    if state.cors.is_enabled() {
        router = router.layer(from_fn_with_state(state.clone(), cors::cors));
    }
    router
        .layer(from_fn_with_state(
            state.clone(),
            middleware::request_timeout,
        ))
        .layer(from_fn(middleware::catch_panic))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}

/// `/metrics` alone, for a separate `monitoring.metrics_port`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(state): axum::extract::State<AppState>| async move {
                    handlers::metrics_text(&state)
                },
            ),
        )
        .fallback(middleware::not_found)
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_routes_are_exactly_the_unauthenticated_ones() {
        for doc in route_docs() {
            assert_eq!(is_public_path(doc.path), !doc.authenticated, "{}", doc.path);
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut ids: Vec<&str> = route_docs().iter().map(|doc| doc.operation_id).collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count);
    }
}
