//! The API side of the node API: one HTTP/1 client (keep-alive pool shared by
//! every node) and the calls of [`crate::server`], turned back into the
//! runtime's types and streams.
//!
//! A node that cannot be reached (connect refused, reset, timeout) is
//! [`RuntimeError::AtCapacity`] (a retryable 503 to API clients), never
//! `AgentLost`: a network blip must not end a sandbox.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codebox_runtime::{
    CodeEvent, CodeStream, ExecEvent, ExecStream, FileDownload, FileWatch, RuntimeError,
    UploadBody, WatchEvent,
};
use http::{header, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt as _;

use crate::auth::NodeSecret;
use crate::server::{DROPPED_HEADER, LENGTH_HEADER, MAX_CALL_BYTES, SIZE_HEADER};
use crate::wire::{
    Call, CodeEventWire, ErrorWire, ExecEventWire, Line, ReadCall, StreamCall, WriteQuery,
};

type RequestBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Longest NDJSON line accepted from a node (a result is capped at 8 MiB).
const MAX_LINE_BYTES: usize = 64 << 20;
/// Events buffered between a node stream and its consumer.
const STREAM_CAPACITY: usize = 16;
/// Upload chunk size.
const UPLOAD_CHUNK: usize = 64 << 10;

/// Timeouts of API->node calls.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// Opening a TCP connection to a node.
    pub connect: Duration,
    /// A unary call (`create` gets `create`); streams have none (the node
    /// bounds executions itself).
    pub call: Duration,
    pub create: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            call: Duration::from_secs(120),
            create: Duration::from_secs(600),
        }
    }
}

/// The HTTP client shared by every node connection.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: Client<HttpConnector, RequestBody>,
    secret: NodeSecret,
    timeouts: ClientTimeouts,
}

fn unreachable(address: &str, detail: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::AtCapacity {
        detail: format!("node {address} unreachable: {detail}"),
    }
}

fn protocol(address: &str, detail: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Io {
        operation: "node request",
        source: std::io::Error::other(format!("node {address}: {detail}")),
    }
}

