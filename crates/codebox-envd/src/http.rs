//! envd's plain HTTP routes: `GET/POST /files`, `GET /health`, `GET /envs`,
//! `GET /metrics`.
//!
//! `/files` accepts either the sandbox's access token (`X-Access-Token`) or a
//! signed URL (`signature`, `signature_expiration`), the way envd does:
//! `v1_` + unpadded base64 of SHA-256 over
//! `{path}:{read|write}:{username}:{token}[:{expiration}]`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use codebox_core::{FileEntryView, RunCommandRequest};
use codebox_runtime::{FileDownload, FileKind};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::errors::HttpError;
use crate::state::EnvdState;
use crate::users::{self, SandboxUser};
use crate::Target;

/// A body that sends nothing for this long is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks buffered between the request body and the sandbox.
const UPLOAD_CHUNKS: usize = 8;
/// Compressed bytes inflated at a time: bounds the output of one step (deflate
/// expands at most ~1032:1) so a gzip bomb never sits in memory whole.
const INFLATE_STEP: usize = 1024;
/// Longest query string accepted.
const MAX_QUERY: usize = 16 * 1024;

/// `/files` query parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct FilesQuery {
    pub path: Option<String>,
    pub username: Option<String>,
    pub signature: Option<String>,
    pub signature_expiration: Option<i64>,
}

fn parse_query(raw: Option<&str>) -> Result<FilesQuery, HttpError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_QUERY {
        return Err(HttpError::bad_request("the query string is too long"));
    }
    serde_urlencoded::from_str(raw)
        .map_err(|error| HttpError::bad_request(format!("invalid query: {error}")))
}

/// Which operation a signature grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// The signature envd expects for this path, operation, user and expiry.
pub fn signature(
    path: &str,
    operation: Operation,
    username: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let mut raw = format!("{path}:{}:{username}:{token}", operation.as_str());
    if let Some(expiration) = expiration {
        raw.push_str(&format!(":{expiration}"));
    }
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Token or signature, per envd's rules for `/files`. No token issued and
/// none presented: allowed (the SDKs then send none).
pub fn authorize(
    headers: &HeaderMap,
    query: &FilesQuery,
    token: &str,
    operation: Operation,
    now: i64,
) -> Result<(), HttpError> {
    let unauthorized = |message: &str| HttpError::new(StatusCode::UNAUTHORIZED, message);
    if let Some(presented) = headers.get("x-access-token") {
        return if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(unauthorized("invalid access token"))
        };
    }
    let Some(presented) = &query.signature else {
        return if token.is_empty() {
            Ok(())
        } else {
            Err(unauthorized("an access token or a signature is required"))
        };
    };
    if let Some(expiration) = query.signature_expiration {
        if expiration < now {
            return Err(unauthorized("the signature has expired"));
        }
    }
    let path = query.path.as_deref().unwrap_or_default();
    let username = query.username.as_deref().unwrap_or_default();
    let expected = signature(path, operation, username, token, query.signature_expiration);
    if token.is_empty() || !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return Err(unauthorized("invalid signature"));
    }
    Ok(())
}

pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /files?path=`: the file's bytes.
pub async fn download(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let query = parse_query(raw.as_deref())?;
    authorize(
        &headers,
        &query,
        &target.access_token,
        Operation::Read,
        now_unix(),
    )?;
    let user = users::named(query.username.as_deref())?;
    let path = query
        .path
        .as_deref()
        .filter(|path| !path.is_empty())
        .ok_or_else(|| HttpError::bad_request("path: required"))?;
    let path = users::resolve(user, path)?;
    let core = &state.core;
    let entry = core
        .stat_file(&target.owner, &target.sandbox_id, &path)
        .await?;
    if entry.kind == FileKind::Dir {
        return Err(HttpError::bad_request(format!(
            "{} is a directory",
            entry.path
        )));
    }
    let download = core
        .read_file(&target.owner, &target.sandbox_id, &path, 0, None)
        .await?;
    Ok(file_response(download, &entry.name))
}

fn file_response(download: FileDownload, name: &str) -> Response {
    let length = download.length;
    let stream =
        futures_util::stream::unfold((download, 0u64), move |(mut download, sent)| async move {
            match download.next().await {
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
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let quoted: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{quoted}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// One written file, as envd answers an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WrittenEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub path: String,
}

fn written(entry: FileEntryView) -> WrittenEntry {
    WrittenEntry {
        name: entry.name,
        kind: match entry.kind {
            FileKind::Dir => "dir",
            _ => "file",
        },
        path: entry.path,
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The request body as chunks, each within the stall timeout.
fn body_chunks(body: Body) -> ChunkStream {
    let stream = body.into_data_stream();
    Box::pin(futures_util::stream::unfold(
        Some(stream),
        |stream| async move {
            let mut stream = stream?;
            match tokio::time::timeout(STALL_TIMEOUT, stream.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
                Ok(Some(Err(error))) => Some((Err(io::Error::other(error)), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the upload body stalled",
                    )),
                    None,
                )),
            }
        },
    ))
}

/// Inflates a gzip stream step by step (see [`INFLATE_STEP`]).
fn gunzip(input: ChunkStream) -> ChunkStream {
    struct Inflate {
        input: ChunkStream,
        decoder: Option<flate2::write::GzDecoder<Vec<u8>>>,
        pending: Bytes,
    }
    let state = Inflate {
        input,
        decoder: Some(flate2::write::GzDecoder::new(Vec::new())),
        pending: Bytes::new(),
    };
    Box::pin(futures_util::stream::unfold(
        state,
        |mut state| async move {
            loop {
                let decoder = state.decoder.as_mut()?;
                if !state.pending.is_empty() {
                    let step = state
                        .pending
                        .split_to(state.pending.len().min(INFLATE_STEP));
                    if let Err(error) = decoder.write_all(&step) {
                        state.decoder = None;
                        return Some((Err(invalid_gzip(error)), state));
                    }
                    let out = std::mem::take(decoder.get_mut());
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), state));
                    }
                    continue;
                }
                match state.input.next().await {
                    Some(Ok(chunk)) => state.pending = chunk,
                    Some(Err(error)) => {
                        state.decoder = None;
                        return Some((Err(error), state));
                    }
                    None => {
                        let result = decoder.try_finish();
                        let out = std::mem::take(decoder.get_mut());
                        state.decoder = None;
                        return match result {
                            Err(error) => Some((Err(invalid_gzip(error)), state)),
                            Ok(()) if out.is_empty() => None,
                            Ok(()) => Some((Ok(Bytes::from(out)), state)),
                        };
                    }
                }
            }
        },
    ))
}

fn invalid_gzip(error: io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid gzip body: {error}"),
    )
}

/// An `AsyncRead` over chunks sent by the producer; an error from it fails
/// the read (so a broken upload is never committed as a short file).
struct ChunkReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for ChunkReader {
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

/// Writes one file from a stream of chunks; returns its entry.
async fn write_one<S>(
    state: &EnvdState,
    target: &Target,
    path: &str,
    mut chunks: S,
) -> Result<WrittenEntry, HttpError>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin + Send,
{
    let (tx, rx) = mpsc::channel(UPLOAD_CHUNKS);
    let reader = ChunkReader {
        chunks: rx,
        current: Bytes::new(),
    };
    let feed = async move {
        while let Some(chunk) = chunks.next().await {
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    };
    let write = state.core.write_file(
        &target.owner,
        &target.sandbox_id,
        path,
        None,
        Box::new(reader),
    );
    let ((), result) = tokio::join!(feed, write);
    result?;
    let entry = state
        .core
        .stat_file(&target.owner, &target.sandbox_id, path)
        .await?;
    Ok(written(entry))
}

/// `POST /files`: multipart parts `file` (the filename is the destination),
/// or a raw body written to `path`; `Content-Encoding: gzip` either way.
pub async fn upload(
    State(state): State<Arc<EnvdState>>,
    target: Target,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let query = parse_query(raw.as_deref())?;
    authorize(
        &headers,
        &query,
        &target.access_token,
        Operation::Write,
        now_unix(),
    )?;
    let user = users::named(query.username.as_deref())?;
    let mut chunks = body_chunks(body);
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => {}
        Some("gzip") => chunks = gunzip(chunks),
        Some(other) => {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {other:?} is not supported (gzip is)"),
            ))
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let entries = if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|error| HttpError::bad_request(format!("Content-Type: {error}")))?;
        upload_parts(
            &state,
            &target,
            user,
            query.path.as_deref(),
            chunks,
            boundary,
        )
        .await?
    } else {
        let path = query
            .path
            .as_deref()
            .filter(|path| !path.is_empty())
            .ok_or_else(|| HttpError::bad_request("path: required for a raw upload"))?;
        let path = users::resolve(user, path)?;
        vec![write_one(&state, &target, &path, chunks).await?]
    };
    tracing::info!(sandbox_id = %target.sandbox_id, files = entries.len(), "envd upload");
    Ok(axum::Json(entries).into_response())
}

async fn upload_parts(
    state: &EnvdState,
    target: &Target,
    user: SandboxUser,
    query_path: Option<&str>,
    chunks: ChunkStream,
    boundary: String,
) -> Result<Vec<WrittenEntry>, HttpError> {
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .per_field(u64::MAX)
            .whole_stream(u64::MAX),
    );
    let mut multipart = multer::Multipart::with_constraints(chunks, boundary, constraints);
    let mut entries = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|error| HttpError::bad_request(format!("invalid multipart body: {error}")))?;
        let Some(field) = field else { break };
        if field.name() != Some("file") {
            // envd reads only `file` parts; others are skipped unread.
            continue;
        }
        let destination = field
            .file_name()
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .or_else(|| query_path.map(str::to_owned))
            .filter(|path| !path.is_empty())
            .ok_or_else(|| {
                HttpError::bad_request("a file part needs a filename (its destination) or a path")
            })?;
        let path = users::resolve(user, &destination)?;
        let field = field.map(|chunk| chunk.map_err(io::Error::other));
        entries.push(write_one(state, target, &path, field).await?);
    }
    if entries.is_empty() {
        return Err(HttpError::bad_request(
            "the multipart body holds no file part",
        ));
    }
    Ok(entries)
}

/// `GET /envs`: the environment a process of the sandbox gets.
pub async fn envs(
    State(state): State<Arc<EnvdState>>,
    target: Target,
) -> Result<Response, HttpError> {
    let result = state
        .core
        .run_command(
            &target.owner,
            &target.sandbox_id,
            RunCommandRequest {
                cmd: "exec env -0".to_owned(),
                timeout: Some(10),
                env: None,
                cwd: None,
                stdin: None,
            },
        )
        .await?;
    if result.exit_code != 0 {
        return Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the environment failed",
        ));
    }
    let envs: BTreeMap<&str, &str> = result
        .stdout
        .split('\0')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    Ok(axum::Json(envs).into_response())
}

/// `GET /metrics`: the sandbox's usage now. `cpu_used_pct` is the average
/// since the sandbox started (the runtime keeps a cumulative CPU counter).
pub async fn metrics(
    State(state): State<Arc<EnvdState>>,
    target: Target,
) -> Result<Response, HttpError> {
    let core = &state.core;
    let stats = core
        .sandbox_stats(&target.owner, &target.sandbox_id)
        .await?;
    let record = core.get_sandbox(&target.owner, &target.sandbox_id).await?;
    let now = time::OffsetDateTime::now_utc();
    let uptime_usec = (now - record.created_at).whole_microseconds().max(1) as f64;
    let cores = (stats.cpu_limit_millicores as f64 / 1000.0).max(0.001);
    let cpu_used_pct =
        (stats.cpu_usage_usec as f64 / uptime_usec / cores * 100.0).clamp(0.0, 100.0);
    let body = serde_json::json!({
        "ts": now.unix_timestamp(),
        "cpu_count": stats.cpu_limit_millicores.div_ceil(1000),
        "cpu_used_pct": (cpu_used_pct * 100.0).round() / 100.0,
        "mem_total": stats.memory_limit_bytes,
        "mem_used": stats.memory_bytes,
        "disk_used": stats.disk_bytes,
        "disk_total": stats.disk_limit_bytes,
    });
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(path: &str, signature: Option<String>, expiration: Option<i64>) -> FilesQuery {
        FilesQuery {
            path: Some(path.into()),
            username: None,
            signature,
            signature_expiration: expiration,
        }
    }

    #[test]
    fn signatures_match_the_sdk_formula() {
        // sha256("/home/user/a.txt:read::tok") in unpadded base64.
        let digest = Sha256::digest(b"/home/user/a.txt:read::tok");
        let expected = format!(
            "v1_{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        );
        assert_eq!(
            signature("/home/user/a.txt", Operation::Read, "", "tok", None),
            expected
        );
        assert_ne!(
            signature("/a", Operation::Read, "", "tok", Some(5)),
            signature("/a", Operation::Read, "", "tok", None)
        );
    }

    #[test]
    fn files_accept_a_token_or_a_valid_unexpired_signature() {
        let none = HeaderMap::new();
        let token = "secret";
        let now = 1_000;
        // No credentials while a token is issued: refused.
        assert!(authorize(&none, &query("/a", None, None), token, Operation::Read, now).is_err());
        // No token issued: open.
        assert!(authorize(&none, &query("/a", None, None), "", Operation::Read, now).is_ok());
        let mut good = HeaderMap::new();
        good.insert("x-access-token", HeaderValue::from_static("secret"));
        assert!(authorize(&good, &query("/a", None, None), token, Operation::Read, now).is_ok());
        let mut bad = HeaderMap::new();
        bad.insert("x-access-token", HeaderValue::from_static("guess"));
        assert!(authorize(&bad, &query("/a", None, None), token, Operation::Read, now).is_err());

        let signed = signature("/a", Operation::Read, "", token, Some(2_000));
        let valid = query("/a", Some(signed.clone()), Some(2_000));
        assert!(authorize(&none, &valid, token, Operation::Read, now).is_ok());
        // The same signature does not grant a write, another path, or after expiry.
        assert!(authorize(&none, &valid, token, Operation::Write, now).is_err());
        let other_path = query("/b", Some(signed.clone()), Some(2_000));
        assert!(authorize(&none, &other_path, token, Operation::Read, now).is_err());
        let expired = authorize(&none, &valid, token, Operation::Read, 2_001).expect_err("expired");
        assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
        assert!(expired.message.contains("expired"));
        // A later expiry cannot be substituted.
        let moved = query("/a", Some(signed), Some(3_000));
        assert!(authorize(&none, &moved, token, Operation::Read, now).is_err());
        // A signature made without a token never validates against none.
        let tokenless = query(
            "/a",
            Some(signature("/a", Operation::Read, "", "", None)),
            None,
        );
        assert!(authorize(&none, &tokenless, "", Operation::Read, now).is_err());
    }

    #[tokio::test]
    async fn gzip_bodies_inflate_and_bad_ones_fail() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let text = "hello gzip ".repeat(1000);
        encoder.write_all(text.as_bytes()).expect("in memory");
        let compressed = encoder.finish().expect("in memory");
        let input: ChunkStream = Box::pin(futures_util::stream::iter(
            compressed
                .chunks(100)
                .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
                .collect::<Vec<_>>(),
        ));
        let mut output = Vec::new();
        let mut inflated = gunzip(input);
        while let Some(chunk) = inflated.next().await {
            output.extend_from_slice(&chunk.expect("valid gzip"));
        }
        assert_eq!(output, text.as_bytes());

        let garbage: ChunkStream = Box::pin(futures_util::stream::iter(vec![Ok(
            Bytes::from_static(b"this is not gzip at all"),
        )]));
        let mut inflated = gunzip(garbage);
        let mut failed = false;
        while let Some(chunk) = inflated.next().await {
            failed |= chunk.is_err();
        }
        assert!(failed);
    }

    #[test]
    fn queries_parse() {
        let query = parse_query(Some(
            "path=%2Fhome%2Fuser%2Fa.txt&username=user&signature_expiration=5",
        ))
        .expect("valid");
        assert_eq!(query.path.as_deref(), Some("/home/user/a.txt"));
        assert_eq!(query.signature_expiration, Some(5));
        assert!(parse_query(Some("signature_expiration=soon")).is_err());
    }
}
