//! Processes: `clone` into new namespaces returning a pidfd, waiting on and
//! signalling a pidfd, and leaving a child without running atexit handlers.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::Errno;

/// A child started by [`clone_child`].
#[derive(Debug)]
pub struct ClonedChild {
    /// Its pid in the caller's PID namespace.
    pub pid: i32,
    /// A pidfd for it, close-on-exec: signals and waits through it can never hit
    /// a recycled pid.
    pub pidfd: OwnedFd,
}

/// `clone(flags | CLONE_PIDFD | SIGCHLD)` with fork semantics (a copy of the
/// address space, no new stack). The child runs `child` and exits with the code
/// it returns (normally it never returns: it calls `execve`).
///
/// The caller may be multithreaded: `child` runs in a copy of the process where
/// only the calling thread exists, so it must not allocate, take locks or touch
/// thread-local state other than `errno` until it calls `execve` or
/// [`exit_now`]. The wrappers of this crate documented as allocation-free meet
/// that bar. Breaking it can deadlock the child (the caller must time it out);
/// it cannot corrupt the caller, which keeps its own address space.
pub fn clone_child(flags: libc::c_int, child: impl FnOnce() -> i32) -> Result<ClonedChild, Errno> {
    let mut pidfd: libc::c_int = -1;
    let full_flags = (flags | libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: with a null stack and no CLONE_VM, clone behaves like fork: the child
    // gets a private copy of the memory and continues on its copy of this stack.
    // `pidfd` is a valid int the kernel writes the pidfd into (CLONE_PIDFD uses
    // the parent_tid argument). The argument order is the x86_64/aarch64 one.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            full_flags,
            std::ptr::null_mut::<libc::c_void>(),
            &mut pidfd as *mut libc::c_int,
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    let pid = Errno::result(ret)?;
    if pid == 0 {
        exit_now(child())
    }
    // SAFETY: CLONE_PIDFD succeeded, so `pidfd` is a fresh fd owned by us only.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(ClonedChild {
        pid: pid as i32,
        pidfd,
    })
}

/// A program and its argv/envp, prepared on the host so that [`ExecArgs::exec`]
/// needs no allocation in the sandbox child.
#[derive(Debug)]
pub struct ExecArgs {
    path: CString,
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the raw pointers point into `_strings`, owned by the same struct and
// never mutated; moving the struct to another thread moves them together.
unsafe impl Send for ExecArgs {}
// SAFETY: as above, shared access only reads.
unsafe impl Sync for ExecArgs {}

impl ExecArgs {
    /// `path` is the program inside the sandbox; `env` entries are `KEY=value`.
    pub fn new(path: CString, argv: Vec<CString>, env: Vec<CString>) -> Self {
        let argc = argv.len();
        let mut strings = argv;
        strings.extend(env);
        // A CString's heap buffer does not move when the Vec holding it does.
        let pointers = |range: &[CString]| {
            let mut list: Vec<*const libc::c_char> = range.iter().map(|s| s.as_ptr()).collect();
            list.push(std::ptr::null());
            list
        };
        let argv = pointers(&strings[..argc]);
        let envp = pointers(&strings[argc..]);
        Self {
            path,
            _strings: strings,
            argv,
            envp,
        }
    }

