//! The one HTTP error type, [`ApiError`], and its wire envelope.
//!
//! Every failure a client sees is `{"success": false, "error": {"code", "message",
//! "field"?, "reason"?, "request_id"}}` with the status of its [`ErrorCode`]. A
//! handler returns an `ApiError`; its response carries the error as an extension
//! ([`PendingError`]) so the outermost middleware, which knows the request id, can
//! write the final body and log the internal cause. The internal cause is logged,
//! never sent.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use codebox_types::{ErrorCode, TerminationReason};
use serde::Serialize;

/// The message of every `INTERNAL_ERROR`: nothing about the cause leaks.
pub const INTERNAL_MESSAGE: &str = "internal server error";

type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// An error as sent to a client, plus an internal cause for the logs only.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    field: Option<String>,
    reason: Option<TerminationReason>,
    retry_after: Option<Duration>,
    /// Extra data sent beside the error (the `/ready` report).
    data: Option<Arc<serde_json::Value>>,
    /// A status other than the code's (only `416` for an unsatisfiable range).
    status: Option<StatusCode>,
    internal: Option<Cause>,
}

impl ApiError {
    /// An error with a message that is safe to show to the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            reason: None,
            retry_after: None,
            data: None,
            status: None,
            internal: None,
        }
    }

    /// Sends `status` instead of the code's (a `416` is a validation error
    /// whose status tells the client to fix its `Range`).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// `INTERNAL_ERROR` with a generic message; `cause` goes to the logs.
    pub fn internal(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(ErrorCode::InternalError, INTERNAL_MESSAGE).with_internal(cause)
    }

    /// `NOT_FOUND`, identical for an unknown id and another user's sandbox.
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "resource not found")
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "missing or invalid credentials: send X-API-Key or Authorization: Bearer <JWT>",
        )
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::new(ErrorCode::RateLimited, "too many requests").with_retry_after(retry_after)
    }

    pub fn service_unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message).with_retry_after(retry_after)
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_reason(mut self, reason: TerminationReason) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Sends `data` beside the error, as `"data"` of the envelope.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(Arc::new(data));
        self
    }

    /// Attaches the cause, for the logs.
    pub fn with_internal(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.internal = Some(Arc::new(cause));
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    pub fn status(&self) -> StatusCode {
        if let Some(status) = self.status {
            return status;
        }
        StatusCode::from_u16(self.code.http_status())
            .expect("every catalogue status is a valid HTTP status")
    }

    /// How long the client is told to wait (`Retry-After`), if at all.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The internal cause and its sources, one line, for logs only.
    pub fn internal_chain(&self) -> Option<String> {
        let cause = self.internal.as_ref()?;
        let mut text = cause.to_string();
        let mut source = cause.source();
        while let Some(next) = source {
            text.push_str(": ");
            text.push_str(&next.to_string());
            source = next.source();
        }
        Some(text)
    }

    /// The wire envelope of this error.
    pub fn envelope<'a>(&'a self, request_id: Option<&'a str>) -> ErrorEnvelope<'a> {
        ErrorEnvelope {
            success: false,
            data: self.data.as_deref(),
            error: ErrorBody {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                reason: self.reason,
                request_id,
            },
        }
    }

    /// The JSON body of this error.
    pub fn body_bytes(&self, request_id: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&self.envelope(request_id))
            .expect("the error envelope has only string-keyed, serialisable fields")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.internal
            .as_ref()
            .map(|cause| cause.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// `{"success": false, "error": {...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope<'a> {
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a serde_json::Value>,
    pub error: ErrorBody<'a>,
}

/// The `error` object of the envelope.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<TerminationReason>,
    pub request_id: Option<&'a str>,
}

/// The error a response stands for, left in its extensions so the outermost
/// middleware can stamp the request id into the body and log the cause.
#[derive(Debug, Clone)]
pub struct PendingError(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body_bytes(None),
        )
            .into_response();
        if let Some(retry_after) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_value(retry_after));
        }
        response.extensions_mut().insert(PendingError(self));
        response
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1: a client told
/// "0" would retry at once.
pub fn retry_after_value(retry_after: Duration) -> HeaderValue {
    let mut seconds = retry_after.as_secs();
    if retry_after.subsec_nanos() > 0 || seconds == 0 {
        seconds += 1;
    }
    HeaderValue::from(seconds)
}

/// The catalogue code for a status that some layer produced without an
/// envelope (axum's own 405, hyper-level limits...).
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        410 => ErrorCode::SandboxGone,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::ServiceUnavailable,
        408 | 504 => ErrorCode::Timeout,
        400..=499 => ErrorCode::ValidationError,
        _ => ErrorCode::InternalError,
    }
}

