//! Rate limiting: a fixed-window counter per key, shared across API replicas
//! through Redis, with an in-process limiter as the fallback when Redis is
//! down (each replica then enforces the limit on its own, so the effective
//! limit is at most `limit × replicas` until Redis returns).
//!
//! Fixed windows (not sliding): a key may get up to `2 × limit` requests
//! across a window boundary. That is the accepted trade for one atomic
//! `INCR` per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::redis_link::RedisLink;

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests left in the current window.
    pub remaining: u32,
    /// When denied: how long until the window resets (for `Retry-After`).
    /// Zero when allowed.
    pub retry_after: Duration,
}

impl RateDecision {
    fn from_count(count: u64, limit: u32, resets_in: Duration) -> Self {
        let allowed = count <= u64::from(limit);
        let remaining = u64::from(limit).saturating_sub(count);
        Self {
            allowed,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            retry_after: if allowed { Duration::ZERO } else { resets_in },
        }
    }
}

/// Counts one request against `key` and says whether it may proceed.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    async fn check(&self, key: &str, limit: u32, window: Duration) -> RateDecision;
}

/// Windows shorter than this are treated as this long.
const MIN_WINDOW: Duration = Duration::from_millis(1);
/// Default bound on the number of keys a local limiter tracks.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    length: Duration,
    count: u64,
}

/// An in-process fixed-window limiter with bounded memory: at most
/// `max_keys` windows are kept. When full, expired windows are dropped; if
/// that frees too little, the oldest windows are forgotten (those keys start
/// afresh; a flood of new keys can thus reset others' counters, which fails
/// open rather than denying innocent clients).
#[derive(Debug)]
pub struct LocalRateLimiter {
    windows: Mutex<HashMap<(String, u128), Window>>,
    max_keys: usize,
}

impl Default for LocalRateLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl LocalRateLimiter {
    pub fn new(max_keys: usize) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// Windows currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u128), Window>> {
        // A panic while holding the lock leaves only counters behind: keep going.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The synchronous core of [`RateLimiter::check`].
    pub fn check_now(&self, key: &str, limit: u32, window: Duration) -> RateDecision {
        let window = window.max(MIN_WINDOW);
        let now = Instant::now();
        let mut windows = self.lock();
        let map_key = (key.to_owned(), window.as_nanos());
        if !windows.contains_key(&map_key) && windows.len() >= self.max_keys {
            evict(&mut windows, now, self.max_keys);
        }
        let entry = windows.entry(map_key).or_insert(Window {
            started: now,
            length: window,
            count: 0,
        });
        if now.duration_since(entry.started) >= entry.length {
            entry.started = now;
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        let resets_in = entry
            .length
            .saturating_sub(now.duration_since(entry.started));
        RateDecision::from_count(entry.count, limit, resets_in)
    }
}

/// Makes room for at least a tenth of `max_keys` new windows, so eviction's
/// O(n) cost is paid at most once per `max_keys / 10` new keys.
fn evict(windows: &mut HashMap<(String, u128), Window>, now: Instant, max_keys: usize) {
    windows.retain(|_, window| now.duration_since(window.started) < window.length);
    let target = max_keys - max_keys / 10 - 1;
    if windows.len() <= target {
        return;
    }
    let mut starts: Vec<Instant> = windows.values().map(|window| window.started).collect();
    let excess = windows.len() - target;
    let (_, cutoff, _) = starts.select_nth_unstable(excess - 1);
    let cutoff = *cutoff;
    windows.retain(|_, window| window.started > cutoff);
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, key: &str, limit: u32, window: Duration) -> RateDecision {
        self.check_now(key, limit, window)
    }
}

/// `INCR` the window's counter, start its expiry on the first hit (or if it
/// somehow has none), and return the count with the time left in ms.
const FIXED_WINDOW_SCRIPT: &str = r"
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if count == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
";

/// A fixed-window limiter whose counters live in Redis, shared by every
/// replica; falls back to a [`LocalRateLimiter`] when Redis fails (counted
/// in the link's [`crate::RedisHealth`]).
#[derive(Debug)]
pub struct RedisRateLimiter {
    link: Arc<RedisLink>,
    script: redis::Script,
    fallback: LocalRateLimiter,
}

impl RedisRateLimiter {
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            script: redis::Script::new(FIXED_WINDOW_SCRIPT),
            fallback: LocalRateLimiter::default(),
        }
    }

    async fn check_redis(&self, key: &str, window: Duration) -> Option<(u64, Duration)> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let redis_key = format!("{}rl:{window_ms}:{key}", self.link.key_prefix());
        let script = &self.script;
        let (count, ttl_ms): (i64, i64) = self
            .link
            .run("rate_limit", |mut conn| async move {
                script
                    .key(&redis_key)
                    .arg(window_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let count = u64::try_from(count).unwrap_or(0);
        let resets_in = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(window_ms));
        Some((count, resets_in))
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, limit: u32, window: Duration) -> RateDecision {
        let window = window.max(MIN_WINDOW);
        match self.check_redis(key, window).await {
            Some((count, resets_in)) => RateDecision::from_count(count, limit, resets_in),
            None => self.fallback.check_now(key, limit, window),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn allows_up_to_the_limit_then_says_when_to_retry() {
        let limiter = LocalRateLimiter::default();
        for expected_remaining in [2, 1, 0] {
            let decision = limiter.check_now("ip:1", 3, MINUTE);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            assert_eq!(decision.retry_after, Duration::ZERO);
        }
        let denied = limiter.check_now("ip:1", 3, MINUTE);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert!(denied.retry_after > Duration::ZERO && denied.retry_after <= MINUTE);
        assert!(
            limiter.check_now("ip:2", 3, MINUTE).allowed,
            "keys are isolated"
        );
    }

    #[test]
    fn a_new_window_resets_the_count() {
        let limiter = LocalRateLimiter::default();
        let window = Duration::from_millis(20);
        assert!(limiter.check_now("k", 1, window).allowed);
        assert!(!limiter.check_now("k", 1, window).allowed);
        std::thread::sleep(window * 2);
        assert!(limiter.check_now("k", 1, window).allowed);
    }

    #[test]
    fn zero_limit_always_denies() {
        let limiter = LocalRateLimiter::default();
        let decision = limiter.check_now("k", 0, MINUTE);
        assert!(!decision.allowed);
        assert!(decision.retry_after > Duration::ZERO);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let limiter = LocalRateLimiter::new(1000);
        for i in 0..10_000 {
            limiter.check_now(&format!("ip:{i}"), 5, MINUTE);
        }
        assert!(limiter.tracked_keys() <= 1000, "{}", limiter.tracked_keys());
        // The most recent keys are still counted.
        limiter.check_now("ip:9999", 5, MINUTE);
        let decision = limiter.check_now("ip:9999", 5, MINUTE);
        assert_eq!(decision.remaining, 2);
    }
}
