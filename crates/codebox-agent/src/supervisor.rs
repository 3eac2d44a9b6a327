//! The per-exec supervisor: a forked copy of the agent that stays root, makes itself
//! the child subreaper, forks the user's program, and owns the whole process tree.
//!
//! Why a process per exec: orphans of the tree (a double fork, a `setsid` daemon)
//! reparent to the nearest subreaper, so the supervisor sees every process the exec
//! ever created, and no other exec's. To end an exec it SIGKILLs each of its children
//! (read from `/proc/self/task/<pid>/children`), reaps, and repeats until it has no
//! child left: each round, the children of the killed processes reparent to it and are
//! killed next. It reports `Finished` only after that, so "exited" means "tree gone".
//!
//! An exec ends when its main process exits (anything it left running is killed), on
//! SIGUSR1 from the agent (timeout or cancel), or when the agent dies (parent-death
//! signal SIGUSR1). SIGUSR2 from the agent makes the supervisor send SIGINT to the main
//! process's group (a context's interrupt): the supervisor signals only while it has not
//! reaped the main process, so the group id cannot have been reused. User code cannot signal the supervisor: it runs as root (of the
//! sandbox) while the tree runs as the unprivileged user.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use codebox_sys::agent::{self as sys, ChildStatus, Fork};
use codebox_sys::Errno;

use crate::plan::ChildPlan;
use crate::status::{SetupStep, StatusRecord};

/// The descriptors a supervisor receives: the child's stdio, its status pipe, and for a
/// context's runner the structured channel, which the runner gets as fd 3.
#[derive(Debug)]
pub struct SupervisorFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub status: OwnedFd,
    pub channel: Option<OwnedFd>,
}

/// Descriptor of a runner's channel, inherited across exec.
pub const CHANNEL_FD: i32 = 3;
/// Highest descriptor number a supervisor installs for its child.
const LAST_TARGET_FD: i32 = 4;
/// How long the supervisor sleeps between checks when nothing signals it.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Pause between kill rounds, cut short by SIGCHLD.
const KILL_ROUND_WAIT: Duration = Duration::from_millis(10);

/// Runs in the freshly forked supervisor; never returns.
pub fn run(plan: &ChildPlan, fds: SupervisorFds, agent_pid: u32) -> ! {
    let code = match supervise(plan, fds, agent_pid) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    sys::exit_now(code)
}

fn supervise(plan: &ChildPlan, fds: SupervisorFds, agent_pid: u32) -> Result<(), Errno> {
    sys::block_signals(&[libc::SIGCHLD, libc::SIGUSR1, libc::SIGUSR2])?;
    sys::set_parent_death_signal(libc::SIGUSR1)?;
    if std::os::unix::process::parent_id() != agent_pid {
        // The agent died before the death signal was armed: nothing to run for.
        return Ok(());
    }
    sys::set_child_subreaper()?;
    let has_channel = fds.channel.is_some();
    let mut status = install_fds(fds)?;
    let Some(main_pid) = start_child(plan, &mut status)? else {
        return Ok(());
    };
    detach_stdio()?;
    if has_channel {
        // Only the runner may hold its channel: the agent then sees end of file as
        // soon as the runner closes it or dies.
        drop(sys::take_inherited_fd(CHANNEL_FD)?);
    }
    let mut main_status = wait_for_end(main_pid)?;
    kill_tree(main_pid, &mut main_status)?;
    // The main process is reaped by now (kill_tree only returns once no child is left).
    let finished = main_status.unwrap_or(ChildStatus::Signaled(libc::SIGKILL));
    write_record(&mut status, StatusRecord::Finished(finished));
    Ok(())
}

