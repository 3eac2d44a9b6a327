//! [`RemoteRuntime`]: the API role's [`Runtime`]. It places each new sandbox
//! on a node ([`crate::placement`]), records the placement in the database,
//! and forwards every later call to the sandbox's node over the node API.
//!
//! Background work (one task): refresh the node registry, mark nodes whose
//! heartbeat is older than `lost_after` as lost, and report the live sandboxes
//! of lost nodes as exited with `node_lost` (the core's reaper ends them;
//! with several API replicas the first end wins).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use codebox_runtime::{
    CodeRequest, CodeStream, ContextInfo, ContextRequest, ExecRequest, ExecStream, FileDownload,
    FileEntry, FileWatch, Listing, ProcessInfo, ProcessRequest, RecoverReport, Runtime,
    RuntimeError, SandboxExited, SandboxSpec, SandboxStats, Subscription, UploadBody, WriteOptions,
};
use codebox_store::{NodeRecord, NodeState, NodeStore};
use codebox_types::{RuntimeInfo, SandboxId, TerminationReason};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::auth::NodeSecret;
use crate::client::{ClientTimeouts, NodeClient};
use crate::placement;
use crate::wire::{
    encode_stdin, Call, ContextInfoWire, FileEntryWire, ListingWire, ReadCall, StatsWire,
    StreamCall, WriteQuery,
};

/// Placements remembered in memory before the cache starts over.
const PLACEMENT_CACHE: usize = 100_000;
/// Nodes tried for one create before giving up.
const CREATE_ATTEMPTS: usize = 3;

/// How the API side sees nodes.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// A node whose last heartbeat is older is lost.
    pub lost_after: Duration,
    /// How often the registry is refreshed and lost nodes are swept.
    pub sweep_interval: Duration,
    pub timeouts: ClientTimeouts,
}

impl RemoteSettings {
    /// Sweeps a few times per `lost_after`.
    pub fn new(lost_after: Duration) -> Self {
        Self {
            lost_after,
            sweep_interval: (lost_after / 4)
                .clamp(Duration::from_millis(200), Duration::from_secs(5)),
            timeouts: ClientTimeouts::default(),
        }
    }
}

struct Inner {
    nodes: Arc<dyn NodeStore>,
    client: NodeClient,
    settings: RemoteSettings,
    registry: RwLock<Vec<NodeRecord>>,
    placements: Mutex<HashMap<SandboxId, String>>,
    exits: broadcast::Sender<SandboxExited>,
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

/// A [`Runtime`] whose sandboxes live on nodes. Cheap to clone.
#[derive(Clone)]
pub struct RemoteRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RemoteRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRuntime")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn store_error(error: codebox_store::StoreError) -> RuntimeError {
    RuntimeError::AtCapacity {
        detail: format!("node registry unavailable: {error}"),
    }
}