fn full(bytes: Vec<u8>) -> RequestBody {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl NodeClient {
    pub fn new(secret: NodeSecret, timeouts: ClientTimeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            // Below the node's header-read timeout (10 s by default), which
            // also closes idle keep-alive connections: a pooled connection is
            // dropped here before the node closes it under a new request.
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        Self {
            http,
            secret,
            timeouts,
        }
    }

    async fn send(
        &self,
        address: &str,
        method: Method,
        path_and_query: &str,
        body: RequestBody,
    ) -> Result<hyper::Response<Incoming>, RuntimeError> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{address}{path_and_query}"))
            .header(header::AUTHORIZATION, self.secret.header_value())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|error| protocol(address, error))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|error| unreachable(address, error))?;
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        Err(Self::error_of(address, response).await)
    }

    async fn error_of(address: &str, response: hyper::Response<Incoming>) -> RuntimeError {
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return protocol(address, "the node refused the shared secret (node.secret)");
        }
        match http_body_util::Limited::new(response.into_body(), MAX_CALL_BYTES)
            .collect()
            .await
        {
            Ok(body) => match serde_json::from_slice::<ErrorWire>(&body.to_bytes()) {
                Ok(error) => error.into(),
                Err(_) => protocol(address, format!("status {status} without an error body")),
            },
            Err(error) => unreachable(address, error),
        }
    }

    /// A unary call answering `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        address: &str,
        call: &Call,
    ) -> Result<T, RuntimeError> {
        let limit = if matches!(call, Call::Create { .. }) {
            self.timeouts.create
        } else {
            self.timeouts.call
        };
        let body = serde_json::to_vec(call).map_err(|error| protocol(address, error))?;
        let exchange = async {
            let response = self
                .send(address, Method::POST, "/v1/call", full(body))
                .await?;
            let bytes = http_body_util::Limited::new(response.into_body(), MAX_CALL_BYTES)
                .collect()
                .await
                .map_err(|error| unreachable(address, error))?
                .to_bytes();
            serde_json::from_slice(&bytes).map_err(|error| protocol(address, error))
        };
        tokio::time::timeout(limit, exchange).await.map_err(|_| {
            unreachable(
                address,
                format!("no answer to {} in {limit:?}", call.name()),
            )
        })?
    }

    /// Opens a stream; the caller reads lines from the response body.
    async fn open_stream(
        &self,
        address: &str,
        call: &StreamCall,
    ) -> Result<hyper::Response<Incoming>, RuntimeError> {
        let body = serde_json::to_vec(call).map_err(|error| protocol(address, error))?;
        tokio::time::timeout(
            self.timeouts.call,
            self.send(address, Method::POST, "/v1/stream", full(body)),
        )
        .await
        .map_err(|_| unreachable(address, format!("no answer to {}", call.name())))?
    }

    pub async fn exec(&self, address: &str, call: &StreamCall) -> Result<ExecStream, RuntimeError> {
        let response = self.open_stream(address, call).await?;
        Ok(forward_exec(address.to_owned(), response.into_body()))
    }

    /// A process subscription: the dropped-bytes count and the events.
    pub async fn subscribe(
        &self,
        address: &str,
        call: &StreamCall,
    ) -> Result<(u64, ExecStream), RuntimeError> {
        let response = self.open_stream(address, call).await?;
        let dropped = response
            .headers()
            .get(DROPPED_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        Ok((
            dropped,
            forward_exec(address.to_owned(), response.into_body()),
        ))
    }

    pub async fn execute_code(
        &self,
        address: &str,
        call: &StreamCall,
    ) -> Result<CodeStream, RuntimeError> {
        let response = self.open_stream(address, call).await?;
        let (sender, stream) = CodeStream::channel(STREAM_CAPACITY);
        let address = address.to_owned();
        tokio::spawn(async move {
            let mut lines = LineReader::new(response.into_body());
            let mut cancelled = sender.cancelled;
            loop {
                let next = tokio::select! {
                    _ = &mut cancelled => return,
                    next = lines.next::<CodeEventWire>() => next,
                };
                let event = match next {
                    Some(Ok(Line::Event(event))) => event,
                    Some(Ok(Line::Error(_))) | None => return,
                    Some(Err(error)) => {
                        tracing::warn!(node = %address, error = %error, "code stream from a node broke");
                        return;
                    }
                };
                let Ok(event) = CodeEvent::try_from(event) else {
                    tracing::warn!(node = %address, "malformed code event from a node");
                    return;
                };
                if sender.events.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(stream)
    }

    pub async fn watch(&self, address: &str, call: &StreamCall) -> Result<FileWatch, RuntimeError> {
        let response = self.open_stream(address, call).await?;
        let (sender, watch) = FileWatch::channel(STREAM_CAPACITY);
        let address = address.to_owned();
        tokio::spawn(async move {
            let mut lines = LineReader::new(response.into_body());
            loop {
                let next = tokio::select! {
                    () = sender.closed() => return,
                    next = lines.next::<Vec<WatchEvent>>() => next,
                };
                let item = match next {
                    Some(Ok(Line::Event(batch))) => Ok(batch),
                    Some(Ok(Line::Error(error))) => Err(RuntimeError::from(error)),
                    Some(Err(error)) => Err(protocol(&address, error)),
                    None => return,
                };
                let last = item.is_err();
                if sender.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(watch)
    }

    pub async fn read(&self, address: &str, call: &ReadCall) -> Result<FileDownload, RuntimeError> {
        let body = serde_json::to_vec(call).map_err(|error| protocol(address, error))?;
        let response = tokio::time::timeout(
            self.timeouts.call,
            self.send(address, Method::POST, "/v1/read", full(body)),
        )
        .await
        .map_err(|_| unreachable(address, "no answer to read_file"))??;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok())
                .ok_or_else(|| protocol(address, format!("read without {name}")))
        };
        let (size, length) = (header(SIZE_HEADER)?, header(LENGTH_HEADER)?);
        let (sender, download) = FileDownload::channel(size, length, STREAM_CAPACITY);
        let address = address.to_owned();
        let mut body = response.into_body();
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    () = sender.closed() => return,
                    frame = body.frame() => frame,
                };
                let chunk = match frame {
                    None => return,
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => Ok(data.to_vec()),
                        Err(_) => continue,
                    },
                    Some(Err(error)) => Err(protocol(&address, format!("read broke: {error}"))),
                };
                let last = chunk.is_err();
                if sender.send(chunk).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(download)
    }

    pub async fn write(
        &self,
        address: &str,
        query: &WriteQuery,
        upload: UploadBody,
    ) -> Result<u64, RuntimeError> {
        let query = serde_urlencoded::to_string(query).map_err(|error| protocol(address, error))?;
        let chunks = futures_util::stream::unfold(Some(upload), |upload| async move {
            let mut upload = upload?;
            let mut buffer = vec![0u8; UPLOAD_CHUNK];
            match upload.read(&mut buffer).await {
                Ok(0) => None,
                Ok(read) => {
                    buffer.truncate(read);
                    Some((Ok(Frame::data(Bytes::from(buffer))), Some(upload)))
                }
                Err(error) => Some((Err(error), None)),
            }
        });
        let body = UnsyncBoxBody::new(StreamBody::new(chunks));
        // No overall timeout: an upload lasts as long as its client sends.
        let response = self
            .send(address, Method::PUT, &format!("/v1/write?{query}"), body)
            .await?;
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_CALL_BYTES)
            .collect()
            .await
            .map_err(|error| unreachable(address, error))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|error| protocol(address, error))
    }
}

