//! Optional Redis: when `redis.url` is set, sandbox lookups go through the
//! cache and rate limits are shared across replicas; its loss degrades to the
//! database and a local limiter (the store crate handles the fallback), and
//! `/ready` and `/metrics` report it.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use codebox_config::CodeboxConfig;
use codebox_core::{BoxError, HealthCheck};
use codebox_server::AppState;
use codebox_store::{
    CachedStore, LocalRateLimiter, RateLimiter, RedisHealth, RedisLink, RedisRateLimiter,
    RedisSettings, Store,
};

/// The Redis link shared by the cache and the limiter.
#[derive(Debug, Clone)]
pub struct Cache {
    link: Arc<RedisLink>,
}

/// The store, wrapped in the Redis cache when Redis is configured.
pub async fn with_cache(
    store: Arc<dyn Store>,
    config: &CodeboxConfig,
) -> anyhow::Result<(Arc<dyn Store>, Option<Cache>)> {
    let Some(url) = &config.redis.url else {
        return Ok((store, None));
    };
    let link = RedisLink::new(RedisSettings::new(url.expose()))
        .with_context(|| format!("invalid redis.url {}", url.redacted()))?;
    let link = Arc::new(link);
    if !link.ping().await {
        tracing::warn!(url = %url.redacted(), "Redis is not reachable; continuing without it until it is");
    }
    let cached: Arc<dyn Store> = Arc::new(CachedStore::new(store, Arc::clone(&link)));
    Ok((cached, Some(Cache { link })))
}

/// Shared counters over Redis when configured, else in-process ones.
pub async fn rate_limiter(_config: &CodeboxConfig, cache: Option<&Cache>) -> Arc<dyn RateLimiter> {
    match cache {
        Some(cache) => Arc::new(RedisRateLimiter::new(Arc::clone(&cache.link))),
        None => Arc::new(LocalRateLimiter::default()),
    }
}

impl Cache {
    /// The `/ready` probe for Redis.
    pub fn health_check(&self) -> Arc<dyn HealthCheck> {
        Arc::new(RedisCheck {
            link: Arc::clone(&self.link),
        })
    }

    /// Adds `redis_failures_total` to the server's registry.
    pub fn export_metrics(&self, state: AppState) -> AppState {
        let health: Arc<RedisHealth> = self.link.health();
        state.with_external_counter(
            "redis_failures",
            "Redis operations that failed (the request fell back to the database or a local limiter)",
            move || health.failures(),
        )
    }
}

struct RedisCheck {
    link: Arc<RedisLink>,
}

/// Redis did not answer a PING.
#[derive(Debug, thiserror::Error)]
#[error("redis did not answer PING")]
struct RedisDown;

#[async_trait]
impl HealthCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> Result<(), BoxError> {
        if self.link.ping().await {
            Ok(())
        } else {
            Err(Box::new(RedisDown))
        }
    }
}
