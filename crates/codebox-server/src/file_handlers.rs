//! Handlers of files inside a sandbox (issue 5): streamed download with `Range`,
//! streamed upload, list, stat, mkdir, move and delete.
//!
//! Bodies are streamed both ways and never held whole: a download is the agent's
//! chunks as they come (a client that goes away cancels the read), an upload
//! is the request body handed to the sandbox chunk by chunk with backpressure.
//! The upload route is not under the JSON body limit: the core caps it at
//! `limits.max_upload_bytes`. Paths are resolved by the sandbox's agent, never here.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use codebox_core::{FileEntryView, ListingView, MakeDirRequest, MoveRequest, UploadView};
use codebox_runtime::{FileDownload, FileWatch};
use codebox_types::ErrorCode;
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, watch};

use crate::auth::AuthenticatedUser;
use crate::error::ApiError;
use crate::handlers::{ok, SandboxPath, Success};
use crate::json::{ApiJson, BodyLimits};
use crate::state::AppState;

/// Body chunks buffered between the connection and the sandbox.
const UPLOAD_CHUNKS: usize = 4;

/// `?path=P&depth=N&recursive=B`: which parameters a route takes is checked by
/// the handler.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuery {
    path: Option<String>,
    depth: Option<u32>,
    recursive: Option<bool>,
}

fn parse_query(raw: Option<&str>) -> Result<FileQuery, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or_default()).map_err(|error| {
        let message: String = error.to_string().chars().take(200).collect();
        ApiError::new(ErrorCode::ValidationError, format!("query: {message}"))
    })
}

fn required_path(query: &FileQuery) -> Result<&str, ApiError> {
    query.path.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ValidationError,
            "path: the query parameter is required",
        )
        .with_field("path")
    })
}

/// `GET .../files/stat?path=P`.
pub async fn stat(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    RawQuery(query): RawQuery,
) -> Result<Success<FileEntryView>, ApiError> {
    let query = parse_query(query.as_deref())?;
    let entry = state
        .core
        .stat_file(&user, &id, required_path(&query)?)
        .await?;
    Ok(ok(entry))
}

/// `GET .../files/list?path=P&depth=1`; the user's home when `path` is absent.
pub async fn list(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    RawQuery(query): RawQuery,
) -> Result<Success<ListingView>, ApiError> {
    let query = parse_query(query.as_deref())?;
    let path = query.path.as_deref().unwrap_or("/home/user");
    let listing = state.core.list_files(&user, &id, path, query.depth).await?;
    Ok(ok(listing))
}

/// `POST .../files/mkdir`.
pub async fn make_dir(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    ApiJson(request): ApiJson<MakeDirRequest>,
) -> Result<Success<FileEntryView>, ApiError> {
    let entry = state.core.make_dir(&user, &id, request).await?;
    Ok(Success(StatusCode::CREATED, entry))
}

/// `POST .../files/move`.
pub async fn move_path(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    ApiJson(request): ApiJson<MoveRequest>,
) -> Result<Success<FileEntryView>, ApiError> {
    let entry = state.core.move_path(&user, &id, request).await?;
    Ok(ok(entry))
}

/// `DELETE .../files?path=P&recursive=true`.
pub async fn remove(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    RawQuery(query): RawQuery,
) -> Result<Success<serde_json::Value>, ApiError> {
    let query = parse_query(query.as_deref())?;
    let path = required_path(&query)?;
    let recursive = query.recursive.unwrap_or(false);
    state.core.remove_path(&user, &id, path, recursive).await?;
    Ok(ok(serde_json::json!({ "path": path, "deleted": true })))
}

/// `GET .../files/watch?path=P&recursive=true`: changes as server-sent events
/// (`create`, `write`, `remove`, `rename`, `chmod`, `overflow`) until the
/// directory is gone, the client leaves (which stops the watch) or shutdown.
pub async fn watch(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = parse_query(query.as_deref())?;
    let path = query.path.as_deref().unwrap_or("/home/user");
    let recursive = query.recursive.unwrap_or(false);
    let watch = state.core.watch_files(&user, &id, path, recursive).await?;
    Ok(watch_response(watch, state.stream_closing()))
}

