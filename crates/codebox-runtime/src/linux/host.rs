//! The host objects of one sandbox (slot, cgroup, jailed process) and the
//! blocking operations that create and free them. Knows nothing of the agent
//! protocol: [`super::LinuxRuntime`] adds the agent connection on top.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use codebox_sys::process;
use codebox_sys::seccomp::SockFilter;
use tracing::warn;

use super::config::{LinuxRuntimeConfig, IDS_PER_SANDBOX};
use super::jail::{JailInput, JailPlan, TemplateEntry};
use super::slots::Slots;
use super::spawn::{self, SpawnError};
use super::{seccomp_policy, template};
use crate::cgroup::{
    CgroupError, CgroupLimits, CgroupManager, HostCgroupFs, Layout, SandboxCgroup,
};
use crate::{RuntimeError, SandboxLimits};

/// What every sandbox of a runtime is built from, prepared once at start.
#[derive(Debug)]
pub struct HostContext {
    pub config: LinuxRuntimeConfig,
    pub cgroups: CgroupManager,
    pub slots: Slots,
    pub template: Vec<TemplateEntry>,
    pub etc_dir: PathBuf,
    pub rootfs_dir: PathBuf,
    pub seccomp: Vec<SockFilter>,
    pub last_cap: u32,
}

/// A running jailed process with its cgroup and slot.
#[derive(Debug)]
pub struct HostSandbox {
    pub slot: u32,
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub cgroup: SandboxCgroup,
    /// Limits currently written to the cgroup.
    pub cgroup_limits: CgroupLimits,
    pub limits: SandboxLimits,
}

/// The cgroup name of a slot.
pub fn cgroup_name(slot: u32) -> String {
    format!("s{slot}")
}

impl HostContext {
    /// Checks the config, writes the sandbox `/etc`, detects cgroups and the
    /// template, compiles the seccomp policy. Blocking; once per runtime.
    pub fn prepare(config: LinuxRuntimeConfig) -> Result<HostContext, RuntimeError> {
        config
            .validate()
            .map_err(|detail| RuntimeError::InvalidRequest { detail })?;
        if !config.agent_path.is_file() {
            return Err(RuntimeError::InvalidRequest {
                detail: format!("agent binary {} not found", config.agent_path.display()),
            });
        }
        let template = template::host_template(Path::new("/"));
        refuse_data_in_template(&config.root_dir, &template)?;
        let etc_dir = config.root_dir.join("etc");
        let rootfs_dir = config.root_dir.join("rootfs");
        prepare_dirs(&config, &etc_dir, &rootfs_dir)?;
        let cgroups = detect_cgroups(&config)?;
        let last_cap =
            codebox_sys::security::cap_last_cap().map_err(|source| RuntimeError::Io {
                operation: "read cap_last_cap",
                source,
            })?;
        Ok(HostContext {
            slots: Slots::new(config.max_sandboxes),
            template,
            seccomp: seccomp_policy::program(),
            config,
            cgroups,
            etc_dir,
            rootfs_dir,
            last_cap,
        })
    }

    /// Creates the cgroup, spawns the jail (with `template_mounts`, validated),
    /// returns the process and the host end of its agent channel. Blocking. On
    /// error nothing is left behind.
    pub fn start(
        &self,
        cgroup_limits: CgroupLimits,
        limits: &SandboxLimits,
        template_mounts: &[(PathBuf, String)],
    ) -> Result<(HostSandbox, OwnedFd), RuntimeError> {
        let slot = self
            .slots
            .acquire()
            .ok_or_else(|| RuntimeError::AtCapacity {
                detail: format!("{} sandboxes are running", self.config.max_sandboxes),
            })?;
        let cgroup = match self.cgroups.create(&cgroup_name(slot), &cgroup_limits) {
            Ok(cgroup) => cgroup,
            Err(error) => {
                self.slots.release(slot);
                return Err(setup_error("cgroup_create", error));
            }
        };
        let plan = JailPlan::build(&JailInput {
            new_root: &self.rootfs_dir,
            template: &self.template,
            template_mounts,
            etc_dir: &self.etc_dir,
            agent_path: &self.config.agent_path,
            limits,
            shm_bytes: self.config.shm_bytes,
            last_cap: self.last_cap,
            seccomp: &self.seccomp,
        });
        let id_base = self.config.uid_base + slot * IDS_PER_SANDBOX;
        match spawn::spawn(&plan, id_base, &cgroup, self.config.setup_timeout) {
            Ok(spawned) => Ok((
                HostSandbox {
                    slot,
                    pid: spawned.pid,
                    pidfd: spawned.pidfd,
                    cgroup,
                    cgroup_limits,
                    limits: limits.clone(),
                },
                spawned.channel,
            )),
            Err(error) => {
                self.free_cgroup_and_slot(&cgroup, slot);
                Err(spawn_error(error))
            }
        }
    }

