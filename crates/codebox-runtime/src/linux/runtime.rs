//! [`LinuxRuntime`]: the [`Runtime`] implementation on top of [`HostContext`]
//! and the agent connection, with the warm pool and the exit watchers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use codebox_sys::process::AsyncPidfd;
use codebox_types::{Resources, RuntimeInfo, SandboxId, TerminationReason};
use tokio::sync::{broadcast, Notify};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::config::LinuxRuntimeConfig;
use super::host::{cgroup_name, setup_error, HostContext, HostSandbox};
use super::{exec_guard, template};
use crate::agent::AgentConnection;
use crate::cgroup::CgroupLimits;
use crate::{
    ExecRequest, ExecStream, RecoverReport, Runtime, RuntimeError, SandboxExited, SandboxLimits,
    SandboxSpec, SandboxStats,
};

/// Pause before the pool retries after a failed create.
const POOL_RETRY: Duration = Duration::from_secs(1);

/// The Linux namespaces runtime. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct LinuxRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    host: HostContext,
    runtimes: Vec<RuntimeInfo>,
    state: Mutex<State>,
    exits: broadcast::Sender<SandboxExited>,
    pool_wakeup: Arc<Notify>,
    pool_started: AtomicBool,
    shutting_down: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    sandboxes: HashMap<SandboxId, Arc<Live>>,
    /// Ids being created (reserved so a second create of the same id fails).
    creating: Vec<SandboxId>,
    pool: VecDeque<Arc<Live>>,
    pool_pending: usize,
}

/// A running sandbox: host objects plus the agent connection.
#[derive(Debug)]
struct Live {
    host: HostSandbox,
    agent: AgentConnection,
    env: Mutex<BTreeMap<String, String>>,
    cgroup_limits: Mutex<CgroupLimits>,
    watcher: Mutex<Option<AbortHandle>>,
    /// Set by the first teardown. A second one (destroy racing the exit
    /// watcher) must not run: the slot, and so the cgroup name, may already
    /// belong to a new sandbox.
    ended: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections never panic midway; a poisoned lock's data is intact.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl LinuxRuntime {
    /// Prepares the runtime: checks the config, detects cgroups, writes the
    /// sandbox `/etc`, detects the runtimes. Blocking (runs `--version` of each
    /// interpreter); call it once at start. Starts nothing: the pool fills after
    /// [`Runtime::recover`] (or the first create).
    pub fn new(config: LinuxRuntimeConfig) -> Result<Self, RuntimeError> {
        let host = HostContext::prepare(config)?;
        let runtimes = template::detect_runtimes(std::path::Path::new("/"));
        info!(
            cgroup_version = host.cgroups.layout().version(),
            runtimes = runtimes.len(),
            "linux runtime ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                host,
                runtimes,
                state: Mutex::default(),
                exits: broadcast::channel(256).0,
                pool_wakeup: Arc::new(Notify::new()),
                pool_started: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
            }),
        })
    }

    /// The cgroup version in use (1 or 2).
    pub fn cgroup_version(&self) -> u8 {
        self.inner.host.cgroups.layout().version()
    }

    /// Ready sandboxes in the warm pool now.
    pub fn pool_ready(&self) -> usize {
        lock(&self.inner.state).pool.len()
    }

    /// Host pid of a sandbox's init (its agent), for tests and diagnostics.
    pub fn init_pid(&self, id: &SandboxId) -> Option<i32> {
        lock(&self.inner.state)
            .sandboxes
            .get(id)
            .map(|live| live.host.pid)
    }

    /// OOM kills recorded by a sandbox's cgroup so far.
    pub fn oom_kills(&self, id: &SandboxId) -> Result<u64, RuntimeError> {
        let live = self.inner.live(id)?;
        live.host
            .cgroup
            .oom_kills()
            .map_err(|e| setup_error("cgroup_read", e))
    }

    fn start_pool(&self) {
        if self.inner.host.config.pool_size == 0
            || self.inner.pool_started.swap(true, Ordering::SeqCst)
        {
            return;
        }
        tokio::spawn(fill_pool(
            Arc::downgrade(&self.inner),
            Arc::clone(&self.inner.pool_wakeup),
        ));
    }
}

/// The cgroup limits for `resources` and `limits`.
fn cgroup_limits(resources: &Resources, limits: &SandboxLimits) -> CgroupLimits {
    CgroupLimits {
        memory_bytes: resources.memory << 20,
        cpu_millicores: (resources.cpu * 1000.0).round() as u64,
        pids: u64::from(limits.pids),
    }
}

