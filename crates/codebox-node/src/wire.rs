//! The JSON shapes of the node API: the runtime's types as serialisable
//! mirrors (bytes as base64, durations in microseconds), and the conversions
//! both ways. Only the node API uses them; nothing here is public HTTP API.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use codebox_runtime::{
    CodeEvent, CodeRequest, Command, ContextInfo, ContextRequest, ExecEvent, ExecExit, ExecRequest,
    ExecutionError, ExecutionOutcome, ExecutionResult, ExecutionSummary, FileEntry, FileErrorKind,
    FileKind, Language, Listing, ProcessRequest, RuntimeError, SandboxLimits, SandboxSpec,
    SandboxStats,
};
use codebox_types::{Resources, RuntimeInfo, SandboxId};
use serde::{Deserialize, Serialize};

/// A payload that is not valid (bad base64, an out-of-range value).
#[derive(Debug, thiserror::Error)]
#[error("malformed node message: {0}")]
pub struct Malformed(pub String);

fn decode(data: &str) -> Result<Vec<u8>, Malformed> {
    BASE64
        .decode(data)
        .map_err(|_| Malformed("invalid base64".into()))
}

fn encode(data: &[u8]) -> String {
    BASE64.encode(data)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Unary calls, one per non-streaming `Runtime` method (`POST /v1/call`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    Info,
    Ready,
    List,
    Create {
        spec: SpecWire,
    },
    Destroy {
        id: SandboxId,
    },
    Stats {
        id: SandboxId,
    },
    CreateContext {
        id: SandboxId,
        request: ContextRequestWire,
    },
    ListContexts {
        id: SandboxId,
    },
    InterruptContext {
        id: SandboxId,
        context: String,
    },
    RestartContext {
        id: SandboxId,
        context: String,
    },
    DestroyContext {
        id: SandboxId,
        context: String,
    },
    Stat {
        id: SandboxId,
        path: String,
    },
    ListFiles {
        id: SandboxId,
        path: String,
        depth: u32,
    },
    MakeDir {
        id: SandboxId,
        path: String,
        parents: bool,
    },
    MovePath {
        id: SandboxId,
        from: String,
        to: String,
        overwrite: bool,
    },
    RemovePath {
        id: SandboxId,
        path: String,
        recursive: bool,
    },
    StartProcess {
        id: SandboxId,
        request: ProcessRequestWire,
    },
    ListProcesses {
        id: SandboxId,
    },
    WriteStdin {
        id: SandboxId,
        pid: u32,
        data: String,
    },
    CloseStdin {
        id: SandboxId,
        pid: u32,
    },
    Signal {
        id: SandboxId,
        pid: u32,
        signal: String,
    },
}

impl Call {
    /// The method name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Info => "info",
            Call::Ready => "ready",
            Call::List => "list",
            Call::Create { .. } => "create",
            Call::Destroy { .. } => "destroy",
            Call::Stats { .. } => "stats",
            Call::CreateContext { .. } => "create_context",
            Call::ListContexts { .. } => "list_contexts",
            Call::InterruptContext { .. } => "interrupt_context",
            Call::RestartContext { .. } => "restart_context",
            Call::DestroyContext { .. } => "destroy_context",
            Call::Stat { .. } => "stat",
            Call::ListFiles { .. } => "list_files",
            Call::MakeDir { .. } => "make_dir",
            Call::MovePath { .. } => "move_path",
            Call::RemovePath { .. } => "remove_path",
            Call::StartProcess { .. } => "start_process",
            Call::ListProcesses { .. } => "list_processes",
            Call::WriteStdin { .. } => "write_process_stdin",
            Call::CloseStdin { .. } => "close_process_stdin",
            Call::Signal { .. } => "signal_process",
        }
    }
}

/// Streaming calls (`POST /v1/stream`): the answer is NDJSON, one [`Line`] each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamCall {
    Exec {
        id: SandboxId,
        request: ExecRequestWire,
    },
    ExecuteCode {
        id: SandboxId,
        request: CodeRequestWire,
    },
    Watch {
        id: SandboxId,
        path: String,
        recursive: bool,
    },
    SubscribeProcess {
        id: SandboxId,
        pid: u32,
    },
}

impl StreamCall {
    pub fn name(&self) -> &'static str {
        match self {
            StreamCall::Exec { .. } => "exec",
            StreamCall::ExecuteCode { .. } => "execute_code",
            StreamCall::Watch { .. } => "watch",
            StreamCall::SubscribeProcess { .. } => "subscribe_process",
        }
    }
}

