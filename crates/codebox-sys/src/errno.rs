//! The error of every wrapper: the raw `errno`, with no allocation so it can be
//! produced and reported from a sandbox child before `execve`.

use std::fmt;

/// A failed syscall's `errno`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Self {
        // SAFETY: `__errno_location` returns a valid pointer to the calling
        // thread's errno for the life of the thread.
        Errno(unsafe { *libc::__errno_location() })
    }

    /// Turns a `-1` return into `Err(Errno::last())`.
    pub(crate) fn result(ret: libc::c_long) -> Result<libc::c_long, Errno> {
        if ret == -1 {
            Err(Errno::last())
        } else {
            Ok(ret)
        }
    }

    /// The same error as a `std::io::Error`.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.0)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({}: {})", self.0, self.into_io())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.into_io(), f)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(errno: Errno) -> Self {
        errno.into_io()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_the_os_message() {
        let text = Errno(libc::ENOENT).to_string();
        assert!(text.contains("No such file"), "{text}");
    }
}
