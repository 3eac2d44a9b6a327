//! The HTTP side of the client: the server's base URL, requests with the API
//! key, the `{"success", "data" | "error"}` envelope, and streamed bodies
//! (NDJSON events, file contents) read frame by frame, never whole.
//!
//! Plain `http://` only: `https://` is refused with a clear error until the
//! CLI gets TLS.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::ClientError;

/// A request body: bytes from memory or a stream from a file.
pub type RequestBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// The largest error body or JSON answer read into memory.
const MAX_JSON_BYTES: usize = 16 << 20;
/// The longest NDJSON event (a result may carry a large image, base64).
const MAX_EVENT_BYTES: usize = 64 << 20;

/// The server's base URL: `http://authority[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl {
    authority: String,
    /// Empty, or `/prefix` without a trailing slash.
    prefix: String,
}

impl ApiUrl {
    /// Parses `CODEBOX_API_URL`.
    pub fn parse(text: &str) -> Result<ApiUrl, ClientError> {
        let invalid = |why: &str| {
            ClientError::Usage(format!(
                "invalid {}={text:?}: {why} (expected http://host:port)",
                super::API_URL_VAR
            ))
        };
        if text.starts_with("https://") {
            return Err(ClientError::Usage(format!(
                "https is not supported by the CLI yet ({}={text}); use http:// \
                 (e.g. through an SSH tunnel) or an SDK",
                super::API_URL_VAR
            )));
        }
        let uri: Uri = text.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("the scheme must be http"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid(
                "credentials belong in CODEBOX_API_KEY, not the URL",
            ));
        }
        if uri.query().is_some() {
            return Err(invalid("no query string"));
        }
        Ok(ApiUrl {
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The local server of the configuration: a wildcard bind address is
    /// reached on the loopback interface.
    pub fn local(host: &str, port: u16) -> ApiUrl {
        let host = match host {
            "" | "0.0.0.0" => "127.0.0.1".to_owned(),
            "::" | "[::]" => "[::1]".to_owned(),
            host if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
            host => host.to_owned(),
        };
        ApiUrl {
            authority: format!("{host}:{port}"),
            prefix: String::new(),
        }
    }

    /// `scheme://authority/prefix` + `path_and_query` (which starts with `/`).
    pub fn join(&self, scheme: &str, path_and_query: &str) -> String {
        format!(
            "{scheme}://{}{}{path_and_query}",
            self.authority, self.prefix
        )
    }
}

impl fmt::Display for ApiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// The server's error envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(reason) = self.reason.as_ref().filter(|r| !self.message.contains(*r)) {
            write!(f, " (reason: {reason})")?;
        }
        if let Some(request_id) = &self.request_id {
            write!(f, " (request id {request_id})")?;
        }
        Ok(())
    }
}

