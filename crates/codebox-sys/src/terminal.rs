//! The local terminal of an interactive client (`codebox shell`): its window
//! size (`TIOCGWINSZ`) and raw mode (`tcgetattr`/`cfmakeraw`/`tcsetattr`),
//! with the saved settings kept so they can be put back on exit or from a
//! panic hook.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::Errno;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
}

/// `TIOCGWINSZ`: the size of the terminal on `terminal`.
pub fn window_size(terminal: BorrowedFd<'_>) -> Result<WindowSize, Errno> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points
    // at a live, writable value for the duration of the call.
    let ret = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    Errno::result(ret.into())?;
    Ok(WindowSize {
        cols: size.ws_col,
        rows: size.ws_row,
    })
}

/// A terminal's settings as they were before raw mode, to put back.
#[derive(Clone, Copy)]
pub struct SavedTerminal {
    fd: i32,
    settings: libc::termios,
}

impl std::fmt::Debug for SavedTerminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedTerminal")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl SavedTerminal {
    /// Puts the saved settings back at once (`TCSANOW`: pending output is not
    /// dropped). Safe to call more than once, and from a panic hook; an fd
    /// closed meanwhile only yields `EBADF`.
    pub fn restore(&self) -> Result<(), Errno> {
        // SAFETY: `settings` is a valid termios read by tcgetattr; the call
        // only reads it. `fd` is a plain integer (EBADF if no longer open).
        let ret = unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.settings) };
        Errno::result(ret.into()).map(drop)
    }
}

/// Raw mode on a terminal for as long as the guard lives: no echo, no line
/// editing, no signal keys (Ctrl-C reaches the remote side as a byte), no
/// output post-processing. Dropping it restores the previous settings.
#[derive(Debug)]
pub struct RawMode {
    saved: SavedTerminal,
}

impl RawMode {
    /// Saves the settings of the terminal on `terminal` and switches it to raw
    /// mode. Fails with `ENOTTY` when it is not a terminal.
    pub fn enable(terminal: BorrowedFd<'_>) -> Result<RawMode, Errno> {
        let fd = terminal.as_raw_fd();
        // SAFETY: termios is a plain C struct; all-zero is a valid value that
        // tcgetattr overwrites.
        let mut settings: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes one termios through the pointer, which
        // points at a live, writable value.
        let ret = unsafe { libc::tcgetattr(fd, &mut settings) };
        Errno::result(ret.into())?;
        let saved = SavedTerminal { fd, settings };
        let mut raw = settings;
        // SAFETY: cfmakeraw only modifies the termios it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: tcsetattr only reads the termios through the pointer.
        let ret = unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) };
        Errno::result(ret.into())?;
        Ok(RawMode { saved })
    }

    /// The settings to put back, for a panic hook.
    pub fn saved(&self) -> SavedTerminal {
        self.saved
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing better to do with a failure here: the terminal is gone.
        let _ = self.saved.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd as _;

    #[test]
    fn a_pty_reports_its_size_and_round_trips_raw_mode() {
        let (master, slave) = crate::agent::open_pty().expect("a pty");
        crate::agent::set_window_size(master.as_fd(), 91, 27).expect("set size");
        assert_eq!(
            window_size(slave.as_fd()).expect("size"),
            WindowSize { cols: 91, rows: 27 }
        );
        let echo = |fd: BorrowedFd<'_>| {
            // SAFETY: all-zero termios is valid; tcgetattr fills it.
            let mut settings: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: a live, writable termios.
            let ret = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut settings) };
            assert_eq!(ret, 0);
            settings.c_lflag & (libc::ECHO | libc::ICANON)
        };
        let before = echo(slave.as_fd());
        assert_ne!(before, 0, "a fresh pty echoes and edits lines");
        let raw = RawMode::enable(slave.as_fd()).expect("raw mode");
        assert_eq!(echo(slave.as_fd()), 0, "raw: no echo, no line editing");
        drop(raw);
        assert_eq!(echo(slave.as_fd()), before, "restored on drop");
    }

    #[test]
    fn a_pipe_is_not_a_terminal() {
        let (read, _write) = crate::fd::pipe_cloexec().expect("a pipe");
        assert_eq!(
            RawMode::enable(read.as_fd()).map(drop),
            Err(Errno(libc::ENOTTY))
        );
        assert_eq!(
            window_size(read.as_fd()).map(drop),
            Err(Errno(libc::ENOTTY))
        );
    }
}