/// One line of a stream: an event, or the error that ended it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Line<T> {
    Event(T),
    Error(ErrorWire),
}

/// `POST /v1/read`: the answer is the raw bytes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadCall {
    pub id: SandboxId,
    pub path: String,
    pub offset: u64,
    pub length: Option<u64>,
}

/// `PUT /v1/write?...`: the body is the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    pub id: SandboxId,
    pub path: String,
    pub limit: u64,
    pub overwrite: bool,
    pub mode: Option<u32>,
}

/// What `info` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InfoWire {
    pub isolation: String,
    pub runtimes: Vec<RuntimeInfo>,
}

/// A [`RuntimeError`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorWire {
    NotFound {
        id: SandboxId,
    },
    AlreadyExists {
        id: SandboxId,
    },
    UnknownRuntime {
        name: String,
    },
    InvalidRequest {
        detail: String,
    },
    AtCapacity {
        detail: String,
    },
    Setup {
        step: String,
        detail: String,
    },
    AgentLost {
        detail: String,
    },
    File {
        file_kind: FileKindWire,
        detail: String,
    },
    UnknownProcess {
        pid: u32,
    },
    Io {
        operation: String,
        detail: String,
    },
}

/// [`FileErrorKind`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKindWire {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    NotRegularFile,
    NoSpace,
    TooLarge,
    Other,
}

impl From<FileErrorKind> for FileKindWire {
    fn from(kind: FileErrorKind) -> Self {
        match kind {
            FileErrorKind::NotFound => Self::NotFound,
            FileErrorKind::PermissionDenied => Self::PermissionDenied,
            FileErrorKind::AlreadyExists => Self::AlreadyExists,
            FileErrorKind::NotADirectory => Self::NotADirectory,
            FileErrorKind::IsADirectory => Self::IsADirectory,
            FileErrorKind::DirectoryNotEmpty => Self::DirectoryNotEmpty,
            FileErrorKind::NotRegularFile => Self::NotRegularFile,
            FileErrorKind::NoSpace => Self::NoSpace,
            FileErrorKind::TooLarge => Self::TooLarge,
            FileErrorKind::Other => Self::Other,
        }
    }
}

impl From<FileKindWire> for FileErrorKind {
    fn from(kind: FileKindWire) -> Self {
        match kind {
            FileKindWire::NotFound => Self::NotFound,
            FileKindWire::PermissionDenied => Self::PermissionDenied,
            FileKindWire::AlreadyExists => Self::AlreadyExists,
            FileKindWire::NotADirectory => Self::NotADirectory,
            FileKindWire::IsADirectory => Self::IsADirectory,
            FileKindWire::DirectoryNotEmpty => Self::DirectoryNotEmpty,
            FileKindWire::NotRegularFile => Self::NotRegularFile,
            FileKindWire::NoSpace => Self::NoSpace,
            FileKindWire::TooLarge => Self::TooLarge,
            FileKindWire::Other => Self::Other,
        }
    }
}

/// The error chain of a runtime error as one line (no secrets: runtime errors
/// name steps and sandbox paths only).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<&RuntimeError> for ErrorWire {
    fn from(error: &RuntimeError) -> Self {
        match error {
            RuntimeError::NotFound { id } => Self::NotFound { id: id.clone() },
            RuntimeError::AlreadyExists { id } => Self::AlreadyExists { id: id.clone() },
            RuntimeError::UnknownRuntime { name } => Self::UnknownRuntime { name: name.clone() },
            RuntimeError::InvalidRequest { detail } => Self::InvalidRequest {
                detail: detail.clone(),
            },
            RuntimeError::AtCapacity { detail } => Self::AtCapacity {
                detail: detail.clone(),
            },
            RuntimeError::Setup { step, source } => Self::Setup {
                step: (*step).to_owned(),
                detail: chain(source.as_ref()),
            },
            RuntimeError::AgentLost { detail } => Self::AgentLost {
                detail: detail.clone(),
            },
            RuntimeError::File { kind, detail } => Self::File {
                file_kind: (*kind).into(),
                detail: detail.clone(),
            },
            RuntimeError::UnknownProcess { pid } => Self::UnknownProcess { pid: *pid },
            RuntimeError::Io { operation, source } => Self::Io {
                operation: (*operation).to_owned(),
                detail: chain(source),
            },
        }
    }
}

