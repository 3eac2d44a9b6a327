//! The host end of the agent channel: a tokio client of `codebox-agent` speaking
//! `codebox-protocol` over a Unix stream socket.
//!
//! Owned by the agent work; the rest of the runtime (jail, cgroups, pool) spawns the
//! agent, passes it one end of a socketpair as fd 3 (`CODEBOX_AGENT_FD=3`), and talks
//! to it only through this API. Everything the agent sends is hostile input: frame
//! sizes are checked before allocation, output is capped on the host too, agent text is
//! sanitised, every wait has a timeout, and a protocol violation closes the connection.
//!
//! # API summary
//! ```text
//! let conn = AgentConnection::handshake(host_end: tokio::net::UnixStream,
//!                                       timeout: Duration).await?;   // Hello -> Welcome
//! conn.info()                      -> &AgentInfo { protocol_version, agent_version, pid }
//! conn.exec(&ExecRequest, &sandbox_env).await? -> ExecStream
//!     // returns once the program runs; first event Started{pid}, then Stdout/Stderr
//!     // chunks, then Finished(ExecExit) once the whole tree is dead. oom_killed is
//!     // always false here: the runtime knows it from the cgroup and may patch it.
//!     // Dropping the stream sends Kill (the agent kills the whole tree).
//! conn.ping().await?               -> Duration (round trip)
//! conn.closed().await              // resolves when the agent is gone
//! conn.is_closed()
//! conn.shutdown().await            // EOF to the agent: it kills every exec and exits
//! AgentError -> RuntimeError via From (InvalidRequest / AtCapacity / AgentLost)
//!
//! // Stateful code execution (protocol version 2; types in this module):
//! conn.create_context(&ContextRequest { context, language, cwd, env }, &sandbox_env)
//!     .await? -> ContextInfo { context, language, cwd, pid }  // waits until ready
//! conn.list_contexts()             -> Vec<ContextInfo>        // created here, not destroyed
//! conn.execute(&CodeRequest { context, code, timeout, env, output_limit }).await?
//!     -> CodeStream   // returns once queued; events Stdout/Stderr(Vec<u8>),
//!                     // Result(ExecutionResult { data: mime -> string, is_main_result,
//!                     // truncated }), Error(ExecutionError { name, value, traceback }),
//!                     // then Done(ExecutionSummary { execution_count, outcome, duration,
//!                     // restarted, stdout_truncated, stderr_truncated }).
//!     // stream.collect() -> CodeOutput (.text() is the main result's text/plain).
//!     // Dropping the stream cancels the execution (interrupt, or off the queue).
//! conn.interrupt(context).await?   // running execution ends `interrupted`
//! conn.restart_context(context).await? -> ContextInfo   // fresh runner, state gone
//! conn.destroy_context(context).await?                  // returns once its tree is gone
//! ```
//! Errors: `InvalidCode` (checked before sending), `Refused { code: UnknownContext |
//! ContextExists | SpawnFailed (interpreter missing or died at start) |
//! TooManyOperations (queue full) | InvalidRequest }`.
//!
//! # Code execution semantics
//! * A context is one long-lived runner (python3, node, bash) in the sandbox, jailed
//!   like an exec (uid 1000, no capability, `no_new_privs`, allowlisted env), with a
//!   structured channel (fd 3); stdout/stderr are its real pipes, never marked up.
//! * Executions of one context run one at a time in arrival order (a queue of up to
//!   64); contexts run in parallel (up to 32 per sandbox). `timeout` counts from the
//!   start of the execution, not from the queue.
//! * Timeout and interrupt send SIGINT to the runner's process group: Python raises
//!   `KeyboardInterrupt`, Node aborts synchronous code (vm `breakOnSigint`) or abandons
//!   a pending `await`, bash aborts the cell; the context's state survives (outcome
//!   `timeout` / `interrupted`, an error named `KeyboardInterrupt`, or `ExitCode` 130 in
//!   bash). If the execution has not ended 2 s later, the runner's tree is killed and a
//!   fresh runner started: `restarted: true`, state lost.
//! * A runner that dies (`os._exit`, a segfault, `exit` in bash) ends its execution
//!   `crashed` with `restarted: true`; the next execution runs in a fresh runner and
//!   `execution_count` starts again at 1.
//! * bash: the exit status of the cell's last command; non-zero gives outcome `error`
//!   and an error named `ExitCode` whose value is the status. No main result.
//! * Results over 8 MiB (all MIME values together) are replaced by a truncated
//!   `text/plain` (`truncated: true`); the host re-checks every cap itself.
//! * Runner knobs (context env): `CODEBOX_TS_PATH` (directory of the `typescript` npm
//!   package; default: resolved from `NODE_PATH` / the context's cwd),
//!   `CODEBOX_PYTHON_PLAIN=1` (no IPython even if importable), `CODEBOX_PYTHON_PRELOAD`
//!   (python code run before the context is ready, e.g. `import numpy, pandas`),
//!   `MPLBACKEND` (default `Agg`; figures open at the end of a cell become `image/png`
//!   results and are closed).
//!
//! # Files, background processes and terminals (protocol version 3)
//! ```text
//! // Files (protocol version 3; done inside the sandbox by a worker of uid 1000;
//! // relative paths start at /home/user; `..` never leaves the sandbox's /):
//! conn.stat(path).await?           -> FileEntry { name, path, kind: File|Dir|Symlink|Other,
//!                                     size, mode, modified_at, symlink_target }
//! conn.list(path, depth 1..=16).await? -> Listing { entries, truncated } // cap 10 000
//! conn.make_dir(path, parents).await?
//! conn.move_path(from, to, overwrite).await?
//! conn.remove(path, recursive).await?
//! conn.read_file(path, offset, length: Option<u64>).await? -> FileRead { size, length }
//!     // .next() -> Option<Result<Vec<u8>>> chunks of <= 64 KiB with backpressure;
//!     // .collect(); dropping it cancels the read.
//! conn.write_file(path, &WriteOptions { limit, overwrite, mode }, body: impl AsyncRead)
//!     .await? -> bytes written     // at most 1 MiB in flight; atomic rename at the end
//! conn.watch(path, recursive).await? -> Watch  // .next() -> Option<Result<Vec<WatchEvent
//!     // { kind: Create|Write|Remove|Rename|Chmod|Overflow, path, is_dir }>>>; None when
//!     // the directory is gone; dropping it stops the watch.
//! // Refusals: Refused { code: NotFound | PermissionDenied | AlreadyExists | NotADirectory
//! //   | IsADirectory | DirectoryNotEmpty | NotRegularFile (FIFO, socket, device) | NoSpace
//! //   (ENOSPC, EDQUOT, EFBIG) | TooLarge (over `limit`) | FileError }; error.code().
//! //   No partial file is ever left by a failed or cancelled write.
//!
//! // Background processes (named by pid inside the sandbox):
//! conn.start_process(&ProcessRequest { command, env, cwd, stdin: bool, tag, timeout:
//!     Option<Duration> }, &sandbox_env).await? -> pid        // returns once it runs
//! conn.list_processes().await?     -> Vec<ProcessInfo { pid, command, tag, stdin_open,
//!                                     subscribers }>
//! conn.write_process_stdin(pid, bytes).await?   conn.close_process_stdin(pid).await?
//! conn.signal_process(pid, "SIGTERM").await?    // ALLOWED_SIGNALS; to its process group
//! conn.subscribe_process(pid).await? -> Subscription { dropped_bytes, stream: ExecStream }
//!     // output from now on (plus up to 1 MiB buffered while nobody listened), then
//!     // Finished; several subscribers; dropping the stream only unsubscribes.
//! // Refusals: UnknownProcess (no such pid, or it ended), InvalidRequest.
//!
//! // Terminals:
//! conn.open_pty(&PtyRequest { cols, rows, env, cwd, timeout, command }, &sandbox_env).await?
//!     -> Terminal { pid, output: ExecStream /* Stdout chunks, then Finished */,
//!                   input: TerminalInput /* .write(bytes), .resize(cols, rows) */ }
//!     // a login shell (`bash -l`, or `command`) as `user`; dropping `output` ends
//!     // the shell's tree.
//! ```
//!
//! # Suggested `Runtime` trait methods for files, processes and terminals (phase 3)
//! ```text
//! async fn stat(&self, id: &SandboxId, path: &str) -> Result<FileEntry, RuntimeError>;
//! async fn list_files(&self, id: &SandboxId, path: &str, depth: u32)
//!     -> Result<Listing, RuntimeError>;
//! async fn make_dir(&self, id: &SandboxId, path: &str, parents: bool) -> Result<(), RuntimeError>;
//! async fn move_path(&self, id: &SandboxId, from: &str, to: &str, overwrite: bool)
//!     -> Result<(), RuntimeError>;
//! async fn remove_path(&self, id: &SandboxId, path: &str, recursive: bool)
//!     -> Result<(), RuntimeError>;
//! async fn read_file(&self, id: &SandboxId, path: &str, offset: u64, length: Option<u64>)
//!     -> Result<FileRead, RuntimeError>;
//! async fn write_file(&self, id: &SandboxId, path: &str, options: &WriteOptions,
//!     body: Box<dyn AsyncRead + Send + Unpin>) -> Result<u64, RuntimeError>;
//! async fn watch(&self, id: &SandboxId, path: &str, recursive: bool)
//!     -> Result<Watch, RuntimeError>;
//! async fn start_process(&self, id: &SandboxId, request: &ProcessRequest)
//!     -> Result<u32, RuntimeError>;
//! async fn list_processes(&self, id: &SandboxId) -> Result<Vec<ProcessInfo>, RuntimeError>;
//! async fn write_process_stdin(&self, id: &SandboxId, pid: u32, data: &[u8])
//!     -> Result<(), RuntimeError>;
//! async fn close_process_stdin(&self, id: &SandboxId, pid: u32) -> Result<(), RuntimeError>;
//! async fn signal_process(&self, id: &SandboxId, pid: u32, signal: &str)
//!     -> Result<(), RuntimeError>;
//! async fn subscribe_process(&self, id: &SandboxId, pid: u32)
//!     -> Result<Subscription, RuntimeError>;
//! async fn open_pty(&self, id: &SandboxId, request: &PtyRequest)
//!     -> Result<Terminal, RuntimeError>;
//! ```
//! The sandbox env goes under `start_process`/`open_pty` requests as for exec. File
//! refusals currently map to `RuntimeError::InvalidRequest { detail }` (the precise
//! code is lost); suggested: a `RuntimeError::File { code: ErrorCode, detail }` so the
//! server can answer 404 (NotFound), 403 (PermissionDenied, NotRegularFile), 409
//! (AlreadyExists, DirectoryNotEmpty), 413 (TooLarge), 507 (NoSpace); and
//! `UnknownProcess` -> 404. The disk limit of a sandbox (its quota / workspace size)
//! surfaces as `NoSpace` from the kernel; the upload cap is `WriteOptions::limit`
//! (default 100 MiB, `DEFAULT_UPLOAD_LIMIT`).
//!
//! # Suggested `Runtime` trait methods (for the lead; not added here)
//! ```text
//! async fn create_context(&self, id: &SandboxId, request: &ContextRequest)
//!     -> Result<ContextInfo, RuntimeError>;
//! async fn list_contexts(&self, id: &SandboxId) -> Result<Vec<ContextInfo>, RuntimeError>;
//! async fn execute_code(&self, id: &SandboxId, request: &CodeRequest)
//!     -> Result<CodeStream, RuntimeError>;
//! async fn interrupt_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError>;
//! async fn restart_context(&self, id: &SandboxId, context: &str)
//!     -> Result<ContextInfo, RuntimeError>;
//! async fn destroy_context(&self, id: &SandboxId, context: &str) -> Result<(), RuntimeError>;
//! ```
//! Each is the connection method of the sandbox's agent with the sandbox env passed to
//! `create_context`; `AgentError` converts into `RuntimeError` (`From`).
//!
//! ```text
//! `AgentConnection` is `Clone` (an `Arc`); requests from many tasks share the channel
//! and are told apart by request id. Frames are written by one writer task, so a
//! request future dropped half-way never leaves half a frame on the wire; an `exec()`
//! dropped before it returns kills what it started. A stuck agent (alive but silent)
//! does not close the connection by itself: `ping()` with its timeout is the probe.
//!
//! # What the agent needs from the jail
//! Started as PID 1 of the sandbox's PID namespace with `CODEBOX_AGENT_FD=3` (and no
//! `CODEBOX_AGENT_TEST_MODE`), as root of the user namespace with at least
//! `CAP_SETUID`, `CAP_SETGID` and `CAP_SETPCAP` (it drops the bounding set of user
//! processes), with uid/gid 1000 mapped, `/proc` of the sandbox mounted (supervisors
//! read `/proc/self/task/<pid>/children` to kill trees), and `/dev/null`. Syscalls it
//! uses: fork (clone without namespace flags), wait4, kill, prctl (CHILD_SUBREAPER,
//! PDEATHSIG, NO_NEW_PRIVS, CAPBSET_DROP, CAP_AMBIENT), capset, setgroups, setresuid,
//! setresgid, setsid, signalfd4, rt_sigtimedwait, rt_sigprocmask, pipe2, dup2/dup3,
//! close_range, poll, fcntl, chdir, umask, execve, and socketpair (a context runner's
//! channel). Version 3 adds: openat2, openat, mkdirat, renameat2, unlinkat, fchdir,
//! fstat/newfstatat, getdents64, readlinkat, fchmod, fchown, pread64, inotify_init1
//! and inotify_add_watch (a watch adds its directories through `/proc/self/fd/N`, so
//! the sandbox's `/proc` is needed), prctl(PR_SET_DUMPABLE), and for terminals open of
//! `/dev/ptmx` (or `/dev/pts/ptmx`: a devpts instance mounted with `ptmxmode=0666`)
//! and ioctl TIOCSPTLCK, TIOCGPTPEER, TIOCSWINSZ, TIOCSCTTY. Terminal shells need
//! `bash` on the sandbox's `PATH`. Contexts need their interpreter on the sandbox's `PATH` (`python3`;
//! `node`, which runs with `--expose-internals` for Node's own top-level-await
//! rewriting; `bash`), and IPython a writable home (`~/.ipython`).
//!
//! # Backpressure
//! Each exec has a bounded event channel (16 events of at most 64 KiB). The reader
//! task waits for room in it, so a slow consumer stalls the reader, the socket buffer
//! fills, and the agent stops reading output pipes past a 1 MiB queue: memory stays
//! bounded end to end, at the cost of one slow consumer delaying the other execs of
//! its sandbox. Timeouts and kills keep working (the agent enforces them itself).

mod code;
mod code_client;
mod code_reader;
mod connection;
mod error;
mod file_client;
mod file_reader;
mod files;
mod process_client;
mod pty_client;
mod reader;

pub use code::{
    CodeEvent, CodeOutput, CodeRequest, CodeStream, CodeStreamSender, ContextInfo, ContextRequest,
    ExecutionError, ExecutionOutcome, ExecutionResult, ExecutionSummary, Language,
};
/// The largest code an execution may carry.
pub use codebox_protocol::MAX_CODE_BYTES;
pub use codebox_protocol::MAX_TERMINAL_SIZE;
pub use connection::{AgentConnection, AgentInfo};
pub use error::{is_file_code, AgentError};
pub use files::{
    FileEntry, FileKind, FileRead, Listing, Watch, WatchEvent, WatchKind, WriteOptions,
    DEFAULT_UPLOAD_LIMIT,
};
pub use process_client::{ProcessInfo, ProcessRequest, Subscription, ALLOWED_SIGNALS};
pub use pty_client::{PtyRequest, Terminal, TerminalInput};

#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod tests;