impl ApiError {
    /// The envelope of a failed answer; a body that is not one (a proxy's
    /// HTML page, ...) still gives a readable error.
    pub(crate) fn from_body(
        status: StatusCode,
        body: &[u8],
        request_id: Option<String>,
    ) -> ApiError {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().and_then(|value| value.get("error"));
        let text = |name: &str| {
            error
                .and_then(|error| error.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match text("code") {
            Some(code) => ApiError {
                status: status.as_u16(),
                code,
                message: text("message").unwrap_or_default(),
                field: text("field"),
                reason: text("reason"),
                request_id: text("request_id").or(request_id),
            },
            None => ApiError {
                status: status.as_u16(),
                code: format!("HTTP_{}", status.as_u16()),
                message: format!(
                    "the server answered {status} without an error envelope: {}",
                    snippet(body)
                ),
                field: None,
                reason: None,
                request_id,
            },
        }
    }
}

/// The first bytes of a body, printable, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A connection to one server with one API key.
#[derive(Debug, Clone)]
pub struct ApiClient {
    url: ApiUrl,
    key: String,
    client: Client<HttpConnector, RequestBody>,
}

impl ApiClient {
    pub fn new(url: ApiUrl, key: String) -> ApiClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        ApiClient { url, key, client }
    }

    pub fn url(&self) -> &ApiUrl {
        &self.url
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sends a request; any answer (error statuses included) is returned.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: RequestBody,
        headers: &[(&'static str, String)],
    ) -> Result<Response<Incoming>, ClientError> {
        let uri = self.url.join("http", path_and_query);
        let mut request = Request::builder()
            .method(method)
            .uri(&uri)
            .header("x-api-key", &self.key)
            .header(
                "user-agent",
                concat!("codebox-cli/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(body).map_err(|error| {
            ClientError::Usage(format!("cannot build a request to {uri}: {error}"))
        })?;
        self.client
            .request(request)
            .await
            .map_err(|error| ClientError::Unreachable {
                url: self.url.to_string(),
                source: Box::new(error),
            })
    }

    /// Sends a request and fails with the server's error unless it is a 2xx.
    pub async fn send_ok(
        &self,
        method: Method,
        path_and_query: &str,
        body: RequestBody,
        headers: &[(&'static str, String)],
    ) -> Result<Response<Incoming>, ClientError> {
        let response = self.send(method, path_and_query, body, headers).await?;
        check(response).await
    }

    /// A JSON request; the envelope's `data` on success.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let (body, headers) = match body {
            Some(value) => (
                full(Bytes::from(value.to_string())),
                vec![("content-type", "application/json".to_owned())],
            ),
            None => (empty(), Vec::new()),
        };
        let response = self.send_ok(method, path_and_query, body, &headers).await?;
        let bytes = read_bounded(response.into_body(), MAX_JSON_BYTES).await?;
        let envelope: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ClientError::Protocol(format!("not JSON: {}", snippet(&bytes))))?;
        let data = envelope
            .get("data")
            .cloned()
            .ok_or_else(|| ClientError::Protocol(format!("no data in {}", snippet(&bytes))))?;
        serde_json::from_value(data)
            .map_err(|error| ClientError::Protocol(format!("unexpected data: {error}")))
    }

    /// A JSON request answered with NDJSON events.
    pub async fn ndjson(
        &self,
        path_and_query: &str,
        body: &Value,
    ) -> Result<EventStream, ClientError> {
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("accept", "application/x-ndjson".to_owned()),
        ];
        let response = self
            .send_ok(
                Method::POST,
                path_and_query,
                full(Bytes::from(body.to_string())),
                &headers,
            )
            .await?;
        Ok(EventStream::new(response.into_body()))
    }
}

/// A request body from memory.
pub fn full(bytes: Bytes) -> RequestBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// No request body.
pub fn empty() -> RequestBody {
    full(Bytes::new())
}

/// Fails with the server's error envelope unless the answer is a 2xx.
pub async fn check(response: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
    let status = response.status();
    if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(response);
    }
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|value: &HeaderValue| value.to_str().ok())
        .map(str::to_owned);
    let body = read_bounded(response.into_body(), MAX_JSON_BYTES)
        .await
        .unwrap_or_default();
    Err(ClientError::Api(Box::new(ApiError::from_body(
        status, &body, request_id,
    ))))
}

/// The whole body, at most `limit` bytes.
async fn read_bounded(mut body: Incoming, limit: usize) -> Result<Bytes, ClientError> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(read_error)?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(ClientError::Protocol(format!(
                    "an answer over {limit} bytes"
                )));
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

/// A body that broke off mid-way.
pub fn read_error(error: hyper::Error) -> ClientError {
    ClientError::Protocol(format!("the answer broke off: {error}"))
}

/// The next chunk of a streamed body, `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, ClientError> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(read_error)?.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
    Ok(None)
}

/// NDJSON events, one JSON value per line, read as they arrive.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    buffer: BytesMut,
    done: bool,
}

