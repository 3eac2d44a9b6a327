//! Syscalls of the in-sandbox agent (`codebox-agent`): fork of a single-threaded
//! process, reaping, signals, `poll`, and the privilege drop of a user process.
//!
//! Owned by the agent work (helper R2), not by the jail setup: R1, please leave this file
//! to the agent; its only hook in `lib.rs` is `pub mod agent;`. It reuses [`Errno`] and
//! nothing else of the crate, so the two can change independently.
//!
//! The agent is single-threaded by design, so a forked child may allocate and use the
//! standard library freely; [`fork_single_threaded`] checks that before it forks.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::Errno;

/// Which side of a fork the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Child,
    Parent { pid: i32 },
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    Exited(i32),
    Signaled(i32),
}

fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    Errno::result(ret)
}

/// Whether the calling process has exactly one thread (from `/proc/self/stat`).
pub fn is_single_threaded() -> std::io::Result<bool> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces and ')': fields restart after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // After ')' come field 3 (state) onward; num_threads is field 20.
    let threads = rest.split_whitespace().nth(17);
    Ok(threads == Some("1"))
}

/// `fork(2)`, refused unless the process is single-threaded: then the child is an exact
/// copy with no lock held by a vanished thread, and may allocate.
pub fn fork_single_threaded() -> std::io::Result<Fork> {
    if !is_single_threaded()? {
        return Err(std::io::Error::other(
            "fork refused: the process has more than one thread",
        ));
    }
    // SAFETY: the process has one thread (checked just above; this module is only used
    // by the single-threaded agent, which starts no thread in between), so the child
    // inherits no lock held by another thread and may run arbitrary code.
    let pid = check(unsafe { libc::fork() } as libc::c_long).map_err(Errno::into_io)?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent { pid: pid as i32 }
    })
}

/// `_exit(2)`: ends the process without running atexit handlers or flushing stdio
/// buffers copied from the parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// `waitpid(-1)`: reaps any child. `Ok(None)` when `block` is false and no child has
/// ended yet; `Err(ECHILD)` when there are no children at all.
pub fn wait_any(block: bool) -> Result<Option<(i32, ChildStatus)>, Errno> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        match check(pid as libc::c_long) {
            Err(Errno(libc::EINTR)) => continue,
            Err(errno) => return Err(errno),
            Ok(0) => return Ok(None),
            Ok(_) if libc::WIFEXITED(status) => {
                return Ok(Some((pid, ChildStatus::Exited(libc::WEXITSTATUS(status)))))
            }
            Ok(_) if libc::WIFSIGNALED(status) => {
                return Ok(Some((pid, ChildStatus::Signaled(libc::WTERMSIG(status)))))
            }
            // Stopped/continued reports are not requested; ignore any stray one.
            Ok(_) => continue,
        }
    }
}

/// `kill(2)`.
pub fn send_signal(pid: i32, signal: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall with integer arguments.
    check(unsafe { libc::kill(pid, signal) } as libc::c_long).map(drop)
}

