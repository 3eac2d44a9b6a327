//! Pure data shared by every codebox crate: identifiers, the sandbox spec and its
//! limits, lifecycle states, and the stable error-code catalogue.
//!
//! This crate owns no I/O and must stay cheap to compile: it is the vocabulary the
//! runtime, the store, the core and the HTTP server agree on. API request and
//! response bodies that are only meaningful over HTTP live in `codebox-server`.

pub mod error_code;
pub mod ids;
pub mod sandbox;

pub use error_code::ErrorCode;
pub use ids::{ApiKeyId, ExecutionId, IdParseError, SandboxId, UserId};
pub use sandbox::{Resources, RuntimeInfo, SandboxStatus, TerminationReason};
