use std::sync::Arc;

use codebox_core::CoreError;
use codebox_runtime::RuntimeError;
use codebox_types::{SandboxStatus, TerminationReason};

use crate::support::{create, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_the_quota_succeeds_under_50_concurrent_creates() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let limit = fixture.core.settings().limits.max_sandboxes_per_user;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let core = Arc::clone(&fixture.core);
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            core.create_sandbox(&alice, create("bash")).await
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task completes") {
            Ok(_) => created += 1,
            Err(CoreError::QuotaExceeded {
                resource,
                limit: found,
            }) => {
                assert_eq!((resource, found), ("sandboxes", u64::from(limit)));
                refused += 1;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(created, limit as usize);
    assert_eq!(refused, 50 - limit as usize);
    assert_eq!(fixture.held_count().await, limit as usize);
    let message = CoreError::QuotaExceeded {
        resource: "sandboxes",
        limit: 10,
    }
    .to_string();
    assert_eq!(message, "sandboxes limit exceeded: 10");
    // Quota refusals are the client's doing: not a creation failure.
    assert_eq!(fixture.core.metrics().creation_failures_for("database"), 0);
    // Another user has their own quota.
    let bob = fixture.user("bob").await;
    fixture
        .core
        .create_sandbox(&bob, create("bash"))
        .await
        .expect("bob's first");
}

#[tokio::test]
async fn ended_sandboxes_free_their_quota() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let limit = fixture.core.settings().limits.max_sandboxes_per_user;
    let mut ids = Vec::new();
    for _ in 0..limit {
        ids.push(
            fixture
                .core
                .create_sandbox(&alice, create("bash"))
                .await
                .expect("creates")
                .id,
        );
    }
    assert!(fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .is_err());
    fixture
        .core
        .delete_sandbox(&alice, ids[0].as_str())
        .await
        .expect("deletes");
    fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("room again");
}

#[tokio::test]
async fn a_failed_create_marks_the_row_failed_and_counts() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    fixture.runtime.fail_next_create(RuntimeError::Setup {
        step: "mount",
        source: "injected failure".into(),
    });
    let error = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect_err("fails");
    assert!(matches!(error, CoreError::Internal { .. }), "{error:?}");
    assert_eq!(fixture.core.metrics().creation_failures_for("runtime"), 1);
    let page = fixture
        .core
        .list_sandboxes(&alice, codebox_core::ListSandboxesQuery::default())
        .await
        .expect("lists");
    assert_eq!(
        page.items.len(),
        1,
        "the row was persisted before the runtime create"
    );
    assert_eq!(page.items[0].status, SandboxStatus::Failed);
    assert_eq!(
        page.items[0].termination_reason,
        Some(TerminationReason::CreateFailed)
    );
    assert_eq!(fixture.core.metrics().sandboxes_active.get(), 0);

    fixture.runtime.fail_next_create(RuntimeError::AtCapacity {
        detail: "full".into(),
    });
    let error = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect_err("full");
    assert!(matches!(error, CoreError::Unavailable { .. }), "{error:?}");
    assert_eq!(fixture.core.metrics().creation_failures_for("capacity"), 1);
}
