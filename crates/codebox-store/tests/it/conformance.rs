//! One conformance suite for every [`Store`] implementation. Each test is
//! written once as an async fn over a store; the macro at the bottom
//! instantiates it per backend.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use codebox_store::{
    truncate_to_micros, ExecutionRecord, NewApiKey, PurgeReport, SandboxFilter, Store, StoreError,
    User,
};
use codebox_types::{ApiKeyId, ExecutionId, SandboxId, SandboxStatus, TerminationReason, UserId};
use time::OffsetDateTime;

use crate::support::{base_time, new_user, sandbox, seconds, NO_QUOTA};

fn filter(user: &UserId) -> SandboxFilter {
    SandboxFilter {
        user_id: user.clone(),
        status: None,
        metadata: Vec::new(),
    }
}

fn new_key(user: &UserId, hash: &str) -> NewApiKey {
    NewApiKey {
        id: ApiKeyId::generate(),
        user_id: user.clone(),
        name: Some("ci".to_owned()),
        prefix: "cbx_abcd".to_owned(),
        hash: hash.to_owned(),
        created_at: base_time(),
    }
}

fn execution(sandbox_id: &SandboxId, created_at: OffsetDateTime) -> ExecutionRecord {
    ExecutionRecord {
        id: ExecutionId::generate(),
        sandbox_id: sandbox_id.clone(),
        context_id: Some("ctx".to_owned()),
        language: "python".to_owned(),
        status: "succeeded".to_owned(),
        exit_code: Some(0),
        execution_count: Some(3),
        duration_ms: 12,
        code_size: 42,
        created_at,
        code: None,
        output: None,
    }
}

async fn ping(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
}

async fn users(store: Arc<dyn Store>) {
    assert_eq!(store.count_users().await.expect("count"), 0);
    let alice = new_user(&*store, "alice").await;
    let bob = User {
        id: UserId::generate(),
        name: "bob".to_owned(),
        is_admin: true,
        created_at: base_time() + seconds(1),
    };
    store.create_user(&bob).await.expect("create bob");
    assert_eq!(store.count_users().await.expect("count"), 2);
    assert_eq!(
        store.get_user(&alice.id).await.expect("get"),
        Some(alice.clone())
    );
    assert_eq!(
        store.get_user_by_name("bob").await.expect("get"),
        Some(bob.clone())
    );
    assert_eq!(store.get_user_by_name("carol").await.expect("get"), None);
    assert_eq!(
        store.get_user(&UserId::generate()).await.expect("get"),
        None
    );
    assert_eq!(
        store.list_users().await.expect("list"),
        vec![alice.clone(), bob]
    );

    let duplicate = User {
        id: UserId::generate(),
        ..alice
    };
    let error = store.create_user(&duplicate).await.expect_err("name taken");
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
}

async fn api_keys(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    let key = store
        .create_api_key(&new_key(&alice.id, "hash-a"))
        .await
        .expect("create");
    assert_eq!(key.user_id, alice.id);
    assert_eq!(key.last_used_at, None);
    let bob_key = store
        .create_api_key(&new_key(&bob.id, "hash-b"))
        .await
        .expect("create");

    let error = store
        .create_api_key(&new_key(&bob.id, "hash-a"))
        .await
        .expect_err("hash taken");
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");

    let (found, user) = store
        .find_api_key("hash-a")
        .await
        .expect("find")
        .expect("live key");
    assert_eq!(found.id, key.id);
    assert_eq!(user, alice);
    assert!(found.last_used_at.is_some(), "find records last use");
    assert_eq!(store.find_api_key("hash-zzz").await.expect("find"), None);

    let listed = store.list_api_keys(Some(&alice.id)).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, key.id);
    assert!(listed[0].last_used_at.is_some(), "last use persisted");
    let all: HashSet<_> = store
        .list_api_keys(None)
        .await
        .expect("list")
        .into_iter()
        .map(|key| key.id)
        .collect();
    assert_eq!(all, HashSet::from([key.id.clone(), bob_key.id.clone()]));

    assert!(store.revoke_api_key(&key.id).await.expect("revoke"));
    assert!(!store.revoke_api_key(&key.id).await.expect("revoke twice"));
    assert!(!store
        .revoke_api_key(&ApiKeyId::generate())
        .await
        .expect("revoke unknown"));
    assert_eq!(store.find_api_key("hash-a").await.expect("find"), None);
    let listed = store.list_api_keys(Some(&alice.id)).await.expect("list");
    assert!(listed[0].revoked_at.is_some(), "revoked keys stay listed");
    assert!(store.find_api_key("hash-b").await.expect("find").is_some());
}

