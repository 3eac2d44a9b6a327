//! The Postgres store, for deployments with more than one API replica. A
//! bounded pool with acquire and statement timeouts; the per-user quota is
//! made atomic by locking the user's row; `executions` is partitioned by
//! month (see [`partitions`]).

mod partitions;
mod rows;

use std::str::FromStr;

use async_trait::async_trait;
use codebox_types::{ApiKeyId, ExecutionId, SandboxId, SandboxStatus, TerminationReason, UserId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use time::OffsetDateTime;

use crate::convert::{self, micros};
use crate::cursor;
use crate::migration::Migration;
use crate::sql_error::{corrupt, internal, map_op, map_sqlx, InvalidArgument};
use crate::{
    truncate_to_micros as micro, ApiKeyRecord, ExecutionRecord, NewApiKey, Page, PoolSettings,
    PurgeReport, SandboxFilter, SandboxRecord, Store, StoreError, User,
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

/// Serialises migrations across processes starting at once.
const MIGRATION_LOCK: i64 = 0x636f_6465_626f_7801;

const USER_COLUMNS: &str = "id, name, is_admin, created_at";
const KEY_COLUMNS: &str = "id, user_id, name, prefix, created_at, revoked_at, last_used_at";
const SANDBOX_COLUMNS: &str = "id, user_id, runtime, cpu, memory_mb, isolation, status, \
    termination_reason, metadata, created_at, expires_at, ended_at, node";
const EXECUTION_COLUMNS: &str = "id, sandbox_id, context_id, language, status, exit_code, \
    execution_count, duration_ms, code_size, created_at, code, output";
const LIVE: &str = "('creating', 'running')";

/// `last_used_at` is refreshed at most this often (see the SQLite store).
const LAST_USED_GRANULARITY: time::Duration = time::Duration::minutes(1);

/// Opening the first connection took longer than `connect_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("connecting to the database timed out")]
struct ConnectTimeout;

/// The Postgres implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
}

impl PostgresStore {
    /// Ends a newest-first listing: orders by `(created_at, id)`, fetches one row
    /// past `limit` (so the page knows whether more follow), maps the rows and
    /// cuts the page with its next cursor.
    async fn fetch_page<T>(
        &self,
        operation: &'static str,
        mut query: QueryBuilder<'_, Postgres>,
        limit: u32,
        from_row: fn(&'static str, &sqlx::postgres::PgRow) -> Result<T, StoreError>,
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

    /// Connects to `url` (`postgres://...`), migrates the schema and creates
    /// the upcoming `executions` partitions.
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        Self::connect_in_schema(url, None, settings).await
    }

    /// [`PostgresStore::connect`] with every pooled connection's
    /// `search_path` set to `schema` (an existing schema): one database can
    /// then host isolated stores (tests, or several deployments).
    pub async fn connect_in_schema(
        url: &str,
        schema: Option<&str>,
        settings: &PoolSettings,
    ) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url).map_err(map_op("connect"))?;
        let timeout_ms = settings.statement_timeout.as_millis().to_string();
        options = options.options([("statement_timeout", timeout_ms.as_str())]);
        if let Some(schema) = schema {
            if !is_plain_identifier(schema) {
                return Err(internal(
                    "connect",
                    InvalidArgument {
                        what: "schema must be a plain identifier ([a-z0-9_], not starting with a digit)",
                    },
                ));
            }
            options = options.options([("search_path", schema)]);
        }
        let connecting = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options);
        let pool = tokio::time::timeout(settings.connect_timeout, connecting)
            .await
            .map_err(|_| StoreError::Unavailable {
                operation: "connect",
                source: Box::new(ConnectTimeout),
            })?
            .map_err(map_op("connect"))?;
        migrate(&pool).await?;
        partitions::ensure(&pool, OffsetDateTime::now_utc()).await?;
        Ok(Self { pool })
    }

    /// Creates the `executions` partitions for this month and the next two
    /// that are missing; returns their names. Call daily (every
    /// [`Store::purge`] also does it, so a server running the retention job
    /// needs nothing else).
    pub async fn ensure_partitions(&self) -> Result<Vec<String>, StoreError> {
        self.ensure_partitions_for(OffsetDateTime::now_utc()).await
    }

    /// [`PostgresStore::ensure_partitions`] as if it were `at`.
    pub async fn ensure_partitions_for(
        &self,
        at: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        partitions::ensure(&self.pool, at).await
    }

    /// Names of the monthly `executions` partitions attached now.
    pub async fn partitions(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(map_op("list_partitions"))?;
        let mut names: Vec<String> = partitions::existing(&mut conn)
            .await?
            .into_iter()
            .map(|month| month.table_name())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The schema versions recorded as applied (for tests and diagnostics).
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(map_op("applied_migrations"))
    }

    /// Closes the pool (tests drop their schema after this).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Startup options are space-separated `-c key=value` pairs: only names that
