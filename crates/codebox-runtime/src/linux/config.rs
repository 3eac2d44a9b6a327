//! Configuration of the Linux runtime (filled by the server from its config).

use std::path::PathBuf;
use std::time::Duration;

use codebox_types::Resources;

use crate::SandboxLimits;

/// Host uids/gids mapped into each sandbox: inside 0..65536.
pub const IDS_PER_SANDBOX: u32 = 65_536;

/// How the Linux runtime runs.
#[derive(Debug, Clone)]
pub struct LinuxRuntimeConfig {
    /// The runtime's own directory (e.g. `<data dir>/runtime`): the generated
    /// `/etc` and the empty mount point every sandbox's root is built on.
    pub root_dir: PathBuf,
    /// The static `codebox-agent` binary on the host.
    pub agent_path: PathBuf,
    /// Ready sandboxes kept warm (0 disables the pool).
    pub pool_size: usize,
    /// Resources of warm sandboxes before a claim sets the requested ones.
    pub default_resources: Resources,
    /// Limits of warm sandboxes; a create with other limits is a cold create.
    pub default_limits: SandboxLimits,
    /// The cgroup under which every sandbox cgroup is created; `recover`
    /// destroys whatever it finds there. One per runtime on a host.
    pub cgroup_parent: String,
    /// First host uid of the ranges mapped into sandboxes. Sandbox `n` gets
    /// `uid_base + n * 65536 ..+ 65536`, so two sandboxes never share host ids.
    pub uid_base: u32,
    /// Sandboxes (pool included) alive at once on this runtime.
    pub max_sandboxes: u32,
    /// Budget for the jail setup plus the agent handshake.
    pub setup_timeout: Duration,
    /// Size of `/dev/shm` in each sandbox.
    pub shm_bytes: u64,
}

impl LinuxRuntimeConfig {
    /// Defaults for everything but the two paths.
    pub fn new(root_dir: PathBuf, agent_path: PathBuf) -> Self {
        Self {
            root_dir,
            agent_path,
            pool_size: 2,
            default_resources: Resources::default(),
            default_limits: SandboxLimits::default(),
            cgroup_parent: "codebox".into(),
            uid_base: 1_000_000,
            max_sandboxes: 1024,
            setup_timeout: Duration::from_secs(10),
            shm_bytes: 64 << 20,
        }
    }

    /// Checks what the kernel would otherwise reject late.
    pub fn validate(&self) -> Result<(), String> {
        let last =
            u64::from(self.uid_base) + u64::from(self.max_sandboxes) * u64::from(IDS_PER_SANDBOX);
        if self.uid_base < IDS_PER_SANDBOX {
            return Err("uid_base must be at least 65536 (above the host's own users)".into());
        }
        if last > u64::from(u32::MAX) {
            return Err("uid_base + max_sandboxes * 65536 exceeds the uid space".into());
        }
        if self.max_sandboxes == 0 {
            return Err("max_sandboxes must be at least 1".into());
        }
        let valid_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.cgroup_parent.is_empty() || !self.cgroup_parent.chars().all(valid_name) {
            return Err("cgroup_parent must be a plain name ([A-Za-z0-9_-])".into());
        }
        if !self.agent_path.is_absolute() || !self.root_dir.is_absolute() {
            return Err("agent_path and root_dir must be absolute".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LinuxRuntimeConfig {
        LinuxRuntimeConfig::new("/var/lib/codebox/runtime".into(), "/usr/bin/agent".into())
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = config();
        c.uid_base = 1000;
        assert!(c.validate().is_err());
        let mut c = config();
        c.max_sandboxes = 100_000;
        assert!(c.validate().is_err());
        let mut c = config();
        c.cgroup_parent = "../x".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.agent_path = "agent".into();
        assert!(c.validate().is_err());
    }
}