    /// Kills every process of the sandbox, reaps its PID 1, removes its cgroup
    /// and frees its slot. Blocking. Idempotent per sandbox.
    pub fn teardown(&self, sandbox: &HostSandbox) -> Result<(), CgroupError> {
        // Killing PID 1 makes the kernel kill every process of the PID
        // namespace; the cgroup kill is the backstop for anything that got out.
        let _ = process::pidfd_send_signal(&sandbox.pidfd, libc::SIGKILL);
        let killed = sandbox.cgroup.kill_all();
        if let Err(error) = process::wait_pidfd_blocking(&sandbox.pidfd) {
            // ECHILD: already reaped by an earlier teardown.
            if error.0 != libc::ECHILD {
                warn!(slot = sandbox.slot, %error, "reaping the sandbox init failed");
            }
        }
        killed
            .or_else(|_| sandbox.cgroup.kill_all())
            .and_then(|()| sandbox.cgroup.wait_empty(Duration::from_secs(5)))
            .and_then(|()| sandbox.cgroup.remove())
            .inspect(|()| self.slots.release(sandbox.slot))
            .inspect_err(|error| {
                warn!(slot = sandbox.slot, %error, "sandbox teardown incomplete; slot quarantined");
            })
    }

    fn free_cgroup_and_slot(&self, cgroup: &SandboxCgroup, slot: u32) {
        match cgroup.destroy() {
            Ok(()) => self.slots.release(slot),
            Err(error) => warn!(slot, %error, "cleanup after a failed create; slot quarantined"),
        }
    }

    /// Detaches any host mount found on or under the shared rootfs mount point
    /// and empties it. Sandboxes never mount on the host (their mounts live in
    /// their own mount namespaces), so anything found there is a leftover of a
    /// foreign or broken run. Only `rootfs` is touched: `root_dir` itself may
    /// legitimately be a mount. Returns what was removed.
    pub fn clean_root_dir(&self) -> Vec<String> {
        let mut removed = Vec::new();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|point| point.starts_with(&self.rootfs_dir))
            .collect();
        // Deepest first, so nested mounts go before their parents.
        mounts.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
        for point in mounts {
            let Ok(path) = CString::new(point.as_os_str().as_bytes()) else {
                continue;
            };
            match codebox_sys::mount::umount2(&path, codebox_sys::mount::MNT_DETACH) {
                Ok(()) => removed.push(format!("mount {}", point.display())),
                Err(error) => warn!(path = %point.display(), %error, "leftover mount not detached"),
            }
        }
        for entry in std::fs::read_dir(&self.rootfs_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            let gone = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match gone {
                Ok(()) => removed.push(format!("file {}", path.display())),
                Err(error) => warn!(path = %path.display(), %error, "leftover not removed"),
            }
        }
        removed
    }

    /// Bytes used in the sandbox's workspace, read through its root.
    pub fn workspace_used(&self, sandbox: &HostSandbox) -> u64 {
        let path = format!("/proc/{}/root/home/user", sandbox.pid);
        let Ok(path) = CString::new(PathBuf::from(path).as_os_str().as_bytes()) else {
            return 0;
        };
        codebox_sys::fs::statfs(&path)
            .map(|usage| usage.used_bytes)
            .unwrap_or(0)
    }
}

fn prepare_dirs(
    config: &LinuxRuntimeConfig,
    etc_dir: &Path,
    rootfs_dir: &Path,
) -> Result<(), RuntimeError> {
    let io = |operation| move |source| RuntimeError::Io { operation, source };
    std::fs::create_dir_all(&config.root_dir).map_err(io("create root_dir"))?;
    std::fs::create_dir_all(rootfs_dir).map_err(io("create rootfs dir"))?;
    template::write_etc(etc_dir, Path::new("/etc")).map_err(io("write sandbox /etc"))
}

fn detect_cgroups(config: &LinuxRuntimeConfig) -> Result<CgroupManager, RuntimeError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| RuntimeError::Io {
            operation: "read mountinfo",
            source,
        })?;
    let fs = Arc::new(HostCgroupFs);
    let layout =
        Layout::detect(&mountinfo, fs.as_ref()).map_err(|e| setup_error("cgroup_detect", e))?;
    let manager = CgroupManager::new(fs, layout, &config.cgroup_parent);
    manager
        .ensure_parent()
        .map_err(|e| setup_error("cgroup_parent", e))?;
    Ok(manager)
}

/// The runtime's directory sits in the service's data directory (its parent);
/// if that lies inside a template directory, every sandbox could read it
/// through the read-only bind (the database, keys). Refuse to start.
fn refuse_data_in_template(
    root_dir: &Path,
    template: &[TemplateEntry],
) -> Result<(), RuntimeError> {
    let data_dir = root_dir.parent().unwrap_or(root_dir);
    for entry in template {
        if let TemplateEntry::Bind { source, .. } = entry {
            if data_dir.starts_with(source) {
                return Err(RuntimeError::InvalidRequest {
                    detail: format!(
                        "the data directory {} is inside the sandbox template {}",
                        data_dir.display(),
                        source.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A `Setup` error for a failed host-side stage.
pub fn setup_error(
    step: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> RuntimeError {
    RuntimeError::Setup {
        step,
        source: Box::new(source),
    }
}

fn spawn_error(error: SpawnError) -> RuntimeError {
    setup_error(error.step(), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_inside_the_template_is_refused() {
        let template = vec![TemplateEntry::Bind {
            name: "usr".into(),
            source: "/usr".into(),
        }];
        let inside = refuse_data_in_template(Path::new("/usr/local/codebox/runtime"), &template);
        assert!(matches!(inside, Err(RuntimeError::InvalidRequest { .. })));
        let outside = refuse_data_in_template(Path::new("/var/lib/codebox/runtime"), &template);
        assert!(outside.is_ok());
        // A prefix that is not a path ancestor is fine (`/usrdata` is not `/usr`).
        assert!(refuse_data_in_template(Path::new("/usrdata/codebox/runtime"), &template).is_ok());
    }
}
