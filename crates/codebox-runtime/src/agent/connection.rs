//! [`AgentConnection`]: the handshake, the shared writer, and the requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use codebox_protocol::{
    decode_frame, encode_control, encode_data, AgentMessage, Command as WireCommand, ExecSpec,
    Frame, HostMessage, RequestId, StdinMode, Stream, MAX_OUTPUT_LIMIT, MAX_TIMEOUT_MS,
    PROTOCOL_VERSION,
};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::code::ContextInfo;
use super::error::{sanitize, AgentError};
use super::reader::{self, lock, ExecRoute, SharedRoutes};
use crate::{Command, ExecRequest, ExecStream};

/// Events buffered per exec between the reader and a slow consumer (each at most one
/// 64 KiB chunk, so about 1 MiB per exec).
const EXEC_EVENT_CAPACITY: usize = 16;
/// How long the host waits for the agent to accept a frame (a stuck agent must not
/// hang the caller), to start a program, and to answer a ping.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued for the writer task before senders wait.
const WRITE_QUEUE: usize = 64;
/// Buffer of the reader (fewer syscalls for small frames).
const READ_BUFFER: usize = 128 * 1024;

/// What the agent said about itself in its Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub protocol_version: u32,
    /// Sanitised and bounded: it comes from inside the sandbox.
    pub agent_version: String,
    /// The agent's pid in its own PID namespace (1 inside a sandbox).
    pub pid: u32,
}

/// The host end of one agent's channel. Cheap to clone; every clone shares the
/// connection. See the module doc for the API summary.
#[derive(Debug, Clone)]
pub struct AgentConnection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    info: AgentInfo,
    /// Whole frames for the writer task: a request future dropped half-way can never
    /// leave half a frame on the wire. `None` after `shutdown`.
    writer: StdMutex<Option<mpsc::Sender<Vec<u8>>>>,
    routes: SharedRoutes,
    next_id: AtomicU64,
    closed: watch::Receiver<bool>,
    /// Contexts created through this connection and not destroyed, by id.
    contexts: StdMutex<BTreeMap<String, ContextInfo>>,
}

impl AgentConnection {
    /// Reads the agent's Hello (within `timeout`), accepts a matching protocol version
    /// (refuses any other and fails), then starts the reader task. Must be called from
    /// inside a tokio runtime.
    pub async fn handshake(stream: UnixStream, timeout: Duration) -> Result<Self, AgentError> {
        let (read_half, mut write_half) = stream.into_split();
        let mut reader = BufReader::with_capacity(READ_BUFFER, read_half);
        let hello = tokio::time::timeout(timeout, reader::read_body(&mut reader))
            .await
            .map_err(|_| AgentError::HandshakeTimeout { timeout })??
            .ok_or(AgentError::Closed)?;
        let info = parse_hello(&hello)?;
        if info.protocol_version != PROTOCOL_VERSION {
            let reason = format!("this host speaks protocol version {PROTOCOL_VERSION}");
            let _ = write_frame(&mut write_half, &HostMessage::Refuse { reason }).await;
            return Err(AgentError::VersionMismatch {
                agent: info.protocol_version,
                host: PROTOCOL_VERSION,
            });
        }
        let welcome = HostMessage::Welcome {
            protocol_version: PROTOCOL_VERSION,
        };
        write_frame(&mut write_half, &welcome).await?;
        let routes = SharedRoutes::default();
        let (closed_tx, closed_rx) = watch::channel(false);
        tokio::spawn(reader::run(reader, Arc::clone(&routes), closed_tx));
        let (frames_tx, frames_rx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(write_loop(write_half, frames_rx));
        Ok(Self {
            inner: Arc::new(Inner {
                info,
                writer: StdMutex::new(Some(frames_tx)),
                routes,
                next_id: AtomicU64::new(1),
                closed: closed_rx,
                contexts: StdMutex::new(BTreeMap::new()),
            }),
        })
    }

    /// What the agent announced.
    pub fn info(&self) -> &AgentInfo {
        &self.inner.info
    }

    /// Starts `request` with `sandbox_env` under the request's own env (the agent puts
    /// both over its allowlisted base). Returns once the program runs: the stream's
    /// first event is `Started`. A program or directory that does not exist is
    /// `Refused { code: InvalidRequest }`. Dropping the stream kills the exec's tree.
    pub async fn exec(
        &self,
        request: &ExecRequest,
        sandbox_env: &BTreeMap<String, String>,
    ) -> Result<ExecStream, AgentError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let spec = exec_spec(id, request, sandbox_env);
        spec.validate()
            .map_err(|source| AgentError::InvalidRequest { source })?;
        let mut frames = Vec::new();
        encode(&HostMessage::Exec(spec.clone()), &mut frames)?;
        if let Some(bytes) = request.stdin.as_deref() {
            encode_data(spec.id, Stream::Stdin, bytes, &mut frames);
            encode(&HostMessage::CloseStdin { id: spec.id }, &mut frames)?;
        }
        self.start_streaming(id, &frames, spec.output_limit).await
    }