/// A failure that happened on a node, kept as the source of a remote
/// `Setup` error.
#[derive(Debug, thiserror::Error)]
#[error("on the node, step {step}: {detail}")]
pub struct RemoteFailure {
    pub step: String,
    pub detail: String,
}

impl From<ErrorWire> for RuntimeError {
    fn from(error: ErrorWire) -> Self {
        match error {
            ErrorWire::NotFound { id } => RuntimeError::NotFound { id },
            ErrorWire::AlreadyExists { id } => RuntimeError::AlreadyExists { id },
            ErrorWire::UnknownRuntime { name } => RuntimeError::UnknownRuntime { name },
            ErrorWire::InvalidRequest { detail } => RuntimeError::InvalidRequest { detail },
            ErrorWire::AtCapacity { detail } => RuntimeError::AtCapacity { detail },
            ErrorWire::Setup { step, detail } => RuntimeError::Setup {
                step: "remote",
                source: Box::new(RemoteFailure { step, detail }),
            },
            ErrorWire::AgentLost { detail } => RuntimeError::AgentLost { detail },
            ErrorWire::File { file_kind, detail } => RuntimeError::File {
                kind: file_kind.into(),
                detail,
            },
            ErrorWire::UnknownProcess { pid } => RuntimeError::UnknownProcess { pid },
            ErrorWire::Io { operation, detail } => RuntimeError::Io {
                operation: "remote",
                source: std::io::Error::other(format!("{operation}: {detail}")),
            },
        }
    }
}

/// [`SandboxSpec`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecWire {
    pub id: SandboxId,
    pub runtime: String,
    pub resources: Resources,
    pub pids: u32,
    pub open_files: u64,
    pub workspace_bytes: u64,
    pub workspace_inodes: u64,
    pub tmp_bytes: u64,
    pub env: BTreeMap<String, String>,
    pub network: bool,
}

impl From<&SandboxSpec> for SpecWire {
    fn from(spec: &SandboxSpec) -> Self {
        Self {
            id: spec.id.clone(),
            runtime: spec.runtime.clone(),
            resources: spec.resources,
            pids: spec.limits.pids,
            open_files: spec.limits.open_files,
            workspace_bytes: spec.limits.workspace_bytes,
            workspace_inodes: spec.limits.workspace_inodes,
            tmp_bytes: spec.limits.tmp_bytes,
            env: spec.env.clone(),
            network: spec.network,
        }
    }
}

impl From<SpecWire> for SandboxSpec {
    fn from(spec: SpecWire) -> Self {
        Self {
            id: spec.id,
            runtime: spec.runtime,
            resources: spec.resources,
            limits: SandboxLimits {
                pids: spec.pids,
                open_files: spec.open_files,
                workspace_bytes: spec.workspace_bytes,
                workspace_inodes: spec.workspace_inodes,
                tmp_bytes: spec.tmp_bytes,
            },
            env: spec.env,
            network: spec.network,
        }
    }
}

/// [`Command`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandWire {
    Shell(String),
    Argv(Vec<String>),
}

impl From<&Command> for CommandWire {
    fn from(command: &Command) -> Self {
        match command {
            Command::Shell(script) => Self::Shell(script.clone()),
            Command::Argv(argv) => Self::Argv(argv.clone()),
        }
    }
}

impl From<CommandWire> for Command {
    fn from(command: CommandWire) -> Self {
        match command {
            CommandWire::Shell(script) => Self::Shell(script),
            CommandWire::Argv(argv) => Self::Argv(argv),
        }
    }
}

/// [`ExecRequest`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequestWire {
    pub command: CommandWire,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// Base64.
    pub stdin: Option<String>,
    pub timeout_us: u64,
    pub output_limit: usize,
}

impl From<&ExecRequest> for ExecRequestWire {
    fn from(request: &ExecRequest) -> Self {
        Self {
            command: (&request.command).into(),
            env: request.env.clone(),
            cwd: request.cwd.clone(),
            stdin: request.stdin.as_deref().map(encode),
            timeout_us: micros(request.timeout),
            output_limit: request.output_limit,
        }
    }
}