impl RemoteRuntime {
    /// Loads the node registry and starts the background sweep.
    pub async fn start(
        nodes: Arc<dyn NodeStore>,
        secret: NodeSecret,
        settings: RemoteSettings,
    ) -> Result<Self, RuntimeError> {
        let runtime = Self {
            inner: Arc::new(Inner {
                nodes,
                client: NodeClient::new(secret, settings.timeouts),
                settings,
                registry: RwLock::new(Vec::new()),
                placements: Mutex::new(HashMap::new()),
                exits: broadcast::channel(1024).0,
                sweeper: Mutex::new(None),
            }),
        };
        runtime.refresh().await?;
        // The task holds only a weak reference: dropping every RemoteRuntime
        // stops it.
        let weak = Arc::downgrade(&runtime.inner);
        let interval = runtime.inner.settings.sweep_interval;
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                RemoteRuntime { inner }.sweep().await;
            }
        });
        *lock(&runtime.inner.sweeper) = Some(task);
        Ok(runtime)
    }

    /// Re-reads the node registry (states, addresses, usage).
    pub async fn refresh(&self) -> Result<Vec<NodeRecord>, RuntimeError> {
        let nodes = self.inner.nodes.list_nodes().await.map_err(store_error)?;
        *self
            .inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner) = nodes.clone();
        Ok(nodes)
    }

    /// The registry as last read.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One pass: lost nodes marked, their live sandboxes reported exited.
    /// Returns how many sandboxes were reported.
    pub async fn sweep(&self) -> usize {
        let cutoff = OffsetDateTime::now_utc() - self.inner.settings.lost_after;
        match self.inner.nodes.mark_lost_nodes(cutoff).await {
            Ok(lost) => {
                for node in lost {
                    tracing::warn!(node = %node, "node stopped heartbeating: marked lost");
                }
            }
            Err(error) => tracing::warn!(error = %error, "marking lost nodes failed"),
        }
        if let Err(error) = self.refresh().await {
            tracing::warn!(error = %error, "refreshing the node registry failed");
        }
        let orphans = match self.inner.nodes.live_sandboxes_on_lost_nodes().await {
            Ok(orphans) => orphans,
            Err(error) => {
                tracing::warn!(error = %error, "listing sandboxes of lost nodes failed");
                return 0;
            }
        };
        for id in &orphans {
            tracing::warn!(sandbox_id = %id, "sandbox lost with its node");
            let _ = self.inner.exits.send(SandboxExited {
                id: id.clone(),
                reason: TerminationReason::NodeLost,
            });
        }
        orphans.len()
    }

    fn node(&self, id: &str) -> Option<NodeRecord> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|node| node.registration.id == id)
            .cloned()
    }

    /// The address of the node a sandbox runs on.
    async fn route(&self, id: &SandboxId) -> Result<String, RuntimeError> {
        let cached = lock(&self.inner.placements).get(id).cloned();
        let node_id = match cached {
            Some(node) => node,
            None => {
                let node = self
                    .inner
                    .nodes
                    .sandbox_node(id)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
                self.remember(id, &node);
                node
            }
        };
        let node = match self.node(&node_id) {
            Some(node) => node,
            None => {
                self.refresh().await?;
                self.node(&node_id)
                    .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?
            }
        };
        if node.state == NodeState::Lost {
            return Err(RuntimeError::AtCapacity {
                detail: format!("node {node_id} is lost"),
            });
        }
        Ok(node.registration.address)
    }

    fn remember(&self, id: &SandboxId, node: &str) {
        let mut placements = lock(&self.inner.placements);
        if placements.len() >= PLACEMENT_CACHE {
            placements.clear();
        }
        placements.insert(id.clone(), node.to_owned());
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        id: &SandboxId,
        call: Call,
    ) -> Result<T, RuntimeError> {
        let address = self.route(id).await?;
        self.inner.client.call(&address, &call).await
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.sweeper).take() {
            task.abort();
        }
    }
}

