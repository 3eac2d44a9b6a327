//! The scale-out roles of the binary: `serve --role api` (the API only, over
//! a [`RemoteRuntime`]), `codebox node` (the sandboxes only, registered in
//! Postgres), `codebox node drain` and `codebox node list`. See
//! docs/scale-out.md.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use codebox_config::CodeboxConfig;
use codebox_core::{Core, CoreSettings};
use codebox_node::metrics::NodeGauges;
use codebox_node::{Member, NodeSecret, RemoteRuntime, RemoteSettings};
use codebox_runtime::Runtime;
use codebox_store::{NodeCapacity, NodeRegistration, NodeStore, PoolSettings, PostgresStore};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{open_store, pool_settings, say};
use crate::bootstrap::{allow_runtime_traversal, ensure_data_dir, resolve_secrets};
use crate::dependencies::with_cache;
use crate::serve::{announce_bootstrap, build_runtime, run_http, shutdown_signal, wait_for};
use crate::templates::{self, BackgroundBuilds};

/// The Postgres URL every scale-out role needs.
fn postgres_url(config: &CodeboxConfig) -> anyhow::Result<&str> {
    match config.database.url.as_ref().map(|url| url.expose().trim()) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(url),
        _ => anyhow::bail!(
            "several API replicas and nodes need Postgres: set DATABASE_URL to a postgres:// URL \
             (SQLite is one machine's database; run `codebox serve` without --role for that)"
        ),
    }
}

fn node_secret(config: &CodeboxConfig) -> anyhow::Result<NodeSecret> {
    let secret = config.node.secret.as_ref().with_context(|| {
        format!(
            "node.secret (CODEBOX_NODE_SECRET) must be set, at least {} characters, the same on \
             every API replica and node",
            codebox_config::MIN_NODE_SECRET_LEN
        )
    })?;
    Ok(NodeSecret::new(secret.expose()))
}

async fn node_store(config: &CodeboxConfig) -> anyhow::Result<Arc<dyn NodeStore>> {
    let url = postgres_url(config)?;
    let settings = PoolSettings {
        max_connections: 4,
        ..pool_settings(config)
    };
    let store = PostgresStore::connect(url, &settings)
        .await
        .context("cannot open the node registry in Postgres")?;
    Ok(Arc::new(store))
}

/// `serve --role api`: the HTTP API over the nodes. API replicas share
/// nothing but Postgres and Redis, so the keys under which API keys and JWTs
/// are checked must be configured, not generated per data directory.
pub async fn serve_api(config: CodeboxConfig) -> anyhow::Result<()> {
    postgres_url(&config)?;
    let secret = node_secret(&config)?;
    if config.auth.api_key_secret.is_none() || config.auth.jwt_secret.is_none() {
        anyhow::bail!(
            "--role api needs API_KEY_SECRET and JWT_SECRET set (the same on every replica); \
             generated secrets would differ between replicas"
        );
    }
    ensure_data_dir(&config.data_dir)?;
    let secrets = resolve_secrets(&config)?;
    let store = open_store(&config).await?;
    let (store, cache) = with_cache(store, &config).await?;
    let nodes = node_store(&config).await?;
    let remote = RemoteRuntime::start(nodes, secret, RemoteSettings::new(config.node.lost_after))
        .await
        .context("cannot read the node registry")?;
    let runtime: Arc<dyn Runtime> = Arc::new(remote.clone());
    let mut core = Core::new(store, runtime, CoreSettings::from_config(&config, secrets));
    if let Some(cache) = &cache {
        core = core.with_health_check(cache.health_check());
    }
    let core = Arc::new(core);
    announce_bootstrap(&core, &config).await?;
    // No `Core::reconcile` here: each node reconciles its own sandboxes, and
    // another replica's creates in flight must not be ended as leftovers.
    tracing::info!(
        nodes = remote.nodes().len(),
        "serving the API over sandbox nodes"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let reaper = tokio::spawn({
        let core = Arc::clone(&core);
        let stop = wait_for(stop_rx.clone());
        async move { core.run_reaper(stop).await }
    });
    let gauges = remote.clone();
    let result = run_http(&core, &config, cache.as_ref(), stop_rx, move |state| {
        state.with_collector(Box::new(NodeGauges::new(gauges)))
    })
    .await;
    let _ = stop_tx.send(true);
    let _ = reaper.await;
    // The sandboxes stay on their nodes: other replicas serve them.
    remote.shutdown().await;
    result
}

/// Host cores, for the default cpu capacity.
fn host_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |count| count.get() as f64)
}

/// `MemTotal` in MiB.
fn host_memory_mb() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib / 1024)
        .context("no MemTotal in /proc/meminfo")
}

