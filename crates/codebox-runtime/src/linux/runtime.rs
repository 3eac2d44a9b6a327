//! [`LinuxRuntime`]: the [`Runtime`] implementation on top of [`HostContext`]
//! and the agent connection: the shared state and the trait's entry points.
//! The warm pool is [`pool`]; starting, watching and tearing down one sandbox
//! is [`lifecycle`]; contexts, files and processes are `code.rs`, `files.rs`
//! and `processes.rs` beside this file.

mod lifecycle;
mod pool;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use codebox_types::{RuntimeInfo, SandboxId};
use tokio::sync::{broadcast, Notify};
use tokio::task::AbortHandle;
use tracing::{info, warn};

use super::config::LinuxRuntimeConfig;
use super::host::{setup_error, HostContext, HostSandbox};
use super::language_templates::TemplateSet;
use super::{exec_guard, template};
use crate::agent::AgentConnection;
use crate::cgroup::CgroupLimits;
use crate::{
    ExecRequest, ExecStream, RecoverReport, Runtime, RuntimeError, SandboxExited, SandboxSpec,
    SandboxStats,
};
use lifecycle::{recover_leftovers, validate_spec};

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
    /// The language templates new sandboxes get, with a generation that
    /// [`LinuxRuntime::set_templates`] bumps (warm sandboxes of an older one
    /// are replaced).
    templates: Mutex<(u64, Arc<TemplateSet>)>,
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
    /// Contexts started by the pool before the claim: their runners lack the
    /// sandbox env, so it goes with each of their executions (`prestart`).
    prestarted: Mutex<Vec<String>>,
    /// The language templates mounted in this sandbox (its whole life) and the
    /// generation they came from.
    templates: Arc<TemplateSet>,
    template_generation: u64,
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
        let templates = Arc::new(TemplateSet {
            mounts: config.template_mounts.clone(),
            env: config.template_env.clone(),
        });
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
                templates: Mutex::new((0, templates)),
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
}

impl Inner {
    fn live(&self, id: &SandboxId) -> Result<Arc<Live>, RuntimeError> {
        lock(&self.state)
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })
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
        let request = self.with_prestart_env(id, request)?;
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
        self.code_destroy_context(id, context).await?;
        // A context created again under this name has the sandbox env itself.
        if let Ok(live) = self.inner.live(id) {
            lock(&live.prestarted).retain(|name| name != context);
        }
        Ok(())
    }

    // Files: implemented in `files.rs`.

    async fn stat(&self, id: &SandboxId, path: &str) -> Result<crate::FileEntry, RuntimeError> {
        self.file_stat(id, path).await
    }

    async fn list_files(
        &self,
        id: &SandboxId,
        path: &str,
        depth: u32,
    ) -> Result<crate::Listing, RuntimeError> {
        self.file_list(id, path, depth).await
    }

    async fn make_dir(
        &self,
        id: &SandboxId,
        path: &str,
        parents: bool,
    ) -> Result<(), RuntimeError> {
        self.file_make_dir(id, path, parents).await
    }

    async fn move_path(
        &self,
        id: &SandboxId,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<(), RuntimeError> {
        self.file_move(id, from, to, overwrite).await
    }

    async fn remove_path(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<(), RuntimeError> {
        self.file_remove(id, path, recursive).await
    }

    async fn read_file(
        &self,
        id: &SandboxId,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<crate::FileDownload, RuntimeError> {
        self.file_read(id, path, offset, length).await
    }

    async fn write_file(
        &self,
        id: &SandboxId,
        path: &str,
        options: crate::WriteOptions,
        body: crate::UploadBody,
    ) -> Result<u64, RuntimeError> {
        self.file_write(id, path, options, body).await
    }

    async fn watch(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<crate::FileWatch, RuntimeError> {
        self.file_watch(id, path, recursive).await
    }

    // Background processes: implemented in `processes.rs`.

    async fn start_process(
        &self,
        id: &SandboxId,
        request: crate::ProcessRequest,
    ) -> Result<u32, RuntimeError> {
        self.process_start(id, request).await
    }

    async fn list_processes(
        &self,
        id: &SandboxId,
    ) -> Result<Vec<crate::ProcessInfo>, RuntimeError> {
        self.process_list(id).await
    }

    async fn write_process_stdin(
        &self,
        id: &SandboxId,
        pid: u32,
        data: Vec<u8>,
    ) -> Result<(), RuntimeError> {
        self.process_write_stdin(id, pid, &data).await
    }

    async fn close_process_stdin(&self, id: &SandboxId, pid: u32) -> Result<(), RuntimeError> {
        self.process_close_stdin(id, pid).await
    }

    async fn signal_process(
        &self,
        id: &SandboxId,
        pid: u32,
        signal: &str,
    ) -> Result<(), RuntimeError> {
        self.process_signal(id, pid, signal).await
    }

    async fn subscribe_process(
        &self,
        id: &SandboxId,
        pid: u32,
    ) -> Result<crate::Subscription, RuntimeError> {
        self.process_subscribe(id, pid).await
    }

    async fn open_pty(
        &self,
        id: &SandboxId,
        request: crate::PtyRequest,
    ) -> Result<crate::PtySession, RuntimeError> {
        self.pty_open(id, request).await
    }
}

impl LinuxRuntime {
    /// Adds the sandbox env under the request's when the context was started
    /// by the pool before the sandbox had an env (see `prestart`).
    fn with_prestart_env(
        &self,
        id: &SandboxId,
        mut request: crate::CodeRequest,
    ) -> Result<crate::CodeRequest, RuntimeError> {
        let live = self.inner.live(id)?;
        if lock(&live.prestarted).contains(&request.context) {
            let sandbox_env = lock(&live.env);
            request.env =
                super::prestart::execution_env(&sandbox_env, &live.templates.env, request.env);
        }
        Ok(request)
    }

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