fn validate_spec(spec: &SandboxSpec, runtimes: &[RuntimeInfo]) -> Result<(), RuntimeError> {
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
    fn live(&self, id: &SandboxId) -> Result<Arc<Live>, RuntimeError> {
        lock(&self.state)
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })
    }

    /// Starts a sandbox and connects to its agent (a cold create).
    async fn start_live(
        self: &Arc<Self>,
        cgroup: CgroupLimits,
        limits: SandboxLimits,
    ) -> Result<Arc<Live>, RuntimeError> {
        let inner = Arc::clone(self);
        let (host, channel) =
            tokio::task::spawn_blocking(move || inner.host.start(cgroup, &limits))
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
    async fn teardown(self: &Arc<Self>, live: Arc<Live>) -> Result<(), RuntimeError> {
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
    fn watch(self: &Arc<Self>, live: &Arc<Live>) {
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

    /// Takes a warm sandbox, if the spec fits one.
    fn claim(&self, limits: &SandboxLimits) -> Option<Arc<Live>> {
        if *limits != self.host.config.default_limits {
            return None;
        }
        let claimed = lock(&self.state).pool.pop_front();
        self.pool_wakeup.notify_one();
        claimed
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

/// Keeps the pool at `pool_size`, waking up on claims and exits.
async fn fill_pool(weak: Weak<Inner>, wakeup: Arc<Notify>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let wanted = {
            let mut state = lock(&inner.state);
            let short = state.pool.len() + state.pool_pending < inner.host.config.pool_size;
            if short {
                state.pool_pending += 1;
            }
            short
        };
        if !wanted {
            let notified = wakeup.notified();
            drop(inner);
            notified.await;
            continue;
        }
        let config = &inner.host.config;
        let cgroup = cgroup_limits(&config.default_resources, &config.default_limits);
        let result = inner
            .start_live(cgroup, config.default_limits.clone())
            .await;
        // `pool_pending` drops only once the sandbox is in the pool or gone, so
        // `shutdown` can wait for in-flight creations.
        match result {
            Ok(live) if !inner.shutting_down.load(Ordering::SeqCst) => {
                inner.watch(&live);
                let mut state = lock(&inner.state);
                state.pool.push_back(live);
                state.pool_pending -= 1;
                debug!("warm sandbox ready");
            }
            Ok(live) => {
                let _ = inner.teardown(live).await;
                lock(&inner.state).pool_pending -= 1;
                return;
            }
            Err(error) => {
                lock(&inner.state).pool_pending -= 1;
                warn!(%error, "warm pool create failed");
                drop(inner);
                tokio::time::sleep(POOL_RETRY).await;
            }
        }
    }
}

#[async_trait]
impl Runtime for LinuxRuntime {
    fn isolation(&self) -> &'static str {
        "namespaces"
    }

    fn runtimes(&self) -> Vec<RuntimeInfo> {
        self.inner.runtimes.clone()
    }

    async fn create(&self, spec: SandboxSpec) -> Result<(), RuntimeError> {
        validate_spec(&spec, &self.inner.runtimes)?;
        {
            let mut state = lock(&self.inner.state);
            if state.sandboxes.contains_key(&spec.id) || state.creating.contains(&spec.id) {
                return Err(RuntimeError::AlreadyExists { id: spec.id });
            }
            state.creating.push(spec.id.clone());
        }
        self.start_pool();
        let result = self.create_reserved(&spec).await;
        let mut state = lock(&self.inner.state);
        state.creating.retain(|id| *id != spec.id);
        if let Ok(live) = &result {
            state.sandboxes.insert(spec.id.clone(), Arc::clone(live));
        }
        result.map(drop)
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream, RuntimeError> {
        let live = self.inner.live(id)?;
        let sandbox_env = lock(&live.env).clone();
        let before = live.host.cgroup.oom_kills().unwrap_or(0);
        let stream = live.agent.exec(&request, &sandbox_env).await?;
        let user_host_uid = self.inner.host.config.uid_base
            + live.host.slot * super::config::IDS_PER_SANDBOX
            + super::jail::USER_ID;
        Ok(exec_guard::guard(
            live.host.cgroup.clone(),
            user_host_uid,
            stream,
            before,
            request.timeout,
        ))
    }

    async fn stats(&self, id: &SandboxId) -> Result<SandboxStats, RuntimeError> {
        let live = self.inner.live(id)?;
        let usage = live
            .host
            .cgroup
            .usage()
            .map_err(|e| setup_error("cgroup_stats", e))?;
        let limits = *lock(&live.cgroup_limits);
        Ok(SandboxStats {
            cpu_usage_usec: usage.cpu_usec,
            cpu_limit_millicores: limits.cpu_millicores,
            memory_bytes: usage.memory_bytes,
            memory_peak_bytes: usage.memory_peak_bytes,
            memory_limit_bytes: limits.memory_bytes,
            pids: usage.pids,
            pids_limit: limits.pids,
            disk_bytes: self.inner.host.workspace_used(&live.host),
            disk_limit_bytes: live.host.limits.workspace_bytes,
        })
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let live = lock(&self.inner.state)
            .sandboxes
            .remove(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        self.inner.teardown(live).await
    }

    async fn list(&self) -> Result<Vec<SandboxId>, RuntimeError> {
        Ok(lock(&self.inner.state).sandboxes.keys().cloned().collect())
    }

    async fn recover(&self) -> Result<RecoverReport, RuntimeError> {
        let inner = Arc::clone(&self.inner);
        let report = tokio::task::spawn_blocking(move || recover_leftovers(&inner))
            .await
            .map_err(|e| setup_error("recover_task", e))??;
        self.start_pool();
        Ok(report)
    }

    async fn check_ready(&self) -> Result<(), RuntimeError> {
        let config = &self.inner.host.config;
        if !config.agent_path.is_file() {
            return Err(RuntimeError::AtCapacity {
                detail: "the agent binary is missing".into(),
            });
        }
        if self.inner.host.slots.in_use() >= config.max_sandboxes as usize {
            return Err(RuntimeError::AtCapacity {
                detail: "every sandbox slot is in use".into(),
            });
        }
        self.inner
            .host
            .cgroups
            .list()
            .map(drop)
            .map_err(|e| setup_error("cgroup_parent", e))
    }

    fn subscribe_exits(&self) -> broadcast::Receiver<SandboxExited> {
        self.inner.exits.subscribe()
    }

    async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.pool_wakeup.notify_one();
        // A warm sandbox being built now is torn down by the pool task when it
        // is ready; wait (bounded) for those so nothing outlives the runtime.
        for _ in 0..1000 {
            if lock(&self.inner.state).pool_pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all: Vec<Arc<Live>> = {
            let mut state = lock(&self.inner.state);
            let mut all: Vec<Arc<Live>> = state.sandboxes.drain().map(|(_, live)| live).collect();
            all.extend(state.pool.drain(..));
            all
        };
        for live in all {
            if let Err(error) = self.inner.teardown(live).await {
                warn!(%error, "teardown at shutdown failed");
            }
        }
    }

    // Stateful code execution: implemented in `code.rs`.

    async fn create_context(
        &self,
        id: &SandboxId,
        request: crate::ContextRequest,
    ) -> Result<crate::ContextInfo, RuntimeError> {
        self.code_create_context(id, request).await
    }

    async fn list_contexts(&self, id: &SandboxId) -> Result<Vec<crate::ContextInfo>, RuntimeError> {
        self.code_list_contexts(id)
    }

    async fn execute_code(
        &self,
        id: &SandboxId,
        request: crate::CodeRequest,
    ) -> Result<crate::CodeStream, RuntimeError> {
        self.code_execute(id, request).await
    }

    async fn interrupt_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        self.code_interrupt(id, context).await
    }

    async fn restart_context(
        &self,
        id: &SandboxId,
        context: &str,
    ) -> Result<crate::ContextInfo, RuntimeError> {
        self.code_restart(id, context).await
    }

    async fn destroy_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        self.code_destroy_context(id, context).await
    }
}

impl LinuxRuntime {
    /// The agent of a running sandbox and the sandbox's env (for `code.rs`).
    pub(super) fn agent_of(
        &self,
        id: &SandboxId,
    ) -> Result<(AgentConnection, BTreeMap<String, String>), RuntimeError> {
        let live = self.inner.live(id)?;
        let env = lock(&live.env).clone();
        Ok((live.agent.clone(), env))
    }
}

impl LinuxRuntime {
    async fn create_reserved(&self, spec: &SandboxSpec) -> Result<Arc<Live>, RuntimeError> {
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
        *lock(&live.env) = spec.env.clone();
        debug!(sandbox_id = %spec.id, slot = live.host.slot, "sandbox created");
        Ok(live)
    }
}

/// Destroys every cgroup under the parent that no live sandbox holds.
fn recover_leftovers(inner: &Inner) -> Result<RecoverReport, RuntimeError> {
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
    use super::*;
    use codebox_types::Resources;

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
