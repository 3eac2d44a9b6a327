//! `node-hop`: what the API->node hop of scale-out costs.
//!
//! 1. Warm `1+1` in a sandbox's default python context, through the
//!    `Runtime` trait as the core drives it: directly on a `LinuxRuntime`
//!    (all-in-one) and through a `RemoteRuntime` -> node API (HTTP/1 on
//!    loopback, shared secret) -> the same `LinuxRuntime`, interleaved on the
//!    same sandbox. The p50 difference is the hop (target < 0.5 ms).
//! 2. Create throughput: `--creates` sandboxes created `--concurrency` at a
//!    time through a `RemoteRuntime` with one node active, then with three.
//!    All nodes run in this process on this machine, so on few cores three
//!    nodes share the same CPUs: the number shows placement overhead and
//!    parallelism, not more hardware.
//!
//! Needs root and the static agent (`CODEBOX_AGENT_PATH`). See bench/README.md.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use codebox_bench::code::{one_plus_one, python_context, Runner};
use codebox_bench::{header, row, summarize};
use codebox_node::{NodeSecret, RemoteRuntime, RemoteSettings};
use codebox_runtime::{LinuxRuntime, LinuxRuntimeConfig, Runtime, SandboxLimits, SandboxSpec};
use codebox_store::{
    NodeCapacity, NodeRegistration, NodeState, NodeStore, SandboxRecord, SqliteStore, Store, User,
};
use codebox_types::{Resources, SandboxId, SandboxStatus, UserId};
use time::OffsetDateTime;

const SECRET: &str = "node-hop-bench-secret-0123456789abcdef";
const NODES: usize = 3;
const SLOTS: u32 = 8;