/// Puts the child's stdio on 0-2, a runner's channel on 3 (inherited by the child), the
/// status pipe after them (close-on-exec), and closes every other descriptor inherited
/// from the agent (its channel, other execs' pipes).
fn install_fds(fds: SupervisorFds) -> Result<File, Errno> {
    let mut targets = vec![(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)];
    if let Some(channel) = fds.channel {
        targets.push((channel, CHANNEL_FD));
    }
    let status_fd = i32::try_from(targets.len()).expect("at most 4 descriptors");
    targets.push((fds.status, status_fd));
    // A source may sit on a target number (3 or 4): move every source above the
    // targets first, so none is overwritten before it is copied.
    let targets = targets
        .into_iter()
        .map(|(fd, target)| Ok((above_targets(fd)?, target)))
        .collect::<Result<Vec<_>, Errno>>()?;
    for (fd, target) in &targets {
        sys::dup_onto(fd.as_fd(), *target)?;
    }
    // The originals are closed by close_range below: give up their ownership first so
    // nothing closes a reused number later.
    for (fd, _) in targets {
        let _ = fd.into_raw_fd();
    }
    sys::close_descriptors_from(u32::try_from(status_fd + 1).expect("small"))?;
    let status = sys::take_inherited_fd(status_fd)?;
    sys::set_cloexec(status.as_fd(), true)?;
    Ok(File::from(status))
}

/// A duplicate of `fd` numbered above [`LAST_TARGET_FD`] (the duplicates taken on
/// the way are closed again).
fn above_targets(fd: OwnedFd) -> Result<OwnedFd, Errno> {
    let mut held = Vec::new();
    let mut fd = fd;
    while fd.as_raw_fd() <= LAST_TARGET_FD {
        let copy = fd.try_clone().map_err(io_errno)?;
        held.push(fd);
        fd = copy;
    }
    Ok(fd)
}

/// Forks and execs the user's program. Waits for the exec to succeed (its
/// close-on-exec check pipe reaches end of file) before reporting `Started`, so a
/// failed setup is reported as such rather than as an exit code.
fn start_child(plan: &ChildPlan, status: &mut File) -> Result<Option<i32>, Errno> {
    let (check_reader, check_writer) = sys::pipe()?;
    let mut check_reader = File::from(check_reader);
    let pid = match sys::fork_single_threaded() {
        Ok(Fork::Child) => {
            drop(check_reader);
            let (step, errno) = setup_and_exec(plan);
            let mut writer = File::from(check_writer);
            let _ = writer.write_all(&[step as u8, 0, 0, 0]);
            let _ = writer.write_all(&errno.0.to_le_bytes());
            sys::exit_now(127)
        }
        Ok(Fork::Parent { pid }) => pid,
        Err(error) => {
            let errno = error.raw_os_error().unwrap_or(libc::EAGAIN);
            let step = SetupStep::Fork;
            write_record(status, StatusRecord::SpawnFailed { step, errno });
            return Ok(None);
        }
    };
    drop(check_writer);
    let mut failure = [0u8; 8];
    let mut read = 0;
    while read < failure.len() {
        match check_reader.read(&mut failure[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(io_errno(error)),
        }
    }
    if read == 0 {
        write_record(status, StatusRecord::Started { pid });
        return Ok(Some(pid));
    }
    let step = SetupStep::from_byte(i32::from(failure[0]));
    let errno = i32::from_le_bytes(failure[4..8].try_into().expect("4 bytes"));
    // The child exits right after writing; reap it so no zombie is left.
    let _ = sys::wait_any(true);
    write_record(status, StatusRecord::SpawnFailed { step, errno });
    Ok(None)
}

/// In the forked child: every step that turns a copy of the root supervisor into the
/// sandbox user's program. Returns only on failure, with the failed step.
fn setup_and_exec(plan: &ChildPlan) -> (SetupStep, Errno) {
    let steps = || -> Result<(), (SetupStep, Errno)> {
        sys::new_session().map_err(|e| (SetupStep::Session, e))?;
        if plan.controlling_terminal {
            sys::set_controlling_terminal(0).map_err(|e| (SetupStep::Session, e))?;
        }
        // Before the identity switch: afterwards `/proc/self` belongs to root.
        crate::prefer_for_oom_kill().map_err(|e| (SetupStep::OomScore, e))?;
        if let Some((uid, gid)) = plan.identity {
            sys::drop_capability_bounds().map_err(|e| (SetupStep::Capabilities, e))?;
            sys::become_user(uid, gid).map_err(|e| (SetupStep::Identity, e))?;
            sys::clear_capability_sets().map_err(|e| (SetupStep::Capabilities, e))?;
        }
        sys::set_no_new_privs().map_err(|e| (SetupStep::NoNewPrivileges, e))?;
        // After the identity switch: the user must be able to enter the directory.
        sys::change_directory(&plan.cwd).map_err(|e| (SetupStep::WorkingDirectory, e))?;
        sys::reset_signals().map_err(|e| (SetupStep::Signals, e))?;
        sys::set_umask(0o022);
        Ok(())
    };
    if let Err(failure) = steps() {
        return failure;
    }
    // execvp's rule: keep trying on "not there"; remember a "there but not runnable".
    let mut error = Errno(libc::ENOENT);
    for candidate in &plan.candidates {
        let errno = sys::execute(candidate, &plan.argv, &plan.env);
        if !matches!(errno.0, libc::ENOENT | libc::ENOTDIR) {
            error = errno;
        }
    }
    (SetupStep::Execute, error)
}

/// Points 0-2 at `/dev/null` so the supervisor holds no end of the exec's pipes.
fn detach_stdio() -> Result<(), Errno> {
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_errno)?;
    for target in 0..3 {
        sys::dup_onto(null.as_fd(), target)?;
    }
    Ok(())
}

