//! Decoding Postgres rows into records. Every failure is a corrupt-data
//! [`StoreError::Internal`]: the database only holds what this crate wrote.

use std::collections::BTreeMap;
use std::str::FromStr;

use codebox_types::Resources;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::Row;

use crate::convert;
use crate::sql_error::{corrupt, map_op};
use crate::{ApiKeyRecord, ExecutionRecord, SandboxRecord, StoreError, User};

fn get<'r, T>(operation: &'static str, row: &'r PgRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(map_op(operation))
}

fn id<T: FromStr>(
    operation: &'static str,
    row: &PgRow,
    column: &'static str,
) -> Result<T, StoreError> {
    let text: String = get(operation, row, column)?;
    text.parse().map_err(|_| corrupt(operation, column))
}

/// A user from columns named `{prefix}id`, `{prefix}name`, ... (the prefix
/// tells a joined user's columns apart from the key's).
pub(super) fn user_from_row(
    operation: &'static str,
    row: &PgRow,
    prefix: &str,
) -> Result<User, StoreError> {
    let column = |name: &str| format!("{prefix}{name}");
    let id_text: String = get(operation, row, &column("id"))?;
    Ok(User {
        id: id_text
            .parse()
            .map_err(|_| corrupt(operation, "users.id"))?,
        name: get(operation, row, &column("name"))?,
        is_admin: get(operation, row, &column("is_admin"))?,
        created_at: get(operation, row, &column("created_at"))?,
    })
}

pub(super) fn api_key_from_row(
    operation: &'static str,
    row: &PgRow,
) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: id(operation, row, "id")?,
        user_id: id(operation, row, "user_id")?,
        name: get(operation, row, "name")?,
        prefix: get(operation, row, "prefix")?,
        created_at: get(operation, row, "created_at")?,
        revoked_at: get(operation, row, "revoked_at")?,
        last_used_at: get(operation, row, "last_used_at")?,
    })
}

pub(super) fn sandbox_from_row(
    operation: &'static str,
    row: &PgRow,
) -> Result<SandboxRecord, StoreError> {
    let status: String = get(operation, row, "status")?;
    let reason: Option<String> = get(operation, row, "termination_reason")?;
    let Json(metadata): Json<BTreeMap<String, String>> = get(operation, row, "metadata")?;
    let memory: i64 = get(operation, row, "memory_mb")?;
    Ok(SandboxRecord {
        id: id(operation, row, "id")?,
        user_id: id(operation, row, "user_id")?,
        runtime: get(operation, row, "runtime")?,
        resources: Resources {
            cpu: get(operation, row, "cpu")?,
            memory: convert::to_u64(operation, "memory_mb", memory)?,
        },
        isolation: get(operation, row, "isolation")?,
        status: convert::status(operation, &status)?,
        termination_reason: convert::reason(operation, reason.as_deref())?,
        metadata,
        created_at: get(operation, row, "created_at")?,
        expires_at: get(operation, row, "expires_at")?,
        ended_at: get(operation, row, "ended_at")?,
        node: get(operation, row, "node")?,
    })
}

pub(super) fn execution_from_row(
    operation: &'static str,
    row: &PgRow,
) -> Result<ExecutionRecord, StoreError> {
    let duration: i64 = get(operation, row, "duration_ms")?;
    let code_size: i64 = get(operation, row, "code_size")?;
    Ok(ExecutionRecord {
        id: id(operation, row, "id")?,
        sandbox_id: id(operation, row, "sandbox_id")?,
        context_id: get(operation, row, "context_id")?,
        language: get(operation, row, "language")?,
        status: get(operation, row, "status")?,
        exit_code: get(operation, row, "exit_code")?,
        execution_count: get(operation, row, "execution_count")?,
        duration_ms: convert::to_u64(operation, "duration_ms", duration)?,
        code_size: convert::to_u64(operation, "code_size", code_size)?,
        created_at: get(operation, row, "created_at")?,
        code: get(operation, row, "code")?,
        output: get(operation, row, "output")?,
    })
}
