//! The host side of a sandbox: create, supervise, exec in and destroy isolated
//! Linux sandboxes, behind the [`Runtime`] trait.
//!
//! The API layer touches sandboxes only through this trait, so a sandbox can later
//! live on another node. This crate owns cgroups, the jail setup sequence, the warm
//! pool and the host end of the agent channel; it knows nothing of HTTP or SQL and
//! holds no `unsafe` (every syscall wrapper lives in `codebox-sys`).

pub mod agent;

pub mod cgroup;
#[cfg(feature = "fake")]
pub mod fake;
#[cfg(feature = "fake")]
mod fake_code;
#[cfg(feature = "fake")]
mod fake_files;
#[cfg(feature = "fake")]
mod fake_processes;
#[cfg(feature = "fake")]
mod fake_pty;
pub mod linux;
mod terminal;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use codebox_types::{Resources, RuntimeInfo, SandboxId, TerminationReason};
use tokio::io::AsyncRead;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use agent::{
    CodeEvent, CodeOutput, CodeRequest, CodeStream, ContextInfo, ContextRequest, ExecutionError,
    ExecutionOutcome, ExecutionResult, ExecutionSummary, Language, MAX_CODE_BYTES,
};
pub use agent::{
    FileEntry, FileKind, Listing, WatchEvent, WatchKind, WriteOptions, DEFAULT_UPLOAD_LIMIT,
};
pub use agent::{ProcessInfo, ProcessRequest, Subscription, ALLOWED_SIGNALS};
pub use agent::{PtyRequest, MAX_TERMINAL_SIZE};
pub use linux::{LinuxRuntime, LinuxRuntimeConfig};
pub use terminal::{PtyControl, PtyInput, PtySession};

/// Per-sandbox limits that are not part of the public `resources` (they come from
/// config). Defaults are the security requirements' table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Processes and threads in the sandbox's cgroup.
    pub pids: u32,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// Bytes writable under `/home/user`.
    pub workspace_bytes: u64,
    /// Inodes under `/home/user`.
    pub workspace_inodes: u64,
    /// Bytes writable under `/tmp`.
    pub tmp_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            pids: 256,
            open_files: 1024,
            workspace_bytes: 1 << 30,
            workspace_inodes: 100_000,
            tmp_bytes: 256 << 20,
        }
    }
}

/// Everything needed to create one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Chosen by the caller so it can be persisted before the sandbox exists.
    pub id: SandboxId,
    /// Canonical runtime name, one of [`Runtime::runtimes`].
    pub runtime: String,
    pub resources: Resources,
    pub limits: SandboxLimits,
    /// Sandbox-wide environment, merged under each exec's own `env`.
    pub env: BTreeMap<String, String>,
    /// Outbound network. Only `false` (loopback only) is implemented today.
    pub network: bool,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `bash -c <script>`.
    Shell(String),
    /// An argv, resolved with `PATH` inside the sandbox.
    Argv(Vec<String>),
}

/// One command execution inside a sandbox, as the unprivileged `user`.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: Command,
    /// Added over the sandbox's env and the allowlisted base env.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox; `/home/user` when `None`.
    pub cwd: Option<String>,
    /// Bytes written to stdin, then stdin is closed. `None`: stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Wall clock; on expiry the whole process tree is killed.
    pub timeout: Duration,
    /// Bytes kept per stream (stdout, stderr); beyond it output is dropped and the
    /// stream is marked truncated.
    pub output_limit: usize,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecExit {
    /// Exit status when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// The sandbox's memory limit killed a process of this execution.
    pub oom_killed: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration: Duration,
}

/// One event of a running execution, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Started { pid: u32 },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Finished(ExecExit),
}

/// The events of one execution. Dropping it before `Finished` cancels the
/// execution: the runtime kills its process tree (the client went away).
#[derive(Debug)]
pub struct ExecStream {
    events: mpsc::Receiver<ExecEvent>,
    // Held only so that dropping the stream closes the channel; the runtime side
    // watches `oneshot::Receiver::closed` and kills the execution when it fires.
    _cancel_on_drop: oneshot::Sender<()>,
}