impl TryFrom<ExecRequestWire> for ExecRequest {
    type Error = Malformed;
    fn try_from(request: ExecRequestWire) -> Result<Self, Malformed> {
        Ok(Self {
            command: request.command.into(),
            env: request.env,
            cwd: request.cwd,
            stdin: request.stdin.as_deref().map(decode).transpose()?,
            timeout: Duration::from_micros(request.timeout_us),
            output_limit: request.output_limit,
        })
    }
}

/// [`ExecEvent`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEventWire {
    Started {
        pid: u32,
    },
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Finished {
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        oom_killed: bool,
        stdout_truncated: bool,
        stderr_truncated: bool,
        duration_us: u64,
    },
}

impl From<&ExecEvent> for ExecEventWire {
    fn from(event: &ExecEvent) -> Self {
        match event {
            ExecEvent::Started { pid } => Self::Started { pid: *pid },
            ExecEvent::Stdout(data) => Self::Stdout { data: encode(data) },
            ExecEvent::Stderr(data) => Self::Stderr { data: encode(data) },
            ExecEvent::Finished(exit) => Self::Finished {
                exit_code: exit.exit_code,
                signal: exit.signal,
                timed_out: exit.timed_out,
                oom_killed: exit.oom_killed,
                stdout_truncated: exit.stdout_truncated,
                stderr_truncated: exit.stderr_truncated,
                duration_us: micros(exit.duration),
            },
        }
    }
}

impl TryFrom<ExecEventWire> for ExecEvent {
    type Error = Malformed;
    fn try_from(event: ExecEventWire) -> Result<Self, Malformed> {
        Ok(match event {
            ExecEventWire::Started { pid } => Self::Started { pid },
            ExecEventWire::Stdout { data } => Self::Stdout(decode(&data)?),
            ExecEventWire::Stderr { data } => Self::Stderr(decode(&data)?),
            ExecEventWire::Finished {
                exit_code,
                signal,
                timed_out,
                oom_killed,
                stdout_truncated,
                stderr_truncated,
                duration_us,
            } => Self::Finished(ExecExit {
                exit_code,
                signal,
                timed_out,
                oom_killed,
                stdout_truncated,
                stderr_truncated,
                duration: Duration::from_micros(duration_us),
            }),
        })
    }
}

/// [`SandboxStats`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsWire {
    pub cpu_usage_usec: u64,
    pub cpu_limit_millicores: u64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub disk_bytes: u64,
    pub disk_limit_bytes: u64,
}

impl From<&SandboxStats> for StatsWire {
    fn from(stats: &SandboxStats) -> Self {
        Self {
            cpu_usage_usec: stats.cpu_usage_usec,
            cpu_limit_millicores: stats.cpu_limit_millicores,
            memory_bytes: stats.memory_bytes,
            memory_peak_bytes: stats.memory_peak_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            pids: stats.pids,
            pids_limit: stats.pids_limit,
            disk_bytes: stats.disk_bytes,
            disk_limit_bytes: stats.disk_limit_bytes,
        }
    }
}

impl From<StatsWire> for SandboxStats {
    fn from(stats: StatsWire) -> Self {
        Self {
            cpu_usage_usec: stats.cpu_usage_usec,
            cpu_limit_millicores: stats.cpu_limit_millicores,
            memory_bytes: stats.memory_bytes,
            memory_peak_bytes: stats.memory_peak_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            pids: stats.pids,
            pids_limit: stats.pids_limit,
            disk_bytes: stats.disk_bytes,
            disk_limit_bytes: stats.disk_limit_bytes,
        }
    }
}

/// [`ContextRequest`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextRequestWire {
    pub context: String,
    pub language: Language,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
}

impl From<&ContextRequest> for ContextRequestWire {
    fn from(request: &ContextRequest) -> Self {
        Self {
            context: request.context.clone(),
            language: request.language,
            cwd: request.cwd.clone(),
            env: request.env.clone(),
        }
    }
}

impl From<ContextRequestWire> for ContextRequest {
    fn from(request: ContextRequestWire) -> Self {
        Self {
            context: request.context,
            language: request.language,
            cwd: request.cwd,
            env: request.env,
        }
    }
}

/// [`ContextInfo`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextInfoWire {
    pub context: String,
    pub language: Language,
    pub cwd: Option<String>,
    pub pid: u32,
}

impl From<&ContextInfo> for ContextInfoWire {
    fn from(info: &ContextInfo) -> Self {
        Self {
            context: info.context.clone(),
            language: info.language,
            cwd: info.cwd.clone(),
            pid: info.pid,
        }
    }
}

