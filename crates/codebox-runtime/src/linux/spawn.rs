//! Starting a jailed process: clone into new namespaces, map its ids, place it
//! in its cgroup, shield it from the OOM killer, release it to run the jail plan,
//! and learn whether it reached `execve`.
//!
//! Host/child handshake (all fds close-on-exec):
//! - sync pipe: the child blocks on it until the host has written
//!   `uid_map`/`gid_map`, attached the cgroup and set `oom_score_adj`;
//! - error pipe: the child writes `(step index, errno)` if a step fails; EOF
//!   without data means `execve` succeeded (close-on-exec closed it).

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use codebox_sys::{fd, process, Errno};
use tracing::debug;

use super::config::IDS_PER_SANDBOX;
use super::jail::{self, ChildFds, JailError, JailPlan, StepFailure};
use super::syscall::LinuxSyscall;
use crate::cgroup::{CgroupError, SandboxCgroup};

/// Namespaces of a sandbox; the cgroup namespace is entered by the child itself
/// once the host has moved it into its cgroup (so that cgroup is its root).
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// Lowers the agent's OOM score. Not -1000 (never killable): user processes
/// inherit the value from the agent, and a cgroup whose processes are all
/// unkillable cannot resolve an OOM. With one value for all, the OOM killer
/// ranks by memory use, so a memory bomb is chosen, not the small agent.
/// Lowering needs CAP_SYS_RESOURCE; without it (some containers) the value
/// stays 0, which ranks the same way.
const AGENT_OOM_SCORE_ADJ: &str = "-999";

/// A failed spawn, by stage.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("creating the setup pipes failed")]
    Pipes(#[source] Errno),
    #[error("clone into new namespaces failed")]
    Clone(#[source] Errno),
    #[error("writing {file} of the sandbox process failed")]
    IdMap {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("moving the sandbox process into its cgroup failed")]
    Cgroup(#[source] CgroupError),
    #[error("releasing the sandbox process failed")]
    Release(#[source] Errno),
    #[error("the jail setup failed at step {step}")]
    Jail {
        step: &'static str,
        #[source]
        source: JailError,
    },
    #[error("the jail setup did not finish within {0:?}")]
    Timeout(Duration),
    #[error("reading the jail setup result failed")]
    Report(#[source] Errno),
}

impl SpawnError {
    /// The setup step to report (`RuntimeError::Setup::step`).
    pub fn step(&self) -> &'static str {
        match self {
            SpawnError::Pipes(_) => "pipes",
            SpawnError::Clone(_) => "clone",
            SpawnError::IdMap { .. } => "id_map",
            SpawnError::Cgroup(_) => "cgroup_attach",
            SpawnError::Release(_) => "release_child",
            SpawnError::Jail { step, .. } => step,
            SpawnError::Timeout(_) => "setup_timeout",
            SpawnError::Report(_) => "setup_report",
        }
    }
}

/// A jailed process that reached `execve` of the agent.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// The host end of the agent channel.
    pub channel: OwnedFd,
}

/// Spawns the jail described by `plan` with host ids from `id_base`, in
/// `cgroup`. Blocking; run it off the async executor.
pub fn spawn(
    plan: &JailPlan,
    id_base: u32,
    cgroup: &SandboxCgroup,
    timeout: Duration,
) -> Result<Spawned, SpawnError> {
    let (channel, child_channel) = fd::socketpair_cloexec().map_err(SpawnError::Pipes)?;
    let (sync_read, sync_write) = fd::pipe_cloexec().map_err(SpawnError::Pipes)?;
    let (error_read, error_write) = fd::pipe_cloexec().map_err(SpawnError::Pipes)?;
    let fds = ChildFds {
        sync: sync_read.as_raw_fd(),
        agent: child_channel.as_raw_fd(),
        error: error_write.as_raw_fd(),
    };
    let sync_write_raw = sync_write.as_raw_fd();
    let child = process::clone_child(NAMESPACES, || {
        // The child's copy of the write end would keep the sync pipe open and
        // hide the host's death from `await_parent`.
        fd::close_raw(sync_write_raw);
        let failure = jail::run(plan, &LinuxSyscall, fds);
        let _ = fd::write_all_raw(failure.error_fd, &failure.encode());
        127
    })
    .map_err(SpawnError::Clone)?;
    drop((child_channel, sync_read, error_write));

    let released = prepare_child(child.pid, id_base, cgroup)
        .and_then(|()| release(&sync_write))
        .and_then(|()| await_exec(plan, &error_read, timeout));
    match released {
        Ok(()) => Ok(Spawned {
            pid: child.pid,
            pidfd: child.pidfd,
            channel,
        }),
        Err(error) => {
            let _ = process::pidfd_send_signal(&child.pidfd, libc::SIGKILL);
            let _ = process::wait_pidfd_blocking(&child.pidfd);
            Err(error)
        }
    }
}

/// Host-side setup of the stopped child: id maps, cgroup, OOM shield.
fn prepare_child(pid: i32, id_base: u32, cgroup: &SandboxCgroup) -> Result<(), SpawnError> {
    let map = format!("0 {id_base} {IDS_PER_SANDBOX}\n");
    for file in ["uid_map", "gid_map"] {
        fs::write(format!("/proc/{pid}/{file}"), &map)
            .map_err(|source| SpawnError::IdMap { file, source })?;
    }
    cgroup.attach(pid).map_err(SpawnError::Cgroup)?;
    match fs::write(format!("/proc/{pid}/oom_score_adj"), AGENT_OOM_SCORE_ADJ) {
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            debug!("no CAP_SYS_RESOURCE: the agent keeps oom_score_adj 0");
            Ok(())
        }
        other => other.map_err(|source| SpawnError::IdMap {
            file: "oom_score_adj",
            source,
        }),
    }
}

fn release(sync_write: &OwnedFd) -> Result<(), SpawnError> {
    fd::write_all_raw(sync_write.as_raw_fd(), b"1").map_err(SpawnError::Release)
}

/// Waits for EOF (exec succeeded) or a failure report on the error pipe.
fn await_exec(plan: &JailPlan, error_read: &OwnedFd, timeout: Duration) -> Result<(), SpawnError> {
    let deadline = Instant::now() + timeout;
    let remaining = deadline.saturating_duration_since(Instant::now());
    if !fd::wait_readable(error_read, remaining).map_err(SpawnError::Report)? {
        return Err(SpawnError::Timeout(timeout));
    }
    let mut report = [0u8; 8];
    match fd::read_full_raw(error_read.as_raw_fd(), &mut report).map_err(SpawnError::Report)? {
        0 => Ok(()),
        8 => {
            let (index, errno) = StepFailure::decode(report);
            let (step, source) = plan.error_for(index, errno);
            Err(SpawnError::Jail { step, source })
        }
        _ => Err(SpawnError::Report(Errno(libc::EPROTO))),
    }
}
