//! `codebox serve`: wires the store, the runtime, the core and the HTTP server,
//! and runs them until SIGTERM/SIGINT.
//!
//! Order matters: secrets and the database first (they can fail cheaply), then
//! the runtime, the bootstrap admin, reconcile (before any request can see a
//! stale row), the reaper, and only then the listener. On a signal the server
//! stops accepting and drains, the reaper stops, and `Core::shutdown` destroys
//! every live sandbox as `server_shutdown`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use codebox_config::CodeboxConfig;
use codebox_core::{Core, CoreSettings};
use codebox_runtime::linux::LinuxRuntime;
use codebox_runtime::{LinuxRuntimeConfig, Runtime};
use codebox_server::{AppState, ServerSettings};
use codebox_types::Resources;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{open_store, say};
use crate::bootstrap::{
    allow_runtime_traversal, bootstrap_admin, ensure_data_dir, resolve_secrets, Bootstrap,
};
use crate::dependencies::{rate_limiter, with_cache};
use crate::templates::{self, BackgroundBuilds};

pub async fn serve(config: CodeboxConfig) -> anyhow::Result<()> {
    if config.role == codebox_config::Role::Api {
        return crate::node::serve_api(config).await;
    }
    ensure_data_dir(&config.data_dir)?;
    allow_runtime_traversal(&config)?;
    let secrets = resolve_secrets(&config)?;
    let store = open_store(&config).await?;
    let (store, cache) = with_cache(store, &config).await?;
    let linux = build_runtime(&config)?;
    let runtime: Arc<dyn Runtime> = Arc::new(linux.clone());
    // Never awaited before serving: sandboxes created before a template is
    // built run on the host's plain interpreters.
    let template_builds = BackgroundBuilds::start(&config, templates::apply_to(linux))?;
    let mut core = Core::new(store, runtime, CoreSettings::from_config(&config, secrets));
    if let Some(cache) = &cache {
        core = core.with_health_check(cache.health_check());
    }
    let core = Arc::new(core);
    announce_bootstrap(&core, &config).await?;
    core.reconcile()
        .await
        .context("cannot reconcile sandboxes with the runtime")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let reaper = tokio::spawn({
        let core = Arc::clone(&core);
        let stop = wait_for(stop_rx.clone());
        async move { core.run_reaper(stop).await }
    });
    let result = run_http(&core, &config, cache.as_ref(), stop_rx, |state| state).await;
    // Whatever ended the server, the sandboxes must not outlive it.
    let _ = stop_tx.send(true);
    let _ = reaper.await;
    if let Some(builds) = template_builds {
        builds.stop().await;
    }
    core.shutdown().await;
    result
}

pub(crate) async fn run_http(
    core: &Arc<Core>,
    config: &CodeboxConfig,
    cache: Option<&crate::dependencies::Cache>,
    stop: watch::Receiver<bool>,
    decorate: impl FnOnce(AppState) -> AppState,
) -> anyhow::Result<()> {
    let address = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let limiter = rate_limiter(config, cache).await;
    let mut state = AppState::new(
        Arc::clone(core),
        ServerSettings::from_config(config),
        limiter,
    );
    if let Some(cache) = cache {
        state = cache.export_metrics(state);
    }
    state = decorate(state);
    let metrics_server = spawn_metrics_listener(config, &state, stop.clone()).await?;
    let streams = state.clone();
    let router = crate::e2b::wrap(config, state.clone(), codebox_server::router(state));
    let e2b_tls =
        crate::e2b::spawn_tls(config, router.clone(), shutdown_signal(stop.clone())).await?;
    tracing::info!(address = %address, "codebox listening");
    let shutdown = async move {
        shutdown_signal(stop).await;
        // Open execution streams end with a final event instead of holding
        // the drain until their code finishes.
        streams.close_streams();
    };
    let served = codebox_server::serve(listener, router, &config.server, shutdown)
        .await
        .context("the HTTP server failed");
    if let Some(task) = metrics_server {
        task.abort();
    }
    if let Some(task) = e2b_tls {
        if served.is_ok() {
            // It drains on the same signal as the main listener.
            let _ = task.await;
        } else {
            task.abort();
        }
    }
    served
}

/// `/metrics` on its own port when `monitoring.metrics_port` is set.
async fn spawn_metrics_listener(
    config: &CodeboxConfig,
    state: &AppState,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let (true, Some(port)) = (config.monitoring.enabled, config.monitoring.metrics_port) else {
        return Ok(None);
    };
    let address = SocketAddr::new(
        config.server.host.parse().with_context(|| {
            format!("server.host {:?} is not an IP address", config.server.host)
        })?,
        port,
    );
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for metrics"))?;
    let router = codebox_server::metrics_router(state.clone());
    let server_config = config.server.clone();
    Ok(Some(tokio::spawn(async move {
        if let Err(error) =
            codebox_server::serve(listener, router, &server_config, wait_for(stop)).await
        {
            tracing::error!(error = %error, "the metrics listener failed");
        }
    })))
}

