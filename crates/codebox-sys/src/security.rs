//! Privilege reduction: `no_new_privs`, the capability bounding, ambient and
//! inheritable sets, rlimits and installing a seccomp filter. All allocation-free
//! (used in the sandbox child before `execve`).

use crate::seccomp::SockFilter;
use crate::Errno;

pub use libc::{RLIMIT_CORE, RLIMIT_FSIZE, RLIMIT_NOFILE};

/// Capability numbers the runtime keeps for the in-sandbox agent.
pub const CAP_CHOWN: u32 = 0;
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_FOWNER: u32 = 3;
pub const CAP_KILL: u32 = 5;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SETPCAP: u32 = 8;

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: execve can never add privileges again.
pub fn set_no_new_privs() -> Result<(), Errno> {
    // SAFETY: prctl with plain integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Errno::result(ret.into()).map(drop)
}

/// Drops every capability `0..=last_cap` from the bounding set except those in
/// `keep` (a bit mask by capability number).
pub fn drop_bounding_set(keep: u64, last_cap: u32) -> Result<(), Errno> {
    for cap in 0..=last_cap.min(63) {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with plain integer arguments.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        match Errno::result(ret.into()) {
            // A capability this kernel does not know is already absent.
            Ok(_) | Err(Errno(libc::EINVAL)) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// Empties the ambient set.
pub fn clear_ambient() -> Result<(), Errno> {
    // SAFETY: prctl with plain integer arguments.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Errno::result(ret.into()).map(drop)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the calling thread's effective and permitted sets to `mask` and the
/// inheritable set to empty.
pub fn set_capabilities(mask: u64) -> Result<(), Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| CapData {
        effective: (mask >> shift) as u32,
        permitted: (mask >> shift) as u32,
        inheritable: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: version 3 takes a header and an array of two data structs, both
    // valid for the whole call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    Errno::result(ret).map(drop)
}

/// Switches all uids and gids to 0 of the caller's (new) user namespace and
/// drops supplementary groups: after the host wrote the id maps, this turns the
/// inherited host root into the namespace's root (an unprivileged host id).
pub fn become_namespace_root() -> Result<(), Errno> {
    // Raw syscalls, not the libc wrappers: glibc's set*id broadcast the change
    // to every thread it believes exists, and in a child cloned from a
    // multithreaded process those threads do not exist (the wrapper can hang).
    // SAFETY: setgroups with a zero count does not read the list pointer.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) };
    Errno::result(ret)?;
    // SAFETY: setresgid/setresuid take plain integers.
    let ret = unsafe { libc::syscall(libc::SYS_setresgid, 0, 0, 0) };
    Errno::result(ret)?;
    // SAFETY: as above.
    let ret = unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) };
    Errno::result(ret).map(drop)
}

/// Sets both the soft and the hard limit of `resource` to `value`.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> Result<(), Errno> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit for the whole call.
    let ret = unsafe { libc::setrlimit(resource, &limit) };
    Errno::result(ret.into()).map(drop)
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const SockFilter,
}

/// Installs `program` as a seccomp filter on the calling thread (inherited by
/// every descendant). Requires `no_new_privs` (or CAP_SYS_ADMIN).
pub fn install_seccomp(program: &[SockFilter]) -> Result<(), Errno> {
    let Ok(len) = libc::c_ushort::try_from(program.len()) else {
        return Err(Errno(libc::E2BIG));
    };
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `len` valid sock_filter structs (SockFilter is
    // repr(C) with the kernel's layout) that outlive the call; the kernel copies
    // the program.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const SockFprog,
        )
    };
    Errno::result(ret).map(drop)
}

/// The highest capability number of the running kernel.
pub fn cap_last_cap() -> std::io::Result<u32> {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "cap_last_cap"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_last_cap() {
        let last = cap_last_cap().expect("procfs");
        assert!((36..64).contains(&last), "{last}");
    }
}