/// A generic, safe message for an envelope made from a bare status.
pub fn default_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::ValidationError => "the request is not valid",
        ErrorCode::InvalidJson => "the body is not valid JSON",
        ErrorCode::Unauthorized => "missing or invalid credentials",
        ErrorCode::NotFound => "resource not found",
        ErrorCode::MethodNotAllowed => "method not allowed on this route",
        ErrorCode::Conflict => "the request conflicts with the current state",
        ErrorCode::SandboxGone => "the sandbox has ended",
        ErrorCode::PayloadTooLarge => "the request body is too large",
        ErrorCode::UnsupportedMediaType => "unsupported content type: send application/json",
        ErrorCode::ResourceLimitError => "resource limit exceeded",
        ErrorCode::RateLimited => "too many requests",
        ErrorCode::InternalError => INTERNAL_MESSAGE,
        ErrorCode::ServiceUnavailable => "service unavailable, retry later",
        ErrorCode::Timeout => "the request did not finish in time",
    }
}

/// The one place a domain error becomes an HTTP error.
impl From<codebox_core::CoreError> for ApiError {
    fn from(error: codebox_core::CoreError) -> Self {
        use codebox_core::CoreError;
        match &error {
            CoreError::Validation { field, message } => {
                let field = field.clone();
                ApiError::new(ErrorCode::ValidationError, format!("{field}: {message}"))
                    .with_field(field)
            }
            CoreError::InvalidCursor => ApiError::new(
                ErrorCode::ValidationError,
                "cursor: not a cursor this server issued",
            )
            .with_field("cursor"),
            CoreError::Unauthorized => ApiError::unauthorized(),
            CoreError::NotFound => ApiError::not_found(),
            CoreError::ContextNotFound => {
                ApiError::new(ErrorCode::NotFound, "no such context in this sandbox")
            }
            CoreError::FileNotFound { detail } => ApiError::new(
                ErrorCode::NotFound,
                format!("no such file or directory: {detail}"),
            ),
            CoreError::ProcessNotFound => ApiError::new(
                ErrorCode::NotFound,
                "no such running process in this sandbox",
            ),
            CoreError::Gone { reason } => ApiError::new(
                ErrorCode::SandboxGone,
                format!("the sandbox has ended: {reason}"),
            )
            .with_reason(*reason),
            CoreError::Conflict { message } => ApiError::new(ErrorCode::Conflict, message.clone()),
            CoreError::PayloadTooLarge { limit } => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("payload too large: the limit is {limit} bytes"),
            ),
            CoreError::QuotaExceeded { resource, limit } => ApiError::new(
                ErrorCode::ResourceLimitError,
                format!("{resource} limit exceeded: {limit}"),
            ),
            CoreError::Unavailable { retry_after, .. } => {
                let retry_after = *retry_after;
                ApiError::service_unavailable(
                    "service temporarily unavailable, retry later",
                    retry_after,
                )
                .with_internal(error)
            }
            CoreError::Timeout => ApiError::new(ErrorCode::Timeout, "the operation timed out"),
            CoreError::Internal { .. } => ApiError::internal(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_omits_absent_optional_fields() {
        let error = ApiError::new(ErrorCode::Conflict, "busy");
        let json: serde_json::Value =
            serde_json::from_slice(&error.body_bytes(Some("r1"))).expect("valid JSON");
        assert_eq!(
            json,
            serde_json::json!({"success": false, "error": {
                "code": "CONFLICT", "message": "busy", "request_id": "r1"}})
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let cause = std::io::Error::other("/var/lib/secret.db: disk I/O error");
        let error = ApiError::internal(cause);
        let body = String::from_utf8(error.body_bytes(None)).expect("utf-8");
        assert!(!body.contains("secret"), "{body}");
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(error
            .internal_chain()
            .is_some_and(|chain| chain.contains("disk I/O")));
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_value(Duration::ZERO), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after_value(Duration::from_secs(60)), "60");
    }

    #[test]
    fn response_carries_status_retry_after_and_pending_error() {
        let response = ApiError::rate_limited(Duration::from_secs(5)).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert!(response.extensions().get::<PendingError>().is_some());
    }

    #[test]
    fn bare_statuses_map_to_catalogue_codes_with_the_same_status() {
        for status in [401u16, 404, 405, 409, 410, 413, 415, 429, 503, 504] {
            let status = StatusCode::from_u16(status).expect("valid");
            assert_eq!(code_for_status(status).http_status(), status.as_u16());
        }
        assert_eq!(
            code_for_status(StatusCode::BAD_GATEWAY),
            ErrorCode::InternalError
        );
    }
}
