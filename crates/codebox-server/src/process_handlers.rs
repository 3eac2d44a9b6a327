//! Handlers of processes in a sandbox (issue 5): start (background: the pid at
//! once; foreground: its output streamed as NDJSON or server-sent events), list,
//! reattach, stdin, close-stdin and signals.
//!
//! A foreground stream that the client drops only unsubscribes: the process
//! keeps running (it can be listed, reattached to or signalled). On graceful
//! shutdown open streams simply end; the processes die with their sandboxes.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use codebox_core::{ProcessEvent, ProcessOutput, ProcessView, SignalRequest, StartProcessRequest};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::auth::AuthenticatedUser;
use crate::code_handlers::{format_of, Format, EVENT_STREAM, NDJSON};
use crate::error::ApiError;
use crate::handlers::{ok, SandboxPath, Success};
use crate::json::{read_body, ApiJson, BodyLimits};
use crate::state::AppState;

/// The `{id}` and `{pid}` of a process route.
#[derive(Debug, Clone)]
pub struct ProcessPath {
    pub sandbox: String,
    pub pid: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ProcessPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((sandbox, pid)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        tracing::Span::current().record("sandbox_id", sandbox.as_str());
        Ok(Self { sandbox, pid })
    }
}

#[derive(Debug, Serialize)]
pub struct ProcessList {
    processes: Vec<ProcessView>,
}

/// `POST .../processes`.
pub async fn start(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    headers: HeaderMap,
    ApiJson(request): ApiJson<StartProcessRequest>,
) -> Result<Response, ApiError> {
    let (view, output) = state.core.start_process(&user, &id, request).await?;
    match output {
        None => Ok(Success(StatusCode::CREATED, view).into_response()),
        Some(output) => {
            let format = match format_of(&headers) {
                Format::Sse => Format::Sse,
                Format::Json | Format::Ndjson => Format::Ndjson,
            };
            Ok(stream_response(output, format, state.stream_closing()))
        }
    }
}

/// `GET .../processes`.
pub async fn list(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
) -> Result<Success<ProcessList>, ApiError> {
    let processes = state.core.list_processes(&user, &id).await?;
    Ok(ok(ProcessList { processes }))
}

/// `GET .../processes/{pid}/stream`: the output from now on.
pub async fn stream(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    path: ProcessPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let output = state
        .core
        .process_output(&user, &path.sandbox, &path.pid)
        .await?;
    let format = match format_of(&headers) {
        Format::Sse => Format::Sse,
        Format::Json | Format::Ndjson => Format::Ndjson,
    };
    Ok(stream_response(output, format, state.stream_closing()))
}

/// `POST .../processes/{pid}/stdin`: the raw body is written to its stdin.
pub async fn stdin(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    path: ProcessPath,
    request: Request,
) -> Result<Success<serde_json::Value>, ApiError> {
    let limits: BodyLimits = axum::extract::FromRef::from_ref(&state);
    // Bounded in size and in stall time like a JSON body.
    let data = read_body(request.into_body(), limits).await?.to_vec();
    let written = data.len();
    state
        .core
        .process_stdin(&user, &path.sandbox, &path.pid, data)
        .await?;
    Ok(ok(json!({ "written": written })))
}

/// `POST .../processes/{pid}/close-stdin`.
pub async fn close_stdin(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    path: ProcessPath,
) -> Result<Success<serde_json::Value>, ApiError> {
    state
        .core
        .close_process_stdin(&user, &path.sandbox, &path.pid)
        .await?;
    Ok(ok(json!({ "closed": true })))
}

/// `POST .../processes/{pid}/signal`.
pub async fn signal(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    path: ProcessPath,
    ApiJson(request): ApiJson<SignalRequest>,
) -> Result<Success<serde_json::Value>, ApiError> {
    let signal = request.signal.clone();
    state
        .core
        .signal_process(&user, &path.sandbox, &path.pid, request)
        .await?;
    Ok(ok(json!({ "signal": signal, "sent": true })))
}

fn encode(event: &ProcessEvent, format: Format) -> Bytes {
    let json = serde_json::to_string(event).unwrap_or_else(|error| {
        tracing::error!(%error, "a process event did not serialize");
        r#"{"type":"stderr","data":"event lost"}"#.to_owned()
    });
    match format {
        Format::Sse => Bytes::from(format!("event: {}\ndata: {json}\n\n", event.name())),
        Format::Json | Format::Ndjson => Bytes::from(json + "\n"),
    }
}

/// Waits for graceful shutdown; never resolves if the signal is gone.
async fn closing(signal: &mut watch::Receiver<bool>) {
    if signal.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn stream_response(
    output: ProcessOutput,
    format: Format,
    closing_rx: watch::Receiver<bool>,
) -> Response {
    let pid = output.pid;
    let chunks =
        futures_util::stream::unfold(Some((output, closing_rx, format)), |streaming| async move {
            let (mut output, mut closing_rx, format) = streaming?;
            let event = tokio::select! {
                biased;
                event = output.next_event() => event?,
                () = closing(&mut closing_rx) => return None,
            };
            let bytes = encode(&event, format);
            let rest = (!matches!(event, ProcessEvent::End { .. }))
                .then_some((output, closing_rx, format));
            Some((Ok::<_, Infallible>(bytes), rest))
        });
    let content_type = match format {
        Format::Sse => EVENT_STREAM,
        Format::Json | Format::Ndjson => NDJSON,
    };
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert("x-process-id", HeaderValue::from(pid));
    response
}
