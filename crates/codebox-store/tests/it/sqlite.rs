//! SQLite-only behaviour: the in-memory store and lock contention.

use std::time::Duration;

use codebox_store::{PoolSettings, SqliteStore, Store, StoreError};
use sqlx::{Connection, Executor};

use crate::support::new_user;

#[tokio::test]
async fn in_memory_store_works() {
    let store = SqliteStore::open_in_memory().await.expect("open");
    new_user(&store, "alice").await;
    assert_eq!(store.count_users().await.expect("count"), 1);
    assert_eq!(
        store.applied_migrations().await.expect("versions"),
        vec![1, 3, 4]
    );
}

/// Another process holding the write lock past the busy timeout makes a
/// write fail fast as `Unavailable` (a 503), never `Internal`.
#[tokio::test]
async fn a_held_write_lock_is_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("codebox.db");
    let settings = PoolSettings {
        statement_timeout: Duration::from_millis(100),
        ..PoolSettings::default()
    };
    let store = SqliteStore::open_with(&path, &settings)
        .await
        .expect("open");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("second connection");
    other
        .execute("BEGIN IMMEDIATE")
        .await
        .expect("take the write lock");

    let error = crate::support::try_new_user(&store, "bob")
        .await
        .expect_err("locked");
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert_eq!(error.to_string(), "database unavailable during create_user");

    other.execute("ROLLBACK").await.expect("release");
    new_user(&store, "bob").await;
    store.ping().await.expect("recovered");
}
