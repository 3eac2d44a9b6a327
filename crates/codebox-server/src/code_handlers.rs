//! Handlers of stateful code execution: `POST /execute` answered as one JSON
//! document, as NDJSON (`Accept: application/x-ndjson`, one event per line) or
//! as server-sent events (`Accept: text/event-stream`), and the context routes.
//!
//! A streamed execution sends each event as soon as the sandbox produces it. A
//! client that goes away drops the body stream, which drops the core's
//! `Execution` and so interrupts the code. On graceful shutdown every open stream
//! ends with a final `end` event (`reason: "server_shutdown"`). A stream silent
//! for [`KEEPALIVE_INTERVAL`] gets a keep-alive: the SSE comment `: keep-alive`
//! or the NDJSON event `{"type":"keepalive"}`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use codebox_core::{
    ContextView, CreateContextRequest, ExecuteRequest, Execution, ExecutionEvent, Idle,
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::auth::AuthenticatedUser;
use crate::error::ApiError;
use crate::handlers::{SandboxPath, Success};
use crate::json::ApiJson;
use crate::state::AppState;

pub const NDJSON: &str = "application/x-ndjson";
pub const EVENT_STREAM: &str = "text/event-stream";

/// How the client asked for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    Sse,
}

/// From `Accept`: NDJSON or SSE when listed, JSON otherwise.
pub fn format_of(headers: &HeaderMap) -> Format {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|item| item.split(';').next().unwrap_or("").trim())
        .collect();
    if accept.iter().any(|t| t.eq_ignore_ascii_case(NDJSON)) {
        Format::Ndjson
    } else if accept.iter().any(|t| t.eq_ignore_ascii_case(EVENT_STREAM)) {
        Format::Sse
    } else {
        Format::Json
    }
}

/// One event on the wire. serde_json escapes newlines inside strings, so an
/// event is always exactly one line of NDJSON or one SSE `data:` line.
pub fn encode_event(event: &ExecutionEvent, format: Format) -> Bytes {
    let json = serde_json::to_string(event).unwrap_or_else(|error| {
        tracing::error!(%error, "an execution event did not serialize");
        r#"{"type":"error","name":"InternalError","value":"event lost","traceback":""}"#.to_owned()
    });
    match format {
        Format::Sse => Bytes::from(format!("event: {}\ndata: {json}\n\n", event.name())),
        Format::Json | Format::Ndjson => Bytes::from(json + "\n"),
    }
}

