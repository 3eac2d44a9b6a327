//! The one place database errors become [`StoreError`]s. Messages name the
//! operation only: no SQL text, file paths or connection strings reach them
//! (the driver error stays available as the `source` for logs).

use std::error::Error as StdError;

use sqlx::error::{DatabaseError, ErrorKind};

use crate::StoreError;

/// Data read back from the database that does not decode (corrupt or written
/// by a newer version).
#[derive(Debug, thiserror::Error)]
#[error("column {column} holds an unexpected value")]
pub(crate) struct CorruptValue {
    pub column: &'static str,
}

/// A caller broke a documented precondition of a store method.
#[derive(Debug, thiserror::Error)]
#[error("invalid argument: {what}")]
pub(crate) struct InvalidArgument {
    pub what: &'static str,
}

/// Maps a driver error for `operation`; a unique violation becomes a conflict
/// on `entity`.
pub(crate) fn map_sqlx(
    operation: &'static str,
    entity: &'static str,
) -> impl Fn(sqlx::Error) -> StoreError {
    move |error| classify(operation, entity, error)
}

/// Like [`map_sqlx`] for operations where a unique violation is a bug.
pub(crate) fn map_op(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |error| classify(operation, "", error)
}

pub(crate) fn internal(
    operation: &'static str,
    source: impl StdError + Send + Sync + 'static,
) -> StoreError {
    StoreError::Internal {
        operation,
        source: Box::new(source),
    }
}

pub(crate) fn corrupt(operation: &'static str, column: &'static str) -> StoreError {
    internal(operation, CorruptValue { column })
}

fn classify(operation: &'static str, entity: &'static str, error: sqlx::Error) -> StoreError {
    let kind = match &error {
        sqlx::Error::Database(db) => database_kind(db.as_ref()),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Kind::Unavailable,
        _ => Kind::Internal,
    };
    match kind {
        Kind::Conflict if !entity.is_empty() => StoreError::Conflict { entity },
        Kind::Unavailable => StoreError::Unavailable {
            operation,
            source: Box::new(error),
        },
        Kind::Conflict | Kind::Internal => internal(operation, error),
    }
}

enum Kind {
    Conflict,
    Unavailable,
    Internal,
}

fn database_kind(error: &dyn DatabaseError) -> Kind {
    if matches!(error.kind(), ErrorKind::UniqueViolation) {
        return Kind::Conflict;
    }
    let Some(code) = error.code() else {
        return Kind::Internal;
    };
    if is_retryable_sqlite(&code) || is_retryable_postgres(&code) {
        Kind::Unavailable
    } else {
        Kind::Internal
    }
}

/// SQLite reports extended result codes as decimal; the primary code is the
/// low byte. BUSY (5), LOCKED (6), IOERR (10), FULL (13) and CANTOPEN (14)
/// are conditions of the host or of contention, not of the request.
fn is_retryable_sqlite(code: &str) -> bool {
    match code.parse::<i32>() {
        Ok(extended) => matches!(extended & 0xff, 5 | 6 | 10 | 13 | 14),
        Err(_) => false,
    }
}

/// Postgres SQLSTATEs: connection exceptions (08), insufficient resources
/// (53), operator intervention such as shutdown or a statement timeout (57),
/// and serialization failures or deadlocks (40001, 40P01) are all transient.
fn is_retryable_postgres(code: &str) -> bool {
    code.len() == 5
        && (code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57")
            || code == "40001"
            || code == "40P01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_busy_and_locked_are_retryable() {
        assert!(is_retryable_sqlite("5"));
        assert!(is_retryable_sqlite("517")); // SQLITE_BUSY_SNAPSHOT
        assert!(is_retryable_sqlite("6"));
        assert!(is_retryable_sqlite("13"));
        assert!(!is_retryable_sqlite("19")); // SQLITE_CONSTRAINT
        assert!(!is_retryable_sqlite("1555")); // SQLITE_CONSTRAINT_PRIMARYKEY
    }

    #[test]
    fn postgres_transient_states_are_retryable() {
        assert!(is_retryable_postgres("08006"));
        assert!(is_retryable_postgres("57014"));
        assert!(is_retryable_postgres("40P01"));
        assert!(!is_retryable_postgres("23505"));
        assert!(!is_retryable_postgres("42P01"));
    }

    #[test]
    fn pool_timeout_is_unavailable_and_message_is_clean() {
        let error = map_op("get_sandbox")(sqlx::Error::PoolTimedOut);
        assert!(matches!(error, StoreError::Unavailable { .. }));
        assert_eq!(error.to_string(), "database unavailable during get_sandbox");
    }
}
