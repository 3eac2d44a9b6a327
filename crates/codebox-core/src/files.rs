//! Files inside a user's sandbox: stat, list, mkdir, move, remove, streamed
//! download and upload (issue 5).
//!
//! The core checks ownership and the shape of every path (length, NUL) and caps
//! uploads at `limits.max_upload_bytes`; it never resolves a path itself: the
//! sandbox's agent does, inside the sandbox, as `user` (so `..`, absolute paths and
//! symlinks cannot leave the sandbox). The sandbox's disk limit is the kernel's.

use codebox_runtime::{
    FileDownload, FileEntry, FileErrorKind, FileKind, FileWatch, Listing, RuntimeError, UploadBody,
    WriteOptions,
};
use codebox_store::User;
use codebox_types::SandboxId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::CoreError;
use crate::Core;

/// Longest path accepted (the kernel's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Deepest listing (the agent's bound).
pub const MAX_LIST_DEPTH: u32 = 16;

/// One file, directory or symlink, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntryView {
    pub name: String,
    pub path: String,
    /// `file`, `dir`, `symlink` or `other` (FIFO, socket, device).
    #[serde(rename = "type")]
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits, e.g. `420` (`0o644`).
    pub mode: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub modified_at: OffsetDateTime,
    pub symlink_target: Option<String>,
}

impl From<FileEntry> for FileEntryView {
    fn from(entry: FileEntry) -> Self {
        Self {
            name: entry.name,
            path: entry.path,
            kind: entry.kind,
            size: entry.size,
            mode: entry.mode,
            modified_at: OffsetDateTime::from(entry.modified_at),
            symlink_target: entry.symlink_target,
        }
    }
}

/// `GET .../files/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListingView {
    pub entries: Vec<FileEntryView>,
    /// Cut at 10 000 entries.
    pub truncated: bool,
}

impl From<Listing> for ListingView {
    fn from(listing: Listing) -> Self {
        Self {
            entries: listing.entries.into_iter().map(Into::into).collect(),
            truncated: listing.truncated,
        }
    }
}

/// `POST .../files/mkdir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MakeDirRequest {
    pub path: String,
    /// Create missing parents (an existing directory is then fine); default true.
    pub parents: Option<bool>,
}

/// `POST .../files/move`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub from: String,
    pub to: String,
    /// Replace an existing `to`; default false.
    pub overwrite: Option<bool>,
}

/// The result of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadView {
    pub path: String,
    pub size: u64,
}

/// A path as the agent takes it: 1..=4096 bytes, no NUL.
pub fn validate_path(field: &str, path: &str) -> Result<(), CoreError> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.contains('\0') {
        return Err(CoreError::validation(
            field,
            format!("must be 1 to {MAX_PATH_BYTES} bytes without NUL"),
        ));
    }
    Ok(())
}

impl Core {
    /// A running sandbox of `user`, after checking `path`.
    async fn file_sandbox(&self, user: &User, id: &str) -> Result<SandboxId, CoreError> {
        Ok(self.running_sandbox(user, id).await?.id)
    }

    /// Checks that `id` is the user's running sandbox (`NotFound`, `Gone` or
    /// `Conflict` otherwise) before a request commits to more: a multi-file
    /// upload reading its body, a terminal's WebSocket upgrade.
    pub async fn check_running_sandbox(&self, user: &User, id: &str) -> Result<(), CoreError> {
        self.file_sandbox(user, id).await.map(drop)
    }

    /// A file refusal as the client's error; a lost sandbox as `Gone`.
    async fn file_failed(&self, id: &SandboxId, error: RuntimeError) -> CoreError {
        let (kind, detail) = match error {
            RuntimeError::File { kind, detail } => (kind, detail),
            other => return self.exec_failed(id, other).await,
        };
        match kind {
            FileErrorKind::NotFound => CoreError::FileNotFound { detail },
            FileErrorKind::AlreadyExists
            | FileErrorKind::NotADirectory
            | FileErrorKind::IsADirectory
            | FileErrorKind::DirectoryNotEmpty => CoreError::Conflict { message: detail },
            FileErrorKind::TooLarge => CoreError::PayloadTooLarge {
                limit: self.settings.limits.max_upload_bytes,
            },
            FileErrorKind::NoSpace => CoreError::QuotaExceeded {
                resource: "disk",
                limit: self.settings.sandbox_limits.workspace_bytes,
            },
            FileErrorKind::PermissionDenied
            | FileErrorKind::NotRegularFile
            | FileErrorKind::Other => CoreError::validation("path", detail),
        }
    }

    pub async fn stat_file(
        &self,
        user: &User,
        id: &str,
        path: &str,
    ) -> Result<FileEntryView, CoreError> {
        validate_path("path", path)?;
        let sandbox = self.file_sandbox(user, id).await?;
        match self.runtime.stat(&sandbox, path).await {
            Ok(entry) => Ok(entry.into()),
            Err(error) => Err(self.file_failed(&sandbox, error).await),
        }
    }

    pub async fn list_files(
        &self,
        user: &User,
        id: &str,
        path: &str,
        depth: Option<u32>,
    ) -> Result<ListingView, CoreError> {
        validate_path("path", path)?;
        let depth = depth.unwrap_or(1);
        if !(1..=MAX_LIST_DEPTH).contains(&depth) {
            return Err(CoreError::validation(
                "depth",
                format!("must be 1 to {MAX_LIST_DEPTH}"),
            ));
        }
        let sandbox = self.file_sandbox(user, id).await?;
        match self.runtime.list_files(&sandbox, path, depth).await {
            Ok(listing) => Ok(listing.into()),
            Err(error) => Err(self.file_failed(&sandbox, error).await),
        }
    }