async fn sandbox_round_trip(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let mut record = sandbox(&alice.id, base_time());
    record.metadata = BTreeMap::from([
        ("team".to_owned(), "ml".to_owned()),
        ("quote\"d key".to_owned(), "ünïcode ✓".to_owned()),
    ]);
    record.node = Some("node-1".to_owned());
    store
        .insert_sandbox(&record, NO_QUOTA)
        .await
        .expect("insert");
    assert_eq!(
        store.get_sandbox(&record.id).await.expect("get"),
        Some(record.clone())
    );
    assert_eq!(
        store
            .get_sandbox(&SandboxId::generate())
            .await
            .expect("get"),
        None
    );

    let error = store
        .insert_sandbox(&record, NO_QUOTA)
        .await
        .expect_err("duplicate id");
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
}

async fn sandboxes_need_an_existing_owner(store: Arc<dyn Store>) {
    let record = sandbox(&UserId::generate(), base_time());
    let error = store
        .insert_sandbox(&record, NO_QUOTA)
        .await
        .expect_err("no such user");
    assert!(matches!(error, StoreError::Internal { .. }), "{error:?}");
    assert_eq!(store.get_sandbox(&record.id).await.expect("get"), None);
    let orphan = execution(&SandboxId::generate(), base_time());
    let error = store
        .insert_execution(&orphan)
        .await
        .expect_err("no such sandbox");
    assert!(matches!(error, StoreError::Internal { .. }), "{error:?}");
}

async fn sub_microsecond_times_are_truncated(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let now = OffsetDateTime::now_utc();
    let record = sandbox(&alice.id, now);
    store
        .insert_sandbox(&record, NO_QUOTA)
        .await
        .expect("insert");
    let stored = store
        .get_sandbox(&record.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.created_at, truncate_to_micros(now));
    assert_eq!(stored.expires_at, truncate_to_micros(record.expires_at));
}

async fn quota_is_enforced(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    let first = sandbox(&alice.id, base_time());
    store.insert_sandbox(&first, 2).await.expect("first");
    store
        .insert_sandbox(&sandbox(&alice.id, base_time()), 2)
        .await
        .expect("second");
    let error = store
        .insert_sandbox(&sandbox(&alice.id, base_time()), 2)
        .await
        .expect_err("third exceeds");
    assert!(
        matches!(error, StoreError::QuotaExceeded { limit: 2 }),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "sandboxes limit exceeded: 2");
    store
        .insert_sandbox(&sandbox(&bob.id, base_time()), 2)
        .await
        .expect("quota is per user");

    let ended = store
        .end_sandbox(
            &first.id,
            SandboxStatus::Terminated,
            TerminationReason::Killed,
            base_time(),
        )
        .await
        .expect("end");
    assert!(ended);
    store
        .insert_sandbox(&sandbox(&alice.id, base_time()), 2)
        .await
        .expect("an ended sandbox frees its slot");
    let error = store
        .insert_sandbox(&sandbox(&alice.id, base_time()), 0)
        .await
        .expect_err("zero quota");
    assert!(
        matches!(error, StoreError::QuotaExceeded { limit: 0 }),
        "{error:?}"
    );
}

async fn quota_holds_under_50_concurrent_inserts(store: Arc<dyn Store>) {
    const LIMIT: u32 = 10;
    let alice = new_user(&*store, "alice").await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            let record = sandbox(&alice.id, base_time() + seconds(i));
            tokio::spawn(async move { store.insert_sandbox(&record, LIMIT).await })
        })
        .collect();
    let (mut inserted, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => inserted += 1,
            Err(StoreError::QuotaExceeded { limit: LIMIT }) => refused += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!((inserted, refused), (LIMIT, 50 - LIMIT));
    let live = store.list_live_sandboxes().await.expect("live");
    assert_eq!(live.len(), LIMIT as usize);
}

