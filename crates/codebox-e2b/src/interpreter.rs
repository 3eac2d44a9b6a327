//! The code-interpreter surface (E2B port 49999) on top of the core's stateful
//! execution: `POST /execute` streamed as the NDJSON lines the SDKs parse, and
//! `/contexts`.
//!
//! An execution is driven by a task that forwards its events over a bounded
//! channel; the response body turns them into lines, with a `keepalive` line
//! after every 5 s of silence. When the client goes away the body (and the
//! channel's receiver) is dropped: the task sees it at once, drops the core's
//! `Execution`, and that interrupts the code.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use codebox_core::{
    parse_language, ContextView, CoreError, CreateContextRequest, ExecuteRequest, Execution,
    ExecutionEvent,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::E2bError;
use crate::gateway::SandboxOwner;
use crate::results::result_line;
use crate::E2bState;

/// Silence after which a `keepalive` line is sent (upstream's interval).
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Events buffered between the execution and a slow client.
const EVENT_BUFFER: usize = 64;
/// The home of `user`, where contexts start unless told otherwise.
const DEFAULT_CWD: &str = "/home/user";
const LANGUAGES: &str = "python, javascript, typescript, bash";

pub fn router(state: E2bState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/execute", post(execute))
        .route("/contexts", post(create_context).get(list_contexts))
        .route("/contexts/{context}", delete(remove_context))
        .route("/contexts/{context}/restart", post(restart_context))
        .fallback(|| async { E2bError::not_found("Not Found").plain() })
        .with_state(state)
}

/// Fails closed: a handler reached without the gateway's check answers 401.
impl<S: Send + Sync> FromRequestParts<S> for SandboxOwner {
    type Rejection = E2bError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SandboxOwner>()
            .cloned()
            .ok_or_else(|| E2bError::unauthorized("missing sandbox token"))
    }
}

/// A strict JSON body; errors are plain text like upstream's.
struct PlainJson<T>(T);

impl<T: DeserializeOwned + Default> FromRequest<E2bState> for PlainJson<T> {
    type Rejection = E2bError;

    async fn from_request(request: Request, state: &E2bState) -> Result<Self, Self::Rejection> {
        let limit = state.settings().max_body_bytes;
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| {
                E2bError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over {limit} bytes"),
                )
                .plain()
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(PlainJson(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(PlainJson)
            .map_err(|error| {
                E2bError::bad_request(format!("invalid request body: {error}")).plain()
            })
    }
}

fn plain(error: CoreError) -> E2bError {
    E2bError::from(error).plain()
}

async fn health() -> Json<&'static str> {
    Json("OK")
}

/// `POST /execute` as the SDKs send it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    code: String,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<BTreeMap<String, String>>,
}

fn check_language(name: &str) -> Result<String, E2bError> {
    match parse_language(name) {
        Some(language) => Ok(language.as_str().to_owned()),
        None => {
            let shown: String = name.chars().take(32).collect();
            Err(E2bError::bad_request(format!(
                "language {shown:?} is not supported; codebox runs {LANGUAGES}"
            ))
            .plain())
        }
    }
}

async fn execute(
    State(state): State<E2bState>,
    target: SandboxOwner,
    PlainJson(body): PlainJson<ExecuteBody>,
) -> Result<Response, E2bError> {
    let language = match (&body.context_id, &body.language) {
        (Some(_), Some(_)) => {
            return Err(
                E2bError::bad_request("Only one of context_id or language can be provided").plain(),
            )
        }
        (Some(_), None) => None,
        (None, Some(language)) => Some(check_language(language)?),
        // The default context is Python's, whatever the sandbox's template.
        (None, None) => Some("python".to_owned()),
    };
    let context_id = body.context_id.clone();
    let request = ExecuteRequest {
        code: body.code,
        language,
        context_id: body.context_id,
        // E2B has no server-side execution timeout: the client's deadline
        // ends it (a disconnect interrupts); ours is the longest allowed.
        timeout: Some(state.core().settings().limits.max_exec_timeout.as_secs()),
        env_vars: body.env_vars,
    };
    let execution = state
        .core()
        .execute_code(&target.owner, &target.sandbox_id, request)
        .await
        .map_err(|error| match (error, context_id) {
            (CoreError::ContextNotFound, Some(id)) => {
                let shown: String = id.chars().take(64).collect();
                E2bError::not_found(format!("Context {shown} not found")).plain()
            }
            (other, _) => plain(other),
        })?;
    Ok(stream_response(execution))
}