fn node_id(config: &CodeboxConfig) -> anyhow::Result<String> {
    if let Some(id) = &config.node.id {
        return Ok(id.clone());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name; set node.id (CODEBOX_NODE_ID)")?;
    let host = host.trim();
    anyhow::ensure!(
        !host.is_empty()
            && host.len() <= 64
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
        "the host name {host:?} is not a valid node id; set node.id (CODEBOX_NODE_ID)"
    );
    Ok(host.to_owned())
}

fn registration(config: &CodeboxConfig, runtime: &dyn Runtime) -> anyhow::Result<NodeRegistration> {
    let node = &config.node;
    let capacity = NodeCapacity {
        cpu: if node.capacity_cpu > 0.0 {
            node.capacity_cpu
        } else {
            4.0 * host_cpus()
        },
        memory_mb: if node.capacity_memory_mb > 0 {
            node.capacity_memory_mb
        } else {
            host_memory_mb()?
        },
        slots: if node.capacity_slots > 0 {
            node.capacity_slots.min(config.runtime.max_sandboxes)
        } else {
            config.runtime.max_sandboxes
        },
    };
    Ok(NodeRegistration {
        id: node_id(config)?,
        address: node
            .advertise
            .clone()
            .unwrap_or_else(|| node.listen.clone()),
        capacity,
        labels: node.labels.clone(),
        runtimes: runtime.runtimes(),
        isolation: runtime.isolation().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// `codebox node`: runs sandboxes for the API replicas until SIGTERM/SIGINT.
pub async fn run_node(config: CodeboxConfig) -> anyhow::Result<()> {
    let secret = node_secret(&config)?;
    ensure_data_dir(&config.data_dir)?;
    allow_runtime_traversal(&config)?;
    let store = open_store(&config).await?;
    let (store, _cache) = with_cache(store, &config).await?;
    let nodes = node_store(&config).await?;
    let linux = build_runtime(&config)?;
    let template_builds = BackgroundBuilds::start(&config, templates::apply_to(linux.clone()))?;
    let runtime: Arc<dyn Runtime> = Arc::new(linux);
    let recovered = runtime
        .recover()
        .await
        .context("cannot clean up the previous run's sandboxes")?;
    let registration = registration(&config, &*runtime)?;
    let member = Arc::new(Member::new(
        registration,
        Arc::clone(&runtime),
        store,
        nodes,
        config.node.heartbeat_interval,
    ));
    let joined = member
        .join()
        .await
        .context("cannot register the node in the database")?;
    tracing::info!(
        runtime_leftovers = recovered.destroyed.len(),
        ended = joined.ended,
        "node reconciled"
    );
    let listener = TcpListener::bind(&config.node.listen)
        .await
        .with_context(|| format!("cannot listen on {} (node.listen)", config.node.listen))?;
    tracing::info!(address = %config.node.listen, node = %member.id(), "codebox node listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let heartbeat = tokio::spawn({
        let member = Arc::clone(&member);
        let stop = wait_for(stop_rx.clone());
        async move { member.run(stop).await }
    });
    let router = codebox_node::server::router(Arc::clone(&runtime), secret);
    let served = codebox_server::serve(listener, router, &config.server, shutdown_signal(stop_rx))
        .await
        .context("the node API server failed");
    let _ = stop_tx.send(true);
    let _ = heartbeat.await;
    if let Some(builds) = template_builds {
        builds.stop().await;
    }
    member.leave().await;
    served
}

/// `codebox node drain`: no new sandboxes on the node; waits for its
/// sandboxes to end (they are not killed).
pub async fn drain(
    config: &CodeboxConfig,
    node: Option<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let nodes = node_store(config).await?;
    let node = match node {
        Some(node) => node,
        None => node_id(config)?,
    };
    let left = codebox_node::drain(&*nodes, &node, Duration::from_secs(1), timeout, |live| {
        tracing::info!(node = %node, live, "draining");
    })
    .await?;
    if left == 0 {
        say(&format!(
            "node {node} is drained: no live sandboxes, no new placements\n"
        ))?;
        Ok(())
    } else {
        anyhow::bail!(
            "node {node} still runs {left} sandboxes after {timeout:?}; it takes no new ones"
        )
    }
}

/// `codebox node list`.
pub async fn list(config: &CodeboxConfig) -> anyhow::Result<()> {
    let nodes = node_store(config).await?;
    let now = OffsetDateTime::now_utc();
    let mut text = String::from("ID\tSTATE\tADDRESS\tSLOTS\tCPU\tMEMORY_MB\tHEARTBEAT_AGE\n");
    for node in nodes.list_nodes().await? {
        let registration = &node.registration;
        text.push_str(&format!(
            "{}\t{}\t{}\t{}/{}\t{:.1}/{:.1}\t{}/{}\t{}s\n",
            registration.id,
            node.state,
            registration.address,
            node.usage.sandboxes,
            registration.capacity.slots,
            node.usage.cpu,
            registration.capacity.cpu,
            node.usage.memory_mb,
            registration.capacity.memory_mb,
            (now - node.last_heartbeat).whole_seconds(),
        ));
    }
    say(&text)
}
