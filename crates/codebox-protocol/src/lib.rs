//! The versioned wire protocol between the host (`codebox-runtime`) and the in-sandbox
//! agent (`codebox-agent`): the frame format, the message types and their limits.
//!
//! This crate owns only data and framing: no I/O beyond `std::io::Read`/`Write` helpers,
//! no syscalls, no async runtime. Both ends treat every frame from the other side as
//! untrusted; the host in particular treats the agent as hostile (it shares a sandbox
//! with the user's code), so every size is checked before anything is allocated.
//!
//! # Frames
//! One stream socket carries many concurrent operations. Every frame is
//!
//! ```text
//! [len: u32 big-endian][kind: u8][payload: len - 1 bytes]
//! ```
//!
//! `len` counts the kind byte and the payload and is at most [`MAX_FRAME_LEN`] (1 MiB);
//! a reader validates it from the 4-byte header before reserving any buffer. Two kinds:
//!
//! * [`FRAME_CONTROL`]: the payload is one JSON message, [`HostMessage`] from the host or
//!   [`AgentMessage`] from the agent, internally tagged by `"type"`.
//! * [`FRAME_DATA`]: raw bytes of one stream of one operation, so output never travels as
//!   base64 inside JSON on the hot path: `[request id: u64 BE][stream: u8][bytes]`, at most
//!   [`MAX_DATA_CHUNK`] bytes of data per frame ([`Stream`] names the stream).
//!
//! # Conversation
//! 1. The agent sends [`AgentMessage::Hello`] with its [`PROTOCOL_VERSION`], version and pid.
//! 2. The host answers [`HostMessage::Welcome`] if it speaks that version, or
//!    [`HostMessage::Refuse`] and closes the connection.
//! 3. The host sends requests, each with a host-chosen [`RequestId`] unique on the
//!    connection; the agent answers with messages carrying the same id. An exec produces
//!    `Started`, data frames (`stdout`/`stderr`), then exactly one `Exited`, or one `Error`
//!    if it could not start.
//! 4. A message of an unknown `type` (or one that does not parse) is answered with
//!    [`AgentMessage::Error`] code [`ErrorCode::UnknownMessage`] / [`ErrorCode::BadMessage`]
//!    and the connection goes on; a bad length ends it, since the byte stream can no
//!    longer be trusted to be in sync. The host, which trusts the agent far less than
//!    the agent trusts the host, closes the connection on anything it does not
//!    understand (the runtime then destroys the sandbox).
//!
//! # Code execution (version 2)
//! A context is a long-lived language runner (python, javascript, typescript, bash)
//! inside the sandbox: `CreateContext` -> `ContextReady`. `Execute` (then `code_len`
//! bytes of code as stdin data) -> `ExecutionAccepted`, output data, results (a JSON
//! MIME bundle on the `result` stream closed by `ExecutionResult`), at most one
//! `ExecutionError`, then exactly one `ExecutionDone`. Executions of one context run
//! one at a time in arrival order; contexts run in parallel. `Kill` cancels an
//! execution, `Interrupt` / `RestartContext` / `DestroyContext` act on a context.
//!
//! # Files (version 3)
//! Stat, list, mkdir, move, remove, and streamed reads and writes, each done inside the
//! sandbox by a short-lived worker process of the sandbox's user; see the `files`
//! module for the exchange, flow control and error codes.
//!
//! # Background processes (version 3)
//! Started like execs but outliving their request, named by pid, with output to
//! subscribers; and terminals (a login shell on a pseudo-terminal). See the
//! `process` module.
//!
//! # Extending
//! Later features (stateful interpreters, files, processes, PTY) add message types and
//! stream numbers under a new [`PROTOCOL_VERSION`]; fields added to existing messages must
//! be optional (`#[serde(default)]`), and unknown fields are ignored, so an older peer
//! keeps working for the messages it knows.

mod code;
mod files;
mod frame;
mod message;
mod process;

pub use code::{
    check_bundle, parse_bundle, truncate_text, validate_context_id, ContextSpec, ErrorReport,
    ExecuteSpec, ExecutionOutcome, ExecutionReport, InvalidCode, Language, MAX_CODE_BYTES,
    MAX_CONTEXT_ID, MAX_ENV_BYTES, MAX_ERROR_NAME, MAX_ERROR_VALUE, MAX_MIME_NAME, MAX_MIME_TYPES,
    MAX_RESULTS, MAX_RESULTS_BYTES, MAX_RESULT_BYTES, MAX_TRACEBACK, RESULTS_DROPPED_NOTICE,
};
pub use files::{
    validate_depth, validate_path, FileEntry, FileKind, InvalidPath, ReadSpec, WatchEvent,
    WatchKind, WriteSpec, LIST_BATCH, MAX_LIST_DEPTH, MAX_LIST_ENTRIES, MAX_PATH_BYTES,
    MAX_WATCHED_DIRS, UPLOAD_WINDOW, WATCH_BATCH,
};
pub use frame::{
    decode_frame, encode_control, encode_data, parse_header, read_frame, DecodeError, EncodeError,
    Frame, FrameDecoder, FrameError, FRAME_CONTROL, FRAME_DATA, FRAME_HEADER_LEN, MAX_DATA_CHUNK,
    MAX_FRAME_LEN,
};
pub use message::{
    AgentMessage, Command, ErrorCode, ExecSpec, ExitReport, HostMessage, InvalidExec, StdinMode,
    Stream, MAX_ARGS_BYTES, MAX_OUTPUT_LIMIT, MAX_TIMEOUT_MS,
};
pub use process::{
    validate_signal, validate_stdin_len, validate_terminal_size, InvalidProcess, ProcessInfo,
    ProcessSpec, PtySpec, ALLOWED_SIGNALS, MAX_STDIN_WRITE, MAX_TAG, MAX_TERMINAL_SIZE,
    PROCESS_BUFFER,
};

/// The protocol version this build speaks. Bumped when a message or stream is added.
/// Version 2 added contexts and executions of code (see the `code` module and the
/// `# Code execution` section above); version 3 file operations (the `# Files`
/// section); older messages are unchanged.
pub const PROTOCOL_VERSION: u32 = 3;

/// Identifies one operation on a connection; chosen by the host, unique per connection.
pub type RequestId = u64;