fn stream_response(execution: Execution) -> Response {
    let (sender, receiver) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(drive(execution, sender));
    let lines = futures_util::stream::unfold(Some(Lines::new(receiver)), |lines| async move {
        let mut lines = lines?;
        let (bytes, more) = lines.next_line().await;
        Some((Ok::<_, Infallible>(bytes), more.then_some(lines)))
    });
    let mut response = Response::new(Body::from_stream(lines));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Forwards the execution's events until its end or until the client is gone
/// (then dropping the execution interrupts the code).
async fn drive(mut execution: Execution, sender: mpsc::Sender<ExecutionEvent>) {
    loop {
        let event = tokio::select! {
            event = execution.next_event() => event,
            () = sender.closed() => {
                tracing::info!(execution_id = %execution.id, "e2b client went away: interrupting");
                return;
            }
        };
        let Some(event) = event else { return };
        let end = matches!(event, ExecutionEvent::End(_));
        if sender.send(event).await.is_err() || end {
            return;
        }
    }
}

/// Turns events into NDJSON lines, adding keepalives and the closing lines.
struct Lines {
    receiver: mpsc::Receiver<ExecutionEvent>,
    error_seen: bool,
}

impl Lines {
    fn new(receiver: mpsc::Receiver<ExecutionEvent>) -> Self {
        Self {
            receiver,
            error_seen: false,
        }
    }

    /// The next chunk and whether more follow.
    async fn next_line(&mut self) -> (Bytes, bool) {
        let event = match tokio::time::timeout(KEEPALIVE, self.receiver.recv()).await {
            Err(_) => return (line(&json!({"type": "keepalive"})), true),
            Ok(event) => event,
        };
        match event {
            Some(ExecutionEvent::End(end)) => {
                let mut out = Vec::new();
                if end.reason.is_some() {
                    out.push(error_value(
                        "UnexpectedEndOfExecution",
                        "the sandbox's interpreter went away before the execution finished",
                    ));
                } else if !self.error_seen && end.outcome != "ok" && end.outcome != "error" {
                    out.push(outcome_error(end.outcome));
                }
                out.push(
                    json!({"type": "number_of_executions", "execution_count": end.execution_count}),
                );
                out.push(json!({"type": "end_of_execution"}));
                (lines(&out), false)
            }
            Some(event) => (line(&self.event_value(event)), true),
            // The driver stopped without an end: the stream is broken.
            None => (
                line(&error_value(
                    "UnexpectedEndOfExecution",
                    "the execution ended without a result",
                )),
                false,
            ),
        }
    }

    fn event_value(&mut self, event: ExecutionEvent) -> Value {
        match event {
            ExecutionEvent::Stdout { text } => output("stdout", text),
            ExecutionEvent::Stderr { text } => output("stderr", text),
            ExecutionEvent::Result(result) => result_line(&result),
            ExecutionEvent::Error(error) => {
                self.error_seen = true;
                json!({"type": "error", "name": error.name, "value": error.value, "traceback": error.traceback})
            }
            // Handled by `next_line`.
            ExecutionEvent::End(_) => json!({"type": "end_of_execution"}),
        }
    }
}

/// `timestamp` is Unix epoch nanoseconds, as the Python SDK documents it.
fn output(kind: &str, text: String) -> Value {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    json!({"type": kind, "text": text, "timestamp": i64::try_from(nanos).unwrap_or(i64::MAX)})
}

fn error_value(name: &str, value: &str) -> Value {
    json!({"type": "error", "name": name, "value": value, "traceback": ""})
}

fn outcome_error(outcome: &str) -> Value {
    match outcome {
        "timeout" => error_value(
            "TimeoutError",
            "the execution exceeded the server's execution time limit and was interrupted",
        ),
        "interrupted" => error_value("KeyboardInterrupt", "the execution was interrupted"),
        "crashed" => error_value(
            "InterpreterCrashed",
            "the interpreter crashed; the context was restarted and its state is lost",
        ),
        other => error_value("ExecutionFailed", &format!("the execution ended: {other}")),
    }
}

/// One NDJSON line: serde_json escapes newlines, so it is exactly one line.
fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn lines(values: &[Value]) -> Bytes {
    let mut text = String::new();
    for value in values {
        text.push_str(&value.to_string());
        text.push('\n');
    }
    Bytes::from(text)
}

/// `POST /contexts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextBody {
    language: Option<String>,
    cwd: Option<String>,
}

fn context_json(view: ContextView) -> Value {
    json!({
        "id": view.id,
        "language": view.language,
        "cwd": view.cwd.unwrap_or_else(|| DEFAULT_CWD.to_owned()),
    })
}

