//! Rough latency numbers for the stores, the cache and the limiters on this
//! machine (never asserted anywhere; timings belong here, not in tests).
//!
//! `cargo run -p codebox-store --example store_bench [--release]`
//! Uses Postgres and Redis from `CODEBOX_TEST_DATABASE_URL` /
//! `CODEBOX_TEST_REDIS_URL` (local defaults) and skips what is unreachable.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codebox_store::{
    CachedStore, LocalRateLimiter, PoolSettings, PostgresStore, RateLimiter, RedisLink,
    RedisRateLimiter, RedisSettings, SandboxRecord, SqliteStore, Store, User,
};
use codebox_types::{Resources, SandboxId, SandboxStatus, UserId};
use sqlx::Connection;
use time::OffsetDateTime;

const LOOKUPS: u32 = 2000;

fn report(what: &str, count: u32, elapsed: Duration) {
    let per = elapsed / count.max(1);
    println!("{what:<48} {count:>6} ops  {per:>10.1?}/op");
}

fn record(user: &UserId) -> SandboxRecord {
    let now = OffsetDateTime::now_utc();
    SandboxRecord {
        id: SandboxId::generate(),
        user_id: user.clone(),
        runtime: "python3".to_owned(),
        resources: Resources::default(),
        isolation: "namespaces".to_owned(),
        status: SandboxStatus::Running,
        termination_reason: None,
        metadata: BTreeMap::from([("team".to_owned(), "bench".to_owned())]),
        created_at: now,
        expires_at: now + time::Duration::minutes(5),
        ended_at: None,
        node: None,
    }
}

async fn bench_store(name: &str, store: Arc<dyn Store>) -> anyhow::Result<()> {
    let user = User {
        id: UserId::generate(),
        name: format!("bench-{}", UserId::generate()),
        is_admin: false,
        created_at: OffsetDateTime::now_utc(),
    };
    store.create_user(&user).await?;
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..500 {
        let sandbox = record(&user.id);
        store.insert_sandbox(&sandbox, 100_000).await?;
        ids.push(sandbox.id);
    }
    report(
        &format!("{name}: insert_sandbox (quota checked)"),
        500,
        started.elapsed(),
    );

    let started = Instant::now();
    for i in 0..LOOKUPS {
        let id = &ids[usize::try_from(i).unwrap_or(0) % ids.len()];
        store.get_sandbox(id).await?;
    }
    report(&format!("{name}: get_sandbox"), LOOKUPS, started.elapsed());

    let filter = codebox_store::SandboxFilter {
        user_id: user.id.clone(),
        status: Some(SandboxStatus::Running),
        metadata: vec![("team".to_owned(), "bench".to_owned())],
    };
    let started = Instant::now();
    for _ in 0..200 {
        store.list_sandboxes(&filter, None, 50).await?;
    }
    report(
        &format!("{name}: list_sandboxes (50, filtered)"),
        200,
        started.elapsed(),
    );

    let quota_user = User {
        id: UserId::generate(),
        name: format!("quota-{}", UserId::generate()),
        ..user
    };
    store.create_user(&quota_user).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            let sandbox = record(&quota_user.id);
            tokio::spawn(async move { store.insert_sandbox(&sandbox, 10).await.is_ok() })
        })
        .collect();
    let mut inserted = 0;
    for task in tasks {
        inserted += u32::from(task.await?);
    }
    let elapsed = started.elapsed();
    println!("{name}: 50 concurrent inserts, quota 10 -> {inserted} inserted in {elapsed:.1?}");
    Ok(())
}

async fn postgres() -> Option<(Arc<dyn Store>, String)> {
    let url = std::env::var("CODEBOX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut admin = sqlx::PgConnection::connect(&url).await.ok()?;
    let schema = format!("cbx_bench_{}", UserId::generate());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .ok()?;
    let store = PostgresStore::connect_in_schema(&url, Some(&schema), &PoolSettings::default())
        .await
        .ok()?;
    Some((Arc::new(store), schema))
}

async fn drop_schema(schema: &str) -> anyhow::Result<()> {
    let url = std::env::var("CODEBOX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut admin = sqlx::PgConnection::connect(&url).await?;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

fn redis_link(url: &str) -> anyhow::Result<Arc<RedisLink>> {
    let mut settings = RedisSettings::new(url);
    settings.key_prefix = format!("cbxbench_{}:", UserId::generate());
    Ok(Arc::new(RedisLink::new(settings)?))
}

async fn bench_limiters(redis_url: &str) -> anyhow::Result<()> {
    let local = LocalRateLimiter::default();
    let started = Instant::now();
    for i in 0..100_000u32 {
        local
            .check(&format!("ip:{}", i % 1000), 100, Duration::from_secs(60))
            .await;
    }
    report("local limiter: check", 100_000, started.elapsed());

    let link = redis_link(redis_url)?;
    if link.ping().await {
        let limiter = RedisRateLimiter::new(link);
        let started = Instant::now();
        for i in 0..LOOKUPS {
            limiter
                .check(&format!("ip:{}", i % 100), 100, Duration::from_secs(60))
                .await;
        }
        report("redis limiter: check", LOOKUPS, started.elapsed());
    }
    let down = RedisRateLimiter::new(redis_link("redis://127.0.0.1:1")?);
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        down.check("ip:1", 100, Duration::from_secs(60)).await;
    }
    report(
        "redis limiter, Redis down (fallback)",
        LOOKUPS,
        started.elapsed(),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("bench.db")).await?);
    bench_store("sqlite", Arc::clone(&sqlite)).await?;

    match postgres().await {
        Some((store, schema)) => {
            let result = bench_store("postgres", store).await;
            drop_schema(&schema).await?;
            result?;
        }
        None => println!("postgres: unreachable, skipped"),
    }

    let redis_url = std::env::var("CODEBOX_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let link = redis_link(&redis_url)?;
    if link.ping().await {
        let inner = Arc::new(SqliteStore::open(&dir.path().join("cached.db")).await?);
        bench_store(
            "sqlite + redis cache",
            Arc::new(CachedStore::new(inner, link)),
        )
        .await?;
    } else {
        println!("redis: unreachable, cache skipped");
    }
    if let Some((store, schema)) = postgres().await {
        let link = redis_link(&redis_url)?;
        let result = if link.ping().await {
            bench_store(
                "postgres + redis cache",
                Arc::new(CachedStore::new(store, link)),
            )
            .await
        } else {
            Ok(())
        };
        drop_schema(&schema).await?;
        result?;
    }
    let down = redis_link("redis://127.0.0.1:1")?;
    let inner = Arc::new(SqliteStore::open(&dir.path().join("down.db")).await?);
    bench_store(
        "sqlite + redis cache, Redis down",
        Arc::new(CachedStore::new(inner, down)),
    )
    .await?;
    bench_limiters(&redis_url).await
}
