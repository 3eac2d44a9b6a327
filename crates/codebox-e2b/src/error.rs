//! The one error type of the E2B surface, [`E2bError`]: E2B's JSON shape
//! `{"code": <status>, "message": "..."}` (what the SDKs parse), with
//! `Retry-After` on 429 and 503, or plain text on the code-interpreter port
//! (what its upstream server answers). Core errors become E2B errors here and
//! nowhere else.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use codebox_core::CoreError;

/// Every 5xx says only this; the cause goes to the logs.
const INTERNAL_MESSAGE: &str = "internal server error";

/// An error as an E2B client sees it.
#[derive(Debug)]
pub struct E2bError {
    status: StatusCode,
    message: String,
    retry_after: Option<Duration>,
    /// E2B's proxy names the sandbox in its 502s.
    sandbox_id: Option<String>,
    /// Answer `text/plain` (the code interpreter's own errors).
    plain: bool,
    /// For the logs only.
    internal: Option<String>,
}

impl E2bError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            sandbox_id: None,
            plain: false,
            internal: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded")
            .with_retry_after(retry_after)
    }

    /// What E2B's edge proxy answers for a sandbox that is not there (the
    /// SDKs read a 502 as "the sandbox is gone").
    pub fn sandbox_unreachable(sandbox_id: &str, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::BAD_GATEWAY, message);
        error.sandbox_id = Some(sandbox_id.to_owned());
        error
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut error = Self::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE);
        error.internal = Some(cause.to_string());
        error
    }

    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after.max(Duration::from_secs(1)));
        self
    }

    /// As `text/plain`, like the upstream code-interpreter server.
    pub fn plain(mut self) -> Self {
        self.plain = true;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<CoreError> for E2bError {
    fn from(error: CoreError) -> Self {
        let message = error.to_string();
        match error {
            CoreError::Validation { .. } | CoreError::InvalidCursor => Self::bad_request(message),
            CoreError::Unauthorized => Self::unauthorized("invalid or missing API key"),
            CoreError::NotFound => Self::not_found("sandbox not found"),
            CoreError::ContextNotFound
            | CoreError::FileNotFound { .. }
            | CoreError::ProcessNotFound => Self::not_found(message),
            // E2B knows no tombstones: an ended sandbox is simply not found.
            CoreError::Gone { reason } => {
                Self::not_found(format!("sandbox not found: it has ended ({reason})"))
            }
            CoreError::Conflict { .. } => Self::new(StatusCode::CONFLICT, message),
            CoreError::PayloadTooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, message),
            // E2B answers 429 when the concurrent-sandbox limit is reached.
            CoreError::QuotaExceeded { .. } => Self::new(StatusCode::TOO_MANY_REQUESTS, message),
            CoreError::Unavailable {
                retry_after,
                ref source,
            } => {
                let mut unavailable = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service temporarily unavailable",
                )
                .with_retry_after(retry_after);
                unavailable.internal = Some(chain(&**source));
                unavailable
            }
            CoreError::Timeout => Self::new(StatusCode::GATEWAY_TIMEOUT, message),
            CoreError::Internal { ref source } => Self::internal(chain(&**source)),
        }
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), message = %self.message,
                internal = self.internal.as_deref(), "e2b request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), message = %self.message, "e2b request rejected");
        }
        let (content_type, body) = if self.plain {
            ("text/plain; charset=utf-8", self.message)
        } else {
            let mut body = serde_json::json!({
                "code": self.status.as_u16(),
                "message": self.message,
            });
            if let Some(id) = self.sandbox_id {
                body["sandboxId"] = serde_json::Value::String(id);
            }
            ("application/json", body.to_string())
        };
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(retry_after) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs()),
            );
        }
        response
    }
}
