//! The Redis cache-aside layer and the shared rate limiter, against a real
//! Redis and against a closed port ("Redis is down").

use std::sync::Arc;
use std::time::Duration;

use codebox_store::{
    CachedStore, RateLimiter, RedisLink, RedisRateLimiter, RedisSettings, SqliteStore, Store,
    SANDBOX_CACHE_TTL,
};
use codebox_types::{SandboxStatus, TerminationReason};

use crate::support::{base_time, new_user, random_name, sandbox, service_missing, NO_QUOTA};

fn redis_url() -> String {
    std::env::var("CODEBOX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A link with a random key prefix, or `None` (after the skip note) when
/// Redis is unreachable and not required.
async fn live_link() -> Option<(Arc<RedisLink>, redis::aio::MultiplexedConnection)> {
    let probe = async {
        let client = redis::Client::open(redis_url())?;
        client.get_multiplexed_async_connection().await
    };
    let direct = match tokio::time::timeout(crate::support::PROBE_TIMEOUT, probe).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            service_missing("Redis", &error);
            return None;
        }
        Err(_) => {
            service_missing("Redis", &"connect timed out");
            return None;
        }
    };
    let mut settings = RedisSettings::new(redis_url());
    settings.key_prefix = format!("{}:", random_name("cbxtest"));
    // Generous for a loaded CI machine; the down tests use a closed port.
    settings.response_timeout = Duration::from_secs(2);
    settings.connect_timeout = Duration::from_secs(2);
    Some((
        Arc::new(RedisLink::new(settings).expect("valid url")),
        direct,
    ))
}

/// Nothing listens on port 1: connections are refused at once.
fn down_link() -> Arc<RedisLink> {
    let mut settings = RedisSettings::new("redis://127.0.0.1:1");
    // Long enough that the test never sees the backoff expire.
    settings.backoff = Duration::from_secs(600);
    Arc::new(RedisLink::new(settings).expect("valid url"))
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("codebox.db"))
        .await
        .expect("open");
    (dir, Arc::new(store))
}

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .expect("GET")
}

