//! The Connect protocol (<https://connectrpc.com/docs/protocol>), JSON codec
//! only, written by hand: unary calls, server-streaming responses, client-
//! streaming requests, errors, deadlines.
//!
//! * Unary: `application/json` in and out; an error is a non-200 status with
//!   `{"code": "not_found", "message": "…"}`.
//! * Streams: every message is an envelope `flags: u8 | length: u32 BE | JSON`.
//!   A streaming response is always `200` with `Content-Type` exactly
//!   `application/connect+json` (Python's client rejects any parameter), its
//!   frames flushed as produced, and ends with an end-stream envelope (flags
//!   `0x02`) holding `{}` or `{"error": {...}}` (JS's client fails without it).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

/// The streaming content type, exactly.
pub const CONNECT_JSON: &str = "application/connect+json";
/// Largest message accepted in one request (unary body or envelope).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Envelope flag: the payload is compressed (not supported: compression is
/// never negotiated).
const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Longest deadline honoured (`Connect-Timeout-Ms` has at most 10 digits).
const MAX_TIMEOUT_MS: u64 = 9_999_999_999;

/// A Connect error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (the protocol's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// The one error type of an RPC: a code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// `{"code": "...", "message": "..."}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code.as_str(), "message": self.message})
    }
}

impl IntoResponse for RpcError {
    /// The unary error response.
    fn into_response(self) -> Response {
        let mut response = (self.code.http_status(), self.to_json().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The media type of a request, without parameters, lower-cased.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Parses one JSON message (snake_case and camelCase both accepted by the types;
/// unknown fields ignored). An empty body is the empty message.
pub fn parse_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| RpcError::invalid(format!("invalid request message: {error}")))
}

/// Checks a unary request's content type and parses its body.
pub fn unary_request<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, RpcError> {
    let media = media_type(headers);
    if media != "application/json" {
        return Err(RpcError::new(
            Code::Unimplemented,
            format!("unsupported content type {media:?}: only the JSON codec (application/json) is served"),
        ));
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(RpcError::new(
            Code::ResourceExhausted,
            format!("the message is over {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    parse_message(body)
}

/// A unary success: `200 application/json`.
pub fn unary_response<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => {
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => RpcError::new(Code::Internal, error.to_string()).into_response(),
    }
}

/// One envelope: flags, big-endian length, payload.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(flags);
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// The end-stream envelope: `{}` or `{"error": {...}}`.
pub fn end_stream(error: Option<&RpcError>) -> Bytes {
    let payload = match error {
        None => serde_json::json!({}),
        Some(error) => serde_json::json!({ "error": error.to_json() }),
    };
    envelope(FLAG_END_STREAM, payload.to_string().as_bytes())
}

/// Reads envelopes out of a byte buffer that grows as the body arrives.
#[derive(Debug, Default)]
pub struct EnvelopeReader {
    buffer: Vec<u8>,
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl EnvelopeReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete envelope, `None` until one is buffered. An envelope
    /// over [`MAX_MESSAGE_BYTES`] or a compressed one is refused as soon as its
    /// header is seen (before its payload is buffered).
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, RpcError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let flags = self.buffer[0];
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if length > MAX_MESSAGE_BYTES {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("an envelope of {length} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"),
            ));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(RpcError::new(
                Code::Unimplemented,
                "compressed envelopes are not supported (no compression was negotiated)",
            ));
        }
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        let payload = self.buffer[5..5 + length].to_vec();
        self.buffer.drain(..5 + length);
        Ok(Some(Envelope { flags, payload }))
    }

    /// Bytes left over that do not make a whole envelope.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

/// Checks a streaming request's content type.
pub fn check_stream_content_type(headers: &HeaderMap) -> Result<(), RpcError> {
    let media = media_type(headers);
    if media != CONNECT_JSON {
        return Err(RpcError::new(
            Code::Unimplemented,
            format!("unsupported content type {media:?}: streams take {CONNECT_JSON}"),
        ));
    }
    Ok(())
}

/// The single request message of a server-streaming call.
pub fn stream_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, RpcError> {
    check_stream_content_type(headers)?;
    let mut reader = EnvelopeReader::default();
    reader.push(body);
    let envelope = reader
        .next_envelope()?
        .ok_or_else(|| RpcError::invalid("the request holds no complete envelope"))?;
    if !reader.is_empty() {
        return Err(RpcError::invalid(
            "a server-streaming call takes exactly one request message",
        ));
    }
    if envelope.flags & FLAG_END_STREAM != 0 {
        return Err(RpcError::invalid(
            "the request message is an end-stream envelope",
        ));
    }
    parse_message(&envelope.payload)
}

/// The `Connect-Timeout-Ms` deadline, if any (at most 10 digits).
pub fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, RpcError> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| RpcError::invalid("Connect-Timeout-Ms: not ASCII"))?;
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RpcError::invalid(
            "Connect-Timeout-Ms: must be 1 to 10 digits",
        ));
    }
    let millis: u64 = text
        .parse()
        .map_err(|_| RpcError::invalid("Connect-Timeout-Ms: not a number"))?;
    Ok(Some(Duration::from_millis(millis.min(MAX_TIMEOUT_MS))))
}

