//! Test fixtures: fresh stores per test, records, service discovery.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use codebox_store::{
    PoolSettings, PostgresStore, SandboxRecord, SqliteStore, Store, StoreError, User,
};
use codebox_types::{Resources, SandboxId, SandboxStatus, UserId};
use sqlx::Connection;
use time::OffsetDateTime;

/// Whether missing services fail the tests instead of skipping them.
pub fn services_required() -> bool {
    std::env::var("CODEBOX_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

/// Skips (returns `false`) or fails when a service is unreachable.
pub fn service_missing(service: &str, error: &dyn std::fmt::Display) -> bool {
    assert!(
        !services_required(),
        "{service} is required (CODEBOX_REQUIRE_SERVICES=1) but unreachable: {error}"
    );
    // Written to the stderr handle directly: libtest captures `eprintln!`
    // of passing tests, and a skip must be visible.
    let note = format!("note: skipping, {service} unreachable: {error}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
    false
}

/// A random lowercase name, unique per test (schemas, key prefixes).
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}_{}", UserId::generate())
}

/// Runs `test` against a fresh SQLite file with a multi-connection pool.
pub async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("codebox.db"))
        .await
        .expect("open sqlite");
    test(Arc::new(store)).await;
}

pub fn postgres_url() -> String {
    std::env::var("CODEBOX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// An admin connection for creating and dropping test schemas; `None` (after
/// the skip note) when Postgres is unreachable and not required.
async fn postgres_admin() -> Option<sqlx::PgConnection> {
    let url = postgres_url();
    match tokio::time::timeout(PROBE_TIMEOUT, sqlx::PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(error)) => {
            service_missing("Postgres", &error);
            None
        }
        Err(_) => {
            service_missing("Postgres", &"connect timed out");
            None
        }
    }
}

/// Runs `test` against a [`PostgresStore`] in a fresh schema of its own,
/// dropped afterwards even when the test fails.
pub async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_postgres_store(|store| test(store)).await;
}

/// [`with_postgres`] handing out the concrete type (Postgres-only tests).
pub async fn with_postgres_store<F, Fut>(test: F)
where
    F: FnOnce(Arc<PostgresStore>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_postgres_schema(|schema| async move {
        let store =
            PostgresStore::connect_in_schema(&postgres_url(), Some(&schema), &pg_settings())
                .await
                .unwrap_or_else(|error| panic!("connect in schema {schema}: {error:?}"));
        let store = Arc::new(store);
        let outcome = tokio::spawn(test(Arc::clone(&store))).await;
        store.close().await;
        if let Err(error) = outcome {
            // The panic hook already printed the test's own message.
            std::panic::resume_unwind(error.into_panic());
        }
    })
    .await;
}

pub fn pg_settings() -> PoolSettings {
    PoolSettings {
        max_connections: 8,
        ..PoolSettings::default()
    }
}

/// Runs `test` with the name of a fresh, empty schema that is dropped
/// afterwards even when the test fails.
pub async fn with_postgres_schema<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(mut admin) = postgres_admin().await else {
        return;
    };
    let schema = random_name("cbx_test");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let outcome = tokio::spawn(test(schema.clone())).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .expect("drop schema");
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// A fixed instant, whole microseconds, so records round-trip exactly.
pub fn base_time() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("valid time")
        + time::Duration::microseconds(123_456)
}

pub fn seconds(value: i64) -> time::Duration {
    time::Duration::seconds(value)
}

pub async fn new_user(store: &dyn Store, name: &str) -> User {
    try_new_user(store, name).await.expect("create user")
}

pub async fn try_new_user(store: &dyn Store, name: &str) -> Result<User, StoreError> {
    let user = User {
        id: UserId::generate(),
        name: name.to_owned(),
        is_admin: false,
        created_at: base_time(),
    };
    store.create_user(&user).await.map(|()| user)
}

pub fn sandbox(user: &UserId, created_at: OffsetDateTime) -> SandboxRecord {
    SandboxRecord {
        id: SandboxId::generate(),
        user_id: user.clone(),
        runtime: "python3".to_owned(),
        resources: Resources {
            cpu: 0.5,
            memory: 256,
        },
        isolation: "namespaces".to_owned(),
        status: SandboxStatus::Creating,
        termination_reason: None,
        metadata: BTreeMap::new(),
        created_at,
        expires_at: created_at + seconds(300),
        ended_at: None,
        node: None,
    }
}

/// Generous quota for tests that are not about the quota.
pub const NO_QUOTA: u32 = 100_000;

/// Upper bound for any single wait on a service while probing it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
