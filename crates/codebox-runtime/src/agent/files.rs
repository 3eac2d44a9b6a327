//! Host-side types of file operations inside a sandbox: entries, listings, write
//! options, and the stream of a file being read.

use std::time::{Duration, SystemTime};

pub use codebox_protocol::{FileKind, WatchEvent, WatchKind};
use tokio::sync::{mpsc, oneshot};

use super::error::AgentError;

/// Default byte cap of one upload (the API's default; configurable per request).
pub const DEFAULT_UPLOAD_LIMIT: u64 = 100 << 20;

/// One file, directory or symlink of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    /// Absolute, normalised path inside the sandbox.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub modified_at: SystemTime,
    pub symlink_target: Option<String>,
}

impl From<codebox_protocol::FileEntry> for FileEntry {
    fn from(entry: codebox_protocol::FileEntry) -> Self {
        let millis = Duration::from_millis(entry.modified_ms.unsigned_abs());
        let modified_at = if entry.modified_ms >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(millis)
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(millis)
        };
        Self {
            name: entry.name,
            path: entry.path,
            kind: entry.kind,
            size: entry.size,
            mode: entry.mode & 0o7777,
            modified_at: modified_at.unwrap_or(SystemTime::UNIX_EPOCH),
            symlink_target: entry.symlink_target,
        }
    }
}

/// A directory listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Directory by directory: each directory's entries sorted by name, then those
    /// of its subdirectories.
    pub entries: Vec<FileEntry>,
    /// Cut at `MAX_LIST_ENTRIES` (10 000).
    pub truncated: bool,
}

/// How to write a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Most bytes accepted: more fails with `Refused { code: TooLarge }`, and no
    /// partial file is left.
    pub limit: u64,
    /// Replace an existing file (otherwise `Refused { code: AlreadyExists }`).
    pub overwrite: bool,
    /// Permission bits of the file; `0o644` when `None`.
    pub mode: Option<u32>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            limit: DEFAULT_UPLOAD_LIMIT,
            overwrite: true,
            mode: None,
        }
    }
}

/// What the reader task hands a file operation.
#[derive(Debug)]
pub(crate) enum FileEvent {
    Stat(FileEntry),
    Entries(Vec<FileEntry>),
    ReadStarted { size: u64, length: u64 },
    Data(Vec<u8>),
    Credit(u64),
    Watching,
    Changes(Vec<WatchEvent>),
    Done { bytes: u64, truncated: bool },
    Failed(AgentError),
}

/// A file being read, chunk by chunk. Dropping it before the end cancels the read.
#[derive(Debug)]
pub struct FileRead {
    /// The whole file's size.
    pub size: u64,
    /// Bytes this read delivers (the range, clamped to the file).
    pub length: u64,
    received: u64,
    finished: bool,
    events: mpsc::Receiver<FileEvent>,
    _cancel_on_drop: oneshot::Sender<()>,
}

impl FileRead {
    pub(crate) fn new(
        size: u64,
        length: u64,
        events: mpsc::Receiver<FileEvent>,
        cancel: oneshot::Sender<()>,
    ) -> Self {
        Self {
            size,
            length,
            received: 0,
            finished: false,
            events,
            _cancel_on_drop: cancel,
        }
    }

    /// The next chunk (at most 64 KiB); `None` once all `length` bytes came.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, AgentError>> {
        if self.finished {
            return None;
        }
        let event = self.events.recv().await;
        let outcome = match event {
            Some(FileEvent::Data(data)) => {
                self.received += data.len() as u64;
                return Some(Ok(data));
            }
            Some(FileEvent::Done { bytes, .. }) if bytes == self.received => None,
            Some(FileEvent::Done { .. }) => Some(Err(AgentError::Protocol {
                detail: "a read ended with a different byte count".into(),
            })),
            Some(FileEvent::Failed(error)) => Some(Err(error)),
            Some(_) => Some(Err(AgentError::Protocol {
                detail: "an unexpected event in a read".into(),
            })),
            None => Some(Err(AgentError::Closed)),
        };
        self.finished = true;
        outcome
    }

    /// Reads everything (for small files and tests; the server streams instead).
    pub async fn collect(mut self) -> Result<Vec<u8>, AgentError> {
        // The length comes from the agent: never trust it for an allocation.
        let capacity = self.length.min(1 << 20);
        let mut content = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        while let Some(chunk) = self.next().await {
            content.extend_from_slice(&chunk?);
        }
        Ok(content)
    }
}

/// A watched directory's changes. Dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    finished: bool,
    events: mpsc::Receiver<FileEvent>,
    _cancel_on_drop: oneshot::Sender<()>,
}

impl Watch {
    pub(crate) fn new(events: mpsc::Receiver<FileEvent>, cancel: oneshot::Sender<()>) -> Self {
        Self {
            finished: false,
            events,
            _cancel_on_drop: cancel,
        }
    }

    /// The next batch of changes, in order; `None` once the watched directory is
    /// gone. A `WatchKind::Overflow` event means some changes were lost.
    pub async fn next(&mut self) -> Option<Result<Vec<WatchEvent>, AgentError>> {
        if self.finished {
            return None;
        }
        let outcome = match self.events.recv().await {
            Some(FileEvent::Changes(events)) => return Some(Ok(events)),
            Some(FileEvent::Done { .. }) => None,
            Some(FileEvent::Failed(error)) => Some(Err(error)),
            Some(_) => Some(Err(AgentError::Protocol {
                detail: "an unexpected event in a watch".into(),
            })),
            None => Some(Err(AgentError::Closed)),
        };
        self.finished = true;
        outcome
    }
}
