//! Configuration of the Linux runtime (filled by the server from its config).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
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
    /// Languages whose default context (`default-<language>`) each warm
    /// sandbox starts at fill time, so a claim plus the first execution costs
    /// no interpreter start. Default: python.
    pub pool_prestart_contexts: Vec<crate::Language>,
    /// Python run in a prestarted python context before it is ready (the
    /// python3 template's preload, e.g. `import numpy, pandas, matplotlib`).
    /// Off by default; a failing preload is logged and skipped.
    pub python_preload: Option<String>,
    /// Language templates at start: host directory -> absolute mount point in
    /// the sandbox (e.g. `/opt/codebox/python3`), bind-mounted read-only,
    /// `nosuid`, `nodev`. Replaced later by
    /// [`LinuxRuntime::set_templates`](super::LinuxRuntime::set_templates).
    pub template_mounts: Vec<(PathBuf, String)>,
    /// What sandboxes with those mounts get in their environment (`PATH` with
    /// the templates' directories first, `MPLBACKEND`, ...); a create's own env
    /// wins over it.
    pub template_env: BTreeMap<String, String>,
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
            pool_prestart_contexts: vec![crate::Language::Python],
            python_preload: None,
            template_mounts: Vec::new(),
            template_env: BTreeMap::new(),
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
        if matches!(&self.python_preload, Some(code) if code.contains('\0')) {
            return Err("python_preload must not contain NUL".into());
        }
        validate_templates(&self.template_mounts, &self.template_env)
    }
}

/// Top-level sandbox directories a template must not be mounted on or under:
/// the jail builds them itself (the host's system directories, `/etc`, the
/// writable home and tmp, the agent's own directory).
const RESERVED_TOP_LEVEL: &[&str] = &[
    "bin", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr",
    ".codebox",
];

/// Checks language templates: absolute host directories, plain absolute mount
/// points outside the jail's own directories and not inside one another, env
/// names the agent accepts.
pub fn validate_templates(
    mounts: &[(PathBuf, String)],
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (index, (host, point)) in mounts.iter().enumerate() {
        if !host.is_absolute() {
            return Err(format!(
                "template directory {} must be absolute",
                host.display()
            ));
        }
        check_mount_point(point)?;
        for (_, other) in &mounts[..index] {
            if Path::new(point).starts_with(other) || Path::new(other).starts_with(point) {
                return Err(format!("template mount points {other} and {point} overlap"));
            }
        }
    }
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(format!("invalid template environment variable {name:?}"));
        }
    }
    Ok(())
}

/// `/a/b/...`: absolute, only normal components (no `.`, `..`, `//` or
/// trailing `/`), the first one not a reserved directory.
fn check_mount_point(point: &str) -> Result<(), String> {
    let mut names = Vec::new();
    for component in Path::new(point).components() {
        match component {
            Component::RootDir if names.is_empty() => {}
            Component::Normal(name) => names.push(name.to_string_lossy()),
            _ => names.clear(),
        }
    }
    let canonical = format!("/{}", names.join("/"));
    let reserved = names
        .first()
        .is_none_or(|top| RESERVED_TOP_LEVEL.contains(&top.as_ref()));
    if canonical != point || reserved || point.contains('\0') {
        return Err(format!(
            "template mount point {point:?} must be a plain absolute path outside the system directories"
        ));
    }
    Ok(())
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
        c.python_preload = Some("import os\0".into());
        assert!(c.validate().is_err());
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

    #[test]
    fn template_mount_points_must_be_plain_and_outside_the_system() {
        let env = BTreeMap::new();
        let mount =
            |point: &str| vec![(PathBuf::from("/data/templates/python3"), point.to_owned())];
        assert_eq!(
            validate_templates(&mount("/opt/codebox/python3"), &env),
            Ok(())
        );
        for bad in [
            "opt/codebox",
            "/",
            "",
            "/usr/local",
            "/etc",
            "/tmp/x",
            "/home/user/t",
            "/.codebox/a",
            "/opt/../usr",
            "/opt/./x",
            "/opt//x",
            "/opt/x/",
            "/proc",
            "/./usr",
        ] {
            assert!(
                validate_templates(&mount(bad), &env).is_err(),
                "{bad:?} accepted"
            );
        }
        let relative = vec![(PathBuf::from("templates/python3"), "/opt/p".to_owned())];
        assert!(validate_templates(&relative, &env).is_err());
        let nested = vec![
            (PathBuf::from("/a"), "/opt/codebox".to_owned()),
            (PathBuf::from("/b"), "/opt/codebox/node".to_owned()),
        ];
        assert!(validate_templates(&nested, &env).is_err());
        let bad_env = BTreeMap::from([("A=B".to_owned(), "x".to_owned())]);
        assert!(validate_templates(&[], &bad_env).is_err());
        let mut c = config();
        c.template_mounts = mount("/usr/lib/python3");
        assert!(c.validate().is_err());
    }
}
