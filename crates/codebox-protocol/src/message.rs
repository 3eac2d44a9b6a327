//! The control messages of each direction, and the stream numbers of data frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::code::{ContextSpec, ErrorReport, ExecuteSpec, ExecutionReport};
use crate::files::{FileEntry, ReadSpec, WatchEvent, WriteSpec};
use crate::process::{ProcessInfo, ProcessSpec, PtySpec};
use crate::RequestId;

/// Longest wall-clock timeout an exec may ask for (24 h, the sandbox hard maximum).
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;
/// Largest per-stream output cap an exec may ask for.
pub const MAX_OUTPUT_LIMIT: u64 = 64 << 20;
/// Bound on argv + env + cwd bytes of one exec (the kernel's own limit is near 2 MiB,
/// the frame's 1 MiB; this leaves room for the JSON around them).
pub const MAX_ARGS_BYTES: usize = 512 << 10;

/// The stream a data frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stream {
    /// Host to agent: bytes for the process's standard input.
    Stdin = 0,
    /// Agent to host.
    Stdout = 1,
    /// Agent to host.
    Stderr = 2,
    /// Agent to host: the JSON MIME bundle of an execution's result, closed by
    /// [`AgentMessage::ExecutionResult`] (protocol version 2).
    Result = 3,
    /// Both ways: the content of a file read or written (protocol version 3).
    File = 4,
}

impl Stream {
    /// The stream of a wire byte, `None` for a number this version does not know.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Stdin),
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            3 => Some(Self::Result),
            4 => Some(Self::File),
            _ => None,
        }
    }
}

/// What an exec runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Executed directly; `argv[0]` is looked up in the request's `PATH` unless it has a `/`.
    Argv(Vec<String>),
    /// `bash -c <script>`.
    Shell(String),
}

/// Where an exec's standard input comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdinMode {
    /// `/dev/null`.
    #[default]
    Null,
    /// A pipe fed by `stdin` data frames and closed by [`HostMessage::CloseStdin`].
    Pipe,
}

/// One command to run, as the sandbox's unprivileged user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub id: RequestId,
    pub command: Command,
    /// Sandbox env and request env already merged by the host; the agent adds them over
    /// its allowlisted base environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Absolute path inside the sandbox; the user's home when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub stdin: StdinMode,
    /// Wall clock from start; on expiry the whole process tree is killed.
    pub timeout_ms: u64,
    /// Bytes forwarded per stream (stdout, stderr); the rest is read and dropped.
    pub output_limit: u64,
}

/// Why an [`ExecSpec`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidExec {
    #[error("the argv is empty or its program name is empty")]
    EmptyArgv,
    #[error("{field} contains a NUL byte")]
    NulByte { field: &'static str },
    #[error("environment variable name {name:?} is empty or contains '='")]
    BadEnvName { name: String },
    #[error("the working directory must be an absolute path")]
    RelativeCwd,
    #[error("timeout_ms must be between 1 and {max}")]
    BadTimeout { max: u64 },
    #[error("output_limit is over the maximum of {max}")]
    OutputLimitTooLarge { max: u64 },
    #[error("argv, env and cwd take {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

impl ExecSpec {
    /// Checks everything the agent relies on before it forks.
    pub fn validate(&self) -> Result<(), InvalidExec> {
        let mut total = self.validate_command()?;
        for (name, value) in &self.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(InvalidExec::BadEnvName { name: name.clone() });
            }
            no_nul("an environment value", value)?;
            total += name.len() + value.len() + 2;
        }
        if let Some(cwd) = &self.cwd {
            no_nul("cwd", cwd)?;
            if !cwd.starts_with('/') {
                return Err(InvalidExec::RelativeCwd);
            }
            total += cwd.len();
        }
        if total > MAX_ARGS_BYTES {
            return Err(InvalidExec::TooLarge {
                len: total,
                max: MAX_ARGS_BYTES,
            });
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(InvalidExec::BadTimeout {
                max: MAX_TIMEOUT_MS,
            });
        }
        if self.output_limit > MAX_OUTPUT_LIMIT {
            return Err(InvalidExec::OutputLimitTooLarge {
                max: MAX_OUTPUT_LIMIT,
            });
        }
        Ok(())
    }

    /// Validates the command; returns its size in bytes.
    fn validate_command(&self) -> Result<usize, InvalidExec> {
        match &self.command {
            Command::Argv(argv) => {
                if argv.first().is_none_or(|program| program.is_empty()) {
                    return Err(InvalidExec::EmptyArgv);
                }
                let mut total = 0;
                for arg in argv {
                    no_nul("argv", arg)?;
                    total += arg.len() + 1;
                }
                Ok(total)
            }
            Command::Shell(script) => {
                no_nul("the script", script)?;
                Ok(script.len())
            }
        }
    }
}

