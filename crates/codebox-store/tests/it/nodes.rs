//! The node registry and placement ([`NodeStore`]), written once and run
//! against SQLite and Postgres like the conformance suite.

use std::collections::BTreeMap;
use std::sync::Arc;

use codebox_store::{NodeCapacity, NodeRegistration, NodeState, NodeStore, NodeUsage, Store};
use codebox_types::{RuntimeInfo, SandboxStatus, TerminationReason};

use crate::support::{base_time, new_user, sandbox, seconds, NO_QUOTA};

fn registration(id: &str) -> NodeRegistration {
    NodeRegistration {
        id: id.to_owned(),
        address: format!("{id}.internal:3100"),
        capacity: NodeCapacity {
            cpu: 8.0,
            memory_mb: 16_384,
            slots: 10,
        },
        labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        runtimes: vec![RuntimeInfo {
            name: "python3".to_owned(),
            language: "python".to_owned(),
            version: "3.11.2".to_owned(),
            aliases: vec!["python".to_owned()],
        }],
        isolation: "namespaces".to_owned(),
        version: "0.1.0".to_owned(),
    }
}

async fn registry_round_trip(store: Arc<dyn Store>, nodes: Arc<dyn NodeStore>) {
    let _ = store;
    let at = base_time();
    assert!(nodes.list_nodes().await.expect("list").is_empty());
    nodes
        .register_node(&registration("n1"), at)
        .await
        .expect("register");
    let record = nodes.get_node("n1").await.expect("get").expect("exists");
    assert_eq!(record.registration, registration("n1"));
    assert_eq!(record.state, NodeState::Active);
    assert_eq!(record.usage, NodeUsage::default());
    assert_eq!(record.started_at, at);
    assert_eq!(record.last_heartbeat, at);
    assert_eq!(nodes.get_node("nope").await.expect("get"), None);

    let mut changed = registration("n1");
    changed.capacity.slots = 3;
    changed.address = "10.0.0.9:3100".to_owned();
    let state = nodes
        .heartbeat_node(&changed, at + seconds(5))
        .await
        .expect("heartbeat");
    assert_eq!(state, Some(NodeState::Active));
    let record = nodes.get_node("n1").await.expect("get").expect("exists");
    assert_eq!(record.registration, changed);
    assert_eq!(record.started_at, at, "a heartbeat is not a restart");
    assert_eq!(record.last_heartbeat, at + seconds(5));
    assert_eq!(
        nodes
            .heartbeat_node(&registration("unknown"), at)
            .await
            .expect("heartbeat"),
        None,
        "an unregistered node must register"
    );
}

async fn draining_survives_heartbeats_and_lost_comes_back(
    store: Arc<dyn Store>,
    nodes: Arc<dyn NodeStore>,
) {
    let _ = store;
    let at = base_time();
    nodes
        .register_node(&registration("n1"), at)
        .await
        .expect("register");
    assert!(nodes
        .set_node_state("n1", NodeState::Draining)
        .await
        .expect("drain"));
    assert!(!nodes
        .set_node_state("nope", NodeState::Draining)
        .await
        .expect("drain unknown"));
    assert_eq!(
        nodes
            .heartbeat_node(&registration("n1"), at + seconds(1))
            .await
            .expect("heartbeat"),
        Some(NodeState::Draining)
    );
    assert!(nodes
        .set_node_state("n1", NodeState::Lost)
        .await
        .expect("lose"));
    assert_eq!(
        nodes
            .heartbeat_node(&registration("n1"), at + seconds(2))
            .await
            .expect("heartbeat"),
        Some(NodeState::Active),
        "a lost node that heartbeats again is active"
    );
    nodes
        .set_node_state("n1", NodeState::Draining)
        .await
        .expect("drain");
    nodes
        .register_node(&registration("n1"), at + seconds(3))
        .await
        .expect("re-register");
    let record = nodes.get_node("n1").await.expect("get").expect("exists");
    assert_eq!(
        record.state,
        NodeState::Active,
        "a restart registers afresh"
    );
    assert_eq!(record.started_at, at + seconds(3));
}

