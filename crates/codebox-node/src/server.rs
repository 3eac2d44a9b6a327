//! The node's internal API: the [`Runtime`] of this node over HTTP/1, for the
//! API replicas' [`crate::RemoteRuntime`]s.
//!
//! Four routes: `POST /v1/call` (unary methods, JSON in and out),
//! `POST /v1/stream` (exec, code execution, watch, process output: NDJSON,
//! one [`Line`] per event), `POST /v1/read` (a file's bytes, size and length
//! in headers) and `PUT /v1/write` (the request body is the file). Every
//! request needs the shared secret ([`NodeSecret`]); anything else is 401.
//! Errors are an [`ErrorWire`] body with a status by kind.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use bytes::Bytes;
use codebox_runtime::{Runtime, RuntimeError, WriteOptions};
use futures_util::{Stream, StreamExt as _};
use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};

use crate::auth::NodeSecret;
use crate::wire::{
    decode_stdin, Call, CodeEventWire, ContextInfoWire, ErrorWire, ExecEventWire, FileEntryWire,
    InfoWire, Line, ListingWire, ReadCall, StatsWire, StreamCall, WriteQuery,
};

/// Largest JSON request (code cells and stdin writes are far smaller).
pub const MAX_CALL_BYTES: usize = 64 << 20;
/// Response header: the whole file's size (`/v1/read`).
pub const SIZE_HEADER: &str = "x-codebox-size";
/// Response header: the bytes this read delivers (`/v1/read`).
pub const LENGTH_HEADER: &str = "x-codebox-length";
/// Response header: output lost before a process subscription.
pub const DROPPED_HEADER: &str = "x-codebox-dropped-bytes";
/// Content type of streams.
pub const NDJSON: &str = "application/x-ndjson";

#[derive(Clone)]
struct NodeState {
    runtime: Arc<dyn Runtime>,
    secret: NodeSecret,
}

