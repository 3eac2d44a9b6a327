//! RemoteRuntime against node servers over real sockets, each node backed by
//! the fake runtime, with the registry in SQLite: placement, forwarding of
//! every kind of call, the node-lost sweep, node reconcile, and the secret.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use codebox_node::{Member, NodeSecret, RemoteRuntime, RemoteSettings};
use codebox_runtime::fake::FakeRuntime;
use codebox_runtime::{
    CodeRequest, Command, ContextRequest, ExecRequest, FileErrorKind, Language, Runtime,
    RuntimeError, SandboxLimits, SandboxSpec, WriteOptions,
};
use codebox_store::{
    NodeCapacity, NodeRegistration, NodeState, NodeStore, SandboxRecord, SqliteStore, Store, User,
};
use codebox_types::{Resources, SandboxId, SandboxStatus, TerminationReason, UserId};
use time::OffsetDateTime;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

struct Node {
    fake: FakeRuntime,
    member: Member,
    task: tokio::task::JoinHandle<()>,
    address: String,
}

struct Cluster {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    user: User,
    nodes: HashMap<String, Node>,
}

async fn start_node(store: &Arc<SqliteStore>, id: &str, slots: u32) -> Node {
    let fake = FakeRuntime::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let router = codebox_node::server::router(Arc::new(fake.clone()), NodeSecret::new(SECRET));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let registration = NodeRegistration {
        id: id.to_owned(),
        address: address.clone(),
        capacity: NodeCapacity {
            cpu: 64.0,
            memory_mb: 1 << 20,
            slots,
        },
        labels: BTreeMap::new(),
        runtimes: fake.runtimes(),
        isolation: "namespaces".to_owned(),
        version: "test".to_owned(),
    };
    let member = Member::new(
        registration,
        Arc::new(fake.clone()),
        store.clone(),
        store.clone(),
        Duration::from_secs(3600),
    );
    member.join().await.expect("join");
    Node {
        fake,
        member,
        task,
        address,
    }
}

async fn cluster(nodes: &[(&str, u32)]) -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("codebox.db"))
            .await
            .expect("open"),
    );
    let user = User {
        id: UserId::generate(),
        name: "alice".to_owned(),
        is_admin: false,
        created_at: codebox_store::truncate_to_micros(OffsetDateTime::now_utc()),
    };
    store.create_user(&user).await.expect("user");
    let mut map = HashMap::new();
    for (id, slots) in nodes {
        map.insert((*id).to_owned(), start_node(&store, id, *slots).await);
    }
    Cluster {
        _dir: dir,
        store,
        user,
        nodes: map,
    }
}

async fn remote(cluster: &Cluster, lost_after: Duration) -> RemoteRuntime {
    let mut settings = RemoteSettings::new(lost_after);
    // Sweeps run only when a test asks.
    settings.sweep_interval = Duration::from_secs(3600);
    RemoteRuntime::start(cluster.store.clone(), NodeSecret::new(SECRET), settings)
        .await
        .expect("start")
}

/// What the core does before `Runtime::create`: the row, `creating`.
async fn new_sandbox(cluster: &Cluster) -> SandboxSpec {
    let id = SandboxId::generate();
    let now = codebox_store::truncate_to_micros(OffsetDateTime::now_utc());
    let record = SandboxRecord {
        id: id.clone(),
        user_id: cluster.user.id.clone(),
        runtime: "python3".to_owned(),
        resources: Resources {
            cpu: 1.0,
            memory: 256,
        },
        isolation: "namespaces".to_owned(),
        status: SandboxStatus::Creating,
        termination_reason: None,
        metadata: BTreeMap::new(),
        created_at: now,
        expires_at: now + time::Duration::minutes(5),
        ended_at: None,
        node: None,
    };
    cluster
        .store
        .insert_sandbox(&record, 1000)
        .await
        .expect("insert");
    SandboxSpec {
        id,
        runtime: "python3".to_owned(),
        resources: record.resources,
        limits: SandboxLimits::default(),
        env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
        network: false,
    }
}

