//! [`AgentConnection`]'s file operations: metadata requests, streamed reads and
//! flow-controlled writes, each carried out inside the sandbox by the agent.

use std::time::Duration;

use codebox_protocol::{
    encode_data, validate_depth, validate_path, HostMessage, InvalidPath, ReadSpec, RequestId,
    Stream, WriteSpec, MAX_DATA_CHUNK, UPLOAD_WINDOW,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use super::connection::AgentConnection;
use super::error::AgentError;
use super::file_reader::FileRoute;
use super::files::{FileEntry, FileEvent, FileRead, Listing, Watch, WriteOptions};
use super::reader::lock;

/// How long the agent may take to answer a file request, or to take more upload
/// bytes (a recursive remove of a big tree takes a while; a stuck worker does not
/// hang the caller).
const FILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Events buffered per operation: 16 read chunks, or the credits of one window.
const FILE_EVENT_CAPACITY: usize = 32;

fn invalid(source: InvalidPath) -> AgentError {
    AgentError::InvalidPath { source }
}

fn protocol(detail: &str) -> AgentError {
    AgentError::Protocol {
        detail: detail.to_owned(),
    }
}

impl AgentConnection {
    /// The entry at `path` (a symlink itself, not its target). Relative paths start
    /// at the user's home.
    pub async fn stat(&self, path: &str) -> Result<FileEntry, AgentError> {
        validate_path(path).map_err(invalid)?;
        let id = self.next_request_id();
        let message = HostMessage::StatPath {
            id,
            path: path.to_owned(),
        };
        let mut op = self.start_file_op(id, &message).await?;
        match op.next().await? {
            FileEvent::Stat(entry) => op.finish(entry),
            _ => Err(protocol("a stat answered with something else")),
        }
    }

    /// The entries under `path`, `depth` levels down (1: its children; at most 16).
    /// Symlinks are listed, never followed.
    pub async fn list(&self, path: &str, depth: u32) -> Result<Listing, AgentError> {
        validate_path(path).map_err(invalid)?;
        validate_depth(depth).map_err(invalid)?;
        let id = self.next_request_id();
        let message = HostMessage::ListDir {
            id,
            path: path.to_owned(),
            depth,
        };
        let mut op = self.start_file_op(id, &message).await?;
        let mut listing = Listing::default();
        loop {
            match op.next().await? {
                FileEvent::Entries(entries) => listing.entries.extend(entries),
                FileEvent::Done { truncated, .. } => {
                    listing.truncated = truncated;
                    return op.finish(listing);
                }
                _ => return Err(protocol("a listing answered with something else")),
            }
        }
    }

    /// Creates a directory (and its missing parents when `parents`; an existing
    /// directory is then fine).
    pub async fn make_dir(&self, path: &str, parents: bool) -> Result<(), AgentError> {
        validate_path(path).map_err(invalid)?;
        let id = self.next_request_id();
        let path = path.to_owned();
        self.simple(id, &HostMessage::MakeDir { id, path, parents })
            .await
    }

    /// Renames `from` to `to`; an existing `to` is replaced only with `overwrite`.
    pub async fn move_path(&self, from: &str, to: &str, overwrite: bool) -> Result<(), AgentError> {
        validate_path(from).map_err(invalid)?;
        validate_path(to).map_err(invalid)?;
        let id = self.next_request_id();
        let message = HostMessage::MovePath {
            id,
            from: from.to_owned(),
            to: to.to_owned(),
            overwrite,
        };
        self.simple(id, &message).await
    }

    /// Removes a file or symlink, or a directory (with its content if `recursive`).
    pub async fn remove(&self, path: &str, recursive: bool) -> Result<(), AgentError> {
        validate_path(path).map_err(invalid)?;
        let id = self.next_request_id();
        let path = path.to_owned();
        self.simple(
            id,
            &HostMessage::RemovePath {
                id,
                path,
                recursive,
            },
        )
        .await
    }

    /// Opens `path` for reading from `offset`, `length` bytes or to the end. Returns
    /// once the agent opened it: `size` and `length` are known, chunks follow with
    /// backpressure. FIFOs, sockets and devices are `Refused { NotRegularFile }`.
    /// Dropping the [`FileRead`] early cancels the read.
    pub async fn read_file(
        &self,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<FileRead, AgentError> {
        validate_path(path).map_err(invalid)?;
        let id = self.next_request_id();
        let message = HostMessage::ReadFile(ReadSpec {
            id,
            path: path.to_owned(),
            offset,
            length,
        });
        let mut op = self.start_file_op(id, &message).await?;
        match op.next().await? {
            FileEvent::ReadStarted { size, length } => {
                let (cancel_tx, cancel_rx) = oneshot::channel();
                let events = op.hand_over(cancel_rx);
                Ok(FileRead::new(size, length, events, cancel_tx))
            }
            _ => Err(protocol("a read answered with something else")),
        }
    }

    /// Watches the directory `path` (and every directory below it when
    /// `recursive`): returns once the watch is set, so every change from then on is
    /// reported (create, write, remove, rename, chmod). Dropping the [`Watch`] stops it.
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<Watch, AgentError> {
        validate_path(path).map_err(invalid)?;
        let id = self.next_request_id();
        let message = HostMessage::WatchPath {
            id,
            path: path.to_owned(),
            recursive,
        };
        let mut op = self.start_file_op(id, &message).await?;
        match op.next().await? {
            FileEvent::Watching => {
                let (cancel_tx, cancel_rx) = oneshot::channel();
                let events = op.hand_over(cancel_rx);
                Ok(Watch::new(events, cancel_tx))
            }
            _ => Err(protocol("a watch answered with something else")),
        }
    }

    /// Writes `body` to `path` (parents created), at most `options.limit` bytes:
    /// streamed with at most 1 MiB in flight, never buffered whole. The file appears
    /// (atomically, replacing an old one) only once complete; on a failure (over the
    /// cap: `TooLarge`; disk or quota full: `NoSpace`) or a cancel nothing is left.
    /// Returns the bytes written.
    pub async fn write_file<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        options: &WriteOptions,
        mut body: R,
    ) -> Result<u64, AgentError> {
        let id = self.next_request_id();
        let spec = WriteSpec {
            id,
            path: path.to_owned(),
            limit: options.limit,
            overwrite: options.overwrite,
            mode: options.mode,
        };
        spec.validate().map_err(invalid)?;
        let mut op = self
            .start_file_op(id, &HostMessage::WriteFile(spec))
            .await?;
        let mut window = UPLOAD_WINDOW;
        let mut sent = 0u64;
        let mut buffer = vec![0u8; MAX_DATA_CHUNK];
        // One byte over the cap is enough for the agent to refuse: the rest of an
        // oversized body is never read.
        while sent <= options.limit {
            while let Some(event) = op.try_next()? {
                window = op.credit(window, event)?;
            }
            if window == 0 {
                let event = op.next().await?;
                window = op.credit(window, event)?;
                continue;
            }
            let want = usize::try_from(window).map_or(buffer.len(), |w| w.min(buffer.len()));
            let read = body
                .read(&mut buffer[..want])
                .await
                .map_err(|source| AgentError::Body { source })?;
            if read == 0 {
                break;
            }
            let mut frame = Vec::with_capacity(read + 16);
            encode_data(id, Stream::File, &buffer[..read], &mut frame);
            self.write_bytes(&frame).await?;
            window -= read as u64;
            sent += read as u64;
        }
        self.send(&HostMessage::CloseStdin { id }).await?;
        loop {
            match op.next().await? {
                FileEvent::Credit(_) => {}
                FileEvent::Done { bytes, .. } if bytes == sent => return op.finish(bytes),
                _ => return Err(protocol("an upload ended with a different byte count")),
            }
        }
    }

    /// A request answered by `FileDone` alone.
    async fn simple(&self, id: RequestId, message: &HostMessage) -> Result<(), AgentError> {
        let mut op = self.start_file_op(id, message).await?;
        match op.next().await? {
            FileEvent::Done { .. } => op.finish(()),
            _ => Err(protocol("a file request answered with something else")),
        }
    }

    /// Registers the operation and sends its request.
    async fn start_file_op(
        &self,
        id: RequestId,
        message: &HostMessage,
    ) -> Result<PendingFileOp, AgentError> {
        let (events_tx, events_rx) = mpsc::channel(FILE_EVENT_CAPACITY);
        let (done_tx, done_rx) = oneshot::channel();
        {
            let mut routes = lock(self.routes());
            if routes.closed {
                return Err(AgentError::Closed);
            }
            let route = FileRoute {
                events: events_tx,
                read_room: None,
                entries: 0,
                _done: Some(done_tx),
            };
            routes.files.insert(id, route);
        }
        let op = PendingFileOp {
            connection: self.clone(),
            id,
            events: Some(events_rx),
            done: Some(done_rx),
            armed: true,
        };
        self.send(message).await?;
        Ok(op)
    }

    /// Sends Kill when `cancelled` fires before the operation's route is gone.
    fn watch_file_cancel(
        &self,
        id: RequestId,
        cancelled: oneshot::Receiver<()>,
        done: oneshot::Receiver<()>,
    ) {
        let connection = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancelled => {
                    tracing::debug!(id, "file read dropped: cancelling it");
                    lock(connection.routes()).files.remove(&id);
                    let _ = connection.send(&HostMessage::Kill { id }).await;
                }
                _ = done => {}
            }
        });
    }
}

