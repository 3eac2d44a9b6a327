//! The embedded default store: one SQLite file in WAL mode, opened through a
//! bounded sqlx pool. SQLite allows one writer at a time; every write here is
//! a single statement (or an `IMMEDIATE` transaction) so writers queue on the
//! busy timeout instead of failing on a lock upgrade.

mod rows;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use codebox_types::{ApiKeyId, ExecutionId, SandboxId, SandboxStatus, TerminationReason, UserId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use time::OffsetDateTime;

use crate::convert::{self, micros};
use crate::cursor;
use crate::migration::Migration;
use crate::sql_error::{map_op, map_sqlx};
use crate::{
    ApiKeyRecord, ExecutionRecord, NewApiKey, Page, PoolSettings, PurgeReport, SandboxFilter,
    SandboxRecord, Store, StoreError, User,
};

use rows::{api_key_from_row, execution_from_row, sandbox_from_row, user_from_row};

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 3,
        name: "nodes",
        sql: include_str!("migrations/0003_nodes.sql"),
    },
    Migration {
        version: 4,
        name: "execution_content",
        sql: include_str!("migrations/0004_execution_content.sql"),
    },
];

const USER_COLUMNS: &str = "id, name, is_admin, created_at";
const KEY_COLUMNS: &str = "id, user_id, name, prefix, created_at, revoked_at, last_used_at";
const SANDBOX_COLUMNS: &str = "id, user_id, runtime, cpu, memory_mb, isolation, status, \
    termination_reason, metadata, created_at, expires_at, ended_at, node";
const EXECUTION_COLUMNS: &str = "id, sandbox_id, context_id, language, status, exit_code, \
    execution_count, duration_ms, code_size, created_at, code, output";
const LIVE: &str = "('creating', 'running')";

/// `last_used_at` is refreshed at most this often, so authenticating is not a
/// database write on every request.
const LAST_USED_GRANULARITY_MICROS: i64 = 60_000_000;

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    /// Ends a newest-first listing: orders by `(created_at, id)`, fetches one row
    /// past `limit` (so the page knows whether more follow), maps the rows and
    /// cuts the page with its next cursor.
    async fn fetch_page<T>(
        &self,
        operation: &'static str,
        mut query: QueryBuilder<'_, Sqlite>,
        limit: u32,
        from_row: fn(&'static str, &sqlx::sqlite::SqliteRow) -> Result<T, StoreError>,
        key: fn(&T) -> (i64, String),
    ) -> Result<Page<T>, StoreError> {
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(map_op(operation))?;
        let records = rows
            .iter()
            .map(|row| from_row(operation, row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(cursor::paginate(records, limit, key))
    }

    /// Opens (creating if needed, mode 0600) the database file at `path` with
    /// default pool settings, and migrates it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &PoolSettings::default()).await
    }

    /// [`SqliteStore::open`] with explicit pool settings.
    pub async fn open_with(path: &Path, settings: &PoolSettings) -> Result<Self, StoreError> {
        create_private_file(path).await?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(settings.statement_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(map_op("open"))?;
        Self::migrated(pool).await
    }

    /// A private database in memory (tests and throwaway servers). It lives on
    /// one connection that the pool never closes: the data goes with it.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(map_op("open"))?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(map_op("open"))?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self, StoreError> {
        migrate(&pool).await?;
        Ok(Self { pool })
    }

    /// The schema versions recorded as applied (for tests and diagnostics).
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(map_op("applied_migrations"))
    }
}

/// The database holds API-key hashes: create it readable by its owner only.
/// SQLite gives the `-wal` and `-shm` files the same mode.
async fn create_private_file(path: &Path) -> Result<(), StoreError> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .await
        .map(drop)
        .map_err(|source| StoreError::Unavailable {
            operation: "open",
            source: Box::new(source),
        })
}