/// The runtime side of an [`ExecStream`].
#[derive(Debug)]
pub struct ExecStreamSender {
    pub events: mpsc::Sender<ExecEvent>,
    /// Resolves (with an error) when the consumer dropped the stream.
    pub cancelled: oneshot::Receiver<()>,
}

impl ExecStream {
    /// A connected pair. `capacity` bounds the events buffered between the runtime
    /// and a slow consumer (backpressure).
    pub fn channel(capacity: usize) -> (ExecStreamSender, ExecStream) {
        let (events_tx, events_rx) = mpsc::channel(capacity);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        (
            ExecStreamSender {
                events: events_tx,
                cancelled: cancel_rx,
            },
            ExecStream {
                events: events_rx,
                _cancel_on_drop: cancel_tx,
            },
        )
    }

    /// The next event; `None` after `Finished` or if the sandbox went away.
    pub async fn next(&mut self) -> Option<ExecEvent> {
        self.events.recv().await
    }

    /// Runs the stream to its end and gathers the output.
    pub async fn collect(mut self) -> Result<ExecOutput, RuntimeError> {
        let mut output = ExecOutput::default();
        while let Some(event) = self.next().await {
            match event {
                ExecEvent::Started { pid } => output.pid = Some(pid),
                ExecEvent::Stdout(bytes) => output.stdout.extend_from_slice(&bytes),
                ExecEvent::Stderr(bytes) => output.stderr.extend_from_slice(&bytes),
                ExecEvent::Finished(exit) => {
                    output.exit = Some(exit);
                    return Ok(output);
                }
            }
        }
        Err(RuntimeError::AgentLost {
            detail: "execution stream ended without an exit status".into(),
        })
    }
}

/// A finished execution, gathered by [`ExecStream::collect`].
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub pid: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Always `Some` when returned by `collect`.
    pub exit: Option<ExecExit>,
}

/// Resource usage of one sandbox, from its cgroup and workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxStats {
    pub cpu_usage_usec: u64,
    /// Cores, as millicores (1000 = one core).
    pub cpu_limit_millicores: u64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub disk_bytes: u64,
    pub disk_limit_bytes: u64,
}

/// A sandbox ended on its own (not through [`Runtime::destroy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxExited {
    pub id: SandboxId,
    pub reason: TerminationReason,
}

/// What [`Runtime::recover`] cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverReport {
    /// Leftover sandboxes of a previous run that were destroyed.
    pub destroyed: Vec<String>,
}

/// Why the agent refused a file operation (its own code, kept so the API can tell
/// "no such file" from "disk full").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileErrorKind {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    /// A FIFO, socket or device: never read or written.
    NotRegularFile,
    /// The sandbox's disk limit (or the host's disk) is full.
    NoSpace,
    /// More bytes than the upload cap.
    TooLarge,
    Other,
}

/// The body of an upload, read as it arrives (never buffered whole).
pub type UploadBody = Box<dyn AsyncRead + Send + Unpin>;

/// A file being downloaded from a sandbox, chunk by chunk with backpressure.
/// Dropping it cancels the read.
#[derive(Debug)]
pub struct FileDownload {
    /// The whole file's size.
    pub size: u64,
    /// Bytes this download delivers (the range, clamped to the file).
    pub length: u64,
    chunks: mpsc::Receiver<Result<Vec<u8>, RuntimeError>>,
}

impl FileDownload {
    /// A download and the sender its producer fills; `capacity` chunks are buffered.
    pub fn channel(
        size: u64,
        length: u64,
        capacity: usize,
    ) -> (mpsc::Sender<Result<Vec<u8>, RuntimeError>>, FileDownload) {
        let (tx, chunks) = mpsc::channel(capacity);
        (
            tx,
            FileDownload {
                size,
                length,
                chunks,
            },
        )
    }

    /// The next chunk; `None` once every byte came (or the producer stopped early,
    /// which the consumer detects by counting against `length`).
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, RuntimeError>> {
        self.chunks.recv().await
    }
}

/// Changes under a watched directory, batch by batch. Dropping it stops the watch.
#[derive(Debug)]
pub struct FileWatch {
    batches: mpsc::Receiver<Result<Vec<WatchEvent>, RuntimeError>>,
}

