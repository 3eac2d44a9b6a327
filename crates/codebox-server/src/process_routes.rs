//! The route table of processes in a sandbox (issue 5), split from `routes.rs`
//! for size; same shape as the rest of the table.

use codebox_types::ErrorCode;

use crate::openapi::{ParamDoc, ParamLocation, RouteDoc, SuccessBody};
use crate::routes::{authenticated, route, ApiRoute, ID_PARAM};
use crate::{handlers, process_handlers, pty_handlers};

const PID_PARAM: ParamDoc = ParamDoc {
    name: "pid",
    location: ParamLocation::Path,
    description: "The process's pid inside the sandbox, from POST /processes",
    schema_type: "integer",
};
const PID_PARAMS: &[ParamDoc] = &[ID_PARAM, PID_PARAM];

const PROCESS_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
];
const START_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
    ErrorCode::ValidationError,
    ErrorCode::InvalidJson,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
];
const STDIN_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
    ErrorCode::ValidationError,
    ErrorCode::PayloadTooLarge,
];

const START_DESCRIPTION: &str = "Starts a process as `user`: `cmd` runs with `bash -c`, or as \
    an argv with `args`. `background: true` (default) answers 201 with the pid at once and the \
    process keeps running after the request (until it exits, its `timeout`, a signal, or the \
    sandbox ends). `background: false` streams its output as NDJSON (or server-sent events with \
    `Accept: text/event-stream`): `start` (pid), `stdout`, `stderr`, then `end` (exit code or \
    signal); a client that disconnects only stops listening.";
const LIST_DESCRIPTION: &str = "The sandbox's running background processes.";
const STREAM_DESCRIPTION: &str = "Reattaches to a process's output from now on (plus up to 1 \
    MiB buffered while nobody listened; `dropped_bytes` in `start` counts what was lost), as \
    NDJSON or server-sent events, until its `end`.";
const STDIN_DESCRIPTION: &str = "Writes the raw request body to the process's stdin (it must \
    have been started with `stdin: true`).";
const CLOSE_DESCRIPTION: &str = "Closes the process's stdin: it reads end-of-file.";
const SIGNAL_DESCRIPTION: &str = "Sends a signal to the process's group: SIGTERM, SIGKILL, \
    SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGSTOP or SIGCONT.";

const fn query(
    name: &'static str,
    description: &'static str,
    schema_type: &'static str,
) -> ParamDoc {
    ParamDoc {
        name,
        location: ParamLocation::Query,
        description,
        schema_type,
    }
}

const PTY_PARAMS: &[ParamDoc] = &[
    ID_PARAM,
    query("cols", "Columns, 1 to 1000 (default 80)", "integer"),
    query("rows", "Rows, 1 to 1000 (default 24)", "integer"),
    query(
        "cmd",
        "Run `bash -c cmd` on the terminal instead of a login shell (`bash -l`)",
        "string",
    ),
    query(
        "cwd",
        "Absolute working directory (default /home/user)",
        "string",
    ),
    query(
        "timeout",
        "Seconds; the program's tree is killed after it (default: the sandbox's lifetime)",
        "integer",
    ),
];
const PTY_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
    ErrorCode::ValidationError,
];
const PTY_DESCRIPTION: &str = "Opens a terminal: upgrades to a WebSocket (`Connection: Upgrade`, \
    `Upgrade: websocket`) running a login shell (`bash -l`) as `user` on a pseudo-terminal. \
    Query: `cols`, `rows`, `cmd`, `cwd`, `timeout` and `env.NAME=VALUE` (environment over the \
    sandbox's; `TERM=xterm-256color` unless set); anything else is a VALIDATION_ERROR. The \
    terminal is opened before the upgrade, so an unknown, foreign or ended sandbox is an \
    ordinary 404/410 and no socket exists. Client to server: binary frames are keystrokes; a \
    text frame `{\"type\": \"resize\", \"cols\": C, \"rows\": R}` resizes; any other text frame \
    closes with 1008; a message over 1 MiB closes with 1009. Server to client: binary frames \
    of terminal output. When the program exits the server closes with code 1000 and the reason \
    `{\"exit_code\": N, \"signal\": N, \"timed_out\": B}` (JSON); 1011 if the sandbox ended, \
    1001 on server shutdown. Closing the socket kills the shell and its children. Auth is the \
    usual `X-API-Key` or `Authorization: Bearer` header (no credentials in the query string).";