/// Applies pending migrations, each in an `IMMEDIATE` transaction: the write
/// lock is taken before the applied set is read, so two processes opening
/// the same file at once apply each migration exactly once.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    for migration in MIGRATIONS {
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_op("migrate"))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                name TEXT NOT NULL,
                applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(map_op("migrate"))?;
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(migration.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_op("migrate"))?;
        if applied.is_some() {
            continue;
        }
        for statement in crate::migration::statements(migration.sql) {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(map_op("migrate"))?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(micros(OffsetDateTime::now_utc()))
            .execute(&mut *tx)
            .await
            .map_err(map_op("migrate"))?;
        tx.commit().await.map_err(map_op("migrate"))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "sqlite migration applied"
        );
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(map_op("ping"))
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(map_op("count_users"))?;
        convert::to_u64("count_users", "count", count)
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO users (id, name, is_admin, created_at) VALUES (?, ?, ?, ?)")
            .bind(user.id.as_str())
            .bind(&user.name)
            .bind(user.is_admin)
            .bind(micros(user.created_at))
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(map_sqlx("create_user", "user"))
    }

    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_op("get_user"))?;
        row.map(|row| user_from_row("get_user", &row, ""))
            .transpose()
    }

    async fn get_user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_op("get_user_by_name"))?;
        row.map(|row| user_from_row("get_user_by_name", &row, ""))
            .transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(map_op("list_users"))?;
        rows.iter()
            .map(|row| user_from_row("list_users", row, ""))
            .collect()
    }

    async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, hash, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id.as_str())
        .bind(key.user_id.as_str())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.hash)
        .bind(micros(key.created_at))
        .execute(&self.pool)
        .await
        .map_err(map_sqlx("create_api_key", "api key"))?;
        Ok(ApiKeyRecord {
            id: key.id.clone(),
            user_id: key.user_id.clone(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            created_at: crate::truncate_to_micros(key.created_at),
            revoked_at: None,
            last_used_at: None,
        })
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<(ApiKeyRecord, User)>, StoreError> {
        const OP: &str = "find_api_key";
        let sql = "SELECT k.id, k.user_id, k.name, k.prefix, k.created_at, k.revoked_at, \
                   k.last_used_at, u.id AS u_id, u.name AS u_name, u.is_admin AS u_is_admin, \
                   u.created_at AS u_created_at \
                   FROM api_keys k JOIN users u ON u.id = k.user_id \
                   WHERE k.hash = ? AND k.revoked_at IS NULL";
        let Some(row) = sqlx::query(sql)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_op(OP))?
        else {
            return Ok(None);
        };
        let mut key = api_key_from_row(OP, &row)?;
        let user = user_from_row(OP, &row, "u_")?;
        let now = OffsetDateTime::now_utc();
        let stale = key
            .last_used_at
            .is_none_or(|last| micros(now) - micros(last) >= LAST_USED_GRANULARITY_MICROS);
        if stale {
            // Bookkeeping only: the key is valid either way, so a busy
            // database must not turn a good key into a failed request.
            let recorded = sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
                .bind(micros(now))
                .bind(key.id.as_str())
                .execute(&self.pool)
                .await;
            match recorded {
                Ok(_) => key.last_used_at = Some(crate::truncate_to_micros(now)),
                Err(error) => {
                    tracing::warn!(api_key_id = %key.id, error = %error, "could not record api key use")
                }
            }
        }
        Ok(Some((key, user)))
    }

    async fn list_api_keys(&self, user: Option<&UserId>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE (?1 IS NULL OR user_id = ?1) \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(user.map(UserId::as_str))
            .fetch_all(&self.pool)
            .await
            .map_err(map_op("list_api_keys"))?;
        rows.iter()
            .map(|row| api_key_from_row("list_api_keys", row))
            .collect()
    }

    async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(micros(OffsetDateTime::now_utc()))
                .bind(id.as_str())
                .execute(&self.pool)
                .await
                .map_err(map_op("revoke_api_key"))?;
        Ok(result.rows_affected() == 1)
    }

    async fn insert_sandbox(
        &self,
        record: &SandboxRecord,
        max_live_per_user: u32,
    ) -> Result<(), StoreError> {
        // One statement: SQLite takes the write lock before evaluating the
        // count, so the check and the insert are atomic against other writers.
        let sql = format!(
            "INSERT INTO sandboxes ({SANDBOX_COLUMNS}) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE (SELECT COUNT(*) FROM sandboxes WHERE user_id = ? AND status IN {LIVE}) < ?"
        );
        let result = sqlx::query(&sql)
            .bind(record.id.as_str())
            .bind(record.user_id.as_str())
            .bind(&record.runtime)
            .bind(record.resources.cpu)
            .bind(convert::to_i64(record.resources.memory))
            .bind(&record.isolation)
            .bind(record.status.as_str())
            .bind(record.termination_reason.map(TerminationReason::as_str))
            .bind(convert::metadata_to_json(&record.metadata))
            .bind(micros(record.created_at))
            .bind(micros(record.expires_at))
            .bind(record.ended_at.map(micros))
            .bind(&record.node)
            .bind(record.user_id.as_str())
            .bind(i64::from(max_live_per_user))
            .execute(&self.pool)
            .await
            .map_err(map_sqlx("insert_sandbox", "sandbox"))?;
        if result.rows_affected() == 0 {
            return Err(StoreError::QuotaExceeded {
                limit: max_live_per_user,
            });
        }
        Ok(())
    }

    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        let sql = format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_op("get_sandbox"))?;
        row.map(|row| sandbox_from_row("get_sandbox", &row))
            .transpose()
    }

    async fn list_sandboxes(
        &self,
        filter: &SandboxFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<SandboxRecord>, StoreError> {
        const OP: &str = "list_sandboxes";
        let position = cursor.map(cursor::decode::<SandboxId>).transpose()?;
        let limit = cursor::clamp_limit(limit);
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE user_id = "
        ));
        query.push_bind(filter.user_id.as_str());
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        for (key, value) in &filter.metadata {
            // json_each compares the key as text: no JSON-path parsing of
            // client-supplied keys, and both sides are bound parameters.
            query
                .push(
                    " AND EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) AS m WHERE m.key = ",
                )
                .push_bind(key.as_str())
                .push(" AND m.type = 'text' AND m.value = ")
                .push_bind(value.as_str())
                .push(")");
        }
        push_after(&mut query, position.as_ref());
        self.fetch_page(
            OP,
            query,
            limit,
            sandbox_from_row,
            |record: &SandboxRecord| (micros(record.created_at), record.id.to_string()),
        )
        .await
    }

    async fn mark_sandbox_running(&self, id: &SandboxId) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE sandboxes SET status = 'running' WHERE id = ? AND status = 'creating'",
        )
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(map_op("mark_sandbox_running"))?;
        Ok(result.rows_affected() == 1)
    }

    async fn end_sandbox(
        &self,
        id: &SandboxId,
        status: SandboxStatus,
        reason: TerminationReason,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        convert::check_end_status("end_sandbox", status)?;
        let sql = format!(
            "UPDATE sandboxes SET status = ?, termination_reason = ?, ended_at = ? \
             WHERE id = ? AND status IN {LIVE}"
        );
        let result = sqlx::query(&sql)
            .bind(status.as_str())
            .bind(reason.as_str())
            .bind(micros(at))
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_op("end_sandbox"))?;
        Ok(result.rows_affected() == 1)
    }

    async fn set_sandbox_expiry(
        &self,
        id: &SandboxId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let sql = format!("UPDATE sandboxes SET expires_at = ? WHERE id = ? AND status IN {LIVE}");
        let result = sqlx::query(&sql)
            .bind(micros(expires_at))
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_op("set_sandbox_expiry"))?;
        Ok(result.rows_affected() == 1)
    }

    async fn list_live_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let sql = format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE status IN {LIVE} ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(map_op("list_live_sandboxes"))?;
        rows.iter()
            .map(|row| sandbox_from_row("list_live_sandboxes", row))
            .collect()
    }

    async fn list_expired_sandboxes(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<SandboxId>, StoreError> {
        let sql = format!(
            "SELECT id FROM sandboxes WHERE status IN {LIVE} AND expires_at <= ? \
             ORDER BY expires_at, id"
        );
        let ids: Vec<String> = sqlx::query_scalar(&sql)
            .bind(micros(now))
            .fetch_all(&self.pool)
            .await
            .map_err(map_op("list_expired_sandboxes"))?;
        ids.into_iter()
            .map(|id| {
                id.parse()
                    .map_err(|_| crate::sql_error::corrupt("list_expired_sandboxes", "id"))
            })
            .collect()
    }

    async fn insert_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        sqlx::query(&sql)
            .bind(record.id.as_str())
            .bind(record.sandbox_id.as_str())
            .bind(&record.context_id)
            .bind(&record.language)
            .bind(&record.status)
            .bind(record.exit_code)
            .bind(record.execution_count)
            .bind(convert::to_i64(record.duration_ms))
            .bind(convert::to_i64(record.code_size))
            .bind(micros(record.created_at))
            .bind(&record.code)
            .bind(&record.output)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(map_sqlx("insert_execution", "execution"))
    }

    async fn list_executions(
        &self,
        sandbox_id: &SandboxId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<ExecutionRecord>, StoreError> {
        const OP: &str = "list_executions";
        let position = cursor.map(cursor::decode::<ExecutionId>).transpose()?;
        let limit = cursor::clamp_limit(limit);
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE sandbox_id = "
        ));
        query.push_bind(sandbox_id.as_str());
        push_after(&mut query, position.as_ref());
        self.fetch_page(
            OP,
            query,
            limit,
            execution_from_row,
            |record: &ExecutionRecord| (micros(record.created_at), record.id.to_string()),
        )
        .await
    }

    async fn purge(
        &self,
        executions_before: OffsetDateTime,
        sandboxes_before: OffsetDateTime,
    ) -> Result<PurgeReport, StoreError> {
        const OP: &str = "purge";
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_op(OP))?;
        let tombstones = format!("status NOT IN {LIVE} AND ended_at IS NOT NULL AND ended_at < ?");
        let executions = sqlx::query(&format!(
            "DELETE FROM executions WHERE created_at < ? \
             OR sandbox_id IN (SELECT id FROM sandboxes WHERE {tombstones})"
        ))
        .bind(micros(executions_before))
        .bind(micros(sandboxes_before))
        .execute(&mut *tx)
        .await
        .map_err(map_op(OP))?
        .rows_affected();
        let sandboxes = sqlx::query(&format!("DELETE FROM sandboxes WHERE {tombstones}"))
            .bind(micros(sandboxes_before))
            .execute(&mut *tx)
            .await
            .map_err(map_op(OP))?
            .rows_affected();
        tx.commit().await.map_err(map_op(OP))?;
        Ok(PurgeReport {
            executions,
            sandboxes,
        })
    }
}

/// Keyset condition: rows strictly after the cursor in newest-first order.
fn push_after(query: &mut QueryBuilder<'_, Sqlite>, position: Option<&cursor::Position>) {
    if let Some(position) = position {
        query
            .push(" AND (created_at < ")
            .push_bind(position.created_at_micros)
            .push(" OR (created_at = ")
            .push_bind(position.created_at_micros)
            .push(" AND id < ")
            .push_bind(position.id.clone())
            .push("))");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered() {
        assert!(crate::migration::is_ordered(MIGRATIONS));
    }

    #[tokio::test]
    async fn opening_twice_applies_migrations_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("codebox.db");
        let first = SqliteStore::open(&path).await.expect("first open");
        let second = SqliteStore::open(&path).await.expect("second open");
        assert_eq!(
            first.applied_migrations().await.expect("versions"),
            vec![1, 3, 4]
        );
        assert_eq!(
            second.applied_migrations().await.expect("versions"),
            vec![1, 3, 4]
        );
    }

    #[tokio::test]
    async fn database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("codebox.db");
        SqliteStore::open(&path).await.expect("open");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