fn signal_set(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value, and sigemptyset/sigaddset only
    // write into the set we own; invalid numbers make sigaddset fail harmlessly.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Adds `signals` to the blocked mask of the calling thread (inherited across fork
/// and exec: a child must call [`reset_signals`] before it execs user code).
pub fn block_signals(signals: &[i32]) -> Result<(), Errno> {
    let set = signal_set(signals);
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let ret = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    check(ret as libc::c_long).map(drop)
}

/// A non-blocking, close-on-exec `signalfd` for `signals` (which must be blocked).
pub fn signalfd(signals: &[i32]) -> Result<OwnedFd, Errno> {
    let set = signal_set(signals);
    // SAFETY: `set` is initialised; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    check(fd as libc::c_long)?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads and discards every pending signal of a non-blocking `signalfd`.
pub fn drain_signalfd(fd: &OwnedFd) {
    let mut buffer = [0u8; 16 * std::mem::size_of::<libc::signalfd_siginfo>()];
    loop {
        // SAFETY: `buffer` is writable for its whole length; `fd` is open.
        let read = unsafe { libc::read(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if read <= 0 {
            return;
        }
    }
}

/// `sigtimedwait(2)` on `signals` (which must be blocked): the signal taken, or
/// `None` on timeout.
pub fn wait_signal(signals: &[i32], timeout: Duration) -> Result<Option<i32>, Errno> {
    let set = signal_set(signals);
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `timeout` are initialised; a null siginfo pointer is allowed.
    let ret = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
    match check(ret as libc::c_long) {
        Ok(signal) => Ok(Some(signal as i32)),
        Err(Errno(libc::EAGAIN)) | Err(Errno(libc::EINTR)) => Ok(None),
        Err(errno) => Err(errno),
    }
}

/// `poll(2)` over `fds`; retried on `EINTR` as "nothing ready".
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize, Errno> {
    // SAFETY: the pointer and length describe the caller's initialised slice.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    match check(ret as libc::c_long) {
        Ok(ready) => Ok(ready as usize),
        Err(Errno(libc::EINTR)) => Ok(0),
        Err(errno) => Err(errno),
    }
}

fn fcntl_flag(fd: RawFd, get: i32, set: i32, flag: i32, on: bool) -> Result<(), Errno> {
    // SAFETY: F_GETFL/F_GETFD take no pointer argument.
    let flags = check(unsafe { libc::fcntl(fd, get) } as libc::c_long)? as i32;
    let wanted = if on { flags | flag } else { flags & !flag };
    if wanted != flags {
        // SAFETY: F_SETFL/F_SETFD take an integer argument.
        check(unsafe { libc::fcntl(fd, set, wanted) } as libc::c_long)?;
    }
    Ok(())
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    fcntl_flag(
        fd.as_raw_fd(),
        libc::F_GETFL,
        libc::F_SETFL,
        libc::O_NONBLOCK,
        on,
    )
}

/// Sets or clears `FD_CLOEXEC`.
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    fcntl_flag(
        fd.as_raw_fd(),
        libc::F_GETFD,
        libc::F_SETFD,
        libc::FD_CLOEXEC,
        on,
    )
}

/// Takes ownership of a descriptor inherited from the parent process (the agent's
/// channel, named by an environment variable). Refuses 0-2 and descriptors that are
/// not open. Call it once per descriptor, before anything else could own it.
pub fn take_inherited_fd(fd: RawFd) -> Result<OwnedFd, Errno> {
    if fd < 3 {
        return Err(Errno(libc::EBADF));
    }
    // SAFETY: F_GETFD takes no pointer argument; it fails with EBADF if `fd` is closed.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) } as libc::c_long)?;
    // SAFETY: `fd` is open, was inherited across exec (so no Rust object of this
    // process owns it yet) and the caller takes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `/dev/null` on any of descriptors 0-2 that is closed, so that no pipe or
/// socket created later lands on a standard descriptor by accident.
pub fn ensure_standard_descriptors() -> std::io::Result<()> {
    for fd in 0..3 {
        // SAFETY: F_GETFD takes no pointer argument; it only reports whether `fd` is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // The lowest free number is `fd` itself; leak it on purpose so it stays open.
            let null = std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            let opened = std::os::fd::IntoRawFd::into_raw_fd(null);
            if opened != fd {
                return Err(std::io::Error::other(
                    "/dev/null did not land on a free stdio slot",
                ));
            }
        }
    }
    Ok(())
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `dup2(fd, target)`; when they are equal, clears close-on-exec instead (dup2 would
/// be a no-op and leave the flag).
pub fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> Result<(), Errno> {
    if fd.as_raw_fd() == target {
        return set_cloexec(fd, false);
    }
    // SAFETY: plain syscall; it replaces `target`, which the caller means to reuse
    // (no `OwnedFd` of this process may still own it).
    check(unsafe { libc::dup2(fd.as_raw_fd(), target) } as libc::c_long).map(drop)
}

/// Closes every descriptor from `first` up (`close_range(2)`). Only for a freshly
/// forked child that owns no `OwnedFd` at or above `first` it still means to use.
pub fn close_descriptors_from(first: u32) -> Result<(), Errno> {
    // SAFETY: plain syscall with integer arguments; see the doc for the ownership rule.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    check(ret).map(drop)
}

fn prctl(option: i32, arg: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: the options used here take integer arguments only.
    let ret = unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    check(ret as libc::c_long).map(drop)
}

/// `PR_SET_CHILD_SUBREAPER`: orphaned descendants reparent to the caller.
pub fn set_child_subreaper() -> Result<(), Errno> {
    prctl(libc::PR_SET_CHILD_SUBREAPER, 1)
}

/// `PR_SET_PDEATHSIG`: `signal` is delivered when the parent thread dies.
pub fn set_parent_death_signal(signal: i32) -> Result<(), Errno> {
    prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong)
}

/// `PR_SET_NO_NEW_PRIVS`: execve can never grant privileges again.
pub use crate::security::set_no_new_privs;

/// Empties the bounding and ambient capability sets, so nothing can ever regain a
/// capability. Needs `CAP_SETPCAP`: call it before giving up root.
pub fn drop_capability_bounds() -> Result<(), Errno> {
    // 63 is the highest number a capability mask can hold; the numbers past
    // the kernel's last capability are already absent (EINVAL, skipped).
    crate::security::drop_bounding_set(0, 63)?;
    crate::security::clear_ambient()
}

/// Sets the effective, permitted and inheritable capability sets to empty (after
/// [`become_user`] they already are; this makes it explicit and covers inheritable).
pub fn clear_capability_sets() -> Result<(), Errno> {
    crate::security::set_capabilities(0)
}

/// Becomes `uid`/`gid` for real, effective and saved ids, with no supplementary group.
/// From root this also clears every capability (no `SECBIT_KEEP_CAPS`).
pub fn become_user(uid: u32, gid: u32) -> Result<(), Errno> {
    // SAFETY: a zero-length list with a null pointer is allowed by setgroups.
    check(unsafe { libc::setgroups(0, std::ptr::null()) } as libc::c_long)?;
    // SAFETY: integer-only syscalls.
    check(unsafe { libc::setresgid(gid, gid, gid) } as libc::c_long)?;
    // SAFETY: integer-only syscall.
    check(unsafe { libc::setresuid(uid, uid, uid) } as libc::c_long).map(drop)
}

/// Unblocks every signal and restores the default disposition of each (the agent
/// blocks SIGCHLD and the Rust runtime ignores SIGPIPE; user code must see neither).
pub fn reset_signals() -> Result<(), Errno> {
    for signal in 1..libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition; numbers the kernel rejects
        // (reserved by libc) just fail, which is fine.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    let empty = signal_set(&[]);
    // SAFETY: `empty` is initialised; null old-set pointer allowed.
    let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
    check(ret as libc::c_long).map(drop)
}

/// `setsid(2)`: a new session and process group led by the caller.
pub fn new_session() -> Result<(), Errno> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() } as libc::c_long).map(drop)
}