    pub async fn make_dir(
        &self,
        user: &User,
        id: &str,
        request: MakeDirRequest,
    ) -> Result<FileEntryView, CoreError> {
        validate_path("path", &request.path)?;
        let sandbox = self.file_sandbox(user, id).await?;
        let parents = request.parents.unwrap_or(true);
        let made = self
            .runtime
            .make_dir(&sandbox, &request.path, parents)
            .await;
        let entry = match made {
            Ok(()) => self.runtime.stat(&sandbox, &request.path).await,
            Err(error) => Err(error),
        };
        match entry {
            Ok(entry) => Ok(entry.into()),
            Err(error) => Err(self.file_failed(&sandbox, error).await),
        }
    }

    pub async fn move_path(
        &self,
        user: &User,
        id: &str,
        request: MoveRequest,
    ) -> Result<FileEntryView, CoreError> {
        validate_path("from", &request.from)?;
        validate_path("to", &request.to)?;
        let sandbox = self.file_sandbox(user, id).await?;
        let overwrite = request.overwrite.unwrap_or(false);
        let moved = self
            .runtime
            .move_path(&sandbox, &request.from, &request.to, overwrite)
            .await;
        let entry = match moved {
            Ok(()) => self.runtime.stat(&sandbox, &request.to).await,
            Err(error) => Err(error),
        };
        match entry {
            Ok(entry) => Ok(entry.into()),
            Err(error) => Err(self.file_failed(&sandbox, error).await),
        }
    }

    pub async fn remove_path(
        &self,
        user: &User,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), CoreError> {
        validate_path("path", path)?;
        let sandbox = self.file_sandbox(user, id).await?;
        match self.runtime.remove_path(&sandbox, path, recursive).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.file_failed(&sandbox, error).await),
        }
    }

    /// Opens a regular file for a streamed download of `length` bytes (or to the
    /// end) from `offset`. FIFOs, sockets and devices are refused, never opened
    /// for reading, so they cannot hang the server.
    pub async fn read_file(
        &self,
        user: &User,
        id: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<FileDownload, CoreError> {
        validate_path("path", path)?;
        let sandbox = self.file_sandbox(user, id).await?;
        match self.runtime.read_file(&sandbox, path, offset, length).await {
            Ok(download) => Ok(download),
            Err(error) => Err(self.file_failed(&sandbox, error).await),
        }
    }

    /// The size of `path` when it is a regular file (to validate a range before
    /// the download starts).
    pub async fn file_size(&self, user: &User, id: &str, path: &str) -> Result<u64, CoreError> {
        let entry = self.stat_file(user, id, path).await?;
        if entry.kind != FileKind::File {
            return Err(CoreError::validation("path", "not a regular file"));
        }
        Ok(entry.size)
    }

    /// Watches a directory (and those below it when `recursive`) from now on.
    pub async fn watch_files(
        &self,
        user: &User,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<FileWatch, CoreError> {
        validate_path("path", path)?;
        let sandbox = self.file_sandbox(user, id).await?;
        match self.runtime.watch(&sandbox, path, recursive).await {
            Ok(watch) => Ok(watch),
            Err(error) => Err(self.file_failed(&sandbox, error).await),
        }
    }

    /// Streams `body` into `path` (parents created, an old file replaced), at most
    /// `limits.max_upload_bytes`; over it or over the sandbox's disk limit nothing
    /// is left behind. `declared` is the body's `Content-Length`, refused early
    /// when already over the cap.
    pub async fn write_file(
        &self,
        user: &User,
        id: &str,
        path: &str,
        declared: Option<u64>,
        body: UploadBody,
    ) -> Result<UploadView, CoreError> {
        validate_path("path", path)?;
        let limit = self.settings.limits.max_upload_bytes;
        // No file can outgrow the workspace (its size is also the per-file size
        // limit of the sandbox): a body over it is refused as a disk overflow
        // before it gets there.
        let disk = self.settings.sandbox_limits.workspace_bytes;
        let disk_full = CoreError::QuotaExceeded {
            resource: "disk",
            limit: disk,
        };
        let sandbox = self.file_sandbox(user, id).await?;
        if declared.is_some_and(|size| size > limit) {
            return Err(CoreError::PayloadTooLarge { limit });
        }
        if declared.is_some_and(|size| size > disk) {
            return Err(disk_full);
        }
        let options = WriteOptions {
            limit: limit.min(disk),
            overwrite: true,
            mode: None,
        };
        match self.runtime.write_file(&sandbox, path, options, body).await {
            Ok(size) => {
                tracing::info!(sandbox_id = %sandbox, bytes = size, "file uploaded");
                Ok(UploadView {
                    path: path.to_owned(),
                    size,
                })
            }
            Err(RuntimeError::File {
                kind: FileErrorKind::TooLarge,
                ..
            }) if disk < limit => Err(disk_full),
            Err(error) => Err(self.file_failed(&sandbox, error).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_bounded_and_nul_free() {
        assert!(validate_path("path", "a/b").is_ok());
        assert!(validate_path("path", "").is_err());
        assert!(validate_path("path", "a\0b").is_err());
        assert!(validate_path("path", &"a".repeat(MAX_PATH_BYTES + 1)).is_err());
    }
}
