//! [`AgentConnection`]'s background processes: start, list, stdin, signals, and
//! subscriptions to their output.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_protocol::{
    encode_data, validate_signal, Command as WireCommand, HostMessage, InvalidProcess, ProcessSpec,
    RequestId, Stream, MAX_STDIN_WRITE, MAX_TIMEOUT_MS,
};
pub use codebox_protocol::{ProcessInfo, ALLOWED_SIGNALS};
use tokio::sync::oneshot;

use super::code_reader::Reply;
use super::connection::AgentConnection;
use super::error::AgentError;
use super::reader::{lock, ExecRoute};
use crate::{Command, ExecStream};

/// How long the agent may take to start a process or answer a request about one.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered per subscription (each at most one 64 KiB chunk).
const SUBSCRIPTION_CAPACITY: usize = 16;

/// A background process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRequest {
    pub command: Command,
    /// Over the sandbox's env.
    pub env: BTreeMap<String, String>,
    /// Absolute path inside the sandbox; the user's home when `None`.
    pub cwd: Option<String>,
    /// Keep a stdin pipe open for [`AgentConnection::write_process_stdin`].
    pub stdin: bool,
    /// A label listed with the process (at most 256 bytes, no control character).
    pub tag: Option<String>,
    /// Killed (with its tree) after this long; lives as long as the sandbox if `None`.
    pub timeout: Option<Duration>,
}

/// A subscription to a process's output, from now on (plus what was buffered while
/// nobody listened). Events: `Stdout`/`Stderr` chunks, then `Finished` when the
/// process ends. Dropping `stream` unsubscribes; the process runs on.
#[derive(Debug)]
pub struct Subscription {
    /// Output lost (oldest first) while nobody listened: the buffer keeps 1 MiB.
    pub dropped_bytes: u64,
    pub stream: ExecStream,
}

fn invalid(source: InvalidProcess) -> AgentError {
    AgentError::Refused {
        code: codebox_protocol::ErrorCode::InvalidRequest,
        message: source.to_string(),
    }
}

fn unexpected(reply: &Reply) -> AgentError {
    AgentError::Protocol {
        detail: format!("an unexpected reply to a process request: {reply:?}"),
    }
}