impl EventStream {
    fn new(body: Incoming) -> EventStream {
        EventStream {
            body,
            buffer: BytesMut::new(),
            done: false,
        }
    }

    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let line = &line[..end];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_event(line).map(Some);
            }
            if self.done {
                if self.buffer.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let rest = self.buffer.split();
                return parse_event(&rest).map(Some);
            }
            match next_chunk(&mut self.body).await? {
                Some(chunk) => {
                    if self.buffer.len() + chunk.len() > MAX_EVENT_BYTES {
                        return Err(ClientError::Protocol(format!(
                            "an event over {MAX_EVENT_BYTES} bytes"
                        )));
                    }
                    self.buffer.extend_from_slice(&chunk);
                }
                None => self.done = true,
            }
        }
    }
}

fn parse_event(line: &[u8]) -> Result<Value, ClientError> {
    serde_json::from_slice(line)
        .map_err(|_| ClientError::Protocol(format!("not an NDJSON event: {}", snippet(line))))
}

/// One path segment, percent-encoded (ids come from the command line).
pub fn segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                encoded.push(char::from(byte));
            }
            byte => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    // `.` and `..` alone would be resolved as path steps by some servers.
    match encoded.as_str() {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => encoded,
    }
}

/// `/api/v1/sandboxes/{id}` + `rest`.
pub fn sandbox_path(id: &str, rest: &str) -> String {
    format!("/api/v1/sandboxes/{}{rest}", segment(id))
}

/// `?a=b&...`, form-encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{encoded}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_an_optional_prefix() {
        let url = ApiUrl::parse("http://example.com:8080/codebox/").expect("valid");
        assert_eq!(
            url.join("http", "/api/v1/runtimes"),
            "http://example.com:8080/codebox/api/v1/runtimes"
        );
        assert_eq!(url.join("ws", "/x"), "ws://example.com:8080/codebox/x");
        let https = ApiUrl::parse("https://example.com").expect_err("no TLS yet");
        assert!(
            https
                .render()
                .contains("https is not supported by the CLI yet"),
            "{}",
            https.render()
        );
        for bad in [
            "example.com:3000",
            "ftp://x",
            "http://u:p@x:1",
            "http://x:1/?a=b",
        ] {
            assert!(ApiUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wildcard_bind_address_is_reached_on_loopback() {
        assert_eq!(
            ApiUrl::local("0.0.0.0", 3000).to_string(),
            "http://127.0.0.1:3000"
        );
        assert_eq!(ApiUrl::local("::", 3000).to_string(), "http://[::1]:3000");
        assert_eq!(ApiUrl::local("::1", 1).to_string(), "http://[::1]:1");
        assert_eq!(
            ApiUrl::local("10.0.0.2", 80).to_string(),
            "http://10.0.0.2:80"
        );
    }

    #[test]
    fn hostile_ids_stay_one_path_segment() {
        assert_eq!(segment("abc"), "abc");
        assert_eq!(segment("../../admin?x=1#"), "..%2F..%2Fadmin%3Fx%3D1%23");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(
            sandbox_path("a/b", "/files"),
            "/api/v1/sandboxes/a%2Fb/files"
        );
        assert_eq!(query(&[("path", "a b&c=d")]), "?path=a+b%26c%3Dd");
    }

    #[test]
    fn error_envelopes_and_foreign_bodies_both_read_as_one_line() {
        let body = br#"{"success":false,"error":{"code":"NOT_FOUND","message":"sandbox not found","request_id":"r1"}}"#;
        let error = ApiError::from_body(StatusCode::NOT_FOUND, body, None);
        assert_eq!(
            error.to_string(),
            "NOT_FOUND: sandbox not found (request id r1)"
        );
        let error = ApiError::from_body(
            StatusCode::BAD_GATEWAY,
            b"<html>\n<body>bad gateway</body></html>",
            Some("r2".into()),
        );
        assert_eq!(error.code, "HTTP_502");
        assert!(!error.to_string().contains('\n'), "{error}");
        assert!(error.to_string().ends_with("(request id r2)"), "{error}");
    }
}