/// A file operation being waited for. Dropped before it finished (the caller's
/// future was dropped, or it failed half-way), it cancels the operation.
struct PendingFileOp {
    connection: AgentConnection,
    id: RequestId,
    events: Option<mpsc::Receiver<FileEvent>>,
    done: Option<oneshot::Receiver<()>>,
    armed: bool,
}

impl PendingFileOp {
    fn receiver(&mut self) -> &mut mpsc::Receiver<FileEvent> {
        self.events
            .as_mut()
            .expect("the events are handed over only by consuming methods")
    }

    /// The next event within [`FILE_TIMEOUT`]; an agent error ends the operation.
    async fn next(&mut self) -> Result<FileEvent, AgentError> {
        match tokio::time::timeout(FILE_TIMEOUT, self.receiver().recv()).await {
            Ok(Some(FileEvent::Failed(error))) => {
                self.armed = false;
                Err(error)
            }
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(AgentError::Closed),
            Err(_) => Err(AgentError::Timeout {
                operation: "a file operation",
                timeout: FILE_TIMEOUT,
            }),
        }
    }

    fn try_next(&mut self) -> Result<Option<FileEvent>, AgentError> {
        match self.receiver().try_recv() {
            Ok(FileEvent::Failed(error)) => {
                self.armed = false;
                Err(error)
            }
            Ok(event) => Ok(Some(event)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(AgentError::Closed),
        }
    }

    /// The upload window after `event`, which must be a credit.
    fn credit(&self, window: u64, event: FileEvent) -> Result<u64, AgentError> {
        match event {
            FileEvent::Credit(bytes) => window
                .checked_add(bytes)
                .filter(|window| *window <= UPLOAD_WINDOW)
                .ok_or_else(|| protocol("more upload credit than bytes sent")),
            _ => Err(protocol("an upload answered before its end")),
        }
    }

    fn finish<T>(mut self, value: T) -> Result<T, AgentError> {
        self.armed = false;
        Ok(value)
    }

    /// Passes the event stream on (to a [`FileRead`]); its drop then cancels.
    fn hand_over(mut self, cancelled: oneshot::Receiver<()>) -> mpsc::Receiver<FileEvent> {
        self.armed = false;
        let done = self.done.take().expect("present until handed over");
        self.connection.watch_file_cancel(self.id, cancelled, done);
        self.events.take().expect("present until handed over")
    }
}

impl Drop for PendingFileOp {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        lock(self.connection.routes()).files.remove(&self.id);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let connection = self.connection.clone();
        let id = self.id;
        runtime.spawn(async move {
            let _ = connection.send(&HostMessage::Kill { id }).await;
        });
    }
}
