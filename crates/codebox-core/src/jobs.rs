//! Background work: reconcile at start, the reaper (expiry, runtime exits,
//! retention), and shutdown. The store is the source of truth for what should
//! exist; the runtime for what does.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use codebox_runtime::SandboxExited;
use codebox_types::{SandboxId, SandboxStatus, TerminationReason};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::error::CoreError;
use crate::sandboxes::error_chain;
use crate::views::ReconcileReport;
use crate::Core;

impl Core {
    /// Called once at start, before serving: the runtime cleans up leftovers of
    /// a crashed run; live rows whose sandbox is gone (or that were still
    /// `creating`) end as `server_restart`; runtime sandboxes without a running
    /// row are destroyed. Single-node: another replica's in-flight creates are
    /// not distinguished (the `node` column is for that, later).
    pub async fn reconcile(&self) -> Result<ReconcileReport, CoreError> {
        let recovered = self.runtime.recover().await.map_err(CoreError::internal)?;
        let live = self.store.list_live_sandboxes().await?;
        let held: HashSet<SandboxId> = self
            .runtime
            .list()
            .await
            .map_err(CoreError::internal)?
            .into_iter()
            .collect();
        let mut report = ReconcileReport {
            runtime_leftovers: recovered.destroyed.len(),
            ..ReconcileReport::default()
        };
        let mut live_ids = HashSet::new();
        for record in live {
            // A row still `creating` lost the request that was creating it
            // (this runs before serving): whatever the runtime holds for it is
            // a leftover, destroyed below.
            if held.contains(&record.id) && record.status == SandboxStatus::Running {
                live_ids.insert(record.id);
            } else if self
                .end(
                    &record.id,
                    SandboxStatus::Terminated,
                    TerminationReason::ServerRestart,
                )
                .await?
            {
                report.ended += 1;
            }
        }
        for id in held.difference(&live_ids) {
            self.destroy(id).await?;
            report.destroyed += 1;
        }
        self.metrics.sandboxes_active.set(live_ids.len() as i64);
        tracing::info!(
            runtime_leftovers = report.runtime_leftovers,
            ended = report.ended,
            destroyed = report.destroyed,
            "reconciled sandboxes with the runtime"
        );
        Ok(report)
    }

    /// Runs until `shutdown` resolves: every `reaper_interval` expired sandboxes
    /// are destroyed and end as `timeout`; sandboxes the runtime reports as
    /// exited end with the runtime's reason; every `purge_interval` old
    /// executions and tombstones are purged.
    pub async fn run_reaper(&self, shutdown: impl Future<Output = ()> + Send) {
        let mut exits = Some(self.runtime.subscribe_exits());
        let mut expiry = tokio::time::interval(self.settings.reaper_interval);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(self.settings.retention.purge_interval);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = expiry.tick() => { self.reap_expired().await; }
                _ = purge.tick() => { self.purge_history().await; }
                exit = next_exit(&mut exits) => match exit {
                    Ok(exit) => self.on_exit(exit).await,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "missed sandbox exit notifications; sweeping");
                        self.sweep_lost().await;
                    }
                    // The runtime stopped reporting exits: keep expiring, and
                    // stop polling a closed channel.
                    Err(RecvError::Closed) => exits = None,
                },
            }
        }
        tracing::info!("reaper stopped");
    }

    /// One expiry pass; returns how many sandboxes were ended.
    pub async fn reap_expired(&self) -> usize {
        let expired = match self
            .store
            .list_expired_sandboxes(OffsetDateTime::now_utc())
            .await
        {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "listing expired sandboxes failed");
                return 0;
            }
        };
        let count = expired.len();
        for id in expired {
            self.expire(&id).await;
        }
        count
    }

    async fn on_exit(&self, exit: SandboxExited) {
        tracing::info!(sandbox_id = %exit.id, reason = %exit.reason, "sandbox exited on its own");
        // The runtime already freed it; destroy again only in case it kept state.
        self.destroy_quietly(&exit.id).await;
        self.end_quietly(&exit.id, SandboxStatus::Terminated, exit.reason)
            .await;
    }

    /// After missed exit notifications: live rows the runtime no longer holds
    /// end as `agent_lost`.
    async fn sweep_lost(&self) {
        let (live, held) = match (
            self.store.list_live_sandboxes().await,
            self.runtime.list().await,
        ) {
            (Ok(live), Ok(held)) => (live, held.into_iter().collect::<HashSet<_>>()),
            _ => return,
        };
        for record in live {
            if record.status == SandboxStatus::Running && !held.contains(&record.id) {
                self.end_quietly(
                    &record.id,
                    SandboxStatus::Terminated,
                    TerminationReason::AgentLost,
                )
                .await;
            }
        }
    }

    /// One retention pass (on Postgres the store also creates the coming
    /// months' `executions` partitions during it).
    pub async fn purge_history(&self) {
        let now = OffsetDateTime::now_utc();
        let retention = self.settings.retention;
        let result = self
            .store
            .purge(now - retention.executions, now - retention.tombstones)
            .await;
        match result {
            Ok(report) => tracing::info!(
                executions = report.executions,
                sandboxes = report.sandboxes,
                "retention purge done"
            ),
            Err(error) => tracing::warn!(error = %error_chain(&error), "retention purge failed"),
        }
    }

    /// Server shutdown: destroys every live sandbox, ends it as
    /// `server_shutdown`, then shuts the runtime down (warm pool included).
    pub async fn shutdown(&self) {
        match self.store.list_live_sandboxes().await {
            Ok(live) => {
                for record in live {
                    self.destroy_quietly(&record.id).await;
                    self.end_quietly(
                        &record.id,
                        SandboxStatus::Terminated,
                        TerminationReason::ServerShutdown,
                    )
                    .await;
                }
            }
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "listing live sandboxes at shutdown failed");
            }
        }
        // Bounded: a hung runtime must not keep the process from exiting.
        if tokio::time::timeout(Duration::from_secs(30), self.runtime.shutdown())
            .await
            .is_err()
        {
            tracing::error!("runtime shutdown timed out");
        }
        tracing::info!("core shut down");
    }
}

/// The next exit notification; never resolves once the channel is gone.
async fn next_exit(
    exits: &mut Option<broadcast::Receiver<SandboxExited>>,
) -> Result<SandboxExited, RecvError> {
    match exits {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