/// need no quoting are passed through.
fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Applies pending migrations, each in its own transaction holding a
/// transaction-scoped advisory lock, so concurrent starts serialise and each
/// migration is applied exactly once.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    const OP: &str = "migrate";
    for migration in MIGRATIONS {
        let mut tx = pool.begin().await.map_err(map_op(OP))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(map_op(OP))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .execute(&mut *tx)
        .await
        .map_err(map_op(OP))?;
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(migration.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_op(OP))?;
        if applied.is_some() {
            continue;
        }
        for statement in crate::migration::statements(migration.sql) {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(map_op(OP))?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *tx)
            .await
            .map_err(map_op(OP))?;
        tx.commit().await.map_err(map_op(OP))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "postgres migration applied"
        );
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
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
        sqlx::query("INSERT INTO users (id, name, is_admin, created_at) VALUES ($1, $2, $3, $4)")
            .bind(user.id.as_str())
            .bind(&user.name)
            .bind(user.is_admin)
            .bind(micro(user.created_at))
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(map_sqlx("create_user", "user"))
    }

    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_op("get_user"))?;
        row.map(|row| user_from_row("get_user", &row, ""))
            .transpose()
    }

    async fn get_user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
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
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.id.as_str())
        .bind(key.user_id.as_str())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.hash)
        .bind(micro(key.created_at))
        .execute(&self.pool)
        .await
        .map_err(map_sqlx("create_api_key", "api key"))?;
        Ok(ApiKeyRecord {
            id: key.id.clone(),
            user_id: key.user_id.clone(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            created_at: micro(key.created_at),
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
                   WHERE k.hash = $1 AND k.revoked_at IS NULL";
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
        let now = micro(OffsetDateTime::now_utc());
        if key
            .last_used_at
            .is_none_or(|last| now - last >= LAST_USED_GRANULARITY)
        {
            // Bookkeeping only: the key is valid either way, so a busy
            // database must not turn a good key into a failed request.
            let recorded = sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(key.id.as_str())
                .execute(&self.pool)
                .await;
            match recorded {
                Ok(_) => key.last_used_at = Some(now),
                Err(error) => {
                    tracing::warn!(api_key_id = %key.id, error = %error, "could not record api key use")
                }
            }
        }
        Ok(Some((key, user)))
    }

    async fn list_api_keys(&self, user: Option<&UserId>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR user_id = $1) \
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
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(micro(OffsetDateTime::now_utc()))
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
        const OP: &str = "insert_sandbox";
        let mut tx = self.pool.begin().await.map_err(map_op(OP))?;
        // Locking the user's row serialises this user's inserts across
        // connections and replicas; other users are not blocked.
        let user: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(record.user_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_op(OP))?;
        if user.is_none() {
            return Err(internal(
                OP,
                InvalidArgument {
                    what: "sandbox owner does not exist",
                },
            ));
        }
        let live: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM sandboxes WHERE user_id = $1 AND status IN {LIVE}"
        ))
        .bind(record.user_id.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(map_op(OP))?;
        if live >= i64::from(max_live_per_user) {
            return Err(StoreError::QuotaExceeded {
                limit: max_live_per_user,
            });
        }
        insert_sandbox_row(&mut tx, record).await?;
        tx.commit().await.map_err(map_op(OP))
    }

    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        let sql = format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE id = $1");
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
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE user_id = "
        ));
        query.push_bind(filter.user_id.as_str());
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        for (key, value) in &filter.metadata {
            // Containment of a one-pair object built from bound text: keys
            // and values are data, never JSON or SQL syntax.
            query
                .push(" AND metadata @> jsonb_build_object(")
                .push_bind(key.as_str())
                .push("::text, ")
                .push_bind(value.as_str())
                .push("::text)");
        }
        push_after(OP, &mut query, position.as_ref())?;
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
            "UPDATE sandboxes SET status = 'running' WHERE id = $1 AND status = 'creating'",
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
            "UPDATE sandboxes SET status = $1, termination_reason = $2, ended_at = $3 \
             WHERE id = $4 AND status IN {LIVE}"
        );
        let result = sqlx::query(&sql)
            .bind(status.as_str())
            .bind(reason.as_str())
            .bind(micro(at))
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
        let sql =
            format!("UPDATE sandboxes SET expires_at = $1 WHERE id = $2 AND status IN {LIVE}");
        let result = sqlx::query(&sql)
            .bind(micro(expires_at))
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
            "SELECT id FROM sandboxes WHERE status IN {LIVE} AND expires_at <= $1 \
             ORDER BY expires_at, id"
        );
        let ids: Vec<String> = sqlx::query_scalar(&sql)
            .bind(micro(now))
            .fetch_all(&self.pool)
            .await
            .map_err(map_op("list_expired_sandboxes"))?;
        ids.into_iter()
            .map(|id| {
                id.parse()
                    .map_err(|_| corrupt("list_expired_sandboxes", "id"))
            })
            .collect()
    }

    async fn insert_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO executions ({EXECUTION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
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
            .bind(micro(record.created_at))
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
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE sandbox_id = "
        ));
        query.push_bind(sandbox_id.as_str());
        push_after(OP, &mut query, position.as_ref())?;
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
        // The retention job is the server's periodic maintenance: it also
        // keeps the monthly partitions created ahead.
        partitions::ensure(&self.pool, OffsetDateTime::now_utc()).await?;
        let mut tx = self.pool.begin().await.map_err(map_op(OP))?;
        let dropped = partitions::drop_before(&mut tx, executions_before).await?;
        let tombstones = format!("status NOT IN {LIVE} AND ended_at IS NOT NULL AND ended_at < $2");
        let deleted = sqlx::query(&format!(
            "DELETE FROM executions WHERE created_at < $1 \
             OR sandbox_id IN (SELECT id FROM sandboxes WHERE {tombstones})"
        ))
        .bind(micro(executions_before))
        .bind(micro(sandboxes_before))
        .execute(&mut *tx)
        .await
        .map_err(map_op(OP))?
        .rows_affected();
        let sandboxes = sqlx::query(&format!(
            "DELETE FROM sandboxes \
             WHERE status NOT IN {LIVE} AND ended_at IS NOT NULL AND ended_at < $1"
        ))
        .bind(micro(sandboxes_before))
        .execute(&mut *tx)
        .await
        .map_err(map_op(OP))?
        .rows_affected();
        tx.commit().await.map_err(map_op(OP))?;
        Ok(PurgeReport {
            executions: dropped + deleted,
            sandboxes,
        })
    }
}

