//! Redis cache-aside for sandbox lookups, wrapped around any [`Store`].
//!
//! `get_sandbox` (on every request that names a sandbox) reads Redis first
//! and fills it on a miss; every write that changes a sandbox invalidates its
//! entry. A stale fill racing an invalidation is prevented by a tombstone:
//! invalidating writes a short-lived marker, and fills use `SET NX`, so a
//! reader that fetched the old row before the write cannot put it back. When
//! Redis fails the request is served from the database (see
//! [`RedisLink`]); only an invalidation lost to a Redis failure can leave an
//! entry stale, for at most [`SANDBOX_CACHE_TTL`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use codebox_types::{ApiKeyId, Resources, SandboxId, SandboxStatus, TerminationReason, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::convert::micros;
use crate::redis_link::RedisLink;
use crate::{
    ApiKeyRecord, ExecutionRecord, NewApiKey, Page, PurgeReport, SandboxFilter, SandboxRecord,
    Store, StoreError, User,
};

/// How long a cached sandbox lives without being invalidated.
pub const SANDBOX_CACHE_TTL: Duration = Duration::from_secs(300);
/// How long an invalidation blocks refills (longer than any read takes).
const TOMBSTONE_TTL: Duration = Duration::from_secs(10);
const TOMBSTONE: &str = "-";

/// A [`Store`] whose sandbox lookups go through Redis.
#[derive(Clone)]
pub struct CachedStore {
    inner: Arc<dyn Store>,
    link: Arc<RedisLink>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl CachedStore {
    pub fn new(inner: Arc<dyn Store>, link: Arc<RedisLink>) -> Self {
        Self { inner, link }
    }

    fn key(&self, id: &SandboxId) -> String {
        format!("{}sandbox:{id}", self.link.key_prefix())
    }

    /// `Some(Some(record))` on a hit, `Some(None)` on a miss that may be
    /// filled, `None` when the database must answer without a fill.
    async fn lookup(&self, key: &str) -> Option<Option<SandboxRecord>> {
        let value = self
            .link
            .run("cache_get", |mut conn| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut conn)
                    .await
            })
            .await?;
        match value.as_deref() {
            None => Some(None),
            Some(TOMBSTONE) => None,
            Some(json) => match serde_json::from_str::<CachedSandbox>(json) {
                Ok(cached) => cached.into_record().map(Some),
                Err(error) => {
                    tracing::warn!(error = %error, "undecodable sandbox cache entry ignored");
                    None
                }
            },
        }
    }

    async fn fill(&self, key: &str, record: &SandboxRecord) {
        let json = serde_json::to_string(&CachedSandbox::from_record(record))
            .expect("a cached sandbox always serialises");
        let ttl = SANDBOX_CACHE_TTL.as_secs();
        self.link
            .run("cache_fill", |mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(json)
                    .arg("EX")
                    .arg(ttl)
                    .arg("NX")
                    .query_async::<Option<String>>(&mut conn)
                    .await
            })
            .await;
    }

    /// Drops the entry of a sandbox that did not exist before (no reader can
    /// hold an older version of it, so no tombstone is needed).
    async fn forget(&self, id: &SandboxId) {
        let key = self.key(id);
        self.link
            .run("cache_invalidate", |mut conn| async move {
                redis::cmd("DEL")
                    .arg(&key)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await;
    }

    async fn invalidate(&self, id: &SandboxId) {
        let key = self.key(id);
        let ttl = u64::try_from(TOMBSTONE_TTL.as_millis()).unwrap_or(u64::MAX);
        let done = self
            .link
            .run("cache_invalidate", |mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(TOMBSTONE)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<Option<String>>(&mut conn)
                    .await
            })
            .await;
        if done.is_none() {
            tracing::debug!(sandbox_id = %id, "sandbox cache invalidation skipped: redis unavailable");
        }
    }
}

/// The cached form of a [`SandboxRecord`] (times in microseconds).
#[derive(Debug, Serialize, Deserialize)]
struct CachedSandbox {
    id: SandboxId,
    user_id: UserId,
    runtime: String,
    resources: Resources,
    isolation: String,
    status: SandboxStatus,
    termination_reason: Option<TerminationReason>,
    metadata: BTreeMap<String, String>,
    created_at: i64,
    expires_at: i64,
    ended_at: Option<i64>,
    node: Option<String>,
}