/// Default keepalive interval (upstream envd's default).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

/// The `Keepalive-Ping-Interval` (seconds), clamped to 1 s..1 h.
pub fn keepalive_interval(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds.clamp(1, 3600)))
        .unwrap_or(DEFAULT_KEEPALIVE)
}

/// The writing side of a server-streaming response.
#[derive(Debug, Clone)]
pub struct StreamSender {
    frames: mpsc::Sender<Bytes>,
}

/// The client went away (the response body was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientGone;

impl StreamSender {
    /// Sends one message envelope.
    pub async fn send<T: Serialize>(&self, message: &T) -> Result<(), ClientGone> {
        let payload = match serde_json::to_vec(message) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "an envd message failed to serialise");
                return Err(ClientGone);
            }
        };
        self.frames
            .send(envelope(0, &payload))
            .await
            .map_err(|_| ClientGone)
    }

    /// Ends the stream, with an error or not. Consumes the sender: nothing may
    /// follow the end-stream envelope.
    pub async fn finish(self, error: Option<RpcError>) {
        if let Some(error) = &error {
            tracing::debug!(code = error.code.as_str(), message = %error.message, "envd stream ended with an error");
        }
        let _ = self.frames.send(end_stream(error.as_ref())).await;
    }

    /// Resolves when the client went away.
    pub async fn closed(&self) {
        self.frames.closed().await;
    }
}

/// A streaming response and its sender. Frames are handed to hyper one by one,
/// so each is flushed as produced.
pub fn stream_response() -> (StreamSender, Response) {
    let (frames, receiver) = mpsc::channel::<Bytes>(32);
    let body = tokio_stream_from(receiver);
    let mut response = Response::new(Body::from_stream(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONNECT_JSON));
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    (StreamSender { frames }, response)
}

/// A stream that ends with the stream error `error` at once: `200` + end-stream.
pub fn stream_error(error: RpcError) -> Response {
    tracing::debug!(code = error.code.as_str(), message = %error.message, "envd stream refused");
    let mut response = Response::new(Body::from(end_stream(Some(&error))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONNECT_JSON));
    response
}

