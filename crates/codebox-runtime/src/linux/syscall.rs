//! The seam between the jail plan and the kernel (youki's `Syscall` idea): the
//! plan executor calls [`Syscall`], [`LinuxSyscall`] forwards to `codebox-sys`,
//! and the recording fake in the tests checks the exact call sequence without
//! root.
//!
//! Every method of [`LinuxSyscall`] is allocation-free: the executor runs in the
//! forked sandbox child of a multithreaded process.

use std::ffi::CStr;
use std::os::fd::RawFd;

use codebox_sys::process::ExecArgs;
use codebox_sys::seccomp::SockFilter;
use codebox_sys::{fd, fs, mount, namespace, security, Errno};

/// The agent channel's fd number in the sandbox (the contract with the agent).
pub const AGENT_FD: RawFd = 3;
/// Where the setup error pipe is kept until `execve` closes it (close-on-exec).
pub const ERROR_FD: RawFd = 4;

/// The syscalls the jail setup makes, one method per operation.
pub trait Syscall {
    /// Blocks until the host has written the id maps and placed the child in its
    /// cgroup (one byte on the sync pipe); EOF means the host gave up.
    fn await_parent(&self, sync_fd: RawFd) -> Result<(), Errno>;
    /// Becomes uid/gid 0 of the new user namespace, no supplementary groups.
    fn become_namespace_root(&self) -> Result<(), Errno>;
    fn unshare(&self, flags: libc::c_int) -> Result<(), Errno>;
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> Result<(), Errno>;
    fn mount_setattr(&self, path: &CStr, recursive: bool, attrs: u64) -> Result<(), Errno>;
    fn umount_detach(&self, target: &CStr) -> Result<(), Errno>;
    fn mkdir(&self, path: &CStr, mode: u32) -> Result<(), Errno>;
    fn touch(&self, path: &CStr) -> Result<(), Errno>;
    fn symlink(&self, target: &CStr, link: &CStr) -> Result<(), Errno>;
    fn chdir(&self, path: &CStr) -> Result<(), Errno>;
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno>;
    fn sethostname(&self, name: &[u8]) -> Result<(), Errno>;
    fn loopback_up(&self) -> Result<(), Errno>;
    /// Points fds 0, 1 and 2 at `/dev/null`.
    fn null_stdio(&self) -> Result<(), Errno>;
    /// Moves the agent channel to [`AGENT_FD`] (inheritable) and the error pipe
    /// to [`ERROR_FD`] (close-on-exec), then closes every other fd above 2.
    fn arrange_fds(&self, agent: RawFd, error: RawFd) -> Result<(), Errno>;
    fn set_rlimit(&self, resource: libc::__rlimit_resource_t, value: u64) -> Result<(), Errno>;
    fn clear_ambient(&self) -> Result<(), Errno>;
    fn drop_bounding_set(&self, keep: u64, last_cap: u32) -> Result<(), Errno>;
    fn no_new_privs(&self) -> Result<(), Errno>;
    fn seccomp(&self, program: &[SockFilter]) -> Result<(), Errno>;
    /// Returns only on failure.
    fn exec(&self, args: &ExecArgs) -> Errno;
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn await_parent(&self, sync_fd: RawFd) -> Result<(), Errno> {
        let mut byte = [0u8; 1];
        match fd::read_full_raw(sync_fd, &mut byte)? {
            1 => Ok(()),
            _ => Err(Errno(libc::EPIPE)),
        }
    }

    fn become_namespace_root(&self) -> Result<(), Errno> {
        security::become_namespace_root()
    }

    fn unshare(&self, flags: libc::c_int) -> Result<(), Errno> {
        namespace::unshare(flags)
    }

    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        mount::mount(source, target, fstype, flags, data)
    }

    fn mount_setattr(&self, path: &CStr, recursive: bool, attrs: u64) -> Result<(), Errno> {
        mount::mount_setattr(path, recursive, attrs)
    }

    fn umount_detach(&self, target: &CStr) -> Result<(), Errno> {
        mount::umount2(target, mount::MNT_DETACH)
    }

    fn mkdir(&self, path: &CStr, mode: u32) -> Result<(), Errno> {
        fs::mkdir(path, mode)
    }

    fn touch(&self, path: &CStr) -> Result<(), Errno> {
        fs::touch(path, 0o644)
    }

    fn symlink(&self, target: &CStr, link: &CStr) -> Result<(), Errno> {
        fs::symlink(target, link)
    }

    fn chdir(&self, path: &CStr) -> Result<(), Errno> {
        fs::chdir(path)
    }

    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
        mount::pivot_root(new_root, put_old)
    }

    fn sethostname(&self, name: &[u8]) -> Result<(), Errno> {
        namespace::sethostname(name)
    }

    fn loopback_up(&self) -> Result<(), Errno> {
        namespace::loopback_up()
    }

    fn null_stdio(&self) -> Result<(), Errno> {
        let null = fd::open_raw(c"/dev/null", libc::O_RDWR)?;
        for target in 0..3 {
            fd::dup2(null, target)?;
        }
        if null > 2 {
            fd::close_raw(null);
        }
        Ok(())
    }

    fn arrange_fds(&self, agent: RawFd, error: RawFd) -> Result<(), Errno> {
        // Park both above the targets first so neither dup2 clobbers the other.
        let agent_high = fd::dup_above(agent, 10)?;
        let error_high = fd::dup_above(error, 10)?;
        fd::dup2(agent_high, AGENT_FD)?;
        fd::dup3_cloexec(error_high, ERROR_FD)?;
        fd::close_from(ERROR_FD as u32 + 1)
    }

    fn set_rlimit(&self, resource: libc::__rlimit_resource_t, value: u64) -> Result<(), Errno> {
        security::set_rlimit(resource, value)
    }

    fn clear_ambient(&self) -> Result<(), Errno> {
        security::clear_ambient()
    }

    fn drop_bounding_set(&self, keep: u64, last_cap: u32) -> Result<(), Errno> {
        security::drop_bounding_set(keep, last_cap)
    }

    fn no_new_privs(&self) -> Result<(), Errno> {
        security::set_no_new_privs()
    }

    fn seccomp(&self, program: &[SockFilter]) -> Result<(), Errno> {
        security::install_seccomp(program)
    }

    fn exec(&self, args: &ExecArgs) -> Errno {
        args.exec()
    }
}