impl From<ContextInfoWire> for ContextInfo {
    fn from(info: ContextInfoWire) -> Self {
        Self {
            context: info.context,
            language: info.language,
            cwd: info.cwd,
            pid: info.pid,
        }
    }
}

/// [`CodeRequest`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequestWire {
    pub context: String,
    pub code: String,
    pub timeout_us: u64,
    pub env: BTreeMap<String, String>,
    pub output_limit: usize,
}

impl From<&CodeRequest> for CodeRequestWire {
    fn from(request: &CodeRequest) -> Self {
        Self {
            context: request.context.clone(),
            code: request.code.clone(),
            timeout_us: micros(request.timeout),
            env: request.env.clone(),
            output_limit: request.output_limit,
        }
    }
}

impl From<CodeRequestWire> for CodeRequest {
    fn from(request: CodeRequestWire) -> Self {
        Self {
            context: request.context,
            code: request.code,
            timeout: Duration::from_micros(request.timeout_us),
            env: request.env,
            output_limit: request.output_limit,
        }
    }
}

/// [`CodeEvent`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CodeEventWire {
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Result {
        data: BTreeMap<String, String>,
        is_main_result: bool,
        truncated: bool,
    },
    Error {
        name: String,
        value: String,
        traceback: String,
    },
    Done {
        execution_count: u64,
        outcome: ExecutionOutcome,
        duration_us: u64,
        restarted: bool,
        stdout_truncated: bool,
        stderr_truncated: bool,
    },
}

impl From<&CodeEvent> for CodeEventWire {
    fn from(event: &CodeEvent) -> Self {
        match event {
            CodeEvent::Stdout(data) => Self::Stdout { data: encode(data) },
            CodeEvent::Stderr(data) => Self::Stderr { data: encode(data) },
            CodeEvent::Result(result) => Self::Result {
                data: result.data.clone(),
                is_main_result: result.is_main_result,
                truncated: result.truncated,
            },
            CodeEvent::Error(error) => Self::Error {
                name: error.name.clone(),
                value: error.value.clone(),
                traceback: error.traceback.clone(),
            },
            CodeEvent::Done(summary) => Self::Done {
                execution_count: summary.execution_count,
                outcome: summary.outcome,
                duration_us: micros(summary.duration),
                restarted: summary.restarted,
                stdout_truncated: summary.stdout_truncated,
                stderr_truncated: summary.stderr_truncated,
            },
        }
    }
}

impl TryFrom<CodeEventWire> for CodeEvent {
    type Error = Malformed;
    fn try_from(event: CodeEventWire) -> Result<Self, Malformed> {
        Ok(match event {
            CodeEventWire::Stdout { data } => Self::Stdout(decode(&data)?),
            CodeEventWire::Stderr { data } => Self::Stderr(decode(&data)?),
            CodeEventWire::Result {
                data,
                is_main_result,
                truncated,
            } => Self::Result(ExecutionResult {
                data,
                is_main_result,
                truncated,
            }),
            CodeEventWire::Error {
                name,
                value,
                traceback,
            } => Self::Error(ExecutionError {
                name,
                value,
                traceback,
            }),
            CodeEventWire::Done {
                execution_count,
                outcome,
                duration_us,
                restarted,
                stdout_truncated,
                stderr_truncated,
            } => Self::Done(ExecutionSummary {
                execution_count,
                outcome,
                duration: Duration::from_micros(duration_us),
                restarted,
                stdout_truncated,
                stderr_truncated,
            }),
        })
    }
}

/// [`FileEntry`] on the wire (`modified_us`: microseconds since the epoch).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntryWire {
    pub name: String,
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub modified_us: i64,
    pub symlink_target: Option<String>,
}

impl From<&FileEntry> for FileEntryWire {
    fn from(entry: &FileEntry) -> Self {
        let modified_us = match entry.modified_at.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Self {
            name: entry.name.clone(),
            path: entry.path.clone(),
            kind: entry.kind,
            size: entry.size,
            mode: entry.mode,
            modified_us,
            symlink_target: entry.symlink_target.clone(),
        }
    }
}