fn tokio_stream_from(
    receiver: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (Ok(frame), receiver))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn envelopes_round_trip_and_end_stream_has_flag_two() {
        let frame = envelope(0, br#"{"a":1}"#);
        assert_eq!(&frame[..5], &[0, 0, 0, 0, 7]);
        let end = end_stream(None);
        assert_eq!(&end[..], &[2, 0, 0, 0, 2, b'{', b'}']);
        let error = end_stream(Some(&RpcError::new(Code::NotFound, "gone")));
        assert_eq!(error[0], FLAG_END_STREAM);
        let json: serde_json::Value =
            serde_json::from_slice(&error[5..]).expect("valid JSON in this test");
        assert_eq!(json["error"]["code"], "not_found");
        assert_eq!(json["error"]["message"], "gone");
    }

    #[test]
    fn reader_waits_for_whole_envelopes_and_refuses_oversized_ones() {
        let mut reader = EnvelopeReader::default();
        let frame = envelope(0, b"{}");
        reader.push(&frame[..3]);
        assert_eq!(reader.next_envelope(), Ok(None));
        reader.push(&frame[3..]);
        let got = reader.next_envelope().expect("valid").expect("complete");
        assert_eq!(got.payload, b"{}");
        assert!(reader.is_empty());

        let mut reader = EnvelopeReader::default();
        let huge = (MAX_MESSAGE_BYTES as u32 + 1).to_be_bytes();
        reader.push(&[0, huge[0], huge[1], huge[2], huge[3]]);
        let error = reader.next_envelope().expect_err("oversized");
        assert_eq!(error.code, Code::ResourceExhausted);

        let mut reader = EnvelopeReader::default();
        reader.push(&envelope(FLAG_COMPRESSED, b"{}"));
        assert_eq!(
            reader.next_envelope().expect_err("compressed").code,
            Code::Unimplemented
        );
    }

    #[test]
    fn stream_requests_need_the_connect_content_type_and_one_envelope() {
        #[derive(serde::Deserialize, Debug)]
        struct Message {
            path: String,
        }
        let good = headers(&[("content-type", "application/connect+json")]);
        let body = envelope(0, br#"{"path":"/a"}"#);
        let message: Message = stream_request(&good, &body).expect("valid");
        assert_eq!(message.path, "/a");
        let json = headers(&[("content-type", "application/json")]);
        assert_eq!(
            stream_request::<Message>(&json, &body)
                .expect_err("wrong type")
                .code,
            Code::Unimplemented
        );
        let mut two = body.to_vec();
        two.extend_from_slice(&body);
        assert_eq!(
            stream_request::<Message>(&good, &two)
                .expect_err("two")
                .code,
            Code::InvalidArgument
        );
        assert!(stream_request::<Message>(&good, &body[..4]).is_err());
        let bad_json = envelope(0, b"{not json");
        assert_eq!(
            stream_request::<Message>(&good, &bad_json)
                .expect_err("bad")
                .code,
            Code::InvalidArgument
        );
    }

    #[test]
    fn unary_requests_take_json_with_a_charset_and_empty_bodies() {
        #[derive(serde::Deserialize, Debug, Default)]
        #[serde(default)]
        struct Empty {}
        let with_charset = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert!(unary_request::<Empty>(&with_charset, b"").is_ok());
        let proto = headers(&[("content-type", "application/proto")]);
        assert_eq!(
            unary_request::<Empty>(&proto, b"").expect_err("proto").code,
            Code::Unimplemented
        );
    }

    #[test]
    fn errors_map_to_statuses_and_json() {
        let response = RpcError::new(Code::NotFound, "no such file").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
        assert_eq!(Code::AlreadyExists.http_status(), StatusCode::CONFLICT);
        assert_eq!(
            Code::Unauthenticated.http_status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(Code::Canceled.http_status().as_u16(), 499);
    }

    #[test]
    fn deadlines_and_keepalives_parse() {
        assert_eq!(timeout(&HeaderMap::new()), Ok(None));
        assert_eq!(
            timeout(&headers(&[("connect-timeout-ms", "1500")])),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert!(timeout(&headers(&[("connect-timeout-ms", "-1")])).is_err());
        assert!(timeout(&headers(&[("connect-timeout-ms", "12345678901")])).is_err());
        assert_eq!(
            keepalive_interval(&headers(&[("keepalive-ping-interval", "50")])),
            Duration::from_secs(50)
        );
        assert_eq!(
            keepalive_interval(&headers(&[("keepalive-ping-interval", "0")])),
            Duration::from_secs(1)
        );
        assert_eq!(keepalive_interval(&HeaderMap::new()), DEFAULT_KEEPALIVE);
    }

    #[test]
    fn streaming_responses_have_the_exact_content_type() {
        let (_sender, response) = stream_response();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/connect+json")
        );
        let refused = stream_error(RpcError::invalid("x"));
        assert_eq!(refused.status(), StatusCode::OK);
    }
}
