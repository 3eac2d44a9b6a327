//! The life of one sandbox of [`LinuxRuntime`]: spec checks, a cold start
//! (host objects, then the agent handshake) or a claim from the pool, the exit
//! watcher, teardown, and the clean-up of a crashed previous run. The pool's
//! own bookkeeping is [`super::pool`]'s.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codebox_sys::process::AsyncPidfd;
use codebox_types::{Resources, RuntimeInfo, TerminationReason};
use tracing::{debug, info, warn};

use super::{lock, Inner, LinuxRuntime, Live};
use crate::agent::AgentConnection;
use crate::cgroup::CgroupLimits;
use crate::linux::host::{cgroup_name, setup_error, HostSandbox};
use crate::{RecoverReport, RuntimeError, SandboxExited, SandboxLimits, SandboxSpec};

/// The cgroup limits for `resources` and `limits`.
pub(super) fn cgroup_limits(resources: &Resources, limits: &SandboxLimits) -> CgroupLimits {
    CgroupLimits {
        memory_bytes: resources.memory << 20,
        cpu_millicores: (resources.cpu * 1000.0).round() as u64,
        pids: u64::from(limits.pids),
    }
}

pub(super) fn validate_spec(
    spec: &SandboxSpec,
    runtimes: &[RuntimeInfo],
) -> Result<(), RuntimeError> {
    if !runtimes.iter().any(|r| r.answers_to(&spec.runtime)) {
        return Err(RuntimeError::UnknownRuntime {
            name: spec.runtime.clone(),
        });
    }
    let invalid = |detail: &str| {
        Err(RuntimeError::InvalidRequest {
            detail: detail.into(),
        })
    };
    let cpu = spec.resources.cpu;
    if !(codebox_types::sandbox::MIN_CPU..=codebox_types::sandbox::MAX_CPU).contains(&cpu) {
        return invalid("cpu must be between 0.1 and 16 cores");
    }
    let memory = spec.resources.memory;
    if !(codebox_types::sandbox::MIN_MEMORY_MB..=codebox_types::sandbox::MAX_MEMORY_MB)
        .contains(&memory)
    {
        return invalid("memory must be between 128 and 32768 MiB");
    }
    if spec.network {
        return invalid("outbound network is not available");
    }
    if spec.limits.pids == 0 || spec.limits.open_files < 16 || spec.limits.workspace_bytes == 0 {
        return invalid("limits are too small to run anything");
    }
    Ok(())
}

impl Inner {
    /// Starts a sandbox and connects to its agent (a cold create).
    pub(super) async fn start_live(
        self: &Arc<Self>,
        cgroup: CgroupLimits,
        limits: SandboxLimits,
    ) -> Result<Arc<Live>, RuntimeError> {
        let inner = Arc::clone(self);
        let (template_generation, templates) = {
            let (generation, set) = &*lock(&self.templates);
            (*generation, set.for_new_sandbox())
        };
        let mounted = Arc::clone(&templates);
        let (host, channel) =
            tokio::task::spawn_blocking(move || inner.host.start(cgroup, &limits, &mounted.mounts))
                .await
                .map_err(|e| setup_error("spawn_task", e))??;
        match connect(channel, self.host.config.setup_timeout).await {
            Ok(agent) => Ok(Arc::new(Live {
                host,
                agent,
                env: Mutex::default(),
                cgroup_limits: Mutex::new(cgroup),
                watcher: Mutex::default(),
                ended: AtomicBool::new(false),
                prestarted: Mutex::default(),
                templates,
                template_generation,
            })),
            Err(error) => {
                self.teardown_host(host).await;
                Err(error)
            }
        }
    }

    async fn teardown_host(self: &Arc<Self>, host: HostSandbox) {
        let inner = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || inner.host.teardown(&host)).await;
    }

    /// Frees everything of a sandbox already removed from the state.
    pub(super) async fn teardown(self: &Arc<Self>, live: Arc<Live>) -> Result<(), RuntimeError> {
        if let Some(watcher) = lock(&live.watcher).take() {
            watcher.abort();
        }
        if live.ended.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let inner = Arc::clone(self);
        tokio::task::spawn_blocking(move || inner.host.teardown(&live.host))
            .await
            .map_err(|e| setup_error("teardown_task", e))?
            .map_err(|e| setup_error("teardown", e))
    }

    /// Watches a sandbox's init and agent channel; when either goes on its own,
    /// removes the sandbox, frees it and reports why.
    pub(super) fn watch(self: &Arc<Self>, live: &Arc<Live>) {
        let Ok(pidfd) = live.host.pidfd.try_clone() else {
            warn!(
                slot = live.host.slot,
                "cannot watch sandbox: pidfd dup failed"
            );
            return;
        };
        let weak = Arc::downgrade(self);
        let watched = Arc::clone(live);
        let task = tokio::spawn(async move {
            wait_for_exit(pidfd, &watched).await;
            if let Some(inner) = weak.upgrade() {
                inner.on_exit(watched).await;
            }
        });
        *lock(&live.watcher) = Some(task.abort_handle());
    }

    async fn on_exit(self: &Arc<Self>, live: Arc<Live>) {
        let id = {
            let mut state = lock(&self.state);
            let id = state
                .sandboxes
                .iter()
                .find(|(_, other)| Arc::ptr_eq(other, &live))
                .map(|(id, _)| id.clone());
            match &id {
                Some(id) => drop(state.sandboxes.remove(id)),
                None => state.pool.retain(|other| !Arc::ptr_eq(other, &live)),
            }
            id
        };
        lock(&live.watcher).take();
        if live.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        let reason = match live.host.cgroup.oom_kills() {
            Ok(kills) if kills > 0 => TerminationReason::Oom,
            _ => TerminationReason::AgentLost,
        };
        let inner = Arc::clone(self);
        let freed = tokio::task::spawn_blocking(move || inner.host.teardown(&live.host)).await;
        if !matches!(freed, Ok(Ok(()))) {
            warn!("teardown after a sandbox exit was incomplete");
        }
        if let Some(id) = id {
            info!(sandbox_id = %id, %reason, "sandbox exited on its own");
            let _ = self.exits.send(SandboxExited { id, reason });
        }
        self.pool_wakeup.notify_one();
    }
}

