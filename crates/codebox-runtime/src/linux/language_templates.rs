//! Language templates in sandboxes (the python3 virtualenv, node's TypeScript
//! compiler): which host directories are bind-mounted read-only where, and the
//! environment that goes with them. Plain data from the binary: this crate must
//! not depend on `codebox-template`, which builds them.
//!
//! A sandbox gets the set that is current when it starts and keeps it for life;
//! a later change (a background build finishing) reaches sandboxes started after
//! it, and the warm pool is refilled with it. A template directory missing at
//! start (deleted, or caught in the instant of a rebuild's rename) leaves the
//! whole set out of that sandbox, mounts and env together, so it never fails a
//! create and never points `PATH` at a directory that is not there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::warn;

/// Mounts (host directory -> mount point) and the env that goes with them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TemplateSet {
    pub mounts: Vec<(PathBuf, String)>,
    pub env: BTreeMap<String, String>,
}

impl TemplateSet {
    /// What a sandbox starting now gets: this set when every template directory
    /// exists, otherwise none at all.
    pub fn for_new_sandbox(self: &Arc<Self>) -> Arc<TemplateSet> {
        let missing = self.mounts.iter().find(|(host, _)| !host.is_dir());
        match missing {
            None => Arc::clone(self),
            Some((host, point)) => {
                warn!(
                    template = %host.display(),
                    mount_point = %point,
                    "language template missing; sandbox starts without templates"
                );
                Arc::new(TemplateSet::default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_drops_mounts_and_env_together() {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = BTreeMap::from([("MPLBACKEND".to_owned(), "Agg".to_owned())]);
        let present = Arc::new(TemplateSet {
            mounts: vec![(dir.path().to_owned(), "/opt/codebox/python3".into())],
            env: env.clone(),
        });
        assert!(Arc::ptr_eq(&present.for_new_sandbox(), &present));
        let missing = Arc::new(TemplateSet {
            mounts: vec![
                (dir.path().to_owned(), "/opt/codebox/python3".into()),
                (dir.path().join("gone"), "/opt/codebox/node".into()),
            ],
            env,
        });
        assert_eq!(*missing.for_new_sandbox(), TemplateSet::default());
    }
}