/// The node API router over `runtime`.
pub fn router(runtime: Arc<dyn Runtime>, secret: NodeSecret) -> Router {
    let state = NodeState { runtime, secret };
    Router::new()
        .route("/v1/call", post(call))
        .route("/v1/stream", post(stream))
        .route("/v1/read", post(read))
        .route("/v1/write", put(write))
        .layer(DefaultBodyLimit::max(MAX_CALL_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn authenticate(State(state): State<NodeState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if state.secret.accepts(presented) {
        return next.run(request).await;
    }
    tracing::warn!(
        audit = "node_auth_failed",
        path = %request.uri().path(),
        "node API request without a valid secret"
    );
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": "unauthorized"})),
    )
        .into_response()
}

/// A runtime error as a response.
fn failure(error: &RuntimeError) -> Response {
    let status = match error {
        RuntimeError::NotFound { .. } | RuntimeError::UnknownProcess { .. } => {
            StatusCode::NOT_FOUND
        }
        RuntimeError::AlreadyExists { .. } => StatusCode::CONFLICT,
        RuntimeError::UnknownRuntime { .. }
        | RuntimeError::InvalidRequest { .. }
        | RuntimeError::File { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        RuntimeError::AtCapacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(ErrorWire::from(error))).into_response()
}

fn malformed(detail: String) -> Response {
    failure(&RuntimeError::InvalidRequest { detail })
}

fn answer<T: Serialize>(result: Result<T, RuntimeError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => failure(&error),
    }
}

async fn call(State(state): State<NodeState>, Json(call): Json<Call>) -> Response {
    let runtime = &state.runtime;
    let method = call.name();
    tracing::debug!(method, "node call");
    match call {
        Call::Info => Json(InfoWire {
            isolation: runtime.isolation().to_owned(),
            runtimes: runtime.runtimes(),
        })
        .into_response(),
        Call::Ready => answer(runtime.check_ready().await),
        Call::List => answer(runtime.list().await),
        Call::Create { spec } => answer(runtime.create(spec.into()).await),
        Call::Destroy { id } => answer(runtime.destroy(&id).await),
        Call::Stats { id } => answer(runtime.stats(&id).await.map(|s| StatsWire::from(&s))),
        Call::CreateContext { id, request } => answer(
            runtime
                .create_context(&id, request.into())
                .await
                .map(|info| ContextInfoWire::from(&info)),
        ),
        Call::ListContexts { id } => answer(runtime.list_contexts(&id).await.map(|contexts| {
            contexts
                .iter()
                .map(ContextInfoWire::from)
                .collect::<Vec<_>>()
        })),
        Call::InterruptContext { id, context } => {
            answer(runtime.interrupt_context(&id, &context).await)
        }
        Call::RestartContext { id, context } => answer(
            runtime
                .restart_context(&id, &context)
                .await
                .map(|info| ContextInfoWire::from(&info)),
        ),
        Call::DestroyContext { id, context } => {
            answer(runtime.destroy_context(&id, &context).await)
        }
        Call::Stat { id, path } => answer(
            runtime
                .stat(&id, &path)
                .await
                .map(|entry| FileEntryWire::from(&entry)),
        ),
        Call::ListFiles { id, path, depth } => answer(
            runtime
                .list_files(&id, &path, depth)
                .await
                .map(|listing| ListingWire::from(&listing)),
        ),
        Call::MakeDir { id, path, parents } => answer(runtime.make_dir(&id, &path, parents).await),
        Call::MovePath {
            id,
            from,
            to,
            overwrite,
        } => answer(runtime.move_path(&id, &from, &to, overwrite).await),
        Call::RemovePath {
            id,
            path,
            recursive,
        } => answer(runtime.remove_path(&id, &path, recursive).await),
        Call::StartProcess { id, request } => {
            answer(runtime.start_process(&id, request.into()).await)
        }
        Call::ListProcesses { id } => answer(runtime.list_processes(&id).await),
        Call::WriteStdin { id, pid, data } => match decode_stdin(&data) {
            Ok(bytes) => answer(runtime.write_process_stdin(&id, pid, bytes).await),
            Err(error) => malformed(error.to_string()),
        },
        Call::CloseStdin { id, pid } => answer(runtime.close_process_stdin(&id, pid).await),
        Call::Signal { id, pid, signal } => answer(runtime.signal_process(&id, pid, &signal).await),
    }
}

/// One NDJSON line.
fn line<T: Serialize>(value: &Line<T>) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn ndjson(
    body: impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
    extra: Option<(&'static str, u64)>,
) -> Response {
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    if let Some((name, value)) = extra {
        headers.insert(name, HeaderValue::from(value));
    }
    response
}

async fn stream(State(state): State<NodeState>, Json(call): Json<StreamCall>) -> Response {
    let runtime = &state.runtime;
    tracing::debug!(method = call.name(), "node stream");
    match call {
        StreamCall::Exec { id, request } => {
            let request = match codebox_runtime::ExecRequest::try_from(request) {
                Ok(request) => request,
                Err(error) => return malformed(format!("{error}")),
            };
            match runtime.exec(&id, request).await {
                // Dropping the body (the API side went away) drops the
                // stream, which kills the execution.
                Ok(events) => ndjson(
                    futures_util::stream::unfold(events, |mut events| async move {
                        let event = events.next().await?;
                        Some((Ok(line(&Line::Event(ExecEventWire::from(&event)))), events))
                    }),
                    None,
                ),
                Err(error) => failure(&error),
            }
        }
        StreamCall::ExecuteCode { id, request } => {
            match runtime.execute_code(&id, request.into()).await {
                Ok(events) => ndjson(
                    futures_util::stream::unfold(events, |mut events| async move {
                        let event = events.next().await?;
                        Some((Ok(line(&Line::Event(CodeEventWire::from(&event)))), events))
                    }),
                    None,
                ),
                Err(error) => failure(&error),
            }
        }
        StreamCall::Watch {
            id,
            path,
            recursive,
        } => match runtime.watch(&id, &path, recursive).await {
            Ok(watch) => ndjson(
                futures_util::stream::unfold(Some(watch), |watch| async move {
                    let mut watch = watch?;
                    match watch.next().await? {
                        Ok(batch) => Some((Ok(line(&Line::Event(batch))), Some(watch))),
                        // The error is the last line.
                        Err(error) => {
                            Some((Ok(line::<()>(&Line::Error(ErrorWire::from(&error)))), None))
                        }
                    }
                }),
                None,
            ),
            Err(error) => failure(&error),
        },
        StreamCall::SubscribeProcess { id, pid } => {
            match runtime.subscribe_process(&id, pid).await {
                Ok(subscription) => ndjson(
                    futures_util::stream::unfold(subscription.stream, |mut events| async move {
                        let event = events.next().await?;
                        Some((Ok(line(&Line::Event(ExecEventWire::from(&event)))), events))
                    }),
                    Some((DROPPED_HEADER, subscription.dropped_bytes)),
                ),
                Err(error) => failure(&error),
            }
        }
    }
}

async fn read(State(state): State<NodeState>, Json(call): Json<ReadCall>) -> Response {
    let download = match state
        .runtime
        .read_file(&call.id, &call.path, call.offset, call.length)
        .await
    {
        Ok(download) => download,
        Err(error) => return failure(&error),
    };
    let (size, length) = (download.size, download.length);
    let chunks = futures_util::stream::unfold(Some(download), |download| async move {
        let mut download = download?;
        match download.next().await? {
            Ok(chunk) => Some((Ok(Bytes::from(chunk)), Some(download))),
            // Aborts the response: the API side sees a broken body, never a
            // short file passed off as complete.
            Err(error) => Some((Err(std::io::Error::other(error.to_string())), None)),
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(SIZE_HEADER, HeaderValue::from(size));
    headers.insert(LENGTH_HEADER, HeaderValue::from(length));
    response
}

async fn write(
    State(state): State<NodeState>,
    Query(query): Query<WriteQuery>,
    body: Body,
) -> Response {
    let options = WriteOptions {
        limit: query.limit,
        overwrite: query.overwrite,
        mode: query.mode,
    };
    let reader = BodyReader::new(body.into_data_stream());
    answer(
        state
            .runtime
            .write_file(&query.id, &query.path, options, Box::new(reader))
            .await,
    )
}

/// An HTTP request body as an [`AsyncRead`] (uploads are never buffered whole).
pub struct BodyReader {
    stream: BodyDataStream,
    pending: Bytes,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl BodyReader {
    pub fn new(stream: BodyDataStream) -> Self {
        Self {
            stream,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let take = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(take);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match self.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => self.pending = bytes,
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Err(std::io::Error::other(error)))
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