async fn wait_for_exit(pidfd: OwnedFd, live: &Live) {
    match AsyncPidfd::new(pidfd) {
        Ok(pidfd) => {
            tokio::select! {
                _ = pidfd.exited() => {}
                _ = live.agent.closed() => {}
            }
        }
        Err(error) => {
            warn!(%error, "pidfd not pollable; watching the agent channel only");
            live.agent.closed().await;
        }
    }
}

/// Turns the host end of the channel into a connected agent.
async fn connect(channel: OwnedFd, timeout: Duration) -> Result<AgentConnection, RuntimeError> {
    let std_stream = std::os::unix::net::UnixStream::from(channel);
    std_stream
        .set_nonblocking(true)
        .map_err(|e| setup_error("agent_channel", e))?;
    let stream = tokio::net::UnixStream::from_std(std_stream)
        .map_err(|e| setup_error("agent_channel", e))?;
    AgentConnection::handshake(stream, timeout)
        .await
        .map_err(|e| setup_error("agent_handshake", e))
}

impl LinuxRuntime {
    pub(super) async fn create_reserved(
        &self,
        spec: &SandboxSpec,
    ) -> Result<Arc<Live>, RuntimeError> {
        let wanted = cgroup_limits(&spec.resources, &spec.limits);
        let live = match self.inner.claim(&spec.limits) {
            Some(live) => {
                let claimed = Arc::clone(&live);
                let previous = *lock(&live.cgroup_limits);
                let applied = tokio::task::spawn_blocking(move || {
                    claimed
                        .host
                        .cgroup
                        .apply(&wanted, Some(previous.memory_bytes))
                })
                .await
                .map_err(|e| setup_error("claim_task", e))?;
                if let Err(error) = applied {
                    let _ = self.inner.teardown(live).await;
                    return Err(setup_error("claim_limits", error));
                }
                *lock(&live.cgroup_limits) = wanted;
                live
            }
            None => {
                let live = self.inner.start_live(wanted, spec.limits.clone()).await?;
                self.inner.watch(&live);
                live
            }
        };
        // The templates' env under the create's own.
        let mut env = live.templates.env.clone();
        env.extend(spec.env.clone());
        *lock(&live.env) = env;
        debug!(sandbox_id = %spec.id, slot = live.host.slot, "sandbox created");
        Ok(live)
    }
}

/// Destroys every cgroup under the parent that no live sandbox holds.
pub(super) fn recover_leftovers(inner: &Inner) -> Result<RecoverReport, RuntimeError> {
    let held: Vec<String> = {
        let state = lock(&inner.state);
        state
            .sandboxes
            .values()
            .chain(state.pool.iter())
            .map(|live| cgroup_name(live.host.slot))
            .collect()
    };
    let names = inner
        .host
        .cgroups
        .list()
        .map_err(|e| setup_error("recover_list", e))?;
    let mut report = RecoverReport {
        destroyed: inner.host.clean_root_dir(),
    };
    for name in names.into_iter().filter(|name| !held.contains(name)) {
        match inner.host.cgroups.handle(&name).destroy() {
            Ok(()) => report.destroyed.push(name),
            Err(error) => warn!(cgroup = %name, %error, "leftover cgroup not destroyed"),
        }
    }
    if !report.destroyed.is_empty() {
        info!(
            count = report.destroyed.len(),
            "destroyed leftovers of a previous run"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use codebox_types::SandboxId;

    fn runtimes() -> Vec<RuntimeInfo> {
        vec![RuntimeInfo {
            name: "python3".into(),
            language: "python".into(),
            version: "3.11.2".into(),
            aliases: vec!["python".into()],
        }]
    }

    fn spec() -> SandboxSpec {
        SandboxSpec {
            id: SandboxId::generate(),
            runtime: "python".into(),
            resources: Resources::default(),
            limits: SandboxLimits::default(),
            env: BTreeMap::new(),
            network: false,
        }
    }

    #[test]
    fn specs_are_validated() {
        assert!(validate_spec(&spec(), &runtimes()).is_ok());
        let mut bad = spec();
        bad.runtime = "ruby".into();
        assert!(matches!(
            validate_spec(&bad, &runtimes()),
            Err(RuntimeError::UnknownRuntime { .. })
        ));
        for (cpu, memory) in [(0.05, 512), (17.0, 512), (1.0, 64), (1.0, 65536)] {
            let mut bad = spec();
            bad.resources = Resources { cpu, memory };
            assert!(matches!(
                validate_spec(&bad, &runtimes()),
                Err(RuntimeError::InvalidRequest { .. })
            ));
        }
        let mut bad = spec();
        bad.network = true;
        assert!(validate_spec(&bad, &runtimes()).is_err());
    }

    #[test]
    fn resources_become_cgroup_limits() {
        let limits = cgroup_limits(
            &Resources {
                cpu: 0.25,
                memory: 300,
            },
            &SandboxLimits::default(),
        );
        assert_eq!(
            limits,
            CgroupLimits {
                memory_bytes: 300 << 20,
                cpu_millicores: 250,
                pids: 256
            }
        );
    }
}
