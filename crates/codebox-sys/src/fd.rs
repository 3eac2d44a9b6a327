//! File descriptors: socket pairs and pipes created close-on-exec, moving an fd to
//! a fixed number, closing every other fd, and bounded reads with a timeout.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::Errno;

/// A connected `AF_UNIX`/`SOCK_STREAM` pair, both ends close-on-exec.
pub fn socketpair_cloexec() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two ints as socketpair requires.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    Errno::result(ret.into())?;
    // SAFETY: on success both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pipe `(read end, write end)`, both close-on-exec.
pub fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two ints as pipe2 requires.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    Errno::result(ret.into())?;
    // SAFETY: on success both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `dup2(old, new)`: `new` refers to `old`'s file and is NOT close-on-exec.
/// Async-signal-safe (used in the sandbox child).
pub fn dup2(old: RawFd, new: RawFd) -> Result<(), Errno> {
    // SAFETY: dup2 takes plain integers; an invalid fd is reported as EBADF.
    let ret = unsafe { libc::dup2(old, new) };
    Errno::result(ret.into()).map(drop)
}

/// Duplicates `fd` to the lowest free number `>= min`, close-on-exec.
/// Async-signal-safe.
pub fn dup_above(fd: RawFd, min: RawFd) -> Result<RawFd, Errno> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes plain integers.
    let ret = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    Errno::result(ret.into()).map(|fd| fd as RawFd)
}

/// `dup3(old, new, O_CLOEXEC)`. Async-signal-safe.
pub fn dup3_cloexec(old: RawFd, new: RawFd) -> Result<(), Errno> {
    // SAFETY: dup3 takes plain integers; an invalid fd is reported as EBADF.
    let ret = unsafe { libc::dup3(old, new, libc::O_CLOEXEC) };
    Errno::result(ret.into()).map(drop)
}

/// Closes every fd from `first` up. Async-signal-safe (used in the sandbox child).
pub fn close_from(first: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes plain integers; it only closes descriptors, and
    // the caller (a child about to exec) owns every fd of its own table.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    Errno::result(ret).map(drop)
}

/// Opens `path` read-write without allocating, returning the raw fd (no
/// close-on-exec: the caller places it on 0/1/2). Async-signal-safe.
pub fn open_raw(path: &CStr, flags: libc::c_int) -> Result<RawFd, Errno> {
    // SAFETY: `path` is a valid NUL-terminated string for the whole call.
    let ret = unsafe { libc::open(path.as_ptr(), flags, 0o600 as libc::c_uint) };
    Errno::result(ret.into()).map(|fd| fd as RawFd)
}

/// Closes a raw fd (child side). Async-signal-safe.
pub fn close_raw(fd: RawFd) {
    // SAFETY: closing an fd the caller owns; an error leaves nothing to undo.
    unsafe { libc::close(fd) };
}

/// Writes all of `bytes` to a raw fd without allocating. Async-signal-safe.
pub fn write_all_raw(fd: RawFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable slice of `bytes.len()` bytes.
        let ret = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match Errno::result(ret as libc::c_long) {
            Ok(written) => bytes = &bytes[written as usize..],
            Err(Errno(libc::EINTR)) => continue,
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes from a raw fd, or fewer at end of file;
/// returns the count. Async-signal-safe.
pub fn read_full_raw(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid writable slice of `rest.len()` bytes.
        let ret = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        match Errno::result(ret as libc::c_long) {
            Ok(0) => break,
            Ok(read) => filled += read as usize,
            Err(Errno(libc::EINTR)) => continue,
            Err(errno) => return Err(errno),
        }
    }
    Ok(filled)
}

/// Waits until `fd` is readable (or hung up). `Ok(false)` on timeout.
pub fn wait_readable(fd: &OwnedFd, timeout: Duration) -> Result<bool, Errno> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: `pollfd` is one valid, writable pollfd struct.
        let ret = unsafe { libc::poll(&mut pollfd, 1, millis) };
        match Errno::result(ret.into()) {
            Ok(ready) => return Ok(ready > 0),
            Err(Errno(libc::EINTR)) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_round_trip_and_timeout() {
        let (read, write) = pipe_cloexec().expect("pipe");
        assert!(!wait_readable(&read, Duration::from_millis(1)).expect("poll"));
        write_all_raw(write.as_raw_fd(), b"abc").expect("write");
        drop(write);
        assert!(wait_readable(&read, Duration::from_secs(5)).expect("poll"));
        let mut buf = [0u8; 8];
        assert_eq!(read_full_raw(read.as_raw_fd(), &mut buf).expect("read"), 3);
        assert_eq!(&buf[..3], b"abc");
    }

    #[test]
    fn socketpair_ends_are_cloexec() {
        let (a, _b) = socketpair_cloexec().expect("socketpair");
        // SAFETY: F_GETFD on a valid fd we own.
        let flags = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
