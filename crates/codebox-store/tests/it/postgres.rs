//! Postgres-only behaviour: monthly partitions, concurrent migrations, and
//! errors when the server is unreachable.

use std::sync::Arc;
use std::time::Duration;

use codebox_store::{PoolSettings, PostgresStore, Store, StoreError};
use sqlx::Connection;
use time::macros::datetime;
use time::OffsetDateTime;

use crate::support::{
    new_user, pg_settings, postgres_url, sandbox, with_postgres_schema, with_postgres_store,
    NO_QUOTA,
};

fn month_name(at: OffsetDateTime) -> String {
    format!("executions_p{:04}{:02}", at.year(), u8::from(at.month()))
}

#[tokio::test]
async fn partitions_are_created_ahead_at_connect() {
    with_postgres_store(|store| async move {
        let names = store.partitions().await.expect("partitions");
        let now = OffsetDateTime::now_utc();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&month_name(now)), "{names:?}");
        assert!(
            store.ensure_partitions().await.expect("ensure").is_empty(),
            "idempotent"
        );
    })
    .await;
}

#[tokio::test]
async fn new_partitions_adopt_rows_from_the_default_partition_and_purge_drops_them() {
    with_postgres_store(|store| async move {
        let alice = new_user(&*store, "alice").await;
        let record = sandbox(&alice.id, datetime!(2024-05-01 00:00 UTC));
        store
            .insert_sandbox(&record, NO_QUOTA)
            .await
            .expect("insert");
        let mut run = codebox_store::ExecutionRecord {
            id: codebox_types::ExecutionId::generate(),
            sandbox_id: record.id.clone(),
            context_id: None,
            language: "command".to_owned(),
            status: "succeeded".to_owned(),
            exit_code: Some(0),
            execution_count: None,
            duration_ms: 1,
            code_size: 1,
            created_at: datetime!(2024-05-17 12:00 UTC),
            code: Some("true".to_owned()),
            output: None,
        };
        store
            .insert_execution(&run)
            .await
            .expect("lands in the default partition");

        let created = store
            .ensure_partitions_for(datetime!(2024-05-02 00:00 UTC))
            .await
            .expect("ensure");
        assert_eq!(
            created,
            [
                "executions_p202405",
                "executions_p202406",
                "executions_p202407"
            ]
        );
        let listed = store
            .list_executions(&record.id, None, 10)
            .await
            .expect("list");
        assert_eq!(listed.items, vec![run.clone()], "the row moved, not lost");

        run.id = codebox_types::ExecutionId::generate();
        run.created_at = datetime!(2024-06-30 23:59:59 UTC);
        store
            .insert_execution(&run)
            .await
            .expect("insert into June");
        let report = store
            .purge(
                datetime!(2024-07-01 00:00 UTC),
                datetime!(2000-01-01 00:00 UTC),
            )
            .await
            .expect("purge");
        assert_eq!(report.executions, 2);
        let names = store.partitions().await.expect("partitions");
        assert!(
            !names.iter().any(|name| name == "executions_p202405"),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|name| name == "executions_p202406"),
            "{names:?}"
        );
        assert!(
            names.iter().any(|name| name == "executions_p202407"),
            "{names:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_starts_apply_each_migration_once() {
    with_postgres_schema(|schema| async move {
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let schema = schema.clone();
                tokio::spawn(async move {
                    PostgresStore::connect_in_schema(&postgres_url(), Some(&schema), &pg_settings())
                        .await
                })
            })
            .collect();
        let mut stores = Vec::new();
        for start in starts {
            stores.push(start.await.expect("task").expect("connect"));
        }
        for store in &stores {
            assert_eq!(
                store.applied_migrations().await.expect("versions"),
                vec![1, 3, 4]
            );
            assert_eq!(store.partitions().await.expect("partitions").len(), 3);
            store.close().await;
        }
    })
    .await;
}

#[tokio::test]
async fn unreachable_server_is_unavailable_without_leaking_the_url() {
    let settings = PoolSettings {
        acquire_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..PoolSettings::default()
    };
    let result =
        PostgresStore::connect("postgres://postgres:hunter2@127.0.0.1:1/test", &settings).await;
    let error = result.expect_err("nothing listens on port 1");
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(!error.to_string().contains("hunter2"));
    assert_eq!(error.to_string(), "database unavailable during connect");
}

#[tokio::test]
async fn a_stopped_pool_reports_unavailable() {
    with_postgres_store(|store| async move {
        store.close().await;
        let error = store.ping().await.expect_err("closed");
        assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
        let as_dyn: Arc<dyn Store> = store;
        assert!(as_dyn.count_users().await.is_err());
    })
    .await;
}

/// The periodic retention pass recreates missing upcoming partitions, so the
/// server needs no separate daily job.
#[tokio::test]
async fn purge_recreates_missing_upcoming_partitions() {
    with_postgres_schema(|schema| async move {
        let store =
            PostgresStore::connect_in_schema(&postgres_url(), Some(&schema), &pg_settings())
                .await
                .expect("connect");
        let names = store.partitions().await.expect("partitions");
        let newest = names.last().expect("three partitions").clone();
        let mut admin = sqlx::PgConnection::connect(&postgres_url())
            .await
            .expect("admin");
        sqlx::query(&format!("DROP TABLE {schema}.{newest}"))
            .execute(&mut admin)
            .await
            .expect("drop a partition");
        assert_eq!(store.partitions().await.expect("partitions").len(), 2);

        let long_ago = datetime!(2000-01-01 00:00 UTC);
        store.purge(long_ago, long_ago).await.expect("purge");
        assert_eq!(store.partitions().await.expect("partitions"), names);
        store.close().await;
    })
    .await;
}
