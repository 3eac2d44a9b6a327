//! Core errors as Connect errors (RPCs) and as envd's plain-HTTP error JSON
//! (`/files`: `{"code": <status>, "message": "…"}`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use codebox_core::CoreError;

use crate::connect::{Code, RpcError};

/// A core refusal as the client's Connect error. Internal details are logged,
/// never sent.
pub fn rpc(error: CoreError) -> RpcError {
    let code = match &error {
        CoreError::Validation { .. } | CoreError::InvalidCursor => Code::InvalidArgument,
        CoreError::Unauthorized => Code::Unauthenticated,
        CoreError::NotFound
        | CoreError::ContextNotFound
        | CoreError::FileNotFound { .. }
        | CoreError::ProcessNotFound => Code::NotFound,
        CoreError::Gone { .. } | CoreError::Unavailable { .. } => Code::Unavailable,
        CoreError::Conflict { .. } => Code::FailedPrecondition,
        CoreError::PayloadTooLarge { .. } | CoreError::QuotaExceeded { .. } => {
            Code::ResourceExhausted
        }
        CoreError::Timeout => Code::DeadlineExceeded,
        CoreError::Internal { .. } => Code::Internal,
    };
    let message = match &error {
        CoreError::Internal { .. } => {
            tracing::error!(error = ?error, "envd request failed");
            "internal error".to_owned()
        }
        CoreError::Unavailable { .. } => {
            tracing::warn!(error = ?error, "envd request: service unavailable");
            error.to_string()
        }
        _ => error.to_string(),
    };
    RpcError::new(code, message)
}

/// An error of the plain HTTP routes: `{"code": <status>, "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<RpcError> for HttpError {
    fn from(error: RpcError) -> Self {
        let status = match error.code {
            Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
            code => code.http_status(),
        };
        Self::new(status, error.message)
    }
}

impl From<CoreError> for HttpError {
    fn from(error: CoreError) -> Self {
        let status = match &error {
            // envd answers a full disk with 507, which the SDKs name.
            CoreError::QuotaExceeded {
                resource: "disk", ..
            } => StatusCode::INSUFFICIENT_STORAGE,
            CoreError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // The sandbox is gone: the SDKs read 502 as "sandbox not running".
            CoreError::Gone { .. } => StatusCode::BAD_GATEWAY,
            _ => {
                let rpc = rpc(error);
                return Self::from(rpc);
            }
        };
        Self::new(status, error.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.status.as_u16(), "message": self.message});
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_become_connect_codes() {
        assert_eq!(
            rpc(CoreError::FileNotFound { detail: "x".into() }).code,
            Code::NotFound
        );
        assert_eq!(
            rpc(CoreError::validation("path", "bad")).code,
            Code::InvalidArgument
        );
        let internal = rpc(CoreError::Internal {
            source: "secret detail".into(),
        });
        assert_eq!(internal.code, Code::Internal);
        assert!(!internal.message.contains("secret"));
    }

    #[test]
    fn http_errors_carry_a_numeric_code() {
        let error = HttpError::from(CoreError::QuotaExceeded {
            resource: "disk",
            limit: 1,
        });
        assert_eq!(error.status, StatusCode::INSUFFICIENT_STORAGE);
        let error = HttpError::from(CoreError::FileNotFound {
            detail: "gone".into(),
        });
        assert_eq!(error.status, StatusCode::NOT_FOUND);
    }
}