pub async fn execute(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Response, ApiError> {
    let format = format_of(&headers);
    let execution = state.core.execute_code(&user, &id, request).await?;
    tracing::Span::current().record("sandbox_id", id.as_str());
    if format == Format::Json {
        let view = execution.collect().await?;
        return Ok(Success(StatusCode::OK, view).into_response());
    }
    Ok(stream_response(execution, format, state.stream_closing()))
}

/// Waits for graceful shutdown; never resolves if the signal is gone.
async fn closing(signal: &mut watch::Receiver<bool>) {
    if signal.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

struct Streaming {
    execution: Execution,
    closing: watch::Receiver<bool>,
    format: Format,
    keepalive: Duration,
}

/// A silent stream gets a keep-alive this often, so proxies and clients with
/// idle timeouts keep it open while code runs quietly.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The keep-alive of a format: an SSE comment line, or an NDJSON
/// `{"type":"keepalive"}` event (documented; clients skip it).
pub fn keepalive(format: Format) -> Bytes {
    match format {
        Format::Sse => Bytes::from_static(b": keep-alive\n\n"),
        Format::Json | Format::Ndjson => Bytes::from_static(b"{\"type\":\"keepalive\"}\n"),
    }
}

async fn next_chunk(
    mut streaming: Streaming,
) -> Option<(Result<Bytes, Infallible>, Option<Streaming>)> {
    let event = tokio::select! {
        biased;
        event = streaming.execution.next_event_within(Some(streaming.keepalive)) => match event {
            Ok(event) => event?,
            Err(Idle) => return Some((Ok(keepalive(streaming.format)), Some(streaming))),
        },
        () = closing(&mut streaming.closing) => {
            streaming.execution.end_early("server_shutdown", "interrupted").await
        }
    };
    let bytes = encode_event(&event, streaming.format);
    // After `end` the stream is over; dropping the execution then is harmless.
    let rest = (!matches!(event, ExecutionEvent::End(_))).then_some(streaming);
    Some((Ok(bytes), rest))
}

fn stream_response(
    execution: Execution,
    format: Format,
    closing: watch::Receiver<bool>,
) -> Response {
    let execution_id = execution.id.to_string();
    let streaming = Streaming {
        execution,
        closing,
        format,
        keepalive: KEEPALIVE_INTERVAL,
    };
    let chunks = futures_util::stream::unfold(Some(streaming), |streaming| async move {
        next_chunk(streaming?).await
    });
    let content_type = match format {
        Format::Sse => EVENT_STREAM,
        Format::Json | Format::Ndjson => NDJSON,
    };
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies must pass each event on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(value) = HeaderValue::from_str(&execution_id) {
        headers.insert("x-execution-id", value);
    }
    response
}

/// The `{id}` and `{cid}` of a context route.
#[derive(Debug, Clone)]
pub struct ContextPath {
    pub sandbox: String,
    pub context: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ContextPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((sandbox, context)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        if sandbox.parse::<codebox_types::SandboxId>().is_ok() {
            tracing::Span::current().record("sandbox_id", sandbox.as_str());
        }
        Ok(ContextPath { sandbox, context })
    }
}

#[derive(Debug, Serialize)]
pub struct ContextList {
    contexts: Vec<ContextView>,
}

pub async fn create_context(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    ApiJson(request): ApiJson<CreateContextRequest>,
) -> Result<Success<ContextView>, ApiError> {
    let view = state.core.create_context(&user, &id, request).await?;
    Ok(Success(StatusCode::CREATED, view))
}

pub async fn list_contexts(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
) -> Result<Success<ContextList>, ApiError> {
    let contexts = state.core.list_contexts(&user, &id).await?;
    Ok(Success(StatusCode::OK, ContextList { contexts }))
}

pub async fn delete_context(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    path: ContextPath,
) -> Result<Success<serde_json::Value>, ApiError> {
    state
        .core
        .destroy_context(&user, &path.sandbox, &path.context)
        .await?;
    Ok(Success(
        StatusCode::OK,
        json!({"id": path.context, "deleted": true}),
    ))
}

pub async fn restart_context(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    path: ContextPath,
) -> Result<Success<ContextView>, ApiError> {
    let view = state
        .core
        .restart_context(&user, &path.sandbox, &path.context)
        .await?;
    Ok(Success(StatusCode::OK, view))
}

pub async fn interrupt_context(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    path: ContextPath,
) -> Result<Success<serde_json::Value>, ApiError> {
    state
        .core
        .interrupt_context(&user, &path.sandbox, &path.context)
        .await?;
    Ok(Success(
        StatusCode::OK,
        json!({"id": path.context, "interrupted": true}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn accept_selects_the_format() {
        assert_eq!(format_of(&HeaderMap::new()), Format::Json);
        assert_eq!(format_of(&accept("application/json")), Format::Json);
        assert_eq!(format_of(&accept("application/x-ndjson")), Format::Ndjson);
        assert_eq!(
            format_of(&accept("text/event-stream;q=1, */*")),
            Format::Sse
        );
        assert_eq!(format_of(&accept("*/*")), Format::Json);
    }

    #[test]
    fn events_are_one_line_each() {
        let event = ExecutionEvent::Stdout {
            text: "a\nb\n".into(),
        };
        let line = encode_event(&event, Format::Ndjson);
        assert_eq!(&line[..], b"{\"type\":\"stdout\",\"text\":\"a\\nb\\n\"}\n");
        let sse = encode_event(&event, Format::Sse);
        assert!(sse.starts_with(b"event: stdout\ndata: {"));
        assert!(sse.ends_with(b"}\n\n"));
    }
}
