//! The node side of membership: register in the database, heartbeat,
//! reconcile this node's sandboxes with the database, record sandboxes that
//! end on their own, and shut down or drain.
//!
//! Reconcile rules (the database is the source of truth for what should run
//! here, the local runtime for what does):
//! - at start, after the runtime's own `recover` destroyed every leftover of
//!   the previous process, live rows placed on this node have no sandbox any
//!   more: they end as `node_lost`;
//! - on every heartbeat, local sandboxes the database does not place here as
//!   live (ended while the node was cut off, or placed elsewhere after a
//!   failed create) are destroyed.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use codebox_runtime::{Runtime, SandboxExited};
use codebox_store::{NodeRegistration, NodeState, NodeStore, Store};
use codebox_types::{SandboxId, SandboxStatus, TerminationReason};
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;

/// What reconciling did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeReconcile {
    /// Rows ended because their sandbox is gone from this node.
    pub ended: usize,
    /// Local sandboxes destroyed because the database no longer places them here.
    pub destroyed: usize,
}

/// One node's membership.
pub struct Member {
    registration: NodeRegistration,
    runtime: Arc<dyn Runtime>,
    store: Arc<dyn Store>,
    nodes: Arc<dyn NodeStore>,
    heartbeat_interval: Duration,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("node", &self.registration.id)
            .finish_non_exhaustive()
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Member {
    pub fn new(
        registration: NodeRegistration,
        runtime: Arc<dyn Runtime>,
        store: Arc<dyn Store>,
        nodes: Arc<dyn NodeStore>,
        heartbeat_interval: Duration,
    ) -> Self {
        Self {
            registration,
            runtime,
            store,
            nodes,
            heartbeat_interval,
        }
    }

    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// Start: ends the rows of sandboxes this node no longer has, then
    /// registers as `active`. Call after the runtime's `recover`, before
    /// serving the node API.
    pub async fn join(&self) -> Result<NodeReconcile, codebox_store::StoreError> {
        let held: HashSet<SandboxId> = self
            .runtime
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut report = NodeReconcile::default();
        for id in self.nodes.live_sandboxes_on_node(self.id()).await? {
            if held.contains(&id) {
                continue;
            }
            if self
                .store
                .end_sandbox(
                    &id,
                    SandboxStatus::Terminated,
                    TerminationReason::NodeLost,
                    OffsetDateTime::now_utc(),
                )
                .await?
            {
                tracing::info!(sandbox_id = %id, "sandbox did not survive the node restart");
                report.ended += 1;
            }
        }
        self.nodes
            .register_node(&self.current(), OffsetDateTime::now_utc())
            .await?;
        tracing::info!(
            node = %self.id(),
            address = %self.registration.address,
            ended = report.ended,
            "node registered"
        );
        Ok(report)
    }

    /// The registration with the runtimes offered now (templates finish
    /// building after start).
    fn current(&self) -> NodeRegistration {
        let mut registration = self.registration.clone();
        registration.runtimes = self.runtime.runtimes();
        registration
    }

    /// One heartbeat and reconcile pass.
    pub async fn heartbeat(&self) -> Result<NodeReconcile, codebox_store::StoreError> {
        let now = OffsetDateTime::now_utc();
        let registration = self.current();
        match self.nodes.heartbeat_node(&registration, now).await? {
            Some(_) => {}
            None => {
                tracing::warn!(node = %self.id(), "node row missing: registering again");
                self.nodes.register_node(&registration, now).await?;
            }
        }
        self.reconcile().await
    }

    /// Destroys local sandboxes that the database does not place here as live.
    pub async fn reconcile(&self) -> Result<NodeReconcile, codebox_store::StoreError> {
        let mut report = NodeReconcile::default();
        let held = match self.runtime.list().await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(error = %error, "listing local sandboxes failed");
                return Ok(report);
            }
        };
        if held.is_empty() {
            return Ok(report);
        }
        // Read after listing: a sandbox placed and created in between is in
        // both, never destroyed by mistake.
        let assigned: HashSet<SandboxId> = self
            .nodes
            .live_sandboxes_on_node(self.id())
            .await?
            .into_iter()
            .collect();
        for id in held {
            if assigned.contains(&id) {
                continue;
            }
            tracing::warn!(sandbox_id = %id, "destroying a sandbox the database no longer places here");
            match self.runtime.destroy(&id).await {
                Ok(()) => report.destroyed += 1,
                Err(error) => {
                    tracing::warn!(sandbox_id = %id, error = %chain(&error), "destroying a stray sandbox failed");
                }
            }
        }
        Ok(report)
    }

    async fn on_exit(&self, exit: SandboxExited) {
        tracing::info!(sandbox_id = %exit.id, reason = %exit.reason, "sandbox exited on its own");
        if let Err(error) = self
            .store
            .end_sandbox(
                &exit.id,
                SandboxStatus::Terminated,
                exit.reason,
                OffsetDateTime::now_utc(),
            )
            .await
        {
            tracing::warn!(sandbox_id = %exit.id, error = %chain(&error), "recording a sandbox exit failed");
        }
    }

    /// Heartbeats (and reconciles) every interval and records exits until
    /// `stop` resolves.
    pub async fn run(&self, stop: impl Future<Output = ()> + Send) {
        let mut exits = Some(self.runtime.subscribe_exits());
        let mut ticker = tokio::time::interval(self.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticker.tick() => {
                    if let Err(error) = self.heartbeat().await {
                        tracing::warn!(error = %chain(&error), "node heartbeat failed");
                    }
                }
                exit = next_exit(&mut exits) => match exit {
                    Ok(exit) => self.on_exit(exit).await,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "missed sandbox exits; the API's sweep ends them");
                    }
                    // The runtime stopped reporting exits: keep heartbeating.
                    Err(RecvError::Closed) => exits = None,
                },
            }
        }
    }

    /// Graceful stop: no new placements, every local sandbox destroyed and
    /// ended as `server_shutdown`, the runtime shut down, the node `lost`.
    pub async fn leave(&self) {
        if let Err(error) = self
            .nodes
            .set_node_state(self.id(), NodeState::Draining)
            .await
        {
            tracing::warn!(error = %chain(&error), "could not stop placements on this node");
        }
        let held = self.runtime.list().await.unwrap_or_default();
        for id in held {
            if let Err(error) = self.runtime.destroy(&id).await {
                tracing::warn!(sandbox_id = %id, error = %chain(&error), "destroy at shutdown failed");
            }
            let _ = self
                .store
                .end_sandbox(
                    &id,
                    SandboxStatus::Terminated,
                    TerminationReason::ServerShutdown,
                    OffsetDateTime::now_utc(),
                )
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(30), self.runtime.shutdown())
            .await
            .is_err()
        {
            tracing::error!("runtime shutdown timed out");
        }
        if let Err(error) = self.nodes.set_node_state(self.id(), NodeState::Lost).await {
            tracing::warn!(error = %chain(&error), "could not mark this node gone");
        }
        tracing::info!(node = %self.id(), "node left");
    }
}

/// The next exit; never resolves once the channel is gone.
async fn next_exit(
    exits: &mut Option<tokio::sync::broadcast::Receiver<SandboxExited>>,
) -> Result<SandboxExited, RecvError> {
    match exits {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// `codebox node drain`: stops placements on `node` and waits (polling every
/// `poll`) until its live sandboxes are gone or `timeout` passes. Returns the
/// sandboxes still live at the end.
pub async fn drain(
    nodes: &dyn NodeStore,
    node: &str,
    poll: Duration,
    timeout: Duration,
    mut progress: impl FnMut(usize),
) -> Result<usize, DrainError> {
    if !nodes.set_node_state(node, NodeState::Draining).await? {
        return Err(DrainError::UnknownNode(node.to_owned()));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let live = nodes.live_sandboxes_on_node(node).await?.len();
        progress(live);
        if live == 0 || tokio::time::Instant::now() >= deadline {
            return Ok(live);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Why a drain failed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("no node named {0:?} is registered")]
    UnknownNode(String),
    #[error(transparent)]
    Store(#[from] codebox_store::StoreError),
}