/// Waits for graceful shutdown; never resolves if the signal is gone.
async fn closing(signal: &mut watch::Receiver<bool>) {
    if signal.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn watch_response(file_watch: FileWatch, closing_rx: watch::Receiver<bool>) -> Response {
    let chunks = futures_util::stream::unfold(Some((file_watch, closing_rx)), |state| async move {
        let (mut file_watch, mut closing_rx) = state?;
        let batch = tokio::select! {
            biased;
            batch = file_watch.next() => batch?,
            () = closing(&mut closing_rx) => return None,
        };
        let Ok(events) = batch else {
            // The sandbox or its agent went away: the stream just ends.
            return Some((Ok::<_, io::Error>(Bytes::new()), None));
        };
        let mut text = String::new();
        for event in events {
            let data = serde_json::json!({
                "type": event.kind,
                "path": event.path,
                "is_dir": event.is_dir,
            });
            let name = data["type"].as_str().unwrap_or("unknown").to_owned();
            text.push_str(&format!("event: {name}\ndata: {data}\n\n"));
        }
        Some((Ok(Bytes::from(text)), Some((file_watch, closing_rx))))
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `PUT .../files?path=P`: the raw body becomes the file.
pub async fn upload(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Success<UploadView>, ApiError> {
    let query = parse_query(query.as_deref())?;
    let path = required_path(&query)?;
    let declared = declared_length(request.headers())?;
    let limits: BodyLimits = axum::extract::FromRef::from_ref(&state);
    let body = BodyReader::spawn(request.into_body(), limits);
    let view = state
        .core
        .write_file(&user, &id, path, declared, Box::new(body))
        .await?;
    Ok(Success(StatusCode::CREATED, view))
}

/// Most parts of one multipart upload.
pub const MAX_UPLOAD_PARTS: usize = 1000;
/// Most body bytes the multipart parser may pull while it looks for the next
/// part's boundary and headers (a part's headers plus one body frame read ahead):
/// a huge or endless header is refused instead of buffered.
const MAX_PART_HEAD: u64 = 1 << 20;

/// The files a multipart upload wrote.
#[derive(Debug, serde::Serialize)]
pub struct UploadList {
    files: Vec<UploadView>,
}

fn multipart_error(message: impl std::fmt::Display) -> ApiError {
    let message: String = message.to_string().chars().take(200).collect();
    ApiError::new(ErrorCode::ValidationError, format!("multipart: {message}"))
        .with_field("multipart")
}

/// `POST .../files`: a `multipart/form-data` body, each part a file whose
/// destination is its filename (or its field name when it has none). Parts are
/// written one after the other, each streamed like `PUT`; the first failure ends
/// the request (its partial file is removed, the files written before it stay
/// and are listed in `data.files` beside the envelope's `error`).
pub async fn upload_multipart(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    request: Request,
) -> Result<Success<UploadList>, ApiError> {
    // Ownership first: another user's sandbox is a 404 whatever the body.
    state.core.check_running_sandbox(&user, &id).await?;
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| multer::parse_boundary(value).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Content-Type: must be multipart/form-data with a boundary (or use PUT with ?path=)",
            )
        })?;
    let limits: BodyLimits = axum::extract::FromRef::from_ref(&state);
    let guard = HeadGuard::default();
    let mut multipart = multer::Multipart::new(
        guarded_body(request.into_body(), limits, guard.clone()),
        boundary,
    );
    let mut files = Vec::new();
    loop {
        guard.enter_head();
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                return Err(multipart_error(error).with_data(serde_json::json!({ "files": files })))
            }
        };
        guard.leave_head();
        if files.len() >= MAX_UPLOAD_PARTS {
            return Err(multipart_error(format!("at most {MAX_UPLOAD_PARTS} parts"))
                .with_data(serde_json::json!({ "files": files })));
        }
        let Some(path) = field
            .file_name()
            .filter(|name| !name.is_empty())
            .or_else(|| field.name().filter(|name| !name.is_empty()))
            .map(str::to_owned)
        else {
            return Err(multipart_error("a part has neither a filename nor a name")
                .with_data(serde_json::json!({ "files": files })));
        };
        let body = FieldReader {
            field,
            current: Bytes::new(),
        };
        match state
            .core
            .write_file(&user, &id, &path, None, Box::new(body))
            .await
        {
            Ok(view) => files.push(view),
            Err(error) => {
                return Err(ApiError::from(error).with_data(serde_json::json!({ "files": files })))
            }
        }
    }
    Ok(Success(StatusCode::CREATED, UploadList { files }))
}

/// Counts the body bytes pulled while the parser is between parts.
#[derive(Debug, Clone, Default)]
struct HeadGuard {
    state: std::sync::Arc<std::sync::Mutex<(bool, u64)>>,
}

impl HeadGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, u64)> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn enter_head(&self) {
        *self.lock() = (true, 0);
    }

    fn leave_head(&self) {
        self.lock().0 = false;
    }

    /// Whether `len` more bytes keep the head within its bound.
    fn admit(&self, len: usize) -> bool {
        let mut state = self.lock();
        if !state.0 {
            return true;
        }
        state.1 += len as u64;
        state.1 <= MAX_PART_HEAD
    }
}

/// The request body as a stream for the multipart parser: each frame within the
/// stall timeout, and bounded while a part's headers are being read.
fn guarded_body(
    body: Body,
    limits: BodyLimits,
    guard: HeadGuard,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(body), move |body| {
        let guard = guard.clone();
        async move {
            let mut body = body?;
            loop {
                let frame = tokio::time::timeout(limits.stall_timeout, body.frame()).await;
                let chunk = match frame {
                    Ok(None) => return None,
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => data,
                        Err(_trailers) => continue,
                    },
                    Ok(Some(Err(error))) => return Some((Err(io::Error::other(error)), None)),
                    Err(_) => {
                        let error =
                            io::Error::new(io::ErrorKind::TimedOut, "the upload body stalled");
                        return Some((Err(error), None));
                    }
                };
                if !guard.admit(chunk.len()) {
                    let error = io::Error::other(format!(
                        "a part's headers are over {MAX_PART_HEAD} bytes"
                    ));
                    return Some((Err(error), None));
                }
                return Some((Ok(chunk), Some(body)));
            }
        }
    })
}