async fn create_context(
    State(state): State<E2bState>,
    target: SandboxOwner,
    PlainJson(body): PlainJson<ContextBody>,
) -> Result<Json<Value>, E2bError> {
    let language = match body.language.as_deref() {
        Some(name) => check_language(name)?,
        None => "python".to_owned(),
    };
    let request = CreateContextRequest {
        language: Some(language),
        cwd: Some(body.cwd.unwrap_or_else(|| DEFAULT_CWD.to_owned())),
        env_vars: None,
    };
    let view = state
        .core()
        .create_context(&target.owner, &target.sandbox_id, request)
        .await
        .map_err(plain)?;
    Ok(Json(context_json(view)))
}

async fn list_contexts(
    State(state): State<E2bState>,
    target: SandboxOwner,
) -> Result<Json<Vec<Value>>, E2bError> {
    let views = state
        .core()
        .list_contexts(&target.owner, &target.sandbox_id)
        .await
        .map_err(plain)?;
    Ok(Json(views.into_iter().map(context_json).collect()))
}

fn context_error(error: CoreError, context: &str) -> E2bError {
    match error {
        CoreError::ContextNotFound => {
            let shown: String = context.chars().take(64).collect();
            E2bError::not_found(format!("Context {shown} not found")).plain()
        }
        other => plain(other),
    }
}

async fn remove_context(
    State(state): State<E2bState>,
    target: SandboxOwner,
    Path(context): Path<String>,
) -> Result<Json<Value>, E2bError> {
    state
        .core()
        .destroy_context(&target.owner, &target.sandbox_id, &context)
        .await
        .map_err(|error| context_error(error, &context))?;
    Ok(Json(Value::Null))
}

async fn restart_context(
    State(state): State<E2bState>,
    target: SandboxOwner,
    Path(context): Path<String>,
) -> Result<Json<Value>, E2bError> {
    state
        .core()
        .restart_context(&target.owner, &target.sandbox_id, &context)
        .await
        .map_err(|error| context_error(error, &context))?;
    Ok(Json(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use codebox_core::{EndView, ErrorView};

    fn end(outcome: &'static str, reason: Option<&'static str>) -> ExecutionEvent {
        ExecutionEvent::End(EndView {
            execution_id: "e".into(),
            context_id: "c".into(),
            execution_count: 3,
            duration_ms: 1,
            outcome,
            restarted: false,
            truncated: false,
            reason,
        })
    }

    async fn collect(events: Vec<ExecutionEvent>) -> String {
        let (sender, receiver) = mpsc::channel(16);
        for event in events {
            sender.send(event).await.expect("send");
        }
        drop(sender);
        let mut lines = Lines::new(receiver);
        let mut out = Vec::new();
        loop {
            let (bytes, more) = lines.next_line().await;
            out.extend_from_slice(&bytes);
            if !more {
                break;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test]
    async fn lines_are_ndjson_without_blank_lines() {
        let text = collect(vec![
            ExecutionEvent::Stdout {
                text: "a\n\nb".into(),
            },
            end("ok", None),
        ])
        .await;
        assert!(text.ends_with('\n'));
        let parsed: Vec<Value> = text
            .split_terminator('\n')
            .map(|line| serde_json::from_str(line).expect("every line is JSON"))
            .collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0]["type"], "stdout");
        assert_eq!(parsed[0]["text"], "a\n\nb");
        assert!(parsed[0]["timestamp"].is_i64());
        assert_eq!(
            parsed[1],
            json!({"type": "number_of_executions", "execution_count": 3})
        );
        assert_eq!(parsed[2], json!({"type": "end_of_execution"}));
    }

    #[tokio::test]
    async fn abnormal_ends_become_errors_once() {
        let text = collect(vec![end("timeout", None)]).await;
        assert!(text.starts_with(r#"{"name":"TimeoutError""#) || text.contains("TimeoutError"));
        let with_error = collect(vec![
            ExecutionEvent::Error(ErrorView {
                name: "ValueError".into(),
                value: "x".into(),
                traceback: "tb".into(),
            }),
            end("error", None),
        ])
        .await;
        assert_eq!(with_error.matches("\"type\":\"error\"").count(), 1);
        let lost = collect(vec![end("crashed", Some("sandbox_lost"))]).await;
        assert!(lost.contains("UnexpectedEndOfExecution"));
        let broken = collect(vec![]).await;
        assert!(broken.contains("UnexpectedEndOfExecution"));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_sends_keepalives() {
        let (_sender, receiver) = mpsc::channel::<ExecutionEvent>(1);
        let mut lines = Lines::new(receiver);
        let (bytes, more) = lines.next_line().await;
        assert!(more);
        assert_eq!(&bytes[..], b"{\"type\":\"keepalive\"}\n");
    }
}