impl AgentConnection {
    /// Starts a background process; returns its pid once it runs. It outlives this
    /// call and dies with the sandbox (or at its timeout, or by a signal).
    pub async fn start_process(
        &self,
        request: &ProcessRequest,
        sandbox_env: &BTreeMap<String, String>,
    ) -> Result<u32, AgentError> {
        let id = self.next_request_id();
        let mut env = sandbox_env.clone();
        env.extend(request.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let spec = ProcessSpec {
            id,
            command: match &request.command {
                Command::Shell(script) => WireCommand::Shell(script.clone()),
                Command::Argv(argv) => WireCommand::Argv(argv.clone()),
            },
            env,
            cwd: request.cwd.clone(),
            stdin: request.stdin,
            tag: request.tag.clone(),
            timeout_ms: request.timeout.map(|timeout| {
                u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .clamp(1, MAX_TIMEOUT_MS)
            }),
        };
        spec.validate().map_err(invalid)?;
        let reply = self
            .request(id, HostMessage::StartProcess(spec), PROCESS_TIMEOUT)
            .await;
        match reply {
            Ok(Reply::Started { pid }) if pid > 0 => Ok(pid),
            Ok(reply) => Err(unexpected(&reply)),
            Err(error) => {
                // Timed out or lost: it must not run unobserved.
                if !matches!(error, AgentError::Refused { .. }) {
                    let _ = self.send(&HostMessage::Kill { id }).await;
                }
                Err(error)
            }
        }
    }

    /// The running background processes, by pid.
    pub async fn list_processes(&self) -> Result<Vec<ProcessInfo>, AgentError> {
        let id = self.next_request_id();
        match self
            .request(id, HostMessage::ListProcesses { id }, PROCESS_TIMEOUT)
            .await?
        {
            Reply::Processes(processes) => Ok(processes),
            reply => Err(unexpected(&reply)),
        }
    }

    /// Queues `data` for the process's stdin (in writes of at most 1 MiB).
    pub async fn write_process_stdin(&self, pid: u32, data: &[u8]) -> Result<(), AgentError> {
        let chunk = usize::try_from(MAX_STDIN_WRITE).expect("1 MiB fits");
        for part in data.chunks(chunk) {
            let id = self.next_request_id();
            let len = part.len() as u64;
            let mut frames = Vec::with_capacity(part.len() + 128);
            super::connection::encode(&HostMessage::ProcessStdin { id, pid, len }, &mut frames)?;
            encode_data(id, Stream::Stdin, part, &mut frames);
            self.ack(id, frames).await?;
        }
        Ok(())
    }

    /// Closes the process's stdin once what was queued is written.
    pub async fn close_process_stdin(&self, pid: u32) -> Result<(), AgentError> {
        let id = self.next_request_id();
        let mut frame = Vec::new();
        super::connection::encode(&HostMessage::CloseProcessStdin { id, pid }, &mut frame)?;
        self.ack(id, frame).await
    }

    /// Sends `signal` (one of [`ALLOWED_SIGNALS`], e.g. `"SIGTERM"`) to the process's
    /// group.
    pub async fn signal_process(&self, pid: u32, signal: &str) -> Result<(), AgentError> {
        validate_signal(signal).map_err(invalid)?;
        let id = self.next_request_id();
        let message = HostMessage::SignalProcess {
            id,
            pid,
            signal: signal.to_owned(),
        };
        let mut frame = Vec::new();
        super::connection::encode(&message, &mut frame)?;
        self.ack(id, frame).await
    }

    /// Attaches to the process's output from now on (several subscribers may).
    pub async fn subscribe_process(&self, pid: u32) -> Result<Subscription, AgentError> {
        let id = self.next_request_id();
        let (sender, stream) = ExecStream::channel(SUBSCRIPTION_CAPACITY);
        let (done_tx, done_rx) = oneshot::channel();
        self.register(
            id,
            ExecRoute {
                start: None,
                events: sender.events,
                stdout_room: u64::MAX,
                stderr_room: u64::MAX,
                stdout_truncated: false,
                stderr_truncated: false,
                _done: done_tx,
            },
        )?;
        let reply = self
            .request(
                id,
                HostMessage::SubscribeProcess { id, pid },
                PROCESS_TIMEOUT,
            )
            .await;
        match reply {
            Ok(Reply::Subscribed { dropped_bytes }) => {
                self.watch_cancel(id, sender.cancelled, done_rx);
                Ok(Subscription {
                    dropped_bytes,
                    stream,
                })
            }
            other => {
                lock(self.routes()).execs.remove(&id);
                let _ = self.send(&HostMessage::Kill { id }).await;
                match other {
                    Ok(reply) => Err(unexpected(&reply)),
                    Err(error) => Err(error),
                }
            }
        }
    }

    /// Sends pre-encoded frames of request `id` and waits for its `Ack`.
    async fn ack(&self, id: RequestId, frames: Vec<u8>) -> Result<(), AgentError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut routes = lock(self.routes());
            if routes.closed {
                return Err(AgentError::Closed);
            }
            routes.replies.insert(id, reply_tx);
        }
        if let Err(error) = self.write_bytes(&frames).await {
            lock(self.routes()).replies.remove(&id);
            return Err(error);
        }
        match tokio::time::timeout(PROCESS_TIMEOUT, reply_rx).await {
            Ok(Ok(Ok(Reply::Ack))) => Ok(()),
            Ok(Ok(Ok(reply))) => Err(unexpected(&reply)),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(AgentError::Closed),
            Err(_) => {
                lock(self.routes()).replies.remove(&id);
                Err(AgentError::Timeout {
                    operation: "a process request",
                    timeout: PROCESS_TIMEOUT,
                })
            }
        }
    }
}
