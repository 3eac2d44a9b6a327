//! The error of the host end of the agent channel, and its mapping to `RuntimeError`.

use std::time::Duration;

use codebox_protocol::{ErrorCode, InvalidCode, InvalidExec, InvalidPath};

use crate::RuntimeError;

/// Longest agent-provided text kept in an error (the agent is untrusted).
const MAX_AGENT_TEXT: usize = 512;

/// Anything that can go wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the agent did not complete the handshake within {timeout:?}")]
    HandshakeTimeout { timeout: Duration },
    #[error("the agent speaks protocol version {agent}, the host speaks {host}")]
    VersionMismatch { agent: u32, host: u32 },
    #[error("the agent broke the protocol: {detail}")]
    Protocol { detail: String },
    #[error("the channel to the agent failed during {operation}")]
    Io {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the connection to the agent is closed")]
    Closed,
    #[error("the exec request is invalid")]
    InvalidRequest {
        #[source]
        source: InvalidExec,
    },
    #[error("the code request is invalid")]
    InvalidCode {
        #[source]
        source: InvalidCode,
    },
    #[error("the file request is invalid")]
    InvalidPath {
        #[source]
        source: InvalidPath,
    },
    /// Reading the body of an upload failed (the client's side, not the agent's).
    #[error("reading the upload body failed")]
    Body {
        #[source]
        source: std::io::Error,
    },
    #[error("the agent refused the request ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the agent did not answer {operation} within {timeout:?}")]
    Timeout {
        operation: &'static str,
        timeout: Duration,
    },
}

impl AgentError {
    /// The agent's error code of a refusal (`NotFound`, `TooLarge`, ...).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A refusal, with the agent's text bounded and stripped of control characters.
    pub(crate) fn refused(code: ErrorCode, message: &str) -> Self {
        Self::Refused {
            code,
            message: sanitize(message),
        }
    }
}

/// Error codes of file operations (protocol version 3).
pub fn is_file_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotFound
            | ErrorCode::PermissionDenied
            | ErrorCode::AlreadyExists
            | ErrorCode::NotADirectory
            | ErrorCode::IsADirectory
            | ErrorCode::DirectoryNotEmpty
            | ErrorCode::NotRegularFile
            | ErrorCode::NoSpace
            | ErrorCode::TooLarge
            | ErrorCode::FileError
    )
}

/// Bounds and cleans text that came from the agent before it reaches logs or clients.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_AGENT_TEXT)
        .collect()
}

impl From<AgentError> for RuntimeError {
    fn from(error: AgentError) -> Self {
        match error {
            AgentError::InvalidRequest { source } => RuntimeError::InvalidRequest {
                detail: source.to_string(),
            },
            AgentError::InvalidCode { source } => RuntimeError::InvalidRequest {
                detail: source.to_string(),
            },
            AgentError::InvalidPath { source } => RuntimeError::InvalidRequest {
                detail: source.to_string(),
            },
            AgentError::Body { source } => RuntimeError::Io {
                operation: "reading an upload body",
                source,
            },
            // Until the Runtime trait has file errors of its own (see the module doc),
            // a file refusal is the request's problem; `AgentError::code` keeps
            // the precise code for callers of the agent API.
            AgentError::Refused { code, message } if is_file_code(code) => {
                RuntimeError::InvalidRequest { detail: message }
            }
            // Until the Runtime trait has context errors of its own, an unknown or
            // duplicate context is the client's mistake.
            AgentError::Refused {
                code:
                    ErrorCode::InvalidRequest | ErrorCode::UnknownContext | ErrorCode::ContextExists,
                message,
            } => RuntimeError::InvalidRequest { detail: message },
            AgentError::Refused {
                code: ErrorCode::TooManyOperations | ErrorCode::SpawnFailed,
                message,
            } => RuntimeError::AtCapacity { detail: message },
            other => RuntimeError::AgentLost {
                detail: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_text_is_bounded_and_cleaned() {
        let long = format!("a\u{1b}[31m\n{}", "x".repeat(10_000));
        let clean = sanitize(&long);
        assert!(clean.len() <= MAX_AGENT_TEXT);
        assert!(!clean.contains('\u{1b}') && !clean.contains('\n'));
    }

    #[test]
    fn refusals_map_to_client_and_capacity_errors() {
        let invalid = AgentError::refused(ErrorCode::InvalidRequest, "no such program");
        assert!(matches!(
            RuntimeError::from(invalid),
            RuntimeError::InvalidRequest { .. }
        ));
        let busy = AgentError::refused(ErrorCode::SpawnFailed, "fork failed");
        assert!(matches!(
            RuntimeError::from(busy),
            RuntimeError::AtCapacity { .. }
        ));
        assert!(matches!(
            RuntimeError::from(AgentError::Closed),
            RuntimeError::AgentLost { .. }
        ));
    }
}
