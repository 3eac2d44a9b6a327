//! Filesystem calls used while building a sandbox root (no allocation: safe in
//! the sandbox child) and `statfs` for workspace usage on the host.

use std::ffi::CStr;

use crate::Errno;

/// `mkdir(path, mode)`; an existing directory is not an error.
pub fn mkdir(path: &CStr, mode: u32) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string for the whole call.
    let ret = unsafe { libc::mkdir(path.as_ptr(), mode) };
    match Errno::result(ret.into()) {
        Err(Errno(libc::EEXIST)) | Ok(_) => Ok(()),
        Err(errno) => Err(errno),
    }
}

/// Creates an empty regular file (a bind-mount target); existing is fine.
pub fn touch(path: &CStr, mode: u32) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string for the whole call.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    };
    let fd = Errno::result(fd.into())?;
    // SAFETY: `fd` was just opened by us and is closed exactly once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// `symlink(target, link)`; an existing link is not an error.
pub fn symlink(target: &CStr, link: &CStr) -> Result<(), Errno> {
    // SAFETY: both are valid NUL-terminated strings for the whole call.
    let ret = unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
    match Errno::result(ret.into()) {
        Err(Errno(libc::EEXIST)) | Ok(_) => Ok(()),
        Err(errno) => Err(errno),
    }
}

/// `chdir(path)`.
pub fn chdir(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string for the whole call.
    let ret = unsafe { libc::chdir(path.as_ptr()) };
    Errno::result(ret.into()).map(drop)
}

/// Usage of the filesystem holding `path`, in bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub used_inodes: u64,
}

/// `statfs(path)`, summarised.
pub fn statfs(path: &CStr) -> Result<FsUsage, Errno> {
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `buf` is a valid, writable statfs.
    let ret = unsafe { libc::statfs(path.as_ptr(), &mut buf) };
    Errno::result(ret.into())?;
    let block = buf.f_bsize as u64;
    Ok(FsUsage {
        total_bytes: buf.f_blocks.saturating_mul(block),
        used_bytes: buf
            .f_blocks
            .saturating_sub(buf.f_bfree)
            .saturating_mul(block),
        total_inodes: buf.f_files,
        used_inodes: buf.f_files.saturating_sub(buf.f_ffree),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statfs_of_root_is_plausible() {
        let usage = statfs(c"/").expect("statfs /");
        assert!(usage.total_bytes > 0);
        assert!(usage.used_bytes <= usage.total_bytes);
    }

    #[test]
    fn mkdir_twice_is_fine() {
        let dir = std::env::temp_dir().join(format!("codebox-sys-mkdir-{}", std::process::id()));
        let path = std::ffi::CString::new(dir.to_str().expect("utf-8 temp dir")).expect("no NUL");
        mkdir(&path, 0o700).expect("first");
        mkdir(&path, 0o700).expect("second");
        std::fs::remove_dir(&dir).expect("cleanup");
    }
}
