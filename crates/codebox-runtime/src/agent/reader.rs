//! The reader task: reads frames from the agent, checks them, and routes each to the
//! operation it belongs to.
//!
//! Backpressure: the reader awaits room in the exec's bounded event channel, so a slow
//! consumer stops the reader, the socket fills, and the agent stops reading that
//! sandbox's output pipes once its own queue passes 1 MiB (programs then block on full
//! pipes). Nothing buffers without bound; the price is that one slow consumer delays
//! the other execs of the same sandbox. The agent keeps enforcing timeouts and kills
//! meanwhile. A consumer that dropped its stream costs nothing: sends to it fail at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use codebox_protocol::{
    decode_frame, parse_header, AgentMessage, ExitReport, Frame, RequestId, Stream,
    FRAME_HEADER_LEN,
};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot, watch};

use super::code_reader::{self, CodeRoute, Reply, ReplyRoute};
use super::error::{sanitize, AgentError};
use super::file_reader::{self, FileRoute};
use crate::{ExecEvent, ExecExit};

/// Where a `Started` or a refusal of an exec goes.
pub(crate) type StartReply = oneshot::Sender<Result<u32, AgentError>>;

/// One exec in flight.
#[derive(Debug)]
pub(crate) struct ExecRoute {
    pub start: Option<StartReply>,
    pub events: mpsc::Sender<ExecEvent>,
    /// Bytes per stream the host still accepts: the host enforces the output limit
    /// itself, since a hostile agent could ignore it.
    pub stdout_room: u64,
    pub stderr_room: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Dropped with the route, which ends the exec's cancel watcher.
    pub _done: oneshot::Sender<()>,
}

/// Operations waiting for the agent, by request id.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub execs: HashMap<RequestId, ExecRoute>,
    pub pings: HashMap<RequestId, oneshot::Sender<()>>,
    pub code: HashMap<RequestId, CodeRoute>,
    pub replies: HashMap<RequestId, ReplyRoute>,
    pub files: HashMap<RequestId, FileRoute>,
    /// Set when the reader stopped: nothing may be registered any more.
    pub closed: bool,
}

pub(crate) type SharedRoutes = Arc<Mutex<Routes>>;

pub(crate) fn lock(routes: &SharedRoutes) -> std::sync::MutexGuard<'_, Routes> {
    // A panic while holding this lock leaves plain maps behind, still consistent.
    routes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads one frame body; `Ok(None)` at a clean end of stream. The length is checked
/// against the protocol maximum before the body is allocated.
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Vec<u8>>, AgentError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(source) => {
            return Err(AgentError::Io {
                operation: "reading a frame",
                source,
            })
        }
    }
    let len = parse_header(header).map_err(|error| AgentError::Protocol {
        detail: error.to_string(),
    })?;
    let mut body = vec![0; len];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|source| AgentError::Io {
            operation: "reading a frame body",
            source,
        })?;
    Ok(Some(body))
}

/// Runs until the agent closes the channel or breaks the protocol; then fails every
/// pending operation and flags the connection closed.
pub(crate) async fn run(
    reader: BufReader<OwnedReadHalf>,
    routes: SharedRoutes,
    closed: watch::Sender<bool>,
) {
    let mut reader = reader;
    let outcome = read_loop(&mut reader, &routes).await;
    match &outcome {
        Ok(()) => tracing::debug!("agent closed the channel"),
        Err(error) => tracing::warn!(error = %error, "agent connection ended"),
    }
    let mut routes = lock(&routes);
    routes.closed = true;
    for (_, mut route) in routes.execs.drain() {
        if let Some(start) = route.start.take() {
            let _ = start.send(Err(AgentError::Closed));
        }
    }
    routes.pings.clear();
    // Dropping the senders fails every waiter with `Closed`; streams end without Done.
    routes.code.clear();
    routes.replies.clear();
    routes.files.clear();
    drop(routes);
    let _ = closed.send(true);
}

async fn read_loop(
    reader: &mut BufReader<OwnedReadHalf>,
    routes: &SharedRoutes,
) -> Result<(), AgentError> {
    while let Some(body) = read_body(reader).await? {
        let frame = decode_frame::<AgentMessage>(&body).map_err(|error| AgentError::Protocol {
            detail: error.to_string(),
        })?;
        match frame {
            Frame::Control(message) => on_message(message, routes).await?,
            Frame::Data { id, stream, data } if code_reader::is_code(id, routes) => {
                code_reader::on_data(id, stream, data, routes).await?;
            }
            Frame::Data { id, stream, data } if file_reader::owns(id, routes) => {
                file_reader::on_data(id, stream, data, routes).await?;
            }
            Frame::Data { id, stream, data } => on_data(id, stream, data, routes).await?,
        }
    }
    Ok(())
}

async fn on_data(
    id: RequestId,
    stream: Stream,
    mut data: Vec<u8>,
    routes: &SharedRoutes,
) -> Result<(), AgentError> {
    let sender = {
        let mut routes = lock(routes);
        let Some(route) = routes.execs.get_mut(&id) else {
            tracing::debug!(id, "output for an unknown exec dropped");
            return Ok(());
        };
        if route.start.is_some() {
            return Err(protocol("output before Started"));
        }
        let (room, truncated) = match stream {
            Stream::Stdout => (&mut route.stdout_room, &mut route.stdout_truncated),
            Stream::Stderr => (&mut route.stderr_room, &mut route.stderr_truncated),
            Stream::Stdin | Stream::Result | Stream::File => {
                return Err(protocol(
                    "the agent sent stdin, result or file data for an exec",
                ))
            }
        };
        let keep = usize::try_from(*room).unwrap_or(usize::MAX).min(data.len());
        if keep < data.len() {
            *truncated = true;
            data.truncate(keep);
        }
        *room -= keep as u64;
        route.events.clone()
    };
    if data.is_empty() {
        return Ok(());
    }
    let event = match stream {
        Stream::Stderr => ExecEvent::Stderr(data),
        _ => ExecEvent::Stdout(data),
    };
    // Backpressure point (see the module doc). An error means the consumer is gone.
    let _ = sender.send(event).await;
    Ok(())
}