async fn lifecycle(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let record = sandbox(&alice.id, base_time());
    store
        .insert_sandbox(&record, NO_QUOTA)
        .await
        .expect("insert");

    assert!(store.mark_sandbox_running(&record.id).await.expect("mark"));
    assert!(!store
        .mark_sandbox_running(&record.id)
        .await
        .expect("mark twice"));
    assert!(!store
        .mark_sandbox_running(&SandboxId::generate())
        .await
        .expect("unknown"));
    let running = store
        .get_sandbox(&record.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(running.status, SandboxStatus::Running);

    let later = base_time() + seconds(900);
    assert!(store
        .set_sandbox_expiry(&record.id, later)
        .await
        .expect("extend"));
    let extended = store
        .get_sandbox(&record.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(extended.expires_at, later);

    let ended_at = base_time() + seconds(60);
    let first = store
        .end_sandbox(
            &record.id,
            SandboxStatus::Terminated,
            TerminationReason::Timeout,
            ended_at,
        )
        .await
        .expect("end");
    assert!(first);
    let second = store
        .end_sandbox(
            &record.id,
            SandboxStatus::Failed,
            TerminationReason::Oom,
            ended_at + seconds(1),
        )
        .await
        .expect("end again");
    assert!(!second, "the first reason wins");
    let ended = store
        .get_sandbox(&record.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(ended.status, SandboxStatus::Terminated);
    assert_eq!(ended.termination_reason, Some(TerminationReason::Timeout));
    assert_eq!(ended.ended_at, Some(ended_at));
    assert!(!store
        .set_sandbox_expiry(&record.id, later)
        .await
        .expect("ended"));
    assert!(!store.mark_sandbox_running(&record.id).await.expect("ended"));

    let other = sandbox(&alice.id, base_time());
    store
        .insert_sandbox(&other, NO_QUOTA)
        .await
        .expect("insert");
    let failed = store
        .end_sandbox(
            &other.id,
            SandboxStatus::Failed,
            TerminationReason::CreateFailed,
            ended_at,
        )
        .await
        .expect("fail while creating");
    assert!(failed);
    let refused = store
        .end_sandbox(
            &other.id,
            SandboxStatus::Running,
            TerminationReason::Killed,
            ended_at,
        )
        .await;
    assert!(refused.is_err(), "a live status is not an end");
}

async fn live_and_expired(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let now = base_time() + seconds(1000);
    let mut expired = sandbox(&alice.id, base_time());
    expired.expires_at = now;
    let mut fresh = sandbox(&alice.id, base_time() + seconds(1));
    fresh.expires_at = now + seconds(1);
    let mut ended = sandbox(&alice.id, base_time() + seconds(2));
    ended.expires_at = now - seconds(500);
    for record in [&expired, &fresh, &ended] {
        store
            .insert_sandbox(record, NO_QUOTA)
            .await
            .expect("insert");
    }
    store
        .end_sandbox(
            &ended.id,
            SandboxStatus::Terminated,
            TerminationReason::Killed,
            now,
        )
        .await
        .expect("end");

    let live: Vec<_> = store
        .list_live_sandboxes()
        .await
        .expect("live")
        .into_iter()
        .map(|record| record.id)
        .collect();
    assert_eq!(live, vec![expired.id.clone(), fresh.id.clone()]);
    let due = store.list_expired_sandboxes(now).await.expect("expired");
    assert_eq!(due, vec![expired.id], "at or before now, live only");
}

async fn listing_is_scoped_and_filtered(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let bob = new_user(&*store, "bob").await;
    let mut tagged = sandbox(&alice.id, base_time());
    tagged.metadata = BTreeMap::from([
        ("team".to_owned(), "ml".to_owned()),
        ("env".to_owned(), "prod".to_owned()),
    ]);
    let mut other_team = sandbox(&alice.id, base_time() + seconds(1));
    other_team.metadata = BTreeMap::from([("team".to_owned(), "web".to_owned())]);
    let mut hostile = sandbox(&alice.id, base_time() + seconds(2));
    hostile.metadata = BTreeMap::from([("a'b\".$[0]".to_owned(), "x' OR '1'='1".to_owned())]);
    let mut bobs = sandbox(&bob.id, base_time() + seconds(3));
    bobs.metadata = tagged.metadata.clone();
    for record in [&tagged, &other_team, &hostile, &bobs] {
        store
            .insert_sandbox(record, NO_QUOTA)
            .await
            .expect("insert");
    }
    store
        .mark_sandbox_running(&other_team.id)
        .await
        .expect("mark");

    let ids = |page: codebox_store::Page<codebox_store::SandboxRecord>| -> Vec<SandboxId> {
        page.items.into_iter().map(|record| record.id).collect()
    };
    let all = store
        .list_sandboxes(&filter(&alice.id), None, 10)
        .await
        .expect("list");
    assert_eq!(all.next_cursor, None);
    assert_eq!(
        ids(all),
        vec![hostile.id.clone(), other_team.id.clone(), tagged.id.clone()]
    );

    let mut by_status = filter(&alice.id);
    by_status.status = Some(SandboxStatus::Running);
    let running = store
        .list_sandboxes(&by_status, None, 10)
        .await
        .expect("list");
    assert_eq!(ids(running), vec![other_team.id.clone()]);

    let mut by_meta = filter(&alice.id);
    by_meta.metadata = vec![("team".to_owned(), "ml".to_owned())];
    let ml = store
        .list_sandboxes(&by_meta, None, 10)
        .await
        .expect("list");
    assert_eq!(
        ids(ml),
        vec![tagged.id.clone()],
        "bob's tagged sandbox is not listed"
    );

    by_meta.metadata.push(("env".to_owned(), "dev".to_owned()));
    let none = store
        .list_sandboxes(&by_meta, None, 10)
        .await
        .expect("list");
    assert!(none.items.is_empty(), "every pair must match");

    let mut conflicting = filter(&alice.id);
    conflicting.metadata = vec![
        ("team".to_owned(), "ml".to_owned()),
        ("team".to_owned(), "web".to_owned()),
    ];
    let none = store
        .list_sandboxes(&conflicting, None, 10)
        .await
        .expect("list");
    assert!(none.items.is_empty(), "one key cannot hold two values");

    let mut odd = filter(&alice.id);
    odd.metadata = vec![("a'b\".$[0]".to_owned(), "x' OR '1'='1".to_owned())];
    let found = store.list_sandboxes(&odd, None, 10).await.expect("list");
    assert_eq!(
        ids(found),
        vec![hostile.id.clone()],
        "keys are matched literally"
    );
    odd.metadata = vec![("a'b\".$[0]".to_owned(), "x".to_owned())];
    assert!(store
        .list_sandboxes(&odd, None, 10)
        .await
        .expect("list")
        .items
        .is_empty());
}

async fn pagination(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let mut expected = Vec::new();
    // Pairs share a created_at to exercise the id tie-break.
    for i in 0..25 {
        let record = sandbox(&alice.id, base_time() + seconds(i / 2));
        store
            .insert_sandbox(&record, NO_QUOTA)
            .await
            .expect("insert");
        expected.push(record);
    }
    expected.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_sandboxes(&filter(&alice.id), cursor.as_deref(), 10)
            .await
            .expect("page");
        pages += 1;
        seen.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "newest first, each exactly once");

    let one = store
        .list_sandboxes(&filter(&alice.id), None, 0)
        .await
        .expect("page");
    assert_eq!(one.items.len(), 1, "limit 0 is clamped to 1");
    for bad in ["garbage", "", "bm90LWEtY3Vyc29y"] {
        let error = store
            .list_sandboxes(&filter(&alice.id), Some(bad), 10)
            .await
            .expect_err("bad cursor");
        assert!(
            matches!(error, StoreError::InvalidCursor),
            "{bad:?}: {error:?}"
        );
    }
}

async fn page_size_is_capped(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    for i in 0..101 {
        let record = sandbox(&alice.id, base_time() + seconds(i));
        store
            .insert_sandbox(&record, NO_QUOTA)
            .await
            .expect("insert");
    }
    let page = store
        .list_sandboxes(&filter(&alice.id), None, 5000)
        .await
        .expect("page");
    assert_eq!(page.items.len(), 100);
    assert!(page.next_cursor.is_some());
}

async fn executions(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let first = sandbox(&alice.id, base_time());
    let second = sandbox(&alice.id, base_time());
    store
        .insert_sandbox(&first, NO_QUOTA)
        .await
        .expect("insert");
    store
        .insert_sandbox(&second, NO_QUOTA)
        .await
        .expect("insert");
    let mut expected = Vec::new();
    for i in 0..7 {
        let mut record = execution(&first.id, base_time() + seconds(i));
        record.exit_code = if i % 2 == 0 { None } else { Some(-9) };
        record.context_id = None;
        if i == 3 {
            // Kept code and output (retention.store_code) round-trip as is.
            record.code = Some("print('é')\n".to_owned());
            record.output = Some(r#"{"stdout":["é\n"],"truncated":false}"#.to_owned());
        }
        store.insert_execution(&record).await.expect("insert");
        expected.push(record);
    }
    store
        .insert_execution(&execution(&second.id, base_time()))
        .await
        .expect("other sandbox");
    expected.reverse();

    let page = store
        .list_executions(&first.id, None, 4)
        .await
        .expect("page");
    assert_eq!(page.items, expected[..4]);
    let cursor = page.next_cursor.expect("more");
    let rest = store
        .list_executions(&first.id, Some(&cursor), 4)
        .await
        .expect("page");
    assert_eq!(rest.items, expected[4..]);
    assert_eq!(rest.next_cursor, None);

    let error = store
        .insert_execution(&expected[0])
        .await
        .expect_err("duplicate");
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
    let error = store
        .list_executions(&first.id, Some("%%%"), 4)
        .await
        .expect_err("bad cursor");
    assert!(matches!(error, StoreError::InvalidCursor));
}

async fn purge(store: Arc<dyn Store>) {
    let alice = new_user(&*store, "alice").await;
    let cutoff = base_time() + seconds(100);
    let old_tombstone = sandbox(&alice.id, base_time());
    let new_tombstone = sandbox(&alice.id, base_time());
    let live = sandbox(&alice.id, base_time());
    for record in [&old_tombstone, &new_tombstone, &live] {
        store
            .insert_sandbox(record, NO_QUOTA)
            .await
            .expect("insert");
    }
    let end = |id: SandboxId, at| {
        let store = Arc::clone(&store);
        async move {
            store
                .end_sandbox(
                    &id,
                    SandboxStatus::Terminated,
                    TerminationReason::Killed,
                    at,
                )
                .await
                .expect("end")
        }
    };
    end(old_tombstone.id.clone(), cutoff - seconds(1)).await;
    end(new_tombstone.id.clone(), cutoff).await;

    let old_run = execution(&live.id, cutoff - seconds(1));
    let new_run = execution(&live.id, cutoff);
    let tombstone_run = execution(&old_tombstone.id, cutoff + seconds(5));
    for record in [&old_run, &new_run, &tombstone_run] {
        store.insert_execution(record).await.expect("insert");
    }

    let report = store.purge(cutoff, cutoff).await.expect("purge");
    assert_eq!(
        report,
        PurgeReport {
            executions: 2,
            sandboxes: 1
        }
    );
    assert_eq!(
        store.get_sandbox(&old_tombstone.id).await.expect("get"),
        None
    );
    assert!(store
        .get_sandbox(&new_tombstone.id)
        .await
        .expect("get")
        .is_some());
    assert!(store.get_sandbox(&live.id).await.expect("get").is_some());
    let remaining = store
        .list_executions(&live.id, None, 10)
        .await
        .expect("list");
    assert_eq!(remaining.items, vec![new_run]);

    let again = store.purge(cutoff, cutoff).await.expect("purge again");
    assert_eq!(again, PurgeReport::default());
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::with_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::with_postgres(super::$name).await;
                }
            )*
        }
    };
}

conformance!(
    ping,
    users,
    api_keys,
    sandbox_round_trip,
    sandboxes_need_an_existing_owner,
    sub_microsecond_times_are_truncated,
    quota_is_enforced,
    quota_holds_under_50_concurrent_inserts,
    lifecycle,
    live_and_expired,
    listing_is_scoped_and_filtered,
    pagination,
    page_size_is_capped,
    executions,
    purge,
);