/// `umask(2)`.
pub fn set_umask(mask: u32) {
    // SAFETY: integer-only syscall that cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// `chdir(2)`.
pub fn change_directory(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string.
    check(unsafe { libc::chdir(path.as_ptr()) } as libc::c_long).map(drop)
}

/// `execve(2)`; returns only on failure.
pub fn execute(path: &CStr, argv: &[CString], env: &[CString]) -> Errno {
    let argv_ptrs = null_terminated(argv);
    let env_ptrs = null_terminated(env);
    // SAFETY: all three are NUL-terminated strings / NULL-terminated arrays of them,
    // kept alive by the borrowed slices until execve returns (or replaces us).
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    Errno::last()
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    let mut pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    pointers.push(std::ptr::null());
    pointers
}

/// `openat2(2)` flags the agent's file worker uses (`RESOLVE_*` of `linux/openat2.h`).
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)`: opens `path` relative to `dir` with `flags` (`O_CLOEXEC` is added)
/// and the `resolve` restrictions. With [`RESOLVE_IN_ROOT`], `dir` acts as `/` for
/// the whole resolution: `..` and absolute symlinks cannot leave it.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve,
    };
    loop {
        // SAFETY: `path` is NUL-terminated, `how` is the kernel's `struct open_how`
        // (three u64) and lives across the call, whose size argument matches it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match check(ret) {
            Ok(fd) => {
                // SAFETY: a fresh descriptor owned by nothing else.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            }
            // openat2 fails with EAGAIN when a rename raced the resolution.
            Err(Errno(libc::EAGAIN)) | Err(Errno(libc::EINTR)) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

/// `openat(2)` of one name in `dir` with `flags` (`O_CLOEXEC` added).
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: `name` is NUL-terminated; the mode is an integer.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    check(fd as libc::c_long)?;
    // SAFETY: a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat(2)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<(), Errno> {
    // SAFETY: `name` is NUL-terminated.
    let ret = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) };
    check(ret as libc::c_long).map(drop)
}

/// `renameat2(2)`; `no_replace` sets `RENAME_NOREPLACE`.
pub fn renameat(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
    no_replace: bool,
) -> Result<(), Errno> {
    let flags: libc::c_uint = if no_replace {
        libc::RENAME_NOREPLACE
    } else {
        0
    };
    // SAFETY: both names are NUL-terminated; integer flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            flags,
        )
    };
    check(ret).map(drop)
}

/// `unlinkat(2)`; `directory` sets `AT_REMOVEDIR`.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, directory: bool) -> Result<(), Errno> {
    let flags = if directory { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `name` is NUL-terminated.
    let ret = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) };
    check(ret as libc::c_long).map(drop)
}

/// `fchdir(2)`.
pub fn fchdir(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: integer-only syscall.
    check(unsafe { libc::fchdir(dir.as_raw_fd()) } as libc::c_long).map(drop)
}

/// `PR_SET_DUMPABLE 0`: no process of the same uid may ptrace the caller or read its
/// `/proc` files (the file worker, whose user is shared with the sandbox's code).
pub fn set_not_dumpable() -> Result<(), Errno> {
    prctl(libc::PR_SET_DUMPABLE, 0)
}

/// A new pseudo-terminal: (master, slave), both close-on-exec, neither the
/// caller's controlling terminal. The slave is opened from the master
/// (`TIOCGPTPEER`), never by a path under `/dev/pts`.
pub fn open_pty() -> Result<(OwnedFd, OwnedFd), Errno> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    let master = ["/dev/ptmx", "/dev/pts/ptmx"]
        .iter()
        .map(|path| {
            let path = CString::new(*path).expect("no NUL in a constant");
            // SAFETY: `path` is NUL-terminated; integer flags.
            let fd = unsafe { libc::open(path.as_ptr(), flags) };
            check(fd as libc::c_long).map(|fd| fd as RawFd)
        })
        .find_map(Result::ok)
        .ok_or(Errno(libc::ENOENT))?;
    // SAFETY: a fresh descriptor owned by nothing else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, alive across the call.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
    check(ret as libc::c_long)?;
    // SAFETY: TIOCGPTPEER takes the open flags as an integer and returns a new fd.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    check(slave as libc::c_long)?;
    // SAFETY: a fresh descriptor owned by nothing else.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// `TIOCSWINSZ`: sets a terminal's size (the kernel signals SIGWINCH to its
/// foreground process group).
pub fn set_window_size(terminal: BorrowedFd<'_>, cols: u16, rows: u16) -> Result<(), Errno> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` through the pointer, alive across the call.
    let ret = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    check(ret as libc::c_long).map(drop)
}

