//! Host-side types of stateful code execution: contexts, code requests, and the stream
//! of an execution's events. These are what the `Runtime` trait's code methods take and
//! return (see the module doc of `agent` for the suggested signatures).

use std::collections::BTreeMap;
use std::time::Duration;

pub use codebox_protocol::{ExecutionOutcome, Language};
use tokio::sync::{mpsc, oneshot};

use super::error::AgentError;

/// A context to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextRequest {
    /// 1 to 64 characters of `[A-Za-z0-9_.-]`, unique in the sandbox.
    pub context: String,
    pub language: Language,
    /// Absolute path inside the sandbox; the user's home when `None`.
    pub cwd: Option<String>,
    /// Over the sandbox's env, for the runner's whole life.
    pub env: BTreeMap<String, String>,
}

/// A live context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextInfo {
    pub context: String,
    pub language: Language,
    pub cwd: Option<String>,
    /// The runner's pid inside the sandbox (changes on restart).
    pub pid: u32,
}

/// Code to run in a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRequest {
    pub context: String,
    pub code: String,
    /// From the moment the execution starts (not while it waits in the queue).
    pub timeout: Duration,
    /// Set for this execution only.
    pub env: BTreeMap<String, String>,
    /// Bytes kept per stream (stdout, stderr); the rest is dropped and flagged.
    pub output_limit: usize,
}

/// One rich result: a MIME bundle (`text/plain`, `text/html`, `image/png` as base64,
/// ...). `is_main_result` marks the value of the cell's last expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionResult {
    pub data: BTreeMap<String, String>,
    pub is_main_result: bool,
    /// The bundle was over the cap and replaced by a truncated `text/plain`.
    pub truncated: bool,
}

impl ExecutionResult {
    /// The plain text of the result, if any.
    pub fn text(&self) -> Option<&str> {
        self.data.get("text/plain").map(String::as_str)
    }
}

/// The error the code raised (name like `ZeroDivisionError`, `ExitCode` for a
/// non-zero bash status, `KeyboardInterrupt` after an interrupt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionError {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionSummary {
    /// Executions started in the context since its runner (re)started, this one
    /// included; 0 if it never started.
    pub execution_count: u64,
    pub outcome: ExecutionOutcome,
    pub duration: Duration,
    /// The runner was restarted (after a crash or an ignored interrupt): state lost.
    pub restarted: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// One event of an execution, in order per kind (stdout and stderr come from two
/// pipes and results from the runner's channel, so their relative order is close to,
/// but not guaranteed to be, the order the code produced them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Result(ExecutionResult),
    Error(ExecutionError),
    Done(ExecutionSummary),
}

/// The events of one execution. Dropping it before `Done` cancels the execution: the
/// agent interrupts it (or takes it off its queue).
#[derive(Debug)]
pub struct CodeStream {
    events: mpsc::Receiver<CodeEvent>,
    _cancel_on_drop: oneshot::Sender<()>,
}

/// The producer's side of a [`CodeStream`] (the agent connection, or a
/// runtime that forwards another runtime's stream, like codebox-node's).
#[derive(Debug)]
pub struct CodeStreamSender {
    pub events: mpsc::Sender<CodeEvent>,
    pub cancelled: oneshot::Receiver<()>,
}

/// A finished execution, gathered by [`CodeStream::collect`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub results: Vec<ExecutionResult>,
    pub error: Option<ExecutionError>,
    /// Always `Some` when returned by `collect`.
    pub summary: Option<ExecutionSummary>,
}

impl CodeOutput {
    /// The plain text of the main result (the API's `text`).
    pub fn text(&self) -> Option<&str> {
        self.results
            .iter()
            .find(|result| result.is_main_result)
            .and_then(ExecutionResult::text)
    }

    pub fn outcome(&self) -> Option<ExecutionOutcome> {
        self.summary.as_ref().map(|summary| summary.outcome)
    }
}

impl CodeStream {
    /// A connected pair; `capacity` bounds the buffered events. The consumer
    /// dropping the stream makes `cancelled` resolve.
    pub fn channel(capacity: usize) -> (CodeStreamSender, CodeStream) {
        let (events_tx, events_rx) = mpsc::channel(capacity);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        (
            CodeStreamSender {
                events: events_tx,
                cancelled: cancel_rx,
            },
            CodeStream {
                events: events_rx,
                _cancel_on_drop: cancel_tx,
            },
        )
    }

    /// The next event; `None` after `Done` or if the agent went away.
    pub async fn next(&mut self) -> Option<CodeEvent> {
        self.events.recv().await
    }

    /// Runs the stream to its end and gathers everything.
    pub async fn collect(mut self) -> Result<CodeOutput, AgentError> {
        let mut output = CodeOutput::default();
        while let Some(event) = self.next().await {
            match event {
                CodeEvent::Stdout(bytes) => output.stdout.extend_from_slice(&bytes),
                CodeEvent::Stderr(bytes) => output.stderr.extend_from_slice(&bytes),
                CodeEvent::Result(result) => output.results.push(result),
                CodeEvent::Error(error) => output.error = Some(error),
                CodeEvent::Done(summary) => {
                    output.summary = Some(summary);
                    return Ok(output);
                }
            }
        }
        Err(AgentError::Closed)
    }
}
