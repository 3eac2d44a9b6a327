use std::time::Duration;

use codebox_core::{CoreError, CoreSettings, CreateSandboxRequest};
use codebox_store::SandboxRecord;
use codebox_types::{Resources, SandboxId, SandboxStatus, TerminationReason, UserId};
use time::OffsetDateTime;

use crate::support::{create, secrets, Fixture};

fn live_row(id: SandboxId, user: &UserId) -> SandboxRecord {
    let now = OffsetDateTime::now_utc();
    SandboxRecord {
        id,
        user_id: user.clone(),
        runtime: "bash".into(),
        resources: Resources::default(),
        isolation: "fake".into(),
        status: SandboxStatus::Creating,
        termination_reason: None,
        metadata: Default::default(),
        created_at: now,
        expires_at: now + Duration::from_secs(300),
        ended_at: None,
        node: None,
    }
}

#[tokio::test]
async fn reconcile_fixes_both_directions() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let kept = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let lost = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    // A row inserted by a run that crashed before the runtime create.
    let orphan_row = SandboxId::generate();
    fixture
        .store
        .insert_sandbox(&live_row(orphan_row.clone(), &alice.id), 100)
        .await
        .expect("inserts");
    fixture
        .runtime
        .end_sandbox(&lost.id, TerminationReason::AgentLost);
    // A create interrupted after the runtime made the sandbox but before the
    // row became running.
    let half_created = SandboxId::generate();
    fixture
        .store
        .insert_sandbox(&live_row(half_created.clone(), &alice.id), 100)
        .await
        .expect("inserts");
    fixture.hold(half_created.clone()).await;
    let leftover = fixture.leftover().await;
    fixture.runtime.add_leftovers(&["stale-cgroup"]);

    let report = fixture.core.reconcile().await.expect("reconciles");
    assert_eq!(report.ended, 3);
    assert_eq!(report.destroyed, 2);
    assert!(!fixture.holds(&half_created));
    assert_eq!(report.runtime_leftovers, 1);
    assert!(!fixture.holds(&leftover));
    assert!(fixture.holds(&kept.id));
    for id in [&lost.id, &orphan_row, &half_created] {
        let error = fixture
            .core
            .get_sandbox(&alice, id.as_str())
            .await
            .expect_err("ended");
        assert!(
            matches!(
                error,
                CoreError::Gone {
                    reason: TerminationReason::ServerRestart
                }
            ),
            "{error:?}"
        );
    }
    fixture
        .core
        .get_sandbox(&alice, kept.id.as_str())
        .await
        .expect("still running");
    assert_eq!(fixture.core.metrics().sandboxes_active.get(), 1);
}

#[tokio::test]
async fn expired_sandboxes_are_reaped_with_reason_timeout() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let request = CreateSandboxRequest {
        timeout: Some(1),
        ..create("bash")
    };
    let short = fixture
        .core
        .create_sandbox(&alice, request)
        .await
        .expect("creates");
    let long = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    // Wait for the expiry by polling the store's own clock comparison, never a
    // fixed sleep that a slow machine could outrun.
    let mut reaped = 0;
    for _ in 0..100 {
        reaped += fixture.core.reap_expired().await;
        if reaped > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reaped, 1);
    assert!(!fixture.holds(&short.id));
    assert!(fixture.holds(&long.id));
    let error = fixture
        .core
        .get_sandbox(&alice, short.id.as_str())
        .await
        .expect_err("expired");
    assert!(
        matches!(
            error,
            CoreError::Gone {
                reason: TerminationReason::Timeout
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_reaper_ends_sandboxes_the_runtime_reports_and_stops_on_shutdown() {
    let mut settings = CoreSettings::with_defaults(secrets());
    settings.reaper_interval = Duration::from_millis(20);
    let fixture = Fixture::with_settings(settings).await;
    let alice = fixture.user("alice").await;
    let sandbox = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let core = std::sync::Arc::clone(&fixture.core);
    let reaper = tokio::spawn(async move {
        core.run_reaper(async {
            let _ = stop_rx.await;
        })
        .await;
    });
    // On this current-thread runtime the reaper runs (and subscribes, before
    // its first await) as soon as the test task yields.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(fixture
        .runtime
        .end_sandbox(&sandbox.id, TerminationReason::Oom));
    let mut outcome = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Err(error) = fixture.core.get_sandbox(&alice, sandbox.id.as_str()).await {
            outcome = Some(error);
            break;
        }
    }
    assert!(
        matches!(
            outcome,
            Some(CoreError::Gone {
                reason: TerminationReason::Oom
            })
        ),
        "{outcome:?}"
    );
    stop_tx.send(()).expect("reaper listening");
    reaper.await.expect("reaper stops");
}

#[tokio::test]
async fn shutdown_destroys_everything_and_records_why() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let first = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let second = fixture
        .core
        .create_sandbox(&alice, create("python3"))
        .await
        .expect("creates");
    fixture.core.shutdown().await;
    assert!(fixture.runtime.is_shut_down());
    assert_eq!(fixture.held_count().await, 0);
    for id in [first.id, second.id] {
        let record = fixture
            .store
            .get_sandbox(&id)
            .await
            .expect("reads")
            .expect("row kept");
        assert_eq!(record.status, SandboxStatus::Terminated);
        assert_eq!(
            record.termination_reason,
            Some(TerminationReason::ServerShutdown)
        );
    }
}
