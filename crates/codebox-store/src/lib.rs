//! Persistent state: users, API keys, sandboxes and executions, behind the
//! [`Store`] trait, with SQLite (embedded default) and Postgres implementations
//! that pass one conformance suite. Also the Redis cache-aside layer and the
//! shared rate limiter, both of which degrade to local state when Redis is down.
//!
//! This crate knows SQL and Redis; it knows nothing of HTTP or Linux.
//!
//! Timestamps are stored in UTC with microsecond precision (Postgres' limit):
//! a record read back equals the one written once its times are truncated to
//! whole microseconds (see [`truncate_to_micros`]).

mod cache;
mod convert;
mod cursor;
mod limiter;
mod migration;
mod nodes;
mod open;
mod postgres;
mod redis_link;
mod sql_error;
mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use codebox_types::{
    ApiKeyId, ExecutionId, Resources, SandboxId, SandboxStatus, TerminationReason, UserId,
};
use time::OffsetDateTime;

pub use cache::{CachedStore, SANDBOX_CACHE_TTL};
pub use limiter::{LocalRateLimiter, RateDecision, RateLimiter, RedisRateLimiter};
pub use nodes::{NodeCapacity, NodeRecord, NodeRegistration, NodeState, NodeStore, NodeUsage};
pub use open::{open_store, PoolSettings};
pub use postgres::PostgresStore;
pub use redis_link::{InvalidRedisUrl, RedisHealth, RedisLink, RedisSettings};
pub use sqlite::SqliteStore;

/// `at` without its sub-microsecond part, in UTC: what a store gives back.
pub fn truncate_to_micros(at: OffsetDateTime) -> OffsetDateTime {
    let nanos = at.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(nanos - nanos.rem_euclid(1000))
        .expect("the range bounds are whole seconds, so flooring to a microsecond stays inside")
}

/// A user (tenant).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub is_admin: bool,
    pub created_at: OffsetDateTime,
}

/// An API key as stored: never the key itself, only its keyed hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: Option<String>,
    /// The first characters of the key, shown in listings to tell keys apart.
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

/// A new API key to store.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: Option<String>,
    pub prefix: String,
    /// Hex of HMAC-SHA256(API_KEY_SECRET, key); unique.
    pub hash: String,
    pub created_at: OffsetDateTime,
}

/// A sandbox row: the source of truth for ownership, quota and lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: SandboxId,
    pub user_id: UserId,
    /// Canonical runtime name.
    pub runtime: String,
    pub resources: Resources,
    pub isolation: String,
    pub status: SandboxStatus,
    pub termination_reason: Option<TerminationReason>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    /// The node it runs on, in scale-out deployments; `None` when all-in-one.
    pub node: Option<String>,
}

/// One recorded execution (a command or a code cell). Code and output are not
/// stored here.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    pub id: ExecutionId,
    pub sandbox_id: SandboxId,
    pub context_id: Option<String>,
    /// `command`, `python`, `javascript`, ...
    pub language: String,
    /// `succeeded`, `failed`, `timed_out`, `cancelled`, ...
    pub status: String,
    pub exit_code: Option<i32>,
    pub execution_count: Option<i64>,
    pub duration_ms: u64,
    pub code_size: u64,
    pub created_at: OffsetDateTime,
    /// The code, only when keeping it is configured (`retention.store_code`).
    pub code: Option<String>,
    /// The output as JSON text (`{"stdout", "stderr", "text", "error",
    /// "truncated"}`, capped by the core), only with `retention.store_code`.
    pub output: Option<String>,
}

/// Which sandboxes to list. Always scoped to one user.
#[derive(Debug, Clone)]
pub struct SandboxFilter {
    pub user_id: UserId,
    pub status: Option<SandboxStatus>,
    /// Every pair must match exactly.
    pub metadata: Vec<(String, String)>,
}

/// One page of a cursor-paginated listing, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque; pass it back to get the next page. `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub executions: u64,
    pub sandboxes: u64,
}

/// The one error type of the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value (user name, key hash, id) already exists.
    #[error("{entity} already exists")]
    Conflict { entity: &'static str },
    /// The per-user live sandbox quota is exhausted.
    #[error("sandboxes limit exceeded: {limit}")]
    QuotaExceeded { limit: u32 },
    /// A cursor the client passed back is not one we issued.
    #[error("invalid pagination cursor")]
    InvalidCursor,
    /// The database is unreachable, locked or timed out: retry later (503).
    #[error("database unavailable during {operation}")]
    Unavailable {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Anything else: a bug or corrupt data (500).
    #[error("database error during {operation}")]
    Internal {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Persistent state. Every method is one atomic operation.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip (`SELECT 1`) for `/ready`.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn count_users(&self) -> Result<u64, StoreError>;
    /// `Conflict` when the name is taken.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;
    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError>;
    async fn get_user_by_name(&self, name: &str) -> Result<Option<User>, StoreError>;
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;

    /// `Conflict` when the hash exists.
    async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, StoreError>;
    /// The live (unrevoked) key with this hash and its user; records `last_used_at`.
    async fn find_api_key(&self, hash: &str) -> Result<Option<(ApiKeyRecord, User)>, StoreError>;
    /// All keys, or one user's; revoked ones included.
    async fn list_api_keys(&self, user: Option<&UserId>) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// `false` when there is no such live key.
    async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<bool, StoreError>;

    /// Inserts a sandbox in a live state unless its user already has
    /// `max_live_per_user` live sandboxes (`QuotaExceeded`). Atomic: concurrent
    /// inserts never exceed the quota.
    async fn insert_sandbox(
        &self,
        record: &SandboxRecord,
        max_live_per_user: u32,
    ) -> Result<(), StoreError>;
    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError>;
    async fn list_sandboxes(
        &self,
        filter: &SandboxFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<SandboxRecord>, StoreError>;
    /// `creating` -> `running`. `false` if the sandbox is not `creating`.
    async fn mark_sandbox_running(&self, id: &SandboxId) -> Result<bool, StoreError>;
    /// A live sandbox ends (`terminated` or `failed`) with a reason. `false` if it
    /// was not live (the first reason wins).
    async fn end_sandbox(
        &self,
        id: &SandboxId,
        status: SandboxStatus,
        reason: TerminationReason,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Moves a live sandbox's expiry. `false` if it is not live.
    async fn set_sandbox_expiry(
        &self,
        id: &SandboxId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Every live sandbox (reconcile at start, shutdown).
    async fn list_live_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError>;
    /// Live sandboxes whose `expires_at` is at or before `now`.
    async fn list_expired_sandboxes(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<SandboxId>, StoreError>;

    async fn insert_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError>;
    async fn list_executions(
        &self,
        sandbox_id: &SandboxId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<ExecutionRecord>, StoreError>;

    /// Retention: deletes executions created before `executions_before` and ended
    /// sandboxes (tombstones) that ended before `sandboxes_before`.
    async fn purge(
        &self,
        executions_before: OffsetDateTime,
        sandboxes_before: OffsetDateTime,
    ) -> Result<PurgeReport, StoreError>;
}