#[tokio::test]
async fn sandbox_lookups_are_cached_and_writes_invalidate() {
    let Some((link, mut direct)) = live_link().await else {
        return;
    };
    let (_dir, inner) = sqlite().await;
    let cached = CachedStore::new(Arc::clone(&inner), Arc::clone(&link));
    let alice = new_user(&cached, "alice").await;
    let record = sandbox(&alice.id, base_time());
    cached
        .insert_sandbox(&record, NO_QUOTA)
        .await
        .expect("insert");
    let key = format!("{}sandbox:{}", link.key_prefix(), record.id);

    assert_eq!(
        cached.get_sandbox(&record.id).await.expect("get"),
        Some(record.clone())
    );
    assert!(get(&mut direct, &key).await.is_some(), "filled on miss");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut direct)
        .await
        .expect("TTL");
    let max = i64::try_from(SANDBOX_CACHE_TTL.as_secs()).expect("small");
    assert!(ttl > 0 && ttl <= max, "ttl {ttl}");

    // A write behind the cache's back is not seen: the answer is the cache's.
    assert!(inner.mark_sandbox_running(&record.id).await.expect("mark"));
    let hit = cached
        .get_sandbox(&record.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(hit.status, SandboxStatus::Creating);

    // A write through the cache invalidates; the next read is fresh.
    let ended = cached
        .end_sandbox(
            &record.id,
            SandboxStatus::Terminated,
            TerminationReason::Killed,
            base_time(),
        )
        .await
        .expect("end");
    assert!(ended);
    let fresh = cached
        .get_sandbox(&record.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(fresh.status, SandboxStatus::Terminated);
    assert_eq!(fresh.termination_reason, Some(TerminationReason::Killed));
    // The tombstone keeps a racing reader from re-filling the old version.
    assert_eq!(get(&mut direct, &key).await.as_deref(), Some("-"));
    assert!(link.health().is_up());
    assert_eq!(link.health().failures(), 0);
}

#[tokio::test]
async fn expiry_changes_invalidate_and_unknown_ids_are_not_cached() {
    let Some((link, mut direct)) = live_link().await else {
        return;
    };
    let (_dir, inner) = sqlite().await;
    let cached = CachedStore::new(inner, Arc::clone(&link));
    let alice = new_user(&cached, "alice").await;
    let record = sandbox(&alice.id, base_time());
    cached
        .insert_sandbox(&record, NO_QUOTA)
        .await
        .expect("insert");
    cached.get_sandbox(&record.id).await.expect("fill");
    let later = base_time() + time::Duration::hours(1);
    assert!(cached
        .set_sandbox_expiry(&record.id, later)
        .await
        .expect("extend"));
    let read = cached
        .get_sandbox(&record.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read.expires_at, later);

    let unknown = codebox_types::SandboxId::generate();
    assert_eq!(cached.get_sandbox(&unknown).await.expect("get"), None);
    let key = format!("{}sandbox:{unknown}", link.key_prefix());
    assert_eq!(get(&mut direct, &key).await, None);
}

#[tokio::test]
async fn requests_succeed_when_redis_is_down() {
    let link = down_link();
    let (_dir, inner) = sqlite().await;
    let cached = CachedStore::new(inner, Arc::clone(&link));
    let alice = new_user(&cached, "alice").await;
    let record = sandbox(&alice.id, base_time());
    cached
        .insert_sandbox(&record, NO_QUOTA)
        .await
        .expect("insert");
    for _ in 0..20 {
        assert_eq!(
            cached.get_sandbox(&record.id).await.expect("get"),
            Some(record.clone())
        );
    }
    assert!(cached.mark_sandbox_running(&record.id).await.expect("mark"));
    let health = link.health();
    assert!(!health.is_up());
    assert_eq!(
        health.failures(),
        1,
        "one failure, then backoff skips Redis"
    );
    assert!(health.fallbacks() >= 21, "{}", health.fallbacks());
    assert!(!link.ping().await, "ready check reports Redis down");
}

#[tokio::test]
async fn shared_limiter_counts_across_replicas_and_isolates_keys() {
    let Some((link, _direct)) = live_link().await else {
        return;
    };
    let mut other_settings = RedisSettings::new(redis_url());
    other_settings.key_prefix = link.key_prefix().to_owned();
    other_settings.response_timeout = Duration::from_secs(2);
    other_settings.connect_timeout = Duration::from_secs(2);
    let replica_a = RedisRateLimiter::new(Arc::clone(&link));
    let replica_b = RedisRateLimiter::new(Arc::new(RedisLink::new(other_settings).expect("url")));
    let window = Duration::from_secs(60);

    for (i, limiter) in [&replica_a, &replica_b, &replica_a].into_iter().enumerate() {
        let decision = limiter.check("user:alice", 3, window).await;
        assert!(decision.allowed, "request {i}");
        assert_eq!(decision.remaining, 2 - u32::try_from(i).expect("small"));
    }
    let denied = replica_b.check("user:alice", 3, window).await;
    assert!(!denied.allowed, "the count is shared");
    assert!(denied.retry_after > Duration::ZERO && denied.retry_after <= window);
    assert!(
        replica_b.check("user:bob", 3, window).await.allowed,
        "keys are isolated"
    );
    assert_eq!(link.health().failures(), 0);
}

#[tokio::test]
async fn shared_limiter_window_resets() {
    let Some((link, _direct)) = live_link().await else {
        return;
    };
    let limiter = RedisRateLimiter::new(link);
    let window = Duration::from_millis(300);
    assert!(limiter.check("ip:1", 1, window).await.allowed);
    let denied = limiter.check("ip:1", 1, window).await;
    assert!(!denied.allowed);
    assert!(denied.retry_after <= window);
    tokio::time::sleep(window * 2).await;
    assert!(limiter.check("ip:1", 1, window).await.allowed);
}

#[tokio::test]
async fn limiter_falls_back_to_local_counting_when_redis_is_down() {
    let link = down_link();
    let limiter = RedisRateLimiter::new(Arc::clone(&link));
    let window = Duration::from_secs(60);
    assert!(limiter.check("ip:1", 2, window).await.allowed);
    assert!(limiter.check("ip:1", 2, window).await.allowed);
    let denied = limiter.check("ip:1", 2, window).await;
    assert!(!denied.allowed, "still limited without Redis");
    assert!(denied.retry_after > Duration::ZERO);
    assert!(limiter.check("ip:2", 2, window).await.allowed);
    assert!(!link.health().is_up());
    assert_eq!(link.health().failures(), 1);
}

/// A Redis that accepts connections and never answers costs one bounded
/// wait, then requests skip it for the backoff period.
#[tokio::test]
async fn a_hung_redis_is_skipped_after_one_bounded_wait() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut settings = RedisSettings::new(format!("redis://127.0.0.1:{port}"));
    settings.backoff = Duration::from_secs(600);
    let link = Arc::new(RedisLink::new(settings).expect("valid url"));
    let (_dir, inner) = sqlite().await;
    let cached = CachedStore::new(inner, Arc::clone(&link));
    let alice = new_user(&cached, "alice").await;
    let record = sandbox(&alice.id, base_time());
    cached
        .insert_sandbox(&record, NO_QUOTA)
        .await
        .expect("insert");
    for _ in 0..5 {
        assert_eq!(
            cached.get_sandbox(&record.id).await.expect("get"),
            Some(record.clone())
        );
    }
    assert!(!link.health().is_up());
    assert_eq!(link.health().failures(), 1);
    holder.abort();
}

