//! The stable, machine-readable error codes of the public API. SDKs switch on
//! these strings; never rename one. `docs/api-errors.md` documents each.

use serde::{Deserialize, Serialize};

/// One entry of the error catalogue, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: a field is missing, of the wrong type or out of range (`field` names it).
    ValidationError,
    /// 400: the body is not valid JSON.
    InvalidJson,
    /// 401: no credentials, or credentials that are not valid.
    Unauthorized,
    /// 404: no such resource, or it belongs to another user.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the request conflicts with the resource's current state.
    Conflict,
    /// 410: the sandbox existed and has ended (`reason` says why).
    SandboxGone,
    /// 413: the body or the code is larger than allowed.
    PayloadTooLarge,
    /// 415: the body has a content type this route does not take.
    UnsupportedMediaType,
    /// 429: a quota such as sandboxes per user is exhausted.
    ResourceLimitError,
    /// 429: too many requests; `Retry-After` says when to come back.
    RateLimited,
    /// 500: a bug or an unexpected failure; the response carries no internals.
    InternalError,
    /// 503: a dependency or capacity is unavailable; `Retry-After` says when to retry.
    ServiceUnavailable,
    /// 504: the operation did not finish in time.
    Timeout,
}

impl ErrorCode {
    /// Every code, in catalogue order (used by docs and tests).
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::ValidationError,
        ErrorCode::InvalidJson,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::SandboxGone,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ResourceLimitError,
        ErrorCode::RateLimited,
        ErrorCode::InternalError,
        ErrorCode::ServiceUnavailable,
        ErrorCode::Timeout,
    ];

    /// The HTTP status this code is always sent with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationError | ErrorCode::InvalidJson => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::SandboxGone => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::ResourceLimitError | ErrorCode::RateLimited => 429,
            ErrorCode::InternalError => 500,
            ErrorCode::ServiceUnavailable => 503,
            ErrorCode::Timeout => 504,
        }
    }

    /// The wire string, e.g. `VALIDATION_ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::SandboxGone => "SANDBOX_GONE",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::ResourceLimitError => "RESOURCE_LIMIT_ERROR",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Timeout => "TIMEOUT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialises");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn only_server_faults_are_5xx() {
        for code in ErrorCode::ALL {
            let server_fault = matches!(
                code,
                ErrorCode::InternalError | ErrorCode::ServiceUnavailable | ErrorCode::Timeout
            );
            assert_eq!(code.http_status() >= 500, server_fault, "{code:?}");
        }
    }
}