async fn on_message(message: AgentMessage, routes: &SharedRoutes) -> Result<(), AgentError> {
    match message {
        AgentMessage::Started { id, pid } => on_started(id, pid, routes).await,
        AgentMessage::Exited(report) => on_exited(report, routes).await,
        AgentMessage::Pong { id } => {
            if let Some(reply) = lock(routes).pings.remove(&id) {
                let _ = reply.send(());
            }
            Ok(())
        }
        AgentMessage::ContextReady { id, pid, .. } => {
            code_reader::on_reply(id, Reply::Ready { pid }, routes);
            Ok(())
        }
        AgentMessage::Ack { id } => {
            code_reader::on_reply(id, Reply::Ack, routes);
            Ok(())
        }
        AgentMessage::ExecutionAccepted { id } => code_reader::on_accepted(id, routes),
        AgentMessage::ExecutionResult {
            id,
            is_main_result,
            truncated,
        } => code_reader::on_result(id, is_main_result, truncated, routes).await,
        AgentMessage::ExecutionError(report) => {
            code_reader::on_execution_error(report, routes).await
        }
        AgentMessage::ExecutionDone(report) => code_reader::on_done(report, routes).await,
        AgentMessage::Error {
            id: Some(id),
            code,
            message,
        } if file_reader::owns(id, routes) => {
            file_reader::on_error(id, AgentError::refused(code, &message), routes).await;
            Ok(())
        }
        AgentMessage::Error {
            id: Some(id),
            code,
            message,
        } if code_reader::on_error(id, AgentError::refused(code, &message), routes).is_ok() => {
            Ok(())
        }
        AgentMessage::Error { id, code, message } => {
            let route = id.and_then(|id| {
                let mut routes = lock(routes);
                let pending = routes.execs.get(&id)?.start.is_some();
                pending.then(|| routes.execs.remove(&id)).flatten()
            });
            match route.and_then(|mut route| route.start.take()) {
                Some(start) => {
                    let _ = start.send(Err(AgentError::refused(code, &message)));
                }
                None => tracing::warn!(?id, ?code, message = %sanitize(&message), "agent error"),
            }
            Ok(())
        }
        AgentMessage::Subscribed { id, dropped_bytes } => {
            code_reader::on_reply(id, Reply::Subscribed { dropped_bytes }, routes);
            Ok(())
        }
        AgentMessage::Processes { id, processes } => {
            code_reader::on_reply(id, Reply::Processes(processes), routes);
            Ok(())
        }
        AgentMessage::PathStat { .. }
        | AgentMessage::DirEntries { .. }
        | AgentMessage::FileReadStarted { .. }
        | AgentMessage::Credit { .. }
        | AgentMessage::FileDone { .. }
        | AgentMessage::Watching { .. }
        | AgentMessage::FileEvents { .. } => file_reader::on_message(message, routes).await,
        AgentMessage::Hello { .. } => Err(protocol("a second Hello")),
    }
}

async fn on_started(id: RequestId, pid: u32, routes: &SharedRoutes) -> Result<(), AgentError> {
    let sender = {
        let mut routes = lock(routes);
        // A background process's start is a plain reply.
        if let Some(reply) = routes.replies.remove(&id) {
            let _ = reply.send(Ok(Reply::Started { pid }));
            return Ok(());
        }
        let Some(route) = routes.execs.get_mut(&id) else {
            // An exec the host gave up on (start timeout) may still report.
            tracing::debug!(id, "Started for an unknown exec ignored");
            return Ok(());
        };
        let Some(start) = route.start.take() else {
            return Err(protocol("a second Started"));
        };
        let _ = start.send(Ok(pid));
        route.events.clone()
    };
    let _ = sender.send(ExecEvent::Started { pid }).await;
    Ok(())
}

async fn on_exited(report: ExitReport, routes: &SharedRoutes) -> Result<(), AgentError> {
    let Some(route) = lock(routes).execs.remove(&report.id) else {
        tracing::debug!(id = report.id, "Exited for an unknown exec ignored");
        return Ok(());
    };
    if route.start.is_some() {
        return Err(protocol("Exited before Started"));
    }
    let exit = ExecExit {
        exit_code: report.exit_code,
        signal: report.signal,
        timed_out: report.timed_out,
        // The agent cannot see the cgroup; the runtime sets this from the memory events.
        oom_killed: false,
        stdout_truncated: report.stdout_truncated || route.stdout_truncated,
        stderr_truncated: report.stderr_truncated || route.stderr_truncated,
        duration: std::time::Duration::from_micros(report.duration_us),
    };
    let _ = route.events.send(ExecEvent::Finished(exit)).await;
    Ok(())
}

fn protocol(detail: &str) -> AgentError {
    AgentError::Protocol {
        detail: detail.to_owned(),
    }
}