impl From<FileEntryWire> for FileEntry {
    fn from(entry: FileEntryWire) -> Self {
        let offset = Duration::from_micros(entry.modified_us.unsigned_abs());
        let modified_at = if entry.modified_us >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(offset)
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(offset)
        };
        Self {
            name: entry.name,
            path: entry.path,
            kind: entry.kind,
            size: entry.size,
            mode: entry.mode,
            modified_at: modified_at.unwrap_or(SystemTime::UNIX_EPOCH),
            symlink_target: entry.symlink_target,
        }
    }
}

/// [`Listing`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListingWire {
    pub entries: Vec<FileEntryWire>,
    pub truncated: bool,
}

impl From<&Listing> for ListingWire {
    fn from(listing: &Listing) -> Self {
        Self {
            entries: listing.entries.iter().map(Into::into).collect(),
            truncated: listing.truncated,
        }
    }
}

impl From<ListingWire> for Listing {
    fn from(listing: ListingWire) -> Self {
        Self {
            entries: listing.entries.into_iter().map(Into::into).collect(),
            truncated: listing.truncated,
        }
    }
}

/// [`ProcessRequest`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRequestWire {
    pub command: CommandWire,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub stdin: bool,
    pub tag: Option<String>,
    pub timeout_us: Option<u64>,
}

impl From<&ProcessRequest> for ProcessRequestWire {
    fn from(request: &ProcessRequest) -> Self {
        Self {
            command: (&request.command).into(),
            env: request.env.clone(),
            cwd: request.cwd.clone(),
            stdin: request.stdin,
            tag: request.tag.clone(),
            timeout_us: request.timeout.map(micros),
        }
    }
}

impl From<ProcessRequestWire> for ProcessRequest {
    fn from(request: ProcessRequestWire) -> Self {
        Self {
            command: request.command.into(),
            env: request.env,
            cwd: request.cwd,
            stdin: request.stdin,
            tag: request.tag,
            timeout: request.timeout_us.map(Duration::from_micros),
        }
    }
}

/// Base64 of stdin bytes for [`Call::WriteStdin`].
pub fn encode_stdin(data: &[u8]) -> String {
    encode(data)
}

/// The bytes of [`Call::WriteStdin`].
pub fn decode_stdin(data: &str) -> Result<Vec<u8>, Malformed> {
    decode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_events_round_trip() {
        let events = [
            ExecEvent::Started { pid: 7 },
            ExecEvent::Stdout(vec![0, 159, 146, 150]),
            ExecEvent::Stderr(b"err".to_vec()),
            ExecEvent::Finished(ExecExit {
                exit_code: Some(3),
                signal: None,
                timed_out: true,
                oom_killed: false,
                stdout_truncated: true,
                stderr_truncated: false,
                duration: Duration::from_micros(1234),
            }),
        ];
        for event in events {
            let json = serde_json::to_string(&ExecEventWire::from(&event)).expect("encode");
            let wire: ExecEventWire = serde_json::from_str(&json).expect("decode");
            assert_eq!(ExecEvent::try_from(wire).expect("valid"), event);
        }
    }

    #[test]
    fn errors_round_trip_with_their_kind() {
        let id: SandboxId = SandboxId::generate();
        let cases = [
            RuntimeError::NotFound { id: id.clone() },
            RuntimeError::File {
                kind: FileErrorKind::NoSpace,
                detail: "full".into(),
            },
            RuntimeError::UnknownProcess { pid: 9 },
            RuntimeError::AtCapacity {
                detail: "busy".into(),
            },
        ];
        for error in cases {
            let wire = ErrorWire::from(&error);
            let json = serde_json::to_string(&wire).expect("encode");
            let back: ErrorWire = serde_json::from_str(&json).expect("decode");
            assert_eq!(back, wire);
            let again = RuntimeError::from(back);
            assert_eq!(again.to_string(), error.to_string());
        }
    }

    #[test]
    fn bad_base64_is_malformed_not_a_panic() {
        let wire = ExecEventWire::Stdout { data: "%%%".into() };
        assert!(ExecEvent::try_from(wire).is_err());
    }

    #[test]
    fn file_times_before_the_epoch_survive() {
        let entry = FileEntry {
            name: "a".into(),
            path: "/a".into(),
            kind: FileKind::File,
            size: 1,
            mode: 0o644,
            modified_at: SystemTime::UNIX_EPOCH - Duration::from_secs(10),
            symlink_target: None,
        };
        let back = FileEntry::from(FileEntryWire::from(&entry));
        assert_eq!(back, entry);
    }
}