    /// Registers `id` as a streaming operation (exec, terminal), sends its request
    /// `frames` as one queue entry (no other request interleaves with half-sent
    /// stdin), and returns its stream once `Started` came. Dropping the stream kills
    /// the operation's tree.
    pub(super) async fn start_streaming(
        &self,
        id: RequestId,
        frames: &[u8],
        output_limit: u64,
    ) -> Result<ExecStream, AgentError> {
        let (sender, stream) = ExecStream::channel(EXEC_EVENT_CAPACITY);
        let (start_tx, start_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        self.register(
            id,
            ExecRoute {
                start: Some(start_tx),
                events: sender.events,
                stdout_room: output_limit,
                stderr_room: output_limit,
                stdout_truncated: false,
                stderr_truncated: false,
                _done: done_tx,
            },
        )?;
        // If the caller drops this future half-way, the exec must not run unobserved.
        let mut guard = StartGuard {
            connection: self,
            id,
            armed: true,
        };
        if let Err(error) = self.write_bytes(frames).await {
            lock(&self.inner.routes).execs.remove(&id);
            guard.armed = false;
            return Err(error);
        }
        let started = self.await_start(id, start_rx).await;
        guard.armed = false;
        started?;
        self.watch_cancel(id, sender.cancelled, done_rx);
        Ok(stream)
    }

    /// Round trip of a Ping; the time it took.
    pub async fn ping(&self) -> Result<Duration, AgentError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut routes = lock(&self.inner.routes);
            if routes.closed {
                return Err(AgentError::Closed);
            }
            routes.pings.insert(id, reply_tx);
        }
        let started = Instant::now();
        self.send(&HostMessage::Ping { id }).await?;
        match tokio::time::timeout(PING_TIMEOUT, reply_rx).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(_)) => Err(AgentError::Closed),
            Err(_) => {
                lock(&self.inner.routes).pings.remove(&id);
                Err(AgentError::Timeout {
                    operation: "a ping",
                    timeout: PING_TIMEOUT,
                })
            }
        }
    }

    /// Resolves once the connection is gone (the agent exited, the channel broke, or
    /// the agent broke the protocol). Every clone sees the same event.
    pub async fn closed(&self) {
        let mut closed = self.inner.closed.clone();
        // An error means the reader task is gone, which is closed too.
        let _ = closed.wait_for(|closed| *closed).await;
    }

    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Closes the host's writing side: the agent sees end of file, kills every exec's
    /// tree and exits. Later requests fail with `Closed`.
    pub async fn shutdown(&self) {
        // Dropping the last sender ends the writer task once the queue is written;
        // dropping the write half then shuts the socket's writing side down.
        self.writer_lock().take();
    }

    pub(super) fn register(&self, id: RequestId, route: ExecRoute) -> Result<(), AgentError> {
        let mut routes = lock(&self.inner.routes);
        if routes.closed {
            return Err(AgentError::Closed);
        }
        routes.execs.insert(id, route);
        Ok(())
    }

    async fn await_start(
        &self,
        id: RequestId,
        start: oneshot::Receiver<Result<u32, AgentError>>,
    ) -> Result<u32, AgentError> {
        match tokio::time::timeout(START_TIMEOUT, start).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AgentError::Closed),
            Err(_) => {
                lock(&self.inner.routes).execs.remove(&id);
                let _ = self.send(&HostMessage::Kill { id }).await;
                Err(AgentError::Timeout {
                    operation: "an exec start",
                    timeout: START_TIMEOUT,
                })
            }
        }
    }

    /// Sends Kill when the consumer drops the stream before the exec finished.
    pub(super) fn watch_cancel(
        &self,
        id: RequestId,
        cancelled: oneshot::Receiver<()>,
        done: oneshot::Receiver<()>,
    ) {
        let connection = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancelled => {
                    tracing::debug!(id, "exec stream dropped: killing the exec");
                    let _ = connection.send(&HostMessage::Kill { id }).await;
                }
                _ = done => {}
            }
        });
    }

    /// A fresh request id.
    pub(super) fn next_request_id(&self) -> RequestId {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn routes(&self) -> &SharedRoutes {
        &self.inner.routes
    }

    /// The registry of live contexts (plain data, consistent even after a panic).
    pub(super) fn context_registry(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, ContextInfo>> {
        self.inner
            .contexts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) async fn send(&self, message: &HostMessage) -> Result<(), AgentError> {
        let mut frame = Vec::new();
        encode(message, &mut frame)?;
        self.write_bytes(&frame).await
    }

    /// Queues whole frames for the writer task.
    pub(super) async fn write_bytes(&self, bytes: &[u8]) -> Result<(), AgentError> {
        let sender = self.writer_lock().clone().ok_or(AgentError::Closed)?;
        sender
            .send(bytes.to_vec())
            .await
            .map_err(|_| AgentError::Closed)
    }

    fn writer_lock(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<Vec<u8>>>> {
        // The guarded value is a plain Option, consistent even after a panic.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes queued frames in order. A write that fails or does not finish in time ends
/// the task (a stuck agent must not hang the host); later requests then fail `Closed`
/// and the runtime's supervision destroys the sandbox.
async fn write_loop(mut writer: OwnedWriteHalf, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = frames.recv().await {
        match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "writing to the agent failed");
                return;
            }
            Err(_) => {
                tracing::warn!(timeout = ?WRITE_TIMEOUT, "the agent stopped reading");
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}

/// Kills an exec whose `exec()` future was dropped before it returned the stream.
struct StartGuard<'a> {
    connection: &'a AgentConnection,
    id: RequestId,
    armed: bool,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        lock(&self.connection.inner.routes).execs.remove(&self.id);
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

pub(super) fn encode(message: &HostMessage, out: &mut Vec<u8>) -> Result<(), AgentError> {
    encode_control(message, out).map_err(|error| AgentError::Protocol {
        detail: error.to_string(),
    })
}

async fn write_frame(writer: &mut OwnedWriteHalf, message: &HostMessage) -> Result<(), AgentError> {
    let mut frame = Vec::new();
    encode(message, &mut frame)?;
    writer
        .write_all(&frame)
        .await
        .map_err(|source| AgentError::Io {
            operation: "writing the handshake",
            source,
        })
}

fn parse_hello(body: &[u8]) -> Result<AgentInfo, AgentError> {
    match decode_frame::<AgentMessage>(body) {
        Ok(Frame::Control(AgentMessage::Hello {
            protocol_version,
            agent_version,
            pid,
        })) => Ok(AgentInfo {
            protocol_version,
            agent_version: sanitize(&agent_version).chars().take(64).collect(),
            pid,
        }),
        Ok(_) => Err(AgentError::Protocol {
            detail: "the first message is not Hello".into(),
        }),
        Err(error) => Err(AgentError::Protocol {
            detail: error.to_string(),
        }),
    }
}

/// The wire form of a request: env merged (request over sandbox), limits clamped to
/// what the protocol allows.
fn exec_spec(
    id: RequestId,
    request: &ExecRequest,
    sandbox_env: &BTreeMap<String, String>,
) -> ExecSpec {
    let mut env = sandbox_env.clone();
    env.extend(request.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let timeout_ms = u64::try_from(request.timeout.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TIMEOUT_MS);
    ExecSpec {
        id,
        command: match &request.command {
            Command::Shell(script) => WireCommand::Shell(script.clone()),
            Command::Argv(argv) => WireCommand::Argv(argv.clone()),
        },
        env,
        cwd: request.cwd.clone(),
        stdin: match request.stdin {
            Some(_) => StdinMode::Pipe,
            None => StdinMode::Null,
        },
        timeout_ms,
        output_limit: u64::try_from(request.output_limit)
            .unwrap_or(u64::MAX)
            .min(MAX_OUTPUT_LIMIT),
    }
}