impl FileWatch {
    /// A watch and the sender its producer fills; `capacity` batches are buffered.
    pub fn channel(
        capacity: usize,
    ) -> (
        mpsc::Sender<Result<Vec<WatchEvent>, RuntimeError>>,
        FileWatch,
    ) {
        let (tx, batches) = mpsc::channel(capacity);
        (tx, FileWatch { batches })
    }

    /// The next batch of changes, in order; `None` once the directory is gone (or
    /// the sandbox ended). A `WatchKind::Overflow` event means changes were lost.
    pub async fn next(&mut self) -> Option<Result<Vec<WatchEvent>, RuntimeError>> {
        self.batches.recv().await
    }
}

/// The one error type of the runtime boundary.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no such sandbox: {id}")]
    NotFound { id: SandboxId },
    #[error("a sandbox with id {id} already exists")]
    AlreadyExists { id: SandboxId },
    #[error("unknown runtime {name:?}")]
    UnknownRuntime { name: String },
    #[error("invalid request: {detail}")]
    InvalidRequest { detail: String },
    #[error("the host is at capacity: {detail}")]
    AtCapacity { detail: String },
    #[error("sandbox setup failed at step {step}")]
    Setup {
        step: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the sandbox agent is gone: {detail}")]
    AgentLost { detail: String },
    #[error("file operation refused ({kind:?}): {detail}")]
    File { kind: FileErrorKind, detail: String },
    #[error("no such process in the sandbox: {pid}")]
    UnknownProcess { pid: u32 },
    #[error("runtime I/O failed during {operation}")]
    Io {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Creates, supervises and destroys sandboxes. Implemented by the Linux backend
/// (and by a fake under the `fake` feature, for tests only).
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The isolation backend reported to clients, e.g. `"namespaces"`.
    fn isolation(&self) -> &'static str;

    /// The runtimes (templates) sandboxes can be created from.
    fn runtimes(&self) -> Vec<RuntimeInfo>;

    /// Creates and starts a sandbox; returns once a command can run in it.
    async fn create(&self, spec: SandboxSpec) -> Result<(), RuntimeError>;

    /// Starts a command in a running sandbox.
    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream, RuntimeError>;

    /// Resource usage of a running sandbox.
    async fn stats(&self, id: &SandboxId) -> Result<SandboxStats, RuntimeError>;

    /// Kills everything in the sandbox and frees every host object it held.
    /// Destroying an unknown id is `NotFound`.
    async fn destroy(&self, id: &SandboxId) -> Result<(), RuntimeError>;

    /// Ids of the sandboxes this runtime currently holds (pool sandboxes excluded).
    async fn list(&self) -> Result<Vec<SandboxId>, RuntimeError>;

    /// Finds leftovers of a crashed previous run (cgroups, mounts, directories
    /// under the runtime's own root) and destroys them. Called once at start.
    async fn recover(&self) -> Result<RecoverReport, RuntimeError>;

    /// Whether the runtime can create sandboxes now (for `/ready`).
    async fn check_ready(&self) -> Result<(), RuntimeError>;

    /// Notifications of sandboxes that ended on their own (agent died, OOM).
    fn subscribe_exits(&self) -> broadcast::Receiver<SandboxExited>;

    /// Destroys every sandbox and the warm pool (server shutdown).
    async fn shutdown(&self);

    // Stateful code execution (issue 4). A context is one long-lived interpreter
    // in a sandbox; the types are the agent client's (`agent::code`).

    /// Creates a context and returns once its interpreter waits for code.
    /// The sandbox's env goes under the request's.
    async fn create_context(
        &self,
        id: &SandboxId,
        request: ContextRequest,
    ) -> Result<ContextInfo, RuntimeError>;

    /// The live contexts of a sandbox.
    async fn list_contexts(&self, id: &SandboxId) -> Result<Vec<ContextInfo>, RuntimeError>;

    /// Queues code on a context; returns once accepted. Executions of one context
    /// run one at a time in arrival order. Dropping the stream before `Done`
    /// interrupts the execution (or takes it off the queue).
    async fn execute_code(
        &self,
        id: &SandboxId,
        request: CodeRequest,
    ) -> Result<CodeStream, RuntimeError>;

    /// Interrupts the running execution of a context (its state survives).
    async fn interrupt_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError>;

    /// Replaces a context's interpreter with a fresh one (state lost).
    async fn restart_context(
        &self,
        id: &SandboxId,
        context: &str,
    ) -> Result<ContextInfo, RuntimeError>;

    /// Kills a context's interpreter and forgets the context.
    async fn destroy_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError>;

    // Files (issue 5). Every path is resolved by the agent inside the sandbox, as
    // `user`; relative paths start at `/home/user`. Refusals are `RuntimeError::File`.

    /// The entry at `path` (a symlink itself, not its target).
    async fn stat(&self, id: &SandboxId, path: &str) -> Result<FileEntry, RuntimeError>;

    /// The entries under `path`, `depth` levels down (1..=16), symlinks not followed.
    async fn list_files(
        &self,
        id: &SandboxId,
        path: &str,
        depth: u32,
    ) -> Result<Listing, RuntimeError>;

    /// Creates a directory (and missing parents when `parents`).
    async fn make_dir(&self, id: &SandboxId, path: &str, parents: bool)
        -> Result<(), RuntimeError>;

    /// Renames `from` to `to`; an existing `to` is replaced only with `overwrite`.
    async fn move_path(
        &self,
        id: &SandboxId,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<(), RuntimeError>;

    /// Removes a file or symlink, or a directory (with its content if `recursive`).
    async fn remove_path(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<(), RuntimeError>;

    /// Opens a regular file for reading from `offset`, `length` bytes or to the end.
    async fn read_file(
        &self,
        id: &SandboxId,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<FileDownload, RuntimeError>;

    /// Streams `body` into `path` (parents created), at most `options.limit`
    /// bytes; the file appears only once complete, a failure leaves nothing.
    /// Returns the bytes written.
    async fn write_file(
        &self,
        id: &SandboxId,
        path: &str,
        options: WriteOptions,
        body: UploadBody,
    ) -> Result<u64, RuntimeError>;

    /// Watches the directory `path` (and those below it when `recursive`);
    /// returns once the watch is set, so every later change is reported.
    async fn watch(
        &self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> Result<FileWatch, RuntimeError>;

    // Background processes (issue 5), named by their pid inside the sandbox. The
    // sandbox's env goes under the request's. An unknown or ended pid is
    // `RuntimeError::UnknownProcess`.

    /// Starts a process that outlives the call (until it exits, its timeout, a
    /// signal, or the sandbox's end); returns its pid once it runs.
    async fn start_process(
        &self,
        id: &SandboxId,
        request: ProcessRequest,
    ) -> Result<u32, RuntimeError>;

    /// The sandbox's running background processes.
    async fn list_processes(&self, id: &SandboxId) -> Result<Vec<ProcessInfo>, RuntimeError>;

    /// Writes to a process's stdin (started with `stdin: true`).
    async fn write_process_stdin(
        &self,
        id: &SandboxId,
        pid: u32,
        data: Vec<u8>,
    ) -> Result<(), RuntimeError>;

    /// Closes a process's stdin (it reads EOF).
    async fn close_process_stdin(&self, id: &SandboxId, pid: u32) -> Result<(), RuntimeError>;

    /// Sends one of [`ALLOWED_SIGNALS`] (e.g. `SIGTERM`) to the process's group.
    async fn signal_process(
        &self,
        id: &SandboxId,
        pid: u32,
        signal: &str,
    ) -> Result<(), RuntimeError>;

    /// The process's output from now on (plus what was buffered while nobody
    /// listened), then `Finished`. Dropping the stream only unsubscribes.
    async fn subscribe_process(
        &self,
        id: &SandboxId,
        pid: u32,
    ) -> Result<Subscription, RuntimeError>;

    // Terminals (issue 5).

    /// Opens a terminal: `request.command` (a login shell, `bash -l`, by default)
    /// as `user` on a pseudo-terminal of `cols` x `rows`, the sandbox's env under the
    /// request's; returns once it runs. Dropping the session's `output` ends the
    /// program's tree. Backends without terminals refuse with `InvalidRequest`.
    async fn open_pty(
        &self,
        id: &SandboxId,
        request: PtyRequest,
    ) -> Result<PtySession, RuntimeError> {
        let _ = (id, request);
        Err(RuntimeError::InvalidRequest {
            detail: "this runtime has no terminals".into(),
        })
    }
}
