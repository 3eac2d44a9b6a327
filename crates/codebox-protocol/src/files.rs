//! Messages of file operations inside the sandbox (protocol version 3).
//!
//! Every file operation is carried out by the agent inside the sandbox, by a worker
//! process running as the sandbox's user (uid 1000, no capability): the host never
//! resolves a sandbox path itself. A path is resolved in the agent's file root (the
//! sandbox's `/`), relative paths against the user's home, and `..` never climbs above
//! the root.
//!
//! * `StatPath` -> `PathStat`; `ListDir` -> `DirEntries`* then `FileDone`;
//!   `MakeDir`, `MovePath`, `RemovePath` -> `FileDone`.
//! * `ReadFile` -> `FileReadStarted` (the file's size and how many bytes follow), data
//!   on the `file` stream, then `FileDone`.
//! * `WriteFile`, then data on the `file` stream and `CloseStdin` (the end of the
//!   upload) -> `FileDone`. Flow control: the host keeps at most [`UPLOAD_WINDOW`]
//!   bytes unacknowledged; the agent acknowledges bytes handed to the worker with
//!   `Credit`. A write goes to a temporary file renamed over the target at the end, so
//!   a failed or cancelled upload leaves no partial file (and an old file intact).
//! * `WatchPath` -> `Watching` once the inotify watches are set, then `FileEvents`
//!   batches for as long as the host keeps it (`Kill` stops it); it ends by itself
//!   with `FileDone` when the watched directory goes away. When events come faster
//!   than the host reads them, the kernel queue overflows and an `overflow` event says
//!   some were lost (memory stays bounded on both sides).
//! * Any of them may end with `Error` instead (codes `not_found`, `not_regular_file`,
//!   `no_space`, `too_large`, ...). `Kill` cancels an operation; nothing more is sent
//!   for it.

use serde::{Deserialize, Serialize};

use crate::RequestId;

/// Longest path of a file request, in bytes (the kernel's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most entries one listing returns; the rest is cut and flagged.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Entries per `DirEntries` message (keeps each frame far below the frame limit:
/// an entry is at most two paths and a name, about 8.5 KiB, times 64 is 550 KiB).
pub const LIST_BATCH: usize = 64;
/// Deepest listing.
pub const MAX_LIST_DEPTH: u32 = 16;
/// Unacknowledged upload bytes the host may have in flight.
pub const UPLOAD_WINDOW: u64 = 1 << 20;

/// Most directories one recursive watch covers (each costs a kernel watch).
pub const MAX_WATCHED_DIRS: usize = 8192;
/// Events per `FileEvents` message.
pub const WATCH_BATCH: usize = 128;

/// What happened to a watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchKind {
    Create,
    Write,
    Remove,
    /// Moved away (`path` is the old name) or moved in (the new name).
    Rename,
    /// Permissions, owner or timestamps changed.
    Chmod,
    /// Events were lost (the queue overflowed); `path` is the watched root.
    Overflow,
    #[serde(other)]
    Unknown,
}

/// One change under a watched directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub kind: WatchKind,
    /// Absolute, normalised path inside the sandbox.
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
}

/// What a directory entry is. Symlinks are never followed when listing or stating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device: listed, never read or written.
    Other,
}

/// One file, directory or symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Absolute, normalised path inside the sandbox.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Milliseconds since the Unix epoch.
    pub modified_ms: i64,
    #[serde(default)]
    pub symlink_target: Option<String>,
}

/// Reads a file, or `length` bytes of it from `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSpec {
    pub id: RequestId,
    pub path: String,
    #[serde(default)]
    pub offset: u64,
    /// To the end of the file when absent.
    #[serde(default)]
    pub length: Option<u64>,
}

/// Writes a file from the bytes that follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSpec {
    pub id: RequestId,
    pub path: String,
    /// Most bytes accepted; more fails with `too_large` and the partial file is gone.
    pub limit: u64,
    /// Replace an existing file (otherwise `already_exists`).
    #[serde(default = "yes")]
    pub overwrite: bool,
    /// Permission bits of the new file; `0o644` when absent.
    #[serde(default)]
    pub mode: Option<u32>,
}

fn yes() -> bool {
    true
}

/// Why a file request is refused before anything is done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPath {
    #[error("the path is empty")]
    Empty,
    #[error("the path contains a NUL byte")]
    NulByte,
    #[error("the path is {len} bytes, over the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("the listing depth must be between 1 and {max}")]
    BadDepth { max: u32 },
    #[error("the mode {mode:#o} has bits outside 0o7777")]
    BadMode { mode: u32 },
}

/// Checks a path of a file request.
pub fn validate_path(path: &str) -> Result<(), InvalidPath> {
    if path.is_empty() {
        return Err(InvalidPath::Empty);
    }
    if path.contains('\0') {
        return Err(InvalidPath::NulByte);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(InvalidPath::TooLong {
            len: path.len(),
            max: MAX_PATH_BYTES,
        });
    }
    Ok(())
}

/// Checks a listing depth.
pub fn validate_depth(depth: u32) -> Result<(), InvalidPath> {
    if depth == 0 || depth > MAX_LIST_DEPTH {
        return Err(InvalidPath::BadDepth {
            max: MAX_LIST_DEPTH,
        });
    }
    Ok(())
}

impl WriteSpec {
    pub fn validate(&self) -> Result<(), InvalidPath> {
        validate_path(&self.path)?;
        match self.mode {
            Some(mode) if mode & !0o7777 != 0 => Err(InvalidPath::BadMode { mode }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert_eq!(validate_path("a/b"), Ok(()));
        assert_eq!(validate_path(""), Err(InvalidPath::Empty));
        assert_eq!(validate_path("a\0b"), Err(InvalidPath::NulByte));
        let long = "x".repeat(MAX_PATH_BYTES + 1);
        assert!(matches!(
            validate_path(&long),
            Err(InvalidPath::TooLong { .. })
        ));
        assert!(validate_depth(0).is_err());
        assert!(validate_depth(MAX_LIST_DEPTH + 1).is_err());
        assert_eq!(validate_depth(1), Ok(()));
    }

    #[test]
    fn write_defaults_and_mode_check() {
        let spec: WriteSpec =
            serde_json::from_str(r#"{"id":1,"path":"x","limit":5}"#).expect("parses");
        assert!(spec.overwrite);
        assert_eq!(spec.mode, None);
        let bad = WriteSpec {
            mode: Some(0o10000),
            ..spec
        };
        assert!(matches!(bad.validate(), Err(InvalidPath::BadMode { .. })));
    }

    #[test]
    fn entries_have_a_stable_shape() {
        let entry = FileEntry {
            name: "a".into(),
            path: "/home/user/a".into(),
            kind: FileKind::Symlink,
            size: 1,
            mode: 0o777,
            modified_ms: 5,
            symlink_target: Some("/".into()),
        };
        let json = serde_json::to_value(&entry).expect("serializes");
        assert_eq!(json["kind"], "symlink");
        assert_eq!(json["symlink_target"], "/");
    }
}