/// The Linux runtime: root `<data_dir>/runtime`, the agent next to this
/// executable unless `runtime.agent_path` says otherwise.
pub(crate) fn build_runtime(config: &CodeboxConfig) -> anyhow::Result<LinuxRuntime> {
    let root = absolute(config.runtime_root())?;
    let agent = match &config.runtime.agent_path {
        Some(path) => absolute(path.clone())?,
        None => default_agent_path()?,
    };
    let mut runtime_config = LinuxRuntimeConfig::new(root, agent);
    runtime_config.pool_size = config.runtime.pool_size as usize;
    runtime_config
        .cgroup_parent
        .clone_from(&config.runtime.cgroup_parent);
    runtime_config.max_sandboxes = config.runtime.max_sandboxes;
    runtime_config.default_resources = Resources {
        cpu: config.limits.default_cpu,
        memory: config.limits.default_memory_mb,
    };
    runtime_config.default_limits = CoreSettings::sandbox_limits_from_config(config);
    templates::configure_runtime(config, &mut runtime_config)?;
    templates::configure_prestart(config, &mut runtime_config);
    reachable_by_sandboxes(&runtime_config.root_dir)?;
    reachable_by_sandboxes(&runtime_config.agent_path)?;
    for (source, _) in &runtime_config.template_mounts {
        reachable_by_sandboxes(source)?;
    }
    runtime_config
        .validate()
        .map_err(|message| anyhow::anyhow!("invalid runtime configuration: {message}"))?;
    LinuxRuntime::new(runtime_config).context("cannot start the sandbox runtime")
}

/// The jail bind-mounts the runtime root, the agent and the templates after it has
/// become the sandbox's unprivileged host uid, so every directory on the way to
/// them must be searchable by "other" (and the agent executable by "other").
/// Without this check every create would fail with a bare permission error; a
/// data directory under a 0700 home (`/root/...`) is the usual cause.
fn reachable_by_sandboxes(path: &Path) -> anyhow::Result<()> {
    for ancestor in path.ancestors() {
        let metadata = match std::fs::metadata(ancestor) {
            Ok(metadata) => metadata,
            // Not created yet: the runtime creates it with a suitable mode.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("cannot inspect {}", ancestor.display()))
            }
        };
        if metadata.permissions().mode() & 0o001 == 0 {
            anyhow::bail!(
                "sandboxes cannot reach {}: {} (mode {:o}) is not searchable by other users; \
                 use a data directory outside it (--data-dir, e.g. /var/lib/codebox) or \
                 `chmod o+x {}`",
                path.display(),
                ancestor.display(),
                metadata.permissions().mode() & 0o7777,
                ancestor.display(),
            );
        }
    }
    Ok(())
}

fn default_agent_path() -> anyhow::Result<PathBuf> {
    let executable = std::env::current_exe().context("cannot locate the codebox executable")?;
    Ok(executable.with_file_name("codebox-agent"))
}

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display()))
}

pub(crate) async fn announce_bootstrap(core: &Core, config: &CodeboxConfig) -> anyhow::Result<()> {
    let empty = core
        .accounts()
        .is_empty()
        .await
        .context("cannot read users from the database")?;
    match bootstrap_admin(core.accounts(), empty, config).await? {
        Bootstrap::NotNeeded => {}
        Bootstrap::CreatedWithConfiguredKey => {
            tracing::info!("created the admin user with CODEBOX_BOOTSTRAP_API_KEY");
        }
        Bootstrap::CreatedWithGeneratedKey { key, key_file } => {
            tracing::info!(key_file = %key_file.display(), "created the admin user and API key");
            say(&format!(
                "admin API key (shown once; also in {}):\n{key}\n",
                key_file.display()
            ))?;
        }
    }
    Ok(())
}

/// Resolves on SIGTERM, SIGINT, or when `stop` turns true.
pub(crate) async fn shutdown_signal(stop: watch::Receiver<bool>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
        () = wait_for(stop) => {}
    }
}

/// Resolves once the watch turns true (or its sender is gone).
pub(crate) async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use super::reachable_by_sandboxes;

    #[test]
    fn a_closed_ancestor_is_named_in_the_error() {
        let temp = tempfile::tempdir().expect("temp dir");
        let closed = temp.path().join("home");
        let data = closed.join("data");
        fs::create_dir_all(&data).expect("create dirs");
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).expect("chmod");

        let error = reachable_by_sandboxes(&data.join("runtime")).expect_err("refused");
        let message = error.to_string();
        assert!(message.contains(&closed.display().to_string()), "{message}");
        assert!(message.contains("mode 700"), "{message}");

        fs::set_permissions(&closed, fs::Permissions::from_mode(0o711)).expect("chmod");
        reachable_by_sandboxes(&data.join("runtime")).expect("reachable once searchable");
    }
}
