//! Namespace operations done from inside a new sandbox: `unshare`, the UTS
//! hostname, and bringing the loopback interface of a fresh network namespace up.

use std::os::fd::RawFd;

use crate::Errno;

pub use libc::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER,
    CLONE_NEWUTS,
};

/// `unshare(flags)`.
pub fn unshare(flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: unshare takes a plain flag word.
    let ret = unsafe { libc::unshare(flags) };
    Errno::result(ret.into()).map(drop)
}

/// `sethostname(name)`.
pub fn sethostname(name: &[u8]) -> Result<(), Errno> {
    // SAFETY: `name` is a valid readable slice of the length passed.
    let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    Errno::result(ret.into()).map(drop)
}

/// Sets `IFF_UP` on `lo` in the caller's network namespace. Allocation-free.
pub fn loopback_up() -> Result<(), Errno> {
    // SAFETY: socket takes plain integers.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let sock = Errno::result(sock.into())? as RawFd;
    let result = set_up(sock);
    // SAFETY: `sock` was opened above and is closed exactly once.
    unsafe { libc::close(sock) };
    result
}

fn set_up(sock: RawFd) -> Result<(), Errno> {
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into a valid, writable ifreq naming `lo`.
    let ret = unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut request) };
    Errno::result(ret.into())?;
    // SAFETY: the kernel filled the flags member of the union for SIOCGIFFLAGS.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq naming `lo` with its flags set.
    let ret = unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &request) };
    Errno::result(ret.into()).map(drop)
}