/// One part's data as an `AsyncRead` (the runtime pulls it with backpressure).
struct FieldReader {
    field: multer::Field<'static>,
    current: Bytes,
}

impl AsyncRead for FieldReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use futures_util::Stream;
        loop {
            if !self.current.is_empty() {
                let take = self.current.len().min(buf.remaining());
                let chunk = self.current.split_to(take);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.field).poll_next(cx)) {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::new(ErrorCode::ValidationError, "Content-Length: not a number"))
}

/// `GET .../files?path=P`, with an optional single `Range`.
pub async fn download(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = parse_query(query.as_deref())?;
    let path = required_path(&query)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_range);
    let core = &state.core;
    let (offset, length) = match range {
        None => (0, None),
        Some(ByteRange::From { start, end }) => (start, end.map(|end| end - start + 1)),
        Some(ByteRange::Suffix(count)) => {
            // The size decides where the suffix starts: ask for it with an
            // empty read first.
            let probe = core.read_file(&user, &id, path, 0, Some(0)).await?;
            (probe.size.saturating_sub(count), None)
        }
    };
    let download = core.read_file(&user, &id, path, offset, length).await?;
    if range.is_some() && (offset >= download.size || download.length == 0) {
        return Ok(unsatisfiable(download.size));
    }
    Ok(file_response(download, range.is_some().then_some(offset)))
}

/// One `bytes=` range; several ranges are not supported (the whole file is sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// `bytes=start-` or `bytes=start-end` (inclusive).
    From { start: u64, end: Option<u64> },
    /// `bytes=-count`: the last `count` bytes.
    Suffix(u64),
}

fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        return end.parse().ok().filter(|n| *n > 0).map(ByteRange::Suffix);
    }
    let start = start.parse().ok()?;
    let end = if end.is_empty() {
        None
    } else {
        Some(end.parse().ok().filter(|end| *end >= start)?)
    };
    Some(ByteRange::From { start, end })
}

/// `416` with `Content-Range: bytes */size`.
fn unsatisfiable(size: u64) -> Response {
    let error = ApiError::new(
        ErrorCode::ValidationError,
        format!("Range: not satisfiable, the file has {size} bytes"),
    )
    .with_field("Range")
    .with_status(StatusCode::RANGE_NOT_SATISFIABLE);
    let mut response = error.into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

/// The download as a streamed body; `range_start` makes it a `206`.
fn file_response(download: FileDownload, range_start: Option<u64>) -> Response {
    let (size, length) = (download.size, download.length);
    let stream =
        futures_util::stream::unfold((download, 0u64), move |(mut download, sent)| async move {
            match download.next().await {
                // More than announced would break the response framing.
                Some(Ok(chunk)) if sent + chunk.len() as u64 > length => Some((
                    Err(io::Error::other(
                        "the sandbox sent more than the file's length",
                    )),
                    (download, length),
                )),
                Some(Ok(chunk)) => {
                    let sent = sent + chunk.len() as u64;
                    Some((Ok(Bytes::from(chunk)), (download, sent)))
                }
                Some(Err(error)) => Some((Err(io::Error::other(error)), (download, length))),
                // Ending short would be a silently truncated file: fail the body.
                None if sent < length => Some((
                    Err(io::Error::other("the sandbox stopped the read early")),
                    (download, length),
                )),
                None => None,
            }
        });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(start) = range_start {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let end = start + length.saturating_sub(1);
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    response
}

/// A request body as an `AsyncRead`: a task pulls its frames (each within the
/// stall timeout, so a trickling client cannot hold the upload forever) into a
/// small bounded channel; the reader hands them on.
struct BodyReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BodyReader {
    fn spawn(mut body: Body, limits: BodyLimits) -> Self {
        let (tx, chunks) = mpsc::channel(UPLOAD_CHUNKS);
        tokio::spawn(async move {
            loop {
                let frame = tokio::time::timeout(limits.stall_timeout, body.frame()).await;
                let chunk = match frame {
                    Ok(None) => return,
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => Ok(data),
                        Err(_trailers) => continue,
                    },
                    Ok(Some(Err(error))) => Err(io::Error::other(error)),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the upload body stalled",
                    )),
                };
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let take = self.current.len().min(buf.remaining());
                let chunk = self.current.split_to(take);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(self.chunks.poll_recv(cx)) {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Poll::Ready(Err(error)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_parse_and_others_are_ignored() {
        assert_eq!(
            parse_range("bytes=10-19"),
            Some(ByteRange::From {
                start: 10,
                end: Some(19)
            })
        );
        assert_eq!(
            parse_range("bytes=5-"),
            Some(ByteRange::From {
                start: 5,
                end: None
            })
        );
        assert_eq!(parse_range("bytes=-7"), Some(ByteRange::Suffix(7)));
        assert_eq!(parse_range("bytes=0-1,4-5"), None);
        assert_eq!(parse_range("bytes=9-3"), None);
        assert_eq!(parse_range("items=0-1"), None);
    }
}
