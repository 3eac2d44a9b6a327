//! The shared connection to Redis used by the cache and the rate limiter, and
//! its health as seen by `/ready` and the metrics.
//!
//! Redis is an optimisation here, never a dependency of a request: every
//! operation has a short timeout; a failure is counted, logged at most once
//! per [`WARNING_INTERVAL`], and makes callers skip Redis for a backoff
//! period (they fall back to the database or a local limiter) instead of
//! paying a timeout on every request while Redis is down.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;

/// At most one warning per interval while Redis keeps failing.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`; may carry a password, so it
    /// is redacted from `Debug`.
    pub url: String,
    /// Prepended to every key, so deployments (and tests) can share a Redis.
    pub key_prefix: String,
    /// Longest wait for a new connection.
    pub connect_timeout: Duration,
    /// Longest wait for one command's answer.
    pub response_timeout: Duration,
    /// How long to bypass Redis after a failure.
    pub backoff: Duration,
}

impl RedisSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "codebox:".to_owned(),
            connect_timeout: Duration::from_millis(300),
            response_timeout: Duration::from_millis(300),
            backoff: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// The URL does not parse as a Redis URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL")]
pub struct InvalidRedisUrl {
    #[source]
    source: redis::RedisError,
}

/// Shared counters about Redis, for `/ready` and Prometheus.
#[derive(Debug, Default)]
pub struct RedisHealth {
    up: AtomicBool,
    failures: AtomicU64,
    fallbacks: AtomicU64,
    suppressed_warnings: AtomicU64,
    /// Milliseconds since `epoch` of the last warning, plus one (0 = never).
    last_warning: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl RedisHealth {
    /// Whether the last Redis operation succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Redis operations that failed or timed out, since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Operations served without Redis (after a failure or during backoff).
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    fn record_success(&self) {
        if !self.up.swap(true, Ordering::Relaxed) && self.failures() > 0 {
            tracing::info!(failures = self.failures(), "redis reachable again");
        }
    }

    fn record_failure(&self, operation: &'static str, error: &dyn std::error::Error) {
        self.up.store(false, Ordering::Relaxed);
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.claim_warning() {
            let suppressed = self.suppressed_warnings.swap(0, Ordering::Relaxed);
            tracing::warn!(
                operation,
                failures,
                suppressed,
                error = %error,
                "redis unavailable, serving without it"
            );
        } else {
            self.suppressed_warnings.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// True for the first caller in each [`WARNING_INTERVAL`].
    fn claim_warning(&self) -> bool {
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now = millis_since(epoch) + 1;
        let last = self.last_warning.load(Ordering::Relaxed);
        let interval = u64::try_from(WARNING_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        due && self
            .last_warning
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A Redis operation did not answer within the response timeout.
#[derive(Debug, thiserror::Error)]
#[error("redis operation timed out")]
struct RedisTimeout;

/// One lazily (re)connected Redis connection shared by the cache and the
/// limiter, with failure accounting and backoff.
pub struct RedisLink {
    client: redis::Client,
    settings: RedisSettings,
    manager: tokio::sync::Mutex<Option<ConnectionManager>>,
    health: Arc<RedisHealth>,
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is skipped.
    skip_until: AtomicU64,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("settings", &self.settings)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// Parses the URL; connects on first use, so a Redis that is down at
    /// start-up does not stop the server.
    pub fn new(settings: RedisSettings) -> Result<Self, InvalidRedisUrl> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|source| InvalidRedisUrl { source })?;
        Ok(Self {
            client,
            settings,
            manager: tokio::sync::Mutex::new(None),
            health: Arc::new(RedisHealth::default()),
            epoch: Instant::now(),
            skip_until: AtomicU64::new(0),
        })
    }

    pub fn health(&self) -> Arc<RedisHealth> {
        Arc::clone(&self.health)
    }

    pub fn key_prefix(&self) -> &str {
        &self.settings.key_prefix
    }

    /// A round trip (`PING`) for `/ready`; updates the health.
    pub async fn ping(&self) -> bool {
        self.run("ping", |mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .is_some()
    }

    /// Runs `operation` on the shared connection. `None` when Redis is in
    /// backoff, unreachable, failed or too slow: the caller falls back.
    pub(crate) async fn run<T, F, Fut>(&self, name: &'static str, operation: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if millis_since(self.epoch) < self.skip_until.load(Ordering::Relaxed) {
            self.health.record_fallback();
            return None;
        }
        let conn = self.connection(name).await?;
        match tokio::time::timeout(self.settings.response_timeout, operation(conn)).await {
            Ok(Ok(value)) => {
                self.health.record_success();
                Some(value)
            }
            Ok(Err(error)) => self.failed(name, &error),
            Err(_) => self.failed(name, &RedisTimeout),
        }
    }

    /// The connection, connecting first if needed. While another task is
    /// connecting, callers fall back rather than queue behind it.
    async fn connection(&self, name: &'static str) -> Option<ConnectionManager> {
        let Ok(mut slot) = self.manager.try_lock() else {
            self.health.record_fallback();
            return None;
        };
        if let Some(manager) = slot.as_ref() {
            return Some(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.settings.connect_timeout)
            .set_response_timeout(self.settings.response_timeout)
            // No driver-level retries: a failed connect falls into our
            // backoff instead of holding this request.
            .set_number_of_retries(0);
        let connecting = ConnectionManager::new_with_config(self.client.clone(), config);
        // Backstop over the driver's own timeouts.
        let limit = self.settings.connect_timeout + self.settings.response_timeout;
        match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(manager)) => {
                *slot = Some(manager.clone());
                Some(manager)
            }
            Ok(Err(error)) => self.failed(name, &error),
            Err(_) => self.failed(name, &RedisTimeout),
        }
    }

    fn failed<T>(&self, name: &'static str, error: &dyn std::error::Error) -> Option<T> {
        self.health.record_failure(name, error);
        self.health.record_fallback();
        let backoff = u64::try_from(self.settings.backoff.as_millis()).unwrap_or(u64::MAX);
        self.skip_until.store(
            millis_since(self.epoch).saturating_add(backoff),
            Ordering::Relaxed,
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_hides_the_password() {
        let settings = RedisSettings::new("redis://:hunter2@127.0.0.1:6379");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn warnings_are_rate_limited() {
        let health = RedisHealth::default();
        let error = RedisTimeout;
        for _ in 0..100 {
            health.record_failure("test", &error);
        }
        assert_eq!(health.failures(), 100);
        assert!(!health.is_up());
        assert_eq!(health.suppressed_warnings.load(Ordering::Relaxed), 99);
    }

    #[test]
    fn invalid_urls_are_refused() {
        assert!(RedisLink::new(RedisSettings::new("not a url")).is_err());
    }
}
