//! The one error type of the core. The HTTP layer maps each variant to a status
//! and an [`ErrorCode`]; the core itself never knows HTTP.

use std::time::Duration;

use codebox_runtime::RuntimeError;
use codebox_store::StoreError;
use codebox_types::{ErrorCode, TerminationReason};

/// A boxed cause, kept for logs and never shown to clients.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything a core operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A request field is missing, malformed or out of range.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// A pagination cursor that this server did not issue.
    #[error("invalid pagination cursor")]
    InvalidCursor,
    /// Missing, unknown, revoked or expired credentials.
    #[error("invalid or missing credentials")]
    Unauthorized,
    /// No such sandbox for this user (another user's sandbox looks the same).
    #[error("sandbox not found")]
    NotFound,
    /// No such context in the sandbox.
    #[error("context not found")]
    ContextNotFound,
    /// No such file or directory inside the sandbox.
    #[error("file not found: {detail}")]
    FileNotFound { detail: String },
    /// No such running process in the sandbox.
    #[error("process not found")]
    ProcessNotFound,
    /// The sandbox existed and has ended.
    #[error("sandbox has ended: {reason}")]
    Gone { reason: TerminationReason },
    /// The request conflicts with the current state (e.g. a name taken).
    #[error("{message}")]
    Conflict { message: String },
    /// A body or the code is larger than `limit` bytes.
    #[error("payload too large: the limit is {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// A quota such as live sandboxes per user is exhausted.
    #[error("{resource} limit exceeded: {limit}")]
    QuotaExceeded { resource: &'static str, limit: u64 },
    /// The database, the runtime or host capacity is unavailable right now.
    #[error("service temporarily unavailable")]
    Unavailable {
        retry_after: Duration,
        #[source]
        source: BoxError,
    },
    /// The operation did not finish in time.
    #[error("operation timed out")]
    Timeout,
    /// A bug or an unexpected failure; details only in logs.
    #[error("internal error")]
    Internal {
        #[source]
        source: BoxError,
    },
}

/// How long clients are told to wait after a dependency failure.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

impl CoreError {
    /// A validation failure of `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The catalogue code the HTTP layer answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::Validation { .. } | CoreError::InvalidCursor => ErrorCode::ValidationError,
            CoreError::Unauthorized => ErrorCode::Unauthorized,
            CoreError::NotFound
            | CoreError::ContextNotFound
            | CoreError::FileNotFound { .. }
            | CoreError::ProcessNotFound => ErrorCode::NotFound,
            CoreError::Gone { .. } => ErrorCode::SandboxGone,
            CoreError::Conflict { .. } => ErrorCode::Conflict,
            CoreError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            CoreError::QuotaExceeded { .. } => ErrorCode::ResourceLimitError,
            CoreError::Unavailable { .. } => ErrorCode::ServiceUnavailable,
            CoreError::Timeout => ErrorCode::Timeout,
            CoreError::Internal { .. } => ErrorCode::InternalError,
        }
    }

    pub(crate) fn internal(source: impl Into<BoxError>) -> Self {
        Self::Internal {
            source: source.into(),
        }
    }
}

impl From<StoreError> for CoreError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::QuotaExceeded { limit } => CoreError::QuotaExceeded {
                resource: "sandboxes",
                limit: u64::from(limit),
            },
            StoreError::InvalidCursor => CoreError::InvalidCursor,
            StoreError::Conflict { entity } => CoreError::Conflict {
                message: format!("{entity} already exists"),
            },
            error @ StoreError::Unavailable { .. } => CoreError::Unavailable {
                retry_after: DEFAULT_RETRY_AFTER,
                source: Box::new(error),
            },
            error @ StoreError::Internal { .. } => CoreError::internal(error),
        }
    }
}

impl From<RuntimeError> for CoreError {
    fn from(error: RuntimeError) -> Self {
        match error {
            RuntimeError::NotFound { .. } => CoreError::Gone {
                reason: TerminationReason::AgentLost,
            },
            RuntimeError::UnknownRuntime { name } => {
                CoreError::validation("runtime", format!("unknown runtime {name:?}"))
            }
            RuntimeError::InvalidRequest { detail } => CoreError::validation("request", detail),
            error @ RuntimeError::AtCapacity { .. } => CoreError::Unavailable {
                retry_after: DEFAULT_RETRY_AFTER,
                source: Box::new(error),
            },
            error => CoreError::internal(error),
        }
    }
}