/// Forwards connections on `port` to `target` until aborted; aborting it
/// also cuts every forwarded connection (a Redis crash, as seen by clients).
async fn proxy(port: u16, target: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the proxy port");
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut client, _)) = listener.accept().await {
            let target = target.clone();
            connections.spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    })
}

/// After the backoff the link tries again and recovers on its own, both when
/// Redis was down at start and when it dies under an open connection.
#[tokio::test]
async fn the_link_recovers_when_redis_comes_back() {
    let Some((_, _direct)) = live_link().await else {
        return;
    };
    let target = match redis::Client::open(redis_url())
        .expect("url")
        .get_connection_info()
        .addr
        .clone()
    {
        redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => panic!("this test needs a TCP Redis URL, not {other:?}"),
    };
    // A free port with nothing listening yet.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let mut settings = RedisSettings::new(format!("redis://127.0.0.1:{port}"));
    settings.key_prefix = format!("{}:", random_name("cbxtest"));
    settings.backoff = Duration::from_millis(100);
    let link = Arc::new(RedisLink::new(settings).expect("valid url"));
    let health = link.health();
    assert!(!link.ping().await, "nothing listens yet");
    assert_eq!(health.failures(), 1);

    let running = proxy(port, target.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(link.ping().await, "connected after the backoff");
    let limiter = RedisRateLimiter::new(Arc::clone(&link));
    let window = Duration::from_secs(60);
    assert!(limiter.check("k", 1, window).await.allowed);
    assert!(!limiter.check("k", 1, window).await.allowed);
    assert_eq!(health.failures(), 1, "no failure while up");

    running.abort();
    let _ = running.await;
    assert!(!link.ping().await, "the connection died with the proxy");
    assert!(!health.is_up());
    let failures = health.failures();

    let running = proxy(port, target).await;
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if link.ping().await {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "reconnected after Redis came back");
    assert!(health.is_up());
    assert!(
        !limiter.check("k", 1, window).await.allowed,
        "the shared count survived"
    );
    assert!(health.failures() >= failures);
    running.abort();
}
