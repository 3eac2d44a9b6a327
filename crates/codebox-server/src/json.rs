//! [`ApiJson`]: the JSON body extractor. Unlike axum's `Json` it rejects with the
//! error envelope, enforces the body limit itself (axum's `DefaultBodyLimit`
//! does not apply to an extractor that reads the body stream), and names the
//! offending field of a validation failure.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{header, HeaderMap};
use codebox_types::ErrorCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// How request bodies are read (from `server.max_body_bytes` and
/// `server.idle_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Longest pause between two chunks of a body: a client trickling its body
    /// (slow POST) cannot hold a connection for the whole request timeout.
    pub stall_timeout: Duration,
}

/// Longest serde message echoed to a client: serde quotes the client's own
/// values, which may be huge.
const MAX_MESSAGE_LEN: usize = 300;

/// A JSON request body of type `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    BodyLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limits = BodyLimits::from_ref(state);
        require_json_content_type(request.headers())?;
        reject_declared_oversize(request.headers(), limits.max_bytes)?;
        let bytes = read_body(request.into_body(), limits).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected a body with Content-Type: application/json",
        ))
    }
}

/// Refuses before reading a byte when `Content-Length` already says too much.
fn reject_declared_oversize(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => Err(too_large(limit)),
        _ => Ok(()),
    }
}

/// Reads the whole body, at most `max_bytes`, each chunk within `stall_timeout`.
pub(crate) async fn read_body(body: Body, limits: BodyLimits) -> Result<bytes::Bytes, ApiError> {
    let mut body = Limited::new(body, limits.max_bytes);
    let mut bytes = bytes::BytesMut::new();
    loop {
        let frame = tokio::time::timeout(limits.stall_timeout, body.frame())
            .await
            .map_err(|_| stalled(limits.stall_timeout))?;
        match frame {
            None => return Ok(bytes.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(too_large(limits.max_bytes))
            }
            Some(Err(error)) => {
                tracing::debug!(error = %error, "failed to read a request body");
                return Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    "the request body could not be read completely",
                ));
            }
        }
    }
}

/// A stalled upload is the client's failure: a 400, never a 5xx.
fn stalled(timeout: Duration) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidJson,
        format!(
            "the request body stalled: no data for {} s",
            timeout.as_secs()
        ),
    )
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body larger than {limit} bytes"),
    )
}

/// Parses `bytes`, mapping syntax errors to `INVALID_JSON` and shape errors
/// (wrong type, unknown or missing field) to `VALIDATION_ERROR` with `field`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize(&mut *deserializer).map_err(|error| json_error(&error))?;
    // Trailing bytes after the value make the whole body invalid JSON.
    deserializer.end().map_err(|error| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {}", client_message(&error)),
        )
    })?;
    Ok(value)
}

fn json_error(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = error.inner();
    let message = client_message(inner);
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {message}"),
        ),
        Category::Data => {
            let field = field_name(&error.path().to_string(), &message);
            let error = ApiError::new(ErrorCode::ValidationError, message);
            match field {
                Some(field) => error.with_field(field),
                None => error,
            }
        }
    }
}

/// serde's message without the ` at line 1 column 9` suffix, bounded.
fn client_message(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let trimmed = match full.rfind(" at line ") {
        Some(position) => &full[..position],
        None => &full,
    };
    let mut message: String = trimmed.chars().take(MAX_MESSAGE_LEN).collect();
    if message.len() < trimmed.len() {
        message.push_str("...");
    }
    message
}

/// The dotted path of the offending field. serde reports a missing or unknown
/// field at its parent, naming the field only in the message.
fn field_name(path: &str, message: &str) -> Option<String> {
    let parent = if path == "." { "" } else { path };
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match named {
        Some(name) if parent.rsplit('.').next() == Some(name) => Some(parent.to_owned()),
        Some(name) if parent.is_empty() => Some(name.to_owned()),
        Some(name) => Some(format!("{parent}.{name}")),
        None if parent.is_empty() => None,
        None => Some(parent.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        cpu: f64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        runtime: String,
        resources: Option<Inner>,
        metadata: Option<BTreeMap<String, String>>,
    }

    fn error_of(body: &str) -> ApiError {
        parse_json::<Outer>(body.as_bytes()).expect_err("the body is invalid")
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        for body in ["{", "{\"runtime\": }", "", "{\"runtime\": \"x\"} trailing"] {
            assert_eq!(error_of(body).code(), ErrorCode::InvalidJson, "{body:?}");
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        let cases = [
            (r#"{}"#, "runtime"),
            (r#"{"runtime": 3}"#, "runtime"),
            (r#"{"runtime": "x", "bogus": 1}"#, "bogus"),
            (
                r#"{"runtime": "x", "resources": {"cpu": "a"}}"#,
                "resources.cpu",
            ),
            (
                r#"{"runtime": "x", "resources": {"cpu": 1, "gpu": 1}}"#,
                "resources.gpu",
            ),
            (r#"{"runtime": "x", "resources": {}}"#, "resources.cpu"),
            (r#"{"runtime": "x", "metadata": {"k": 1}}"#, "metadata.k"),
        ];
        for (body, field) in cases {
            let error = error_of(body);
            assert_eq!(error.code(), ErrorCode::ValidationError, "{body}");
            assert_eq!(error.field(), Some(field), "{body}: {}", error.message());
            assert!(!error.message().contains("line"), "{}", error.message());
        }
    }

    #[test]
    fn huge_values_are_not_echoed_whole() {
        let body = format!(r#"{{"runtime": ["{}"]}}"#, "x".repeat(10_000));
        assert!(error_of(&body).message().len() <= MAX_MESSAGE_LEN + 3);
    }

    #[test]
    fn content_type_must_be_json() {
        let mut headers = HeaderMap::new();
        assert!(require_json_content_type(&headers).is_err());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().expect("valid"));
        assert!(require_json_content_type(&headers).is_err());
        headers.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().expect("valid"),
        );
        assert!(require_json_content_type(&headers).is_ok());
    }
}
