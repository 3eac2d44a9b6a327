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
//! channel). Contexts need their interpreter on the sandbox's `PATH` (`python3`;
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
    CodeEvent, CodeOutput, CodeRequest, CodeStream, ContextInfo, ContextRequest, ExecutionError,
    ExecutionOutcome, ExecutionResult, ExecutionSummary, Language,
};
/// The largest code an execution may carry.
pub use codebox_protocol::MAX_CODE_BYTES;
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