const METRICS_DESCRIPTION: &str = "Resource usage of a running sandbox from its cgroup and \
    workspace: CPU time, memory used and peak, disk used, pids, each with its limit.";

const fn process_route(
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    description: &'static str,
) -> RouteDoc {
    RouteDoc {
        tag: "processes",
        params: PID_PARAMS,
        errors: PROCESS_ERRORS,
        ..authenticated(method, path, operation_id, summary, description)
    }
}

pub(crate) fn process_routes() -> Vec<ApiRoute> {
    const PROCESSES: &str = "/api/v1/sandboxes/{id}/processes";
    let start = process_route(
        "post",
        PROCESSES,
        "start_process",
        "Start a process",
        START_DESCRIPTION,
    );
    let list = process_route(
        "get",
        PROCESSES,
        "list_processes",
        "List processes",
        LIST_DESCRIPTION,
    );
    let stream = process_route(
        "get",
        "/api/v1/sandboxes/{id}/processes/{pid}/stream",
        "stream_process",
        "Reattach to a process's output",
        STREAM_DESCRIPTION,
    );
    let stdin = process_route(
        "post",
        "/api/v1/sandboxes/{id}/processes/{pid}/stdin",
        "write_process_stdin",
        "Write to a process's stdin",
        STDIN_DESCRIPTION,
    );
    let close = process_route(
        "post",
        "/api/v1/sandboxes/{id}/processes/{pid}/close-stdin",
        "close_process_stdin",
        "Close a process's stdin",
        CLOSE_DESCRIPTION,
    );
    let signal = process_route(
        "post",
        "/api/v1/sandboxes/{id}/processes/{pid}/signal",
        "signal_process",
        "Signal a process",
        SIGNAL_DESCRIPTION,
    );
    let metrics = authenticated(
        "get",
        "/api/v1/sandboxes/{id}/metrics",
        "get_sandbox_metrics",
        "Sandbox resource usage",
        METRICS_DESCRIPTION,
    );
    let pty = authenticated(
        "get",
        "/api/v1/sandboxes/{id}/pty",
        "open_pty",
        "Open a terminal (WebSocket)",
        PTY_DESCRIPTION,
    );
    vec![
        route(
            RouteDoc {
                tag: "processes",
                params: PTY_PARAMS,
                success_status: 101,
                success: SuccessBody::Upgrade,
                errors: PTY_ERRORS,
                ..pty
            },
            pty_handlers::open,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                success: SuccessBody::Envelope("SandboxMetrics"),
                errors: PROCESS_ERRORS,
                ..metrics
            },
            handlers::sandbox_metrics,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                request: Some("StartProcessRequest"),
                success_status: 201,
                success: SuccessBody::Streamed("Process", "ProcessEvent"),
                errors: START_ERRORS,
                ..start
            },
            process_handlers::start,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                success: SuccessBody::Envelope("ProcessList"),
                ..list
            },
            process_handlers::list,
        ),
        route(
            RouteDoc {
                success: SuccessBody::Streamed("Process", "ProcessEvent"),
                ..stream
            },
            process_handlers::stream,
        ),
        route(
            RouteDoc {
                request: Some("application/octet-stream"),
                success: SuccessBody::Envelope("StdinWritten"),
                errors: STDIN_ERRORS,
                ..stdin
            },
            process_handlers::stdin,
        ),
        route(
            RouteDoc {
                success: SuccessBody::Envelope("StdinClosed"),
                ..close
            },
            process_handlers::close_stdin,
        ),
        route(
            RouteDoc {
                request: Some("SignalRequest"),
                success: SuccessBody::Envelope("SignalSent"),
                errors: START_ERRORS,
                ..signal
            },
            process_handlers::signal,
        ),
    ]
}
