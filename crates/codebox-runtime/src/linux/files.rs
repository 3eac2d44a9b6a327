//! [`LinuxRuntime`]'s file operations: each `Runtime` file method is the matching
//! request of the sandbox's agent connection (`agent::file_client`). The agent
//! resolves every path inside the sandbox as `user`; this file never touches a
//! sandbox path on the host, and must not touch the jail, cgroups or the pool.
//!
//! It keeps the agent's refusal code (`RuntimeError::File`) so the API can answer
//! "not found" or "disk full" instead of a generic bad request.

use codebox_protocol::ErrorCode;
use codebox_types::SandboxId;

use super::LinuxRuntime;
use crate::agent::{is_file_code, AgentError};
use crate::{
    FileDownload, FileEntry, FileErrorKind, FileWatch, Listing, RuntimeError, UploadBody,
    WriteOptions,
};

/// Chunks buffered between the agent's read and the HTTP body (64 KiB each).
const DOWNLOAD_CAPACITY: usize = 4;
/// Change batches buffered between the agent and a slow watcher.
const WATCH_CAPACITY: usize = 16;

/// An agent error as the runtime's, keeping file refusal codes.
fn file_error(error: AgentError) -> RuntimeError {
    match error {
        AgentError::Refused { code, message } if is_file_code(code) => RuntimeError::File {
            kind: file_kind(code),
            detail: message,
        },
        other => other.into(),
    }
}

fn file_kind(code: ErrorCode) -> FileErrorKind {
    match code {
        ErrorCode::NotFound => FileErrorKind::NotFound,
        ErrorCode::PermissionDenied => FileErrorKind::PermissionDenied,
        ErrorCode::AlreadyExists => FileErrorKind::AlreadyExists,
        ErrorCode::NotADirectory => FileErrorKind::NotADirectory,
        ErrorCode::IsADirectory => FileErrorKind::IsADirectory,
        ErrorCode::DirectoryNotEmpty => FileErrorKind::DirectoryNotEmpty,
        ErrorCode::NotRegularFile => FileErrorKind::NotRegularFile,
        ErrorCode::NoSpace => FileErrorKind::NoSpace,
        ErrorCode::TooLarge => FileErrorKind::TooLarge,
        _ => FileErrorKind::Other,
    }
}

impl LinuxRuntime {
    pub(super) async fn file_stat(
        &self,
        id: &SandboxId,
        path: &str,
    ) -> Result<FileEntry, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        agent.stat(path).await.map_err(file_error)
    }

    pub(super) async fn file_list(
        &self,
        id: &SandboxId,
        path: &str,
        depth: u32,
    ) -> Result<Listing, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        agent.list(path, depth).await.map_err(file_error)
    }

    pub(super) async fn file_make_dir(
        &self,
        id: &SandboxId,
        path: &str,
        parents: bool,
    ) -> Result<(), RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        agent.make_dir(path, parents).await.map_err(file_error)
    }

    pub(super) async fn file_move(
        &self,
        id: &SandboxId,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<(), RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        agent
            .move_path(from, to, overwrite)
            .await
            .map_err(file_error)
    }

    pub(super) async fn file_remove(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<(), RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        agent.remove(path, recursive).await.map_err(file_error)
    }

    /// Opens the read, then pumps its chunks into a [`FileDownload`] from a task;
    /// the consumer dropping the download ends the task, which drops the agent's
    /// read and so cancels it.
    pub(super) async fn file_read(
        &self,
        id: &SandboxId,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<FileDownload, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        let mut read = agent
            .read_file(path, offset, length)
            .await
            .map_err(file_error)?;
        let (tx, download) = FileDownload::channel(read.size, read.length, DOWNLOAD_CAPACITY);
        tokio::spawn(async move {
            while let Some(chunk) = read.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk.map_err(file_error)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(download)
    }

    /// Sets the watch, then pumps its batches into a [`FileWatch`] from a task;
    /// the consumer dropping it ends the task, which drops (stops) the watch.
    pub(super) async fn file_watch(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<FileWatch, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        let mut watch = agent.watch(path, recursive).await.map_err(file_error)?;
        let (tx, file_watch) = FileWatch::channel(WATCH_CAPACITY);
        tokio::spawn(async move {
            while let Some(batch) = watch.next().await {
                let failed = batch.is_err();
                if tx.send(batch.map_err(file_error)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(file_watch)
    }

    pub(super) async fn file_write(
        &self,
        id: &SandboxId,
        path: &str,
        options: WriteOptions,
        body: UploadBody,
    ) -> Result<u64, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        let written = agent
            .write_file(path, &options, body)
            .await
            .map_err(file_error)?;
        tracing::debug!(sandbox_id = %id, bytes = written, "file written");
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_refusals_keep_their_code() {
        let error = file_error(AgentError::Refused {
            code: ErrorCode::NoSpace,
            message: "disk quota exceeded".into(),
        });
        assert!(matches!(
            error,
            RuntimeError::File {
                kind: FileErrorKind::NoSpace,
                ..
            }
        ));
        let lost = file_error(AgentError::Closed);
        assert!(matches!(lost, RuntimeError::AgentLost { .. }));
    }
}