#[async_trait]
impl Runtime for RemoteRuntime {
    fn isolation(&self) -> &'static str {
        "namespaces"
    }

    /// The runtimes of every non-lost node, by name.
    fn runtimes(&self) -> Vec<RuntimeInfo> {
        let mut seen = BTreeMap::new();
        for node in self
            .inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|node| node.state != NodeState::Lost)
        {
            for info in &node.registration.runtimes {
                seen.entry(info.name.clone())
                    .or_insert_with(|| info.clone());
            }
        }
        seen.into_values().collect()
    }

    async fn create(&self, spec: SandboxSpec) -> Result<(), RuntimeError> {
        let nodes = self.refresh().await?;
        let fresh_after = OffsetDateTime::now_utc() - self.inner.settings.lost_after;
        let candidates = placement::candidates(&nodes, &spec.runtime, &spec.resources, fresh_after);
        if candidates.is_empty() {
            return Err(RuntimeError::AtCapacity {
                detail: format!(
                    "no live node has room for {} cpu, {} MiB and a slot for {}",
                    spec.resources.cpu, spec.resources.memory, spec.runtime
                ),
            });
        }
        let call = Call::Create {
            spec: (&spec).into(),
        };
        let mut last = None;
        for node_id in candidates.iter().take(CREATE_ATTEMPTS) {
            let Some(node) = nodes.iter().find(|node| &node.registration.id == node_id) else {
                continue;
            };
            // Placed before the node creates: a node reconciling meanwhile
            // sees the sandbox as its own.
            let placed = self
                .inner
                .nodes
                .place_sandbox(&spec.id, node_id)
                .await
                .map_err(store_error)?;
            if !placed {
                // Deleted while being created.
                return Err(RuntimeError::NotFound {
                    id: spec.id.clone(),
                });
            }
            self.remember(&spec.id, node_id);
            match self
                .inner
                .client
                .call::<()>(&node.registration.address, &call)
                .await
            {
                Ok(()) => {
                    tracing::info!(sandbox_id = %spec.id, node = %node_id, "sandbox placed");
                    return Ok(());
                }
                Err(error @ RuntimeError::AtCapacity { .. }) => {
                    tracing::warn!(sandbox_id = %spec.id, node = %node_id, error = %error, "node refused the sandbox; trying the next");
                    last = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| RuntimeError::AtCapacity {
            detail: "no node accepted the sandbox".into(),
        }))
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream, RuntimeError> {
        let address = self.route(id).await?;
        let call = StreamCall::Exec {
            id: id.clone(),
            request: (&request).into(),
        };
        self.inner.client.exec(&address, &call).await
    }

    async fn stats(&self, id: &SandboxId) -> Result<SandboxStats, RuntimeError> {
        let stats: StatsWire = self.call(id, Call::Stats { id: id.clone() }).await?;
        Ok(stats.into())
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let address = match self.route(id).await {
            Ok(address) => address,
            // A lost node destroys its leftovers itself when it comes back.
            Err(RuntimeError::AtCapacity { detail }) if detail.ends_with("is lost") => {
                return Ok(())
            }
            Err(error) => return Err(error),
        };
        let result = self
            .inner
            .client
            .call(&address, &Call::Destroy { id: id.clone() })
            .await;
        lock(&self.inner.placements).remove(id);
        result
    }

    /// Every sandbox the live nodes hold; a node that does not answer counts
    /// with the sandboxes the database places on it (so a sweep never ends
    /// sandboxes just because their node was slow to answer).
    async fn list(&self) -> Result<Vec<SandboxId>, RuntimeError> {
        let mut held = HashSet::new();
        for node in self.refresh().await? {
            if node.state == NodeState::Lost {
                continue;
            }
            let answer: Result<Vec<SandboxId>, _> = self
                .inner
                .client
                .call(&node.registration.address, &Call::List)
                .await;
            match answer {
                Ok(ids) => held.extend(ids),
                Err(error) => {
                    tracing::warn!(node = %node.registration.id, error = %error, "node did not list its sandboxes");
                    let placed = self
                        .inner
                        .nodes
                        .live_sandboxes_on_node(&node.registration.id)
                        .await
                        .map_err(store_error)?;
                    held.extend(placed);
                }
            }
        }
        Ok(held.into_iter().collect())
    }

    /// Nothing to recover on the API side: each node recovers its own.
    async fn recover(&self) -> Result<RecoverReport, RuntimeError> {
        Ok(RecoverReport::default())
    }

    /// Ready when at least one node can take sandboxes.
    async fn check_ready(&self) -> Result<(), RuntimeError> {
        let fresh_after = OffsetDateTime::now_utc() - self.inner.settings.lost_after;
        let live = self
            .nodes()
            .iter()
            .any(|node| node.state == NodeState::Active && node.last_heartbeat >= fresh_after);
        if live {
            Ok(())
        } else {
            Err(RuntimeError::AtCapacity {
                detail: "no active node".into(),
            })
        }
    }

    fn subscribe_exits(&self) -> broadcast::Receiver<SandboxExited> {
        self.inner.exits.subscribe()
    }

    /// Stops the sweep; the nodes keep their sandboxes (another API replica
    /// serves them).
    async fn shutdown(&self) {
        if let Some(task) = lock(&self.inner.sweeper).take() {
            task.abort();
        }
    }

    async fn create_context(
        &self,
        id: &SandboxId,
        request: ContextRequest,
    ) -> Result<ContextInfo, RuntimeError> {
        let info: ContextInfoWire = self
            .call(
                id,
                Call::CreateContext {
                    id: id.clone(),
                    request: (&request).into(),
                },
            )
            .await?;
        Ok(info.into())
    }

    async fn list_contexts(&self, id: &SandboxId) -> Result<Vec<ContextInfo>, RuntimeError> {
        let contexts: Vec<ContextInfoWire> =
            self.call(id, Call::ListContexts { id: id.clone() }).await?;
        Ok(contexts.into_iter().map(Into::into).collect())
    }

    async fn execute_code(
        &self,
        id: &SandboxId,
        request: CodeRequest,
    ) -> Result<CodeStream, RuntimeError> {
        let address = self.route(id).await?;
        let call = StreamCall::ExecuteCode {
            id: id.clone(),
            request: (&request).into(),
        };
        self.inner.client.execute_code(&address, &call).await
    }

    async fn interrupt_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        self.call(
            id,
            Call::InterruptContext {
                id: id.clone(),
                context: context.to_owned(),
            },
        )
        .await
    }

    async fn restart_context(
        &self,
        id: &SandboxId,
        context: &str,
    ) -> Result<ContextInfo, RuntimeError> {
        let info: ContextInfoWire = self
            .call(
                id,
                Call::RestartContext {
                    id: id.clone(),
                    context: context.to_owned(),
                },
            )
            .await?;
        Ok(info.into())
    }

    async fn destroy_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError> {
        self.call(
            id,
            Call::DestroyContext {
                id: id.clone(),
                context: context.to_owned(),
            },
        )
        .await
    }

    async fn stat(&self, id: &SandboxId, path: &str) -> Result<FileEntry, RuntimeError> {
        let entry: FileEntryWire = self
            .call(
                id,
                Call::Stat {
                    id: id.clone(),
                    path: path.to_owned(),
                },
            )
            .await?;
        Ok(entry.into())
    }

    async fn list_files(
        &self,
        id: &SandboxId,
        path: &str,
        depth: u32,
    ) -> Result<Listing, RuntimeError> {
        let listing: ListingWire = self
            .call(
                id,
                Call::ListFiles {
                    id: id.clone(),
                    path: path.to_owned(),
                    depth,
                },
            )
            .await?;
        Ok(listing.into())
    }

    async fn make_dir(
        &self,
        id: &SandboxId,
        path: &str,
        parents: bool,
    ) -> Result<(), RuntimeError> {
        self.call(
            id,
            Call::MakeDir {
                id: id.clone(),
                path: path.to_owned(),
                parents,
            },
        )
        .await
    }

    async fn move_path(
        &self,
        id: &SandboxId,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<(), RuntimeError> {
        self.call(
            id,
            Call::MovePath {
                id: id.clone(),
                from: from.to_owned(),
                to: to.to_owned(),
                overwrite,
            },
        )
        .await
    }

    async fn remove_path(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<(), RuntimeError> {
        self.call(
            id,
            Call::RemovePath {
                id: id.clone(),
                path: path.to_owned(),
                recursive,
            },
        )
        .await
    }

    async fn read_file(
        &self,
        id: &SandboxId,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<FileDownload, RuntimeError> {
        let address = self.route(id).await?;
        let call = ReadCall {
            id: id.clone(),
            path: path.to_owned(),
            offset,
            length,
        };
        self.inner.client.read(&address, &call).await
    }

    async fn write_file(
        &self,
        id: &SandboxId,
        path: &str,
        options: WriteOptions,
        body: UploadBody,
    ) -> Result<u64, RuntimeError> {
        let address = self.route(id).await?;
        let query = WriteQuery {
            id: id.clone(),
            path: path.to_owned(),
            limit: options.limit,
            overwrite: options.overwrite,
            mode: options.mode,
        };
        self.inner.client.write(&address, &query, body).await
    }

    async fn watch(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<FileWatch, RuntimeError> {
        let address = self.route(id).await?;
        let call = StreamCall::Watch {
            id: id.clone(),
            path: path.to_owned(),
            recursive,
        };
        self.inner.client.watch(&address, &call).await
    }

    async fn start_process(
        &self,
        id: &SandboxId,
        request: ProcessRequest,
    ) -> Result<u32, RuntimeError> {
        self.call(
            id,
            Call::StartProcess {
                id: id.clone(),
                request: (&request).into(),
            },
        )
        .await
    }

    async fn list_processes(&self, id: &SandboxId) -> Result<Vec<ProcessInfo>, RuntimeError> {
        self.call(id, Call::ListProcesses { id: id.clone() }).await
    }

    async fn write_process_stdin(
        &self,
        id: &SandboxId,
        pid: u32,
        data: Vec<u8>,
    ) -> Result<(), RuntimeError> {
        self.call(
            id,
            Call::WriteStdin {
                id: id.clone(),
                pid,
                data: encode_stdin(&data),
            },
        )
        .await
    }

    async fn close_process_stdin(&self, id: &SandboxId, pid: u32) -> Result<(), RuntimeError> {
        self.call(
            id,
            Call::CloseStdin {
                id: id.clone(),
                pid,
            },
        )
        .await
    }

    async fn signal_process(
        &self,
        id: &SandboxId,
        pid: u32,
        signal: &str,
    ) -> Result<(), RuntimeError> {
        self.call(
            id,
            Call::Signal {
                id: id.clone(),
                pid,
                signal: signal.to_owned(),
            },
        )
        .await
    }

    async fn subscribe_process(
        &self,
        id: &SandboxId,
        pid: u32,
    ) -> Result<Subscription, RuntimeError> {
        let address = self.route(id).await?;
        let call = StreamCall::SubscribeProcess {
            id: id.clone(),
            pid,
        };
        let (dropped_bytes, stream) = self.inner.client.subscribe(&address, &call).await?;
        Ok(Subscription {
            dropped_bytes,
            stream,
        })
    }
}