fn forward_exec(address: String, body: Incoming) -> ExecStream {
    let (sender, stream) = ExecStream::channel(STREAM_CAPACITY);
    tokio::spawn(async move {
        let mut lines = LineReader::new(body);
        let mut cancelled = sender.cancelled;
        loop {
            // The consumer dropping its stream drops this body: the node sees
            // the connection close and kills the execution.
            let next = tokio::select! {
                _ = &mut cancelled => return,
                next = lines.next::<ExecEventWire>() => next,
            };
            let event = match next {
                Some(Ok(Line::Event(event))) => event,
                Some(Ok(Line::Error(_))) | None => return,
                Some(Err(error)) => {
                    tracing::warn!(node = %address, error = %error, "exec stream from a node broke");
                    return;
                }
            };
            let Ok(event) = ExecEvent::try_from(event) else {
                tracing::warn!(node = %address, "malformed exec event from a node");
                return;
            };
            if sender.events.send(event).await.is_err() {
                return;
            }
        }
    });
    stream
}

/// NDJSON lines of a response body, each bounded.
struct LineReader {
    body: Incoming,
    buffer: BytesMut,
    done: bool,
}

impl LineReader {
    fn new(body: Incoming) -> Self {
        Self {
            body,
            buffer: BytesMut::new(),
            done: false,
        }
    }

    /// The next line decoded; `None` at a clean end.
    async fn next<T: DeserializeOwned>(&mut self) -> Option<Result<Line<T>, String>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line = self.buffer.split_to(end + 1);
                return Some(
                    serde_json::from_slice(&line[..end]).map_err(|error| error.to_string()),
                );
            }
            if self.done {
                return (!self.buffer.is_empty()).then(|| Err("stream ended mid-line".into()));
            }
            if self.buffer.len() > MAX_LINE_BYTES {
                self.done = true;
                self.buffer.clear();
                return Some(Err("line over the size cap".into()));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => {
                    self.done = true;
                    self.buffer.clear();
                    return Some(Err(error.to_string()));
                }
            }
        }
    }
}