fn no_nul(field: &'static str, value: &str) -> Result<(), InvalidExec> {
    if value.contains('\0') {
        return Err(InvalidExec::NulByte { field });
    }
    Ok(())
}

/// How an exec ended. Sent only once its whole process tree is gone and its output
/// pipes are drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    pub id: RequestId,
    /// Exit status of the main process when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that killed the main process.
    pub signal: Option<i32>,
    /// The wall-clock timeout fired and the tree was killed.
    pub timed_out: bool,
    /// The host's [`HostMessage::Kill`] killed the tree.
    pub killed: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// From fork to the end of the tree, in microseconds.
    pub duration_us: u64,
}

/// Host to agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// The handshake is accepted; the agent may now receive requests.
    Welcome {
        protocol_version: u32,
    },
    /// The handshake is refused; the host closes the connection.
    Refuse {
        reason: String,
    },
    /// Starts a command.
    Exec(ExecSpec),
    /// Kills the whole process tree of an exec (cancel). For an execution of code it
    /// interrupts it (or takes it off its queue): it ends as `interrupted`. Unknown or
    /// finished ids are ignored: the kill may cross the end on the wire.
    Kill {
        id: RequestId,
    },
    /// Closes the exec's stdin pipe once the bytes already sent are written.
    CloseStdin {
        id: RequestId,
    },
    Ping {
        id: RequestId,
    },
    /// Version 2: starts a context's runner; answered by `ContextReady`.
    CreateContext(ContextSpec),
    /// Version 2: queues code on a context; `code_len` bytes of code follow as stdin
    /// data frames of the same id.
    Execute(ExecuteSpec),
    /// Version 2: interrupts the running execution of a context (SIGINT; restart after
    /// a grace period); answered by `Ack`.
    Interrupt {
        id: RequestId,
        context: String,
    },
    /// Version 2: kills the runner and starts a fresh one; answered by `ContextReady`.
    RestartContext {
        id: RequestId,
        context: String,
    },
    /// Version 2: kills the runner and forgets the context; answered by `Ack` once its
    /// processes are gone.
    DestroyContext {
        id: RequestId,
        context: String,
    },
    /// Version 3: the entry of a path (a symlink itself, not its target).
    StatPath {
        id: RequestId,
        path: String,
    },
    /// Version 3: a directory's entries, `depth` levels down (1: its children).
    ListDir {
        id: RequestId,
        path: String,
        depth: u32,
    },
    /// Version 3: creates a directory (and its missing parents when `parents`).
    MakeDir {
        id: RequestId,
        path: String,
        #[serde(default)]
        parents: bool,
    },
    /// Version 3: renames `from` to `to` (the same file system).
    MovePath {
        id: RequestId,
        from: String,
        to: String,
        #[serde(default)]
        overwrite: bool,
    },
    /// Version 3: removes a file, a symlink, or a directory (its content too when
    /// `recursive`).
    RemovePath {
        id: RequestId,
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    /// Version 3: streams a file (or a range of it) on the `file` stream.
    ReadFile(ReadSpec),
    /// Version 3: writes a file from `file` data frames ended by `CloseStdin`.
    WriteFile(WriteSpec),
    /// Version 3: starts a background process; answered by `Started`.
    StartProcess(ProcessSpec),
    /// Version 3: the running background processes; answered by `Processes`.
    ListProcesses {
        id: RequestId,
    },
    /// Version 3: `len` bytes of `stdin` data of this id follow, for the process's
    /// stdin; answered by `Ack` once queued.
    ProcessStdin {
        id: RequestId,
        pid: u32,
        len: u64,
    },
    /// Version 3: closes the process's stdin once queued bytes are written; `Ack`.
    CloseProcessStdin {
        id: RequestId,
        pid: u32,
    },
    /// Version 3: sends an allowlisted signal to the process's group; `Ack`.
    SignalProcess {
        id: RequestId,
        pid: u32,
        signal: String,
    },
    /// Version 3: attaches to the process's output; answered by `Subscribed`.
    SubscribeProcess {
        id: RequestId,
        pid: u32,
    },
    /// Version 3: watches a directory (and its subdirectories when `recursive`);
    /// answered by `Watching`, then `FileEvents` until `Kill`.
    WatchPath {
        id: RequestId,
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    /// Version 3: a login shell on a pseudo-terminal; answered by `Started`.
    OpenPty(PtySpec),
    /// Version 3: resizes a terminal (unknown ids are ignored: it may cross the
    /// shell's end on the wire).
    ResizePty {
        id: RequestId,
        cols: u16,
        rows: u16,
    },
}

/// Agent to host. All of it is untrusted input for the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// First message on the connection.
    Hello {
        protocol_version: u32,
        agent_version: String,
        pid: u32,
    },
    /// The exec's main process exists (pid inside the sandbox).
    Started {
        id: RequestId,
        pid: u32,
    },
    Exited(ExitReport),
    Pong {
        id: RequestId,
    },
    /// The context's runner waits for code (after create or restart).
    ContextReady {
        id: RequestId,
        context: String,
        /// The runner's pid inside the sandbox.
        pid: u32,
    },
    /// An interrupt or destroy request was carried out.
    Ack {
        id: RequestId,
    },
    /// The execution is queued on its context; its events follow.
    ExecutionAccepted {
        id: RequestId,
    },
    /// Closes a result whose JSON MIME bundle was sent on the `result` stream.
    ExecutionResult {
        id: RequestId,
        is_main_result: bool,
        /// The bundle was over the size cap and replaced by a truncated text.
        truncated: bool,
    },
    ExecutionError(ErrorReport),
    ExecutionDone(ExecutionReport),
    /// Version 3: answers `StatPath`.
    PathStat {
        id: RequestId,
        entry: FileEntry,
    },
    /// Version 3: a batch of a listing (at most `LIST_BATCH` entries).
    DirEntries {
        id: RequestId,
        entries: Vec<FileEntry>,
    },
    /// Version 3: a read begins; `length` bytes follow on the `file` stream.
    FileReadStarted {
        id: RequestId,
        /// The whole file's size.
        size: u64,
        length: u64,
    },
    /// Version 3: `bytes` more upload bytes were taken; the host may send as many.
    Credit {
        id: RequestId,
        bytes: u64,
    },
    /// Version 3: the watch is set: changes from now on are reported.
    Watching {
        id: RequestId,
    },
    /// Version 3: a batch of changes under a watched directory.
    FileEvents {
        id: RequestId,
        events: Vec<WatchEvent>,
    },
    /// Version 3: answers `ListProcesses`.
    Processes {
        id: RequestId,
        processes: Vec<ProcessInfo>,
    },
    /// Version 3: a subscription is attached; buffered output follows, and
    /// `dropped_bytes` of output were lost while nobody listened.
    Subscribed {
        id: RequestId,
        dropped_bytes: u64,
    },
    /// Version 3: a file operation succeeded. `bytes` read or written; `truncated`
    /// when a listing was cut at `MAX_LIST_ENTRIES`.
    FileDone {
        id: RequestId,
        #[serde(default)]
        bytes: u64,
        #[serde(default)]
        truncated: bool,
    },
    /// A request failed (or could not be read); `id` is absent when it was unreadable.
    Error {
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
}

/// Stable machine-readable error codes of [`AgentMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame held a message type this agent does not know.
    UnknownMessage,
    /// A message of a known type with missing or malformed fields.
    BadMessage,
    /// A message arrived before the handshake finished, or a second Welcome.
    UnexpectedMessage,
    /// The request is well formed but not acceptable (see the message).
    InvalidRequest,
    /// The request id is already in use by a running operation.
    DuplicateId,
    /// A request names an operation that does not exist.
    UnknownId,
    /// Too many operations at once, or too much data queued for one.
    TooManyOperations,
    /// The process could not be created (fork, pipe), or a runner did not start.
    SpawnFailed,
    /// No context of that id.
    UnknownContext,
    /// A context of that id exists already.
    ContextExists,
    /// Version 3: no such file or directory.
    NotFound,
    /// Version 3: the sandbox user may not do that.
    PermissionDenied,
    /// Version 3: the target exists (and overwriting was not asked for).
    AlreadyExists,
    /// Version 3: a path component, or the path of a listing, is not a directory.
    NotADirectory,
    /// Version 3: a directory where a file was expected.
    IsADirectory,
    /// Version 3: a directory to remove is not empty (and `recursive` was not set).
    DirectoryNotEmpty,
    /// Version 3: a FIFO, socket or device: never read or written.
    NotRegularFile,
    /// Version 3: the disk or the quota is full (ENOSPC, EDQUOT, EFBIG).
    NoSpace,
    /// Version 3: an upload went over its byte cap.
    TooLarge,
    /// Version 3: any other file-system failure.
    FileError,
    /// Version 3: no background process of that pid.
    UnknownProcess,
    /// A code from a newer peer.
    #[serde(other)]
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ExecSpec {
        ExecSpec {
            id: 1,
            command: Command::Argv(vec!["ls".into(), "-l".into()]),
            env: BTreeMap::from([("A".into(), "1".into())]),
            cwd: Some("/home/user".into()),
            stdin: StdinMode::Pipe,
            timeout_ms: 1000,
            output_limit: 1 << 20,
        }
    }

    #[test]
    fn messages_have_a_stable_json_shape() {
        let json = serde_json::to_value(HostMessage::Exec(spec())).expect("serializes");
        assert_eq!(json["type"], "exec");
        assert_eq!(json["command"]["argv"][1], "-l");
        assert_eq!(json["stdin"], "pipe");
        let back: HostMessage = serde_json::from_value(json).expect("parses");
        assert_eq!(back, HostMessage::Exec(spec()));
        let hello: AgentMessage = serde_json::from_str(
            r#"{"type":"hello","protocol_version":1,"agent_version":"0.1","pid":1,"extra":true}"#,
        )
        .expect("unknown fields are ignored");
        assert!(matches!(hello, AgentMessage::Hello { pid: 1, .. }));
        let code: ErrorCode = serde_json::from_str(r#""from_the_future""#).expect("parses");
        assert_eq!(code, ErrorCode::Other);
    }

    #[test]
    fn optional_exec_fields_default() {
        let exec: HostMessage = serde_json::from_str(
            r#"{"type":"exec","id":2,"command":{"shell":"true"},"timeout_ms":5,"output_limit":0}"#,
        )
        .expect("parses");
        let HostMessage::Exec(spec) = exec else {
            panic!("expected exec")
        };
        assert_eq!(
            (spec.stdin, spec.cwd, spec.env.len()),
            (StdinMode::Null, None, 0)
        );
    }

    #[test]
    fn validation_rejects_what_the_agent_cannot_run() {
        assert_eq!(spec().validate(), Ok(()));
        type Case = (fn(&mut ExecSpec), InvalidExec);
        let cases: [Case; 7] = [
            (
                |s| s.command = Command::Argv(vec![]),
                InvalidExec::EmptyArgv,
            ),
            (
                |s| s.command = Command::Argv(vec![String::new()]),
                InvalidExec::EmptyArgv,
            ),
            (
                |s| s.command = Command::Shell("a\0b".into()),
                InvalidExec::NulByte {
                    field: "the script",
                },
            ),
            (
                |s| {
                    s.env.insert("A=B".into(), "x".into());
                },
                InvalidExec::BadEnvName { name: "A=B".into() },
            ),
            (
                |s| s.cwd = Some("relative".into()),
                InvalidExec::RelativeCwd,
            ),
            (
                |s| s.timeout_ms = 0,
                InvalidExec::BadTimeout {
                    max: MAX_TIMEOUT_MS,
                },
            ),
            (
                |s| s.output_limit = MAX_OUTPUT_LIMIT + 1,
                InvalidExec::OutputLimitTooLarge {
                    max: MAX_OUTPUT_LIMIT,
                },
            ),
        ];
        for (mutate, expected) in cases {
            let mut spec = spec();
            mutate(&mut spec);
            assert_eq!(spec.validate(), Err(expected));
        }
        let mut huge = spec();
        huge.command = Command::Shell("x".repeat(MAX_ARGS_BYTES + 1));
        assert!(matches!(huge.validate(), Err(InvalidExec::TooLarge { .. })));
    }

    #[test]
    fn stream_numbers_are_stable() {
        for stream in [
            Stream::Stdin,
            Stream::Stdout,
            Stream::Stderr,
            Stream::Result,
            Stream::File,
        ] {
            assert_eq!(Stream::from_byte(stream as u8), Some(stream));
        }
        assert_eq!(Stream::from_byte(5), None);
    }
}