struct Options {
    iterations: usize,
    creates: usize,
    concurrency: usize,
    agent: PathBuf,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        iterations: 300,
        creates: 12,
        concurrency: 4,
        agent: PathBuf::new(),
    };
    let mut agent = std::env::var_os("CODEBOX_AGENT_PATH").map(PathBuf::from);
    let mut args = std::env::args().skip(1);
    fn number(args: &mut impl Iterator<Item = String>, name: &str) -> anyhow::Result<usize> {
        args.next()
            .with_context(|| format!("{name} N"))?
            .parse()
            .with_context(|| format!("{name} takes a number"))
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-n" | "--iterations" => options.iterations = number(&mut args, "--iterations")?,
            "--creates" => options.creates = number(&mut args, "--creates")?,
            "--concurrency" => options.concurrency = number(&mut args, "--concurrency")?.max(1),
            "--agent" => agent = Some(args.next().context("--agent PATH")?.into()),
            "--help" | "-h" => {
                println!("node-hop [-n N] [--creates N] [--concurrency N] [--agent PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    options.agent = agent.context("set CODEBOX_AGENT_PATH or pass --agent")?;
    Ok(options)
}

fn cgroup_parent(index: usize) -> String {
    format!("codebox-hop-{}-{index}", std::process::id())
}

fn linux(root: &tempfile::TempDir, agent: &Path, index: usize) -> anyhow::Result<LinuxRuntime> {
    let mut config = LinuxRuntimeConfig::new(
        root.path().join(format!("node{index}")),
        agent.to_path_buf(),
    );
    config.pool_size = 0;
    config.cgroup_parent = cgroup_parent(index);
    // Disjoint host uid ranges per in-process node.
    config.uid_base = 3_000_000_000 + u32::try_from(index)? * (SLOTS + 1) * 65_536;
    config.max_sandboxes = SLOTS;
    Ok(LinuxRuntime::new(config)?)
}

struct Node {
    id: String,
    runtime: LinuxRuntime,
}

async fn start_node(
    store: &Arc<SqliteStore>,
    root: &tempfile::TempDir,
    agent: &Path,
    index: usize,
) -> anyhow::Result<Node> {
    let runtime = linux(root, agent, index)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let router = codebox_node::server::router(Arc::new(runtime.clone()), NodeSecret::new(SECRET));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let id = format!("node{index}");
    store
        .register_node(
            &NodeRegistration {
                id: id.clone(),
                address,
                capacity: NodeCapacity {
                    cpu: 64.0,
                    memory_mb: 1 << 20,
                    slots: SLOTS,
                },
                labels: BTreeMap::new(),
                runtimes: runtime.runtimes(),
                isolation: runtime.isolation().to_owned(),
                version: "bench".to_owned(),
            },
            OffsetDateTime::now_utc(),
        )
        .await?;
    Ok(Node { id, runtime })
}

/// The row the core inserts before `create`, and the spec.
async fn new_sandbox(store: &SqliteStore, user: &User) -> anyhow::Result<SandboxSpec> {
    let now = codebox_store::truncate_to_micros(OffsetDateTime::now_utc());
    let id = SandboxId::generate();
    let resources = Resources {
        cpu: 0.5,
        memory: 256,
    };
    store
        .insert_sandbox(
            &SandboxRecord {
                id: id.clone(),
                user_id: user.id.clone(),
                runtime: "python3".to_owned(),
                resources,
                isolation: "namespaces".to_owned(),
                status: SandboxStatus::Creating,
                termination_reason: None,
                metadata: BTreeMap::new(),
                created_at: now,
                expires_at: now + time::Duration::hours(1),
                ended_at: None,
                node: None,
            },
            10_000,
        )
        .await?;
    Ok(SandboxSpec {
        id,
        runtime: "python3".to_owned(),
        resources,
        limits: SandboxLimits::default(),
        env: BTreeMap::new(),
        network: false,
    })
}

/// Creates `count` sandboxes, `concurrency` at a time; returns (ids, elapsed).
async fn create_many(
    remote: &RemoteRuntime,
    store: &Arc<SqliteStore>,
    user: &User,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<SandboxId>, Duration)> {
    let mut specs = Vec::new();
    for _ in 0..count {
        specs.push(new_sandbox(store, user).await?);
    }
    let ids: Vec<SandboxId> = specs.iter().map(|spec| spec.id.clone()).collect();
    let started = Instant::now();
    let mut queue = specs.into_iter();
    loop {
        let batch: Vec<SandboxSpec> = queue.by_ref().take(concurrency).collect();
        if batch.is_empty() {
            break;
        }
        let results = futures_join(batch.into_iter().map(|spec| {
            let remote = remote.clone();
            tokio::spawn(async move { remote.create(spec).await })
        }))
        .await;
        for result in results {
            result??;
        }
    }
    Ok((ids, started.elapsed()))
}

async fn futures_join<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await);
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let root = tempfile::tempdir()?;
    std::fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let store = Arc::new(SqliteStore::open(&root.path().join("codebox.db")).await?);
    let user = User {
        id: UserId::generate(),
        name: "bench".to_owned(),
        is_admin: false,
        created_at: codebox_store::truncate_to_micros(OffsetDateTime::now_utc()),
    };
    store.create_user(&user).await?;
    let mut nodes = Vec::new();
    for index in 0..NODES {
        nodes.push(start_node(&store, &root, &options.agent, index).await?);
    }
    let mut settings = RemoteSettings::new(Duration::from_secs(3600));
    settings.sweep_interval = Duration::from_secs(3600);
    let remote = RemoteRuntime::start(store.clone(), NodeSecret::new(SECRET), settings).await?;

    // 1. The hop: only node0 takes work.
    for node in &nodes[1..] {
        store.set_node_state(&node.id, NodeState::Draining).await?;
    }
    let spec = new_sandbox(&store, &user).await?;
    let id = spec.id.clone();
    remote.create(spec).await?;
    remote
        .create_context(&id, python_context(Runner::Plain))
        .await?;
    let direct: &dyn Runtime = &nodes[0].runtime;
    for _ in 0..20 {
        one_plus_one(direct, &id).await?;
        one_plus_one(&remote, &id).await?;
    }
    let (mut local, mut hopped) = (Vec::new(), Vec::new());
    for _ in 0..options.iterations {
        let started = Instant::now();
        one_plus_one(direct, &id).await?;
        local.push(started.elapsed());
        let started = Instant::now();
        one_plus_one(&remote, &id).await?;
        hopped.push(started.elapsed());
    }
    remote.destroy(&id).await?;

    // 2. Create throughput, one node then three.
    let (ids, one_node) = create_many(
        &remote,
        &store,
        &user,
        options.creates.min(SLOTS as usize),
        options.concurrency,
    )
    .await?;
    for id in &ids {
        remote.destroy(id).await?;
    }
    for node in &nodes[1..] {
        store.set_node_state(&node.id, NodeState::Active).await?;
    }
    let three_count = options.creates.min(SLOTS as usize * NODES);
    let (ids, three_nodes) =
        create_many(&remote, &store, &user, three_count, options.concurrency).await?;
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        if let Some(node) = store.sandbox_node(id).await? {
            *spread.entry(node).or_default() += 1;
        }
    }
    for id in &ids {
        remote.destroy(id).await?;
    }
    for node in &nodes {
        node.runtime.shutdown().await;
    }

    println!(
        "node-hop: {} iterations of warm 1+1 (plain python), {} creates, concurrency {}",
        options.iterations, options.creates, options.concurrency
    );
    println!("{}", header());
    let local = summarize(&local).context("samples")?;
    let hopped = summarize(&hopped).context("samples")?;
    println!("{}", row("warm 1+1, all-in-one (direct)", &local, ""));
    println!("{}", row("warm 1+1, api -> node hop", &hopped, ""));
    let added = hopped.p50.as_secs_f64() - local.p50.as_secs_f64();
    println!(
        "added by the hop (p50): {:.3} ms   target < 0.5 ms",
        added * 1000.0
    );
    let one_count = options.creates.min(SLOTS as usize);
    println!(
        "create throughput, 1 node:  {one_count} in {:.3} s = {:.1}/s",
        one_node.as_secs_f64(),
        one_count as f64 / one_node.as_secs_f64()
    );
    println!(
        "create throughput, 3 nodes: {three_count} in {:.3} s = {:.1}/s   spread {spread:?}",
        three_nodes.as_secs_f64(),
        three_count as f64 / three_nodes.as_secs_f64()
    );
    for index in 0..NODES {
        let name = cgroup_parent(index);
        for base in ["/sys/fs/cgroup".to_owned()].into_iter().chain(
            std::fs::read_dir("/sys/fs/cgroup")?
                .flatten()
                .map(|entry| entry.path().to_string_lossy().into_owned()),
        ) {
            let _ = std::fs::remove_dir(PathBuf::from(base).join(&name));
        }
    }
    Ok(())
}