/// Waits until the main process exits or the agent asks for the end (SIGUSR1);
/// forwards SIGUSR2 as SIGINT to the main process's group meanwhile.
fn wait_for_end(main_pid: i32) -> Result<Option<ChildStatus>, Errno> {
    let signals = [libc::SIGCHLD, libc::SIGUSR1, libc::SIGUSR2];
    loop {
        if let Some(status) = reap_ready(main_pid)? {
            return Ok(Some(status));
        }
        match sys::wait_signal(&signals, IDLE_WAIT)? {
            Some(libc::SIGUSR1) => return Ok(None),
            // The main process is not reaped yet (checked above), so its group id is
            // still its own: the main process called setsid.
            Some(libc::SIGUSR2) => {
                let _ = sys::send_signal(-main_pid, libc::SIGINT);
            }
            _ => {}
        }
    }
}

/// Reaps every child that has ended; returns the main process's status if it was one.
fn reap_ready(main_pid: i32) -> Result<Option<ChildStatus>, Errno> {
    let mut main_status = None;
    loop {
        match sys::wait_any(false) {
            Ok(Some((pid, status))) if pid == main_pid => main_status = Some(status),
            Ok(Some(_)) => {}
            Ok(None) | Err(Errno(libc::ECHILD)) => return Ok(main_status),
            Err(errno) => return Err(errno),
        }
    }
}

/// SIGKILLs every child, reaps, and repeats until no child is left.
fn kill_tree(main_pid: i32, main_status: &mut Option<ChildStatus>) -> Result<(), Errno> {
    loop {
        for pid in crate::children_of_self() {
            let _ = sys::send_signal(pid, libc::SIGKILL);
        }
        if main_status.is_none() {
            // The main process is a child too; name it even if /proc lists nothing.
            let _ = sys::send_signal(main_pid, libc::SIGKILL);
        }
        loop {
            match sys::wait_any(false) {
                Ok(Some((pid, status))) => {
                    if pid == main_pid {
                        *main_status = Some(status);
                    }
                }
                Ok(None) => break,
                Err(Errno(libc::ECHILD)) => return Ok(()),
                Err(errno) => return Err(errno),
            }
        }
        sys::wait_signal(&[libc::SIGCHLD], KILL_ROUND_WAIT)?;
    }
}

fn write_record(status: &mut File, record: StatusRecord) {
    // A failed write means the agent is gone; the parent-death signal ends us.
    let _ = status.write_all(&record.encode());
}

fn io_errno(error: std::io::Error) -> Errno {
    Errno(error.raw_os_error().unwrap_or(libc::EIO))
}