impl CachedSandbox {
    fn from_record(record: &SandboxRecord) -> Self {
        Self {
            id: record.id.clone(),
            user_id: record.user_id.clone(),
            runtime: record.runtime.clone(),
            resources: record.resources,
            isolation: record.isolation.clone(),
            status: record.status,
            termination_reason: record.termination_reason,
            metadata: record.metadata.clone(),
            created_at: micros(record.created_at),
            expires_at: micros(record.expires_at),
            ended_at: record.ended_at.map(micros),
            node: record.node.clone(),
        }
    }

    fn into_record(self) -> Option<SandboxRecord> {
        let time =
            |value: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1000).ok();
        Some(SandboxRecord {
            id: self.id,
            user_id: self.user_id,
            runtime: self.runtime,
            resources: self.resources,
            isolation: self.isolation,
            status: self.status,
            termination_reason: self.termination_reason,
            metadata: self.metadata,
            created_at: time(self.created_at)?,
            expires_at: time(self.expires_at)?,
            ended_at: match self.ended_at {
                Some(value) => Some(time(value)?),
                None => None,
            },
            node: self.node,
        })
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        self.inner.count_users().await
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.inner.create_user(user).await
    }

    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.inner.get_user(id).await
    }

    async fn get_user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.inner.get_user_by_name(name).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.inner.list_users().await
    }

    async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        self.inner.create_api_key(key).await
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<(ApiKeyRecord, User)>, StoreError> {
        self.inner.find_api_key(hash).await
    }

    async fn list_api_keys(&self, user: Option<&UserId>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.inner.list_api_keys(user).await
    }

    async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<bool, StoreError> {
        self.inner.revoke_api_key(id).await
    }

    async fn insert_sandbox(
        &self,
        record: &SandboxRecord,
        max_live_per_user: u32,
    ) -> Result<(), StoreError> {
        self.inner.insert_sandbox(record, max_live_per_user).await?;
        self.forget(&record.id).await;
        Ok(())
    }

    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        let key = self.key(id);
        let fillable = match self.lookup(&key).await {
            Some(Some(record)) => return Ok(Some(record)),
            Some(None) => true,
            None => false,
        };
        let record = self.inner.get_sandbox(id).await?;
        if let (true, Some(record)) = (fillable, &record) {
            self.fill(&key, record).await;
        }
        Ok(record)
    }

    async fn list_sandboxes(
        &self,
        filter: &SandboxFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<SandboxRecord>, StoreError> {
        self.inner.list_sandboxes(filter, cursor, limit).await
    }

    async fn mark_sandbox_running(&self, id: &SandboxId) -> Result<bool, StoreError> {
        let changed = self.inner.mark_sandbox_running(id).await?;
        self.invalidate(id).await;
        Ok(changed)
    }

    async fn end_sandbox(
        &self,
        id: &SandboxId,
        status: SandboxStatus,
        reason: TerminationReason,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let changed = self.inner.end_sandbox(id, status, reason, at).await?;
        self.invalidate(id).await;
        Ok(changed)
    }

    async fn set_sandbox_expiry(
        &self,
        id: &SandboxId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let changed = self.inner.set_sandbox_expiry(id, expires_at).await?;
        self.invalidate(id).await;
        Ok(changed)
    }

    async fn list_live_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        self.inner.list_live_sandboxes().await
    }

    async fn list_expired_sandboxes(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<SandboxId>, StoreError> {
        self.inner.list_expired_sandboxes(now).await
    }

    async fn insert_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        self.inner.insert_execution(record).await
    }

    async fn list_executions(
        &self,
        sandbox_id: &SandboxId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<ExecutionRecord>, StoreError> {
        self.inner.list_executions(sandbox_id, cursor, limit).await
    }

    async fn purge(
        &self,
        executions_before: OffsetDateTime,
        sandboxes_before: OffsetDateTime,
    ) -> Result<PurgeReport, StoreError> {
        self.inner.purge(executions_before, sandboxes_before).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_form_round_trips() {
        let at = crate::truncate_to_micros(OffsetDateTime::now_utc());
        let record = SandboxRecord {
            id: SandboxId::generate(),
            user_id: UserId::generate(),
            runtime: "python3".to_owned(),
            resources: Resources::default(),
            isolation: "namespaces".to_owned(),
            status: SandboxStatus::Terminated,
            termination_reason: Some(TerminationReason::Oom),
            metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            created_at: at,
            expires_at: at,
            ended_at: Some(at),
            node: Some("n".to_owned()),
        };
        let json = serde_json::to_string(&CachedSandbox::from_record(&record)).expect("json");
        let back: CachedSandbox = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.into_record(), Some(record));
    }
}