    /// `execve`; returns only on failure. Allocation-free.
    pub fn exec(&self) -> Errno {
        // SAFETY: path is NUL-terminated; argv and envp are null-terminated arrays
        // of pointers to NUL-terminated strings owned by `self`, alive here.
        unsafe { libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        Errno::last()
    }
}

/// Ends the calling process at once (`_exit`): no destructors or atexit
/// handlers, which would be unsafe in a forked child.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// How a waited-for child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

/// Reaps the child behind `pidfd` if it has ended (`WNOHANG`); `Ok(None)` while
/// it runs.
pub fn try_wait_pidfd(pidfd: &OwnedFd) -> Result<Option<ExitStatus>, Errno> {
    wait_pidfd(pidfd, libc::WNOHANG)
}

/// Blocks until the child behind `pidfd` ends, and reaps it.
pub fn wait_pidfd_blocking(pidfd: &OwnedFd) -> Result<ExitStatus, Errno> {
    loop {
        match wait_pidfd(pidfd, 0) {
            Ok(Some(status)) => return Ok(status),
            Ok(None) | Err(Errno(libc::EINTR)) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

fn wait_pidfd(pidfd: &OwnedFd, extra: libc::c_int) -> Result<Option<ExitStatus>, Errno> {
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: P_PIDFD with a valid pidfd; `info` is a valid, writable siginfo_t.
    let ret = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | extra,
        )
    };
    Errno::result(ret.into())?;
    // SAFETY: waitid filled `info` (or left it zeroed with WNOHANG); si_pid and
    // si_status are valid to read for SIGCHLD infos and zero otherwise.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(if info.si_code == libc::CLD_EXITED {
        ExitStatus::Exited(status)
    } else {
        ExitStatus::Signaled(status)
    }))
}

/// A pidfd registered with the tokio reactor: readable once the process exits.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub struct AsyncPidfd(tokio::io::unix::AsyncFd<OwnedFd>);

#[cfg(feature = "tokio")]
impl AsyncPidfd {
    /// Registers `pidfd` (typically a `try_clone` of [`ClonedChild::pidfd`]).
    /// Must be called inside a tokio runtime.
    pub fn new(pidfd: OwnedFd) -> std::io::Result<Self> {
        let interest = tokio::io::Interest::READABLE;
        // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open (and is not
        // reused for another file) until the AsyncFd is dropped, which
        // deregisters it from the reactor before closing it.
        let registered =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, interest) };
        registered.map(Self).map_err(std::io::Error::from)
    }

    /// Resolves when the process has exited (it is not reaped).
    pub async fn exited(&self) -> std::io::Result<()> {
        self.0.readable().await.map(drop)
    }
}

/// Sends `signal` to the process behind `pidfd`. A process that already exited
/// (`ESRCH`) is not an error.
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: libc::c_int) -> Result<(), Errno> {
    // SAFETY: plain integers and a null siginfo, as pidfd_send_signal allows.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    match Errno::result(ret) {
        Ok(_) | Err(Errno(libc::ESRCH)) => Ok(()),
        Err(errno) => Err(errno),
    }
}

/// `kill(pid, signal)`; `ESRCH` (already gone) is not an error. Only for pids
/// read from a frozen cgroup, which cannot exit and be recycled meanwhile.
pub fn kill(pid: i32, signal: libc::c_int) -> Result<(), Errno> {
    // SAFETY: kill takes plain integers.
    let ret = unsafe { libc::kill(pid, signal) };
    match Errno::result(ret.into()) {
        Ok(_) | Err(Errno(libc::ESRCH)) => Ok(()),
        Err(errno) => Err(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_wait_and_exit_code() {
        let child = clone_child(0, || 7).expect("clone");
        assert!(child.pid > 0);
        assert_eq!(
            wait_pidfd_blocking(&child.pidfd).expect("wait"),
            ExitStatus::Exited(7)
        );
    }

    #[test]
    fn signal_through_pidfd() {
        let child = clone_child(0, || {
            // SAFETY: pause is async-signal-safe; the test kills us.
            unsafe { libc::pause() };
            0
        })
        .expect("clone");
        pidfd_send_signal(&child.pidfd, libc::SIGKILL).expect("kill");
        assert_eq!(
            wait_pidfd_blocking(&child.pidfd).expect("wait"),
            ExitStatus::Signaled(libc::SIGKILL)
        );
        // Signalling a reaped child through its pidfd is harmless.
        pidfd_send_signal(&child.pidfd, libc::SIGKILL).expect("second kill");
    }
}