async fn insert_sandbox_row(
    conn: &mut sqlx::PgConnection,
    record: &SandboxRecord,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO sandboxes ({SANDBOX_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    );
    sqlx::query(&sql)
        .bind(record.id.as_str())
        .bind(record.user_id.as_str())
        .bind(&record.runtime)
        .bind(record.resources.cpu)
        .bind(convert::to_i64(record.resources.memory))
        .bind(&record.isolation)
        .bind(record.status.as_str())
        .bind(record.termination_reason.map(TerminationReason::as_str))
        .bind(Json(&record.metadata))
        .bind(micro(record.created_at))
        .bind(micro(record.expires_at))
        .bind(record.ended_at.map(micro))
        .bind(&record.node)
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(map_sqlx("insert_sandbox", "sandbox"))
}

/// Keyset condition: rows strictly after the cursor in newest-first order.
fn push_after(
    operation: &'static str,
    query: &mut QueryBuilder<'_, Postgres>,
    position: Option<&cursor::Position>,
) -> Result<(), StoreError> {
    let Some(position) = position else {
        return Ok(());
    };
    // A cursor we issued always decodes to a representable time.
    let at = convert::from_micros(operation, "cursor", position.created_at_micros)
        .map_err(|_| StoreError::InvalidCursor)?;
    query
        .push(" AND (created_at < ")
        .push_bind(at)
        .push(" OR (created_at = ")
        .push_bind(at)
        .push(" AND id < ")
        .push_bind(position.id.clone())
        .push("))");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered() {
        assert!(crate::migration::is_ordered(MIGRATIONS));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(is_plain_identifier("cbx_test_abc2"));
        assert!(!is_plain_identifier("a b"));
        assert!(!is_plain_identifier("x -c role=postgres"));
        assert!(!is_plain_identifier("Public"));
        assert!(!is_plain_identifier("1abc"));
        assert!(!is_plain_identifier(""));
    }

    fn require_send<T: Send>(value: T) -> T {
        value
    }

    /// The server spawns these on tokio's multi-threaded runtime.
    #[tokio::test]
    async fn maintenance_futures_are_send() {
        let settings = PoolSettings::default();
        drop(require_send(PostgresStore::connect(
            "postgres://unused",
            &settings,
        )));
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://unused@127.0.0.1:1/unused")
            .expect("lazy pool");
        let store = PostgresStore { pool };
        drop(require_send(store.ensure_partitions()));
        drop(require_send(
            store.purge(OffsetDateTime::now_utc(), OffsetDateTime::now_utc()),
        ));
    }
}