async fn lost_nodes_are_reported_once(store: Arc<dyn Store>, nodes: Arc<dyn NodeStore>) {
    let _ = store;
    let at = base_time();
    nodes
        .register_node(&registration("old"), at)
        .await
        .expect("register");
    nodes
        .register_node(&registration("fresh"), at + seconds(60))
        .await
        .expect("register");
    nodes
        .register_node(&registration("drained"), at)
        .await
        .expect("register");
    nodes
        .set_node_state("drained", NodeState::Draining)
        .await
        .expect("drain");
    let lost = nodes.mark_lost_nodes(at + seconds(30)).await.expect("mark");
    assert_eq!(lost, vec!["drained".to_owned(), "old".to_owned()]);
    assert!(nodes
        .mark_lost_nodes(at + seconds(30))
        .await
        .expect("mark again")
        .is_empty());
    let states: Vec<(String, NodeState)> = nodes
        .list_nodes()
        .await
        .expect("list")
        .into_iter()
        .map(|node| (node.registration.id, node.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("drained".to_owned(), NodeState::Lost),
            ("fresh".to_owned(), NodeState::Active),
            ("old".to_owned(), NodeState::Lost),
        ]
    );
}

async fn placement_and_usage(store: Arc<dyn Store>, nodes: Arc<dyn NodeStore>) {
    let at = base_time();
    let alice = new_user(&*store, "alice").await;
    nodes
        .register_node(&registration("n1"), at)
        .await
        .expect("register");
    nodes
        .register_node(&registration("n2"), at)
        .await
        .expect("register");
    let first = sandbox(&alice.id, at);
    let second = sandbox(&alice.id, at + seconds(1));
    let unplaced = sandbox(&alice.id, at + seconds(2));
    for record in [&first, &second, &unplaced] {
        store
            .insert_sandbox(record, NO_QUOTA)
            .await
            .expect("insert");
    }
    assert!(nodes.place_sandbox(&first.id, "n1").await.expect("place"));
    assert!(nodes.place_sandbox(&second.id, "n1").await.expect("place"));
    assert_eq!(
        nodes.sandbox_node(&first.id).await.expect("node"),
        Some("n1".to_owned())
    );
    assert_eq!(nodes.sandbox_node(&unplaced.id).await.expect("node"), None);
    let n1 = nodes.get_node("n1").await.expect("get").expect("exists");
    assert_eq!(
        n1.usage,
        NodeUsage {
            sandboxes: 2,
            cpu: 1.0,
            memory_mb: 512
        }
    );
    let mut on_n1 = vec![first.id.clone(), second.id.clone()];
    on_n1.sort();
    assert_eq!(
        nodes.live_sandboxes_on_node("n1").await.expect("live"),
        on_n1
    );
    assert!(nodes
        .live_sandboxes_on_node("n2")
        .await
        .expect("live")
        .is_empty());

    // An ended sandbox stops counting and cannot be placed again.
    store
        .end_sandbox(
            &second.id,
            SandboxStatus::Terminated,
            TerminationReason::Killed,
            at + seconds(3),
        )
        .await
        .expect("end");
    assert!(!nodes.place_sandbox(&second.id, "n2").await.expect("place"));
    assert_eq!(
        nodes.sandbox_node(&second.id).await.expect("node"),
        Some("n1".to_owned()),
        "the placement of an ended sandbox is kept"
    );
    let n1 = nodes.get_node("n1").await.expect("get").expect("exists");
    assert_eq!(n1.usage.sandboxes, 1);

    // Only live sandboxes on lost nodes are reported.
    assert!(nodes
        .live_sandboxes_on_lost_nodes()
        .await
        .expect("lost")
        .is_empty());
    nodes
        .set_node_state("n1", NodeState::Lost)
        .await
        .expect("lose");
    assert_eq!(
        nodes.live_sandboxes_on_lost_nodes().await.expect("lost"),
        vec![first.id.clone()]
    );
}

macro_rules! node_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let store = std::sync::Arc::new(
                        codebox_store::SqliteStore::open(&dir.path().join("codebox.db"))
                            .await
                            .expect("open sqlite"),
                    );
                    super::$name(store.clone(), store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::with_postgres_store(|store: std::sync::Arc<codebox_store::PostgresStore>| async move {
                        super::$name(store.clone(), store).await;
                    })
                    .await;
                }
            )*
        }
    };
}

node_suite!(
    registry_round_trip,
    draining_survives_heartbeats_and_lost_comes_back,
    lost_nodes_are_reported_once,
    placement_and_usage,
);