fn holder(cluster: &Cluster, id: &SandboxId) -> Vec<String> {
    let mut holders: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|(_, node)| node.fake.spec(id).is_some())
        .map(|(name, _)| name.clone())
        .collect();
    holders.sort();
    holders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_spreads_and_respects_slots() {
    let cluster = cluster(&[("a", 3), ("b", 3), ("c", 3)]).await;
    let runtime = remote(&cluster, Duration::from_secs(60)).await;
    assert_eq!(
        runtime
            .runtimes()
            .iter()
            .map(|info| info.name.as_str())
            .collect::<Vec<_>>(),
        vec!["bash", "node", "python3"]
    );
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..9 {
        let spec = new_sandbox(&cluster).await;
        let id = spec.id.clone();
        runtime.create(spec).await.expect("create");
        let holders = holder(&cluster, &id);
        assert_eq!(holders.len(), 1, "exactly one node holds it");
        assert_eq!(
            cluster.store.sandbox_node(&id).await.expect("node"),
            Some(holders[0].clone()),
            "the placement is recorded"
        );
        *per_node.entry(holders[0].clone()).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("a".into(), 3), ("b".into(), 3), ("c".into(), 3)]),
        "least loaded first fills every node evenly"
    );
    let spec = new_sandbox(&cluster).await;
    let error = runtime.create(spec).await.expect_err("full");
    assert!(matches!(error, RuntimeError::AtCapacity { .. }), "{error}");
    let mut listed = runtime.list().await.expect("list");
    listed.sort();
    assert_eq!(listed.len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_call_reaches_the_sandboxs_node() {
    let cluster = cluster(&[("a", 10), ("b", 10)]).await;
    let runtime = remote(&cluster, Duration::from_secs(60)).await;
    let spec = new_sandbox(&cluster).await;
    let id = spec.id.clone();
    runtime.create(spec).await.expect("create");

    // A second API replica, with its own (empty) placement cache.
    let other = remote(&cluster, Duration::from_secs(60)).await;

    let output = other
        .exec(
            &id,
            ExecRequest {
                command: Command::Shell("echo hello $GREETING".into()),
                env: BTreeMap::new(),
                cwd: None,
                stdin: None,
                timeout: Duration::from_secs(10),
                output_limit: 1 << 20,
            },
        )
        .await
        .expect("exec")
        .collect()
        .await
        .expect("collect");
    assert_eq!(output.exit.expect("exit").exit_code, Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("hello"));

    // Files: write (streamed), stat, list, read (ranged), refusals keep their kind.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let written = runtime
        .write_file(
            &id,
            "data/blob.bin",
            WriteOptions::default(),
            Box::new(std::io::Cursor::new(body.clone())),
        )
        .await
        .expect("write");
    assert_eq!(written, body.len() as u64);
    let entry = other.stat(&id, "data/blob.bin").await.expect("stat");
    assert_eq!(entry.size, body.len() as u64);
    let listing = other.list_files(&id, "data", 1).await.expect("list");
    assert_eq!(listing.entries.len(), 1);
    let mut download = other
        .read_file(&id, "data/blob.bin", 10, Some(150_000))
        .await
        .expect("read");
    assert_eq!((download.size, download.length), (200_000, 150_000));
    let mut read = Vec::new();
    while let Some(chunk) = download.next().await {
        read.extend(chunk.expect("chunk"));
    }
    assert_eq!(read, body[10..150_010]);
    let missing = other.stat(&id, "nope").await.expect_err("missing");
    assert!(
        matches!(
            missing,
            RuntimeError::File {
                kind: FileErrorKind::NotFound,
                ..
            }
        ),
        "{missing}"
    );
    other.make_dir(&id, "d/e", true).await.expect("mkdir");
    other
        .move_path(&id, "data/blob.bin", "d/e/blob.bin", false)
        .await
        .expect("move");
    other.remove_path(&id, "d", true).await.expect("remove");

    // Code: a context, state across executions, the stream's events.
    let context = other
        .create_context(
            &id,
            ContextRequest {
                context: "c1".into(),
                language: Language::Python,
                cwd: None,
                env: BTreeMap::new(),
            },
        )
        .await
        .expect("context");
    assert_eq!(context.context, "c1");
    let run = |code: &str| CodeRequest {
        context: "c1".into(),
        code: code.into(),
        timeout: Duration::from_secs(10),
        env: BTreeMap::new(),
        output_limit: 1 << 20,
    };
    runtime
        .execute_code(&id, run("x = 41"))
        .await
        .expect("execute")
        .collect()
        .await
        .expect("done");
    let out = other
        .execute_code(&id, run("print(x)\nx + 1"))
        .await
        .expect("execute")
        .collect()
        .await
        .expect("done");
    assert_eq!(out.text(), Some("42"));
    assert_eq!(out.stdout, b"41\n");
    assert_eq!(other.list_contexts(&id).await.expect("contexts").len(), 1);
    other.destroy_context(&id, "c1").await.expect("destroy ctx");

    // Stats and destroy.
    let stats = other.stats(&id).await.expect("stats");
    assert_eq!(stats.cpu_limit_millicores, 1000);
    other.destroy(&id).await.expect("destroy");
    assert!(holder(&cluster, &id).is_empty());
    let gone = runtime.stats(&id).await.expect_err("gone");
    assert!(matches!(gone, RuntimeError::NotFound { .. }), "{gone}");
    let unknown = runtime
        .stats(&SandboxId::generate())
        .await
        .expect_err("unknown");
    assert!(
        matches!(unknown, RuntimeError::NotFound { .. }),
        "{unknown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_ends_its_sandboxes_and_gets_no_new_ones() {
    let mut cluster = cluster(&[("a", 10), ("b", 10)]).await;
    let runtime = remote(&cluster, Duration::from_secs(30)).await;
    let mut exits = runtime.subscribe_exits();
    let mut on_a = Vec::new();
    for _ in 0..4 {
        let spec = new_sandbox(&cluster).await;
        let id = spec.id.clone();
        runtime.create(spec).await.expect("create");
        if holder(&cluster, &id) == ["a"] {
            on_a.push(id);
        }
    }
    // Node a dies: its server stops and its heartbeat is a minute old.
    let node_a = cluster.nodes.remove("a").expect("a");
    node_a.task.abort();
    let stale = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let mut registration = cluster
        .store
        .get_node("a")
        .await
        .expect("get")
        .expect("a")
        .registration;
    registration.address = node_a.address.clone();
    cluster
        .store
        .heartbeat_node(&registration, stale)
        .await
        .expect("age");
    let reported = runtime.sweep().await;
    assert_eq!(reported, on_a.len());
    let mut seen = Vec::new();
    for _ in 0..on_a.len() {
        let exit = exits.recv().await.expect("exit");
        assert_eq!(exit.reason, TerminationReason::NodeLost);
        seen.push(exit.id);
    }
    seen.sort();
    on_a.sort();
    assert_eq!(seen, on_a);
    assert_eq!(
        cluster
            .store
            .get_node("a")
            .await
            .expect("get")
            .expect("a")
            .state,
        NodeState::Lost
    );
    // Destroying a sandbox of a lost node succeeds without reaching it.
    if let Some(id) = on_a.first() {
        runtime.destroy(id).await.expect("destroy on a lost node");
    }
    for _ in 0..3 {
        let spec = new_sandbox(&cluster).await;
        let id = spec.id.clone();
        runtime.create(spec).await.expect("create");
        assert_eq!(holder(&cluster, &id), ["b"]);
    }

    // Node a comes back (same fake state, as after a network cut): the rows
    // were ended, so its reconcile destroys the sandboxes it still holds.
    for id in &on_a {
        cluster
            .store
            .end_sandbox(
                id,
                SandboxStatus::Terminated,
                TerminationReason::NodeLost,
                OffsetDateTime::now_utc(),
            )
            .await
            .expect("end");
    }
    let held_before = node_a.fake.list().await.expect("list").len();
    assert_eq!(held_before, on_a.len());
    let report = node_a.member.heartbeat().await.expect("heartbeat");
    assert_eq!(report.destroyed, held_before);
    assert!(node_a.fake.list().await.expect("list").is_empty());
    assert_eq!(
        cluster
            .store
            .get_node("a")
            .await
            .expect("get")
            .expect("a")
            .state,
        NodeState::Active,
        "a node that heartbeats again is active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_ends_the_rows_of_sandboxes_it_lost() {
    let cluster = cluster(&[("a", 10)]).await;
    let runtime = remote(&cluster, Duration::from_secs(30)).await;
    let spec = new_sandbox(&cluster).await;
    let id = spec.id.clone();
    runtime.create(spec).await.expect("create");
    cluster
        .store
        .mark_sandbox_running(&id)
        .await
        .expect("running");
    // A new process on the same node: an empty runtime, same node id.
    let restarted = start_node(&cluster.store, "a", 10).await;
    let record = cluster
        .store
        .get_sandbox(&id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(record.status, SandboxStatus::Terminated);
    assert_eq!(record.termination_reason, Some(TerminationReason::NodeLost));
    restarted.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_exits_on_a_node_are_recorded_by_the_node() {
    let cluster = cluster(&[("a", 10)]).await;
    let runtime = remote(&cluster, Duration::from_secs(30)).await;
    let spec = new_sandbox(&cluster).await;
    let id = spec.id.clone();
    runtime.create(spec).await.expect("create");
    let node = cluster.nodes.get("a").expect("a");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let member_run = node.member.run(async move {
        let _ = stop_rx.await;
    });
    let check = async {
        // `join!` polls `member_run` first, and `run` subscribes to exits
        // before its first await: the exit below cannot be missed.
        assert!(node.fake.end_sandbox(&id, TerminationReason::Oom));
        loop {
            let record = cluster
                .store
                .get_sandbox(&id)
                .await
                .expect("get")
                .expect("row");
            if record.status == SandboxStatus::Terminated {
                assert_eq!(record.termination_reason, Some(TerminationReason::Oom));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(());
    };
    tokio::join!(member_run, check);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_api_refuses_requests_without_the_secret() {
    let cluster = cluster(&[("a", 10)]).await;
    let address = &cluster.nodes.get("a").expect("a").address;
    for header in [None, Some("Bearer wrong-secret"), Some(SECRET)] {
        let status = raw_post(address, "/v1/call", r#"{"method":"list"}"#, header).await;
        assert_eq!(status, 401, "{header:?}");
    }
    let good = format!("Bearer {SECRET}");
    assert_eq!(
        raw_post(address, "/v1/call", r#"{"method":"list"}"#, Some(&good)).await,
        200
    );
    // A RemoteRuntime with the wrong secret cannot place anything.
    let wrong = RemoteRuntime::start(
        cluster.store.clone(),
        NodeSecret::new("another-secret-another-secret-1234"),
        RemoteSettings::new(Duration::from_secs(30)),
    )
    .await
    .expect("start");
    let spec = new_sandbox(&cluster).await;
    let error = wrong.create(spec).await.expect_err("refused");
    assert!(error.to_string().contains("node request"), "{error}");
}

/// One HTTP/1 request by hand; returns the status code.
async fn raw_post(address: &str, path: &str, body: &str, authorization: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let auth = authorization
        .map(|value| format!("authorization: {value}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\n{auth}\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line")
}
