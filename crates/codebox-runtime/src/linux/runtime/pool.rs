//! The warm pool of [`LinuxRuntime`]: ready sandboxes started ahead of
//! demand (with prestarted contexts), claimed by creates that use the default
//! limits, and replaced when the language templates change. It must not touch
//! a claimed sandbox: once claimed, a sandbox is [`super::lifecycle`]'s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::lifecycle::cgroup_limits;
use super::{lock, Inner, LinuxRuntime, Live};
use crate::linux::config::validate_templates;
use crate::linux::language_templates::TemplateSet;
use crate::{RuntimeError, SandboxLimits};

/// Pause before the pool retries after a failed create.
const POOL_RETRY: Duration = Duration::from_secs(1);

impl LinuxRuntime {
    /// Replaces the language templates of sandboxes started from now on (a
    /// background build finished). Running sandboxes keep what they have; warm
    /// ones are replaced so claims get the new set. An unchanged set changes
    /// nothing. Call it from within the
    /// Tokio runtime (a `spawn_blocking` thread is fine).
    pub fn set_templates(
        &self,
        mounts: Vec<(PathBuf, String)>,
        env: BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        validate_templates(&mounts, &env)
            .map_err(|detail| RuntimeError::InvalidRequest { detail })?;
        let set = TemplateSet { mounts, env };
        {
            let mut current = lock(&self.inner.templates);
            if *current.1 == set {
                // Unchanged (a start-up build found the template current): the
                // warm sandboxes already have it.
                return Ok(());
            }
            let generation = current.0 + 1;
            *current = (generation, Arc::new(set));
        }
        let stale: Vec<Arc<Live>> = lock(&self.inner.state).pool.drain(..).collect();
        info!(replaced_warm = stale.len(), "language templates updated");
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            for live in stale {
                if let Err(error) = inner.teardown(live).await {
                    warn!(%error, "teardown of a warm sandbox with old templates failed");
                }
            }
            inner.pool_wakeup.notify_one();
        });
        Ok(())
    }

    pub(super) fn start_pool(&self) {
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

impl Inner {
    /// Takes a warm sandbox, if the spec fits one.
    pub(super) fn claim(&self, limits: &SandboxLimits) -> Option<Arc<Live>> {
        if *limits != self.host.config.default_limits {
            return None;
        }
        let claimed = lock(&self.state).pool.pop_front();
        self.pool_wakeup.notify_one();
        claimed
    }
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
        if let Ok(live) = &result {
            let started = crate::linux::prestart::start(
                &live.agent,
                &config.pool_prestart_contexts,
                config.python_preload.as_deref(),
                &live.templates.env,
            )
            .await;
            *lock(&live.prestarted) = started;
        }
        // `pool_pending` drops only once the sandbox is in the pool or gone, so
        // `shutdown` can wait for in-flight creations.
        match result {
            // The templates changed while it started: replaced, like the warm
            // sandboxes `set_templates` drained.
            Ok(live)
                if !inner.shutting_down.load(Ordering::SeqCst)
                    && live.template_generation != lock(&inner.templates).0 =>
            {
                let _ = inner.teardown(live).await;
                lock(&inner.state).pool_pending -= 1;
            }
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