/// `TIOCSCTTY`: makes the terminal on `fd` the controlling terminal of the caller,
/// which must be a session leader without one (right after `setsid`).
pub fn set_controlling_terminal(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    check(ret as libc::c_long).map(drop)
}

/// `inotify_init1(IN_CLOEXEC)`: a blocking inotify instance.
pub fn inotify_init() -> Result<OwnedFd, Errno> {
    // SAFETY: integer-only syscall.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    check(fd as libc::c_long)?;
    // SAFETY: a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `inotify_add_watch(2)`: the watch descriptor of `path` for `mask`.
pub fn inotify_add_watch(inotify: BorrowedFd<'_>, path: &CStr, mask: u32) -> Result<i32, Errno> {
    // SAFETY: `path` is NUL-terminated; integer arguments.
    let wd = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), mask) };
    check(wd as libc::c_long).map(|wd| wd as i32)
}

/// `f_type` of procfs: its files are the kernel's view of processes, not data.
pub const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// `f_type` of sysfs.
pub const SYSFS_MAGIC: i64 = 0x6265_6572;

/// `fstatfs(2)`'s `f_type`: which filesystem the open file lives on.
pub fn filesystem_type(fd: BorrowedFd<'_>) -> Result<i64, Errno> {
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `buf` is a valid, writable statfs alive across the call.
    let ret = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut buf) };
    check(ret as libc::c_long)?;
    // `f_type` is an i64 on x86_64 but narrower on some targets.
    #[allow(clippy::useless_conversion)]
    Ok(i64::from(buf.f_type))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn test_process_is_reported_multithreaded_or_not() {
        // The test harness runs tests on threads, so the process has several.
        assert!(!is_single_threaded().expect("procfs is mounted"));
        assert!(fork_single_threaded().is_err());
    }

    #[test]
    fn nonblocking_and_cloexec_flags_toggle() {
        let (fd, _writer) = pipe().expect("pipe");
        set_nonblocking(fd.as_fd(), true).expect("set");
        let mut file = std::fs::File::from(fd);
        let error = file.read(&mut [0; 1]).expect_err("empty non-blocking pipe");
        assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_pty_carries_bytes_and_takes_a_size() {
        use std::io::Write;
        let (master, slave) = open_pty().expect("devpts is mounted");
        set_window_size(master.as_fd(), 120, 40).expect("resize");
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a `winsize` into `size`, alive across the call.
        let ret = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(ret, 0);
        assert_eq!((size.ws_col, size.ws_row), (120, 40));
        // The master must stay open while the slave reads (its close is a hangup).
        let mut master = std::fs::File::from(master);
        master.write_all(b"x\n").expect("write");
        let mut line = [0u8; 2];
        std::fs::File::from(slave)
            .read_exact(&mut line)
            .expect("read");
        assert_eq!(&line, b"x\n");
    }

    #[test]
    fn inherited_fd_refuses_stdio_and_closed_descriptors() {
        assert_eq!(take_inherited_fd(1).err(), Some(Errno(libc::EBADF)));
        assert_eq!(take_inherited_fd(1_000_000).err(), Some(Errno(libc::EBADF)));
    }

    #[test]
    fn filesystem_type_tells_procfs_apart() {
        let proc_file = std::fs::File::open("/proc/self/status").expect("procfs");
        let kind = filesystem_type(proc_file.as_fd()).expect("fstatfs");
        assert_eq!(kind, PROC_SUPER_MAGIC);
        let here = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).expect("source dir");
        assert_ne!(
            filesystem_type(here.as_fd()).expect("fstatfs"),
            PROC_SUPER_MAGIC
        );
    }
}
