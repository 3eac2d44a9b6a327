//! The reader task's handling of code-execution messages: replies to context requests
//! and the events of executions, checked and bounded like everything from the agent.

use std::time::Duration;

use codebox_protocol::{
    check_bundle, parse_bundle, truncate_text, ErrorReport, ExecutionReport, RequestId, Stream,
    MAX_ERROR_NAME, MAX_ERROR_VALUE, MAX_RESULTS, MAX_RESULTS_BYTES, MAX_RESULT_BYTES,
    MAX_TRACEBACK,
};
use tokio::sync::{mpsc, oneshot};

use super::code::{CodeEvent, ExecutionError, ExecutionResult, ExecutionSummary};
use super::error::AgentError;
use super::reader::{lock, SharedRoutes};

/// Bytes of a result's JSON the host accepts: the bundle cap plus JSON overhead.
const MAX_RESULT_WIRE: usize = MAX_RESULT_BYTES + (1 << 20);
/// Results of one execution the host accepts, and their bytes: the agent's caps plus
/// its one "results dropped" notice. Past them results are dropped: the agent is not
/// trusted to have applied its caps.
const HOST_MAX_RESULTS: usize = MAX_RESULTS + 1;
const HOST_MAX_RESULTS_BYTES: usize = MAX_RESULTS_BYTES + (1 << 10);

/// The answer to a context request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Ready {
        pid: u32,
    },
    Ack,
    /// A background process started.
    Started {
        pid: u32,
    },
    Subscribed {
        dropped_bytes: u64,
    },
    Processes(Vec<codebox_protocol::ProcessInfo>),
}

pub(crate) type ReplyRoute = oneshot::Sender<Result<Reply, AgentError>>;

/// One execution in flight.
#[derive(Debug)]
pub(crate) struct CodeRoute {
    /// Until `ExecutionAccepted` (or the refusal) arrives.
    pub accepted: Option<oneshot::Sender<Result<(), AgentError>>>,
    pub events: mpsc::Sender<CodeEvent>,
    /// Bytes per stream the host still accepts (stdout, stderr).
    pub room: [u64; 2],
    pub truncated: [bool; 2],
    /// The JSON of the result being received.
    pub result: Vec<u8>,
    /// Results delivered so far, and their bytes.
    pub results: usize,
    pub result_bytes: usize,
    /// Dropped with the route, which ends the execution's cancel watcher.
    pub _done: oneshot::Sender<()>,
}

fn protocol(detail: &str) -> AgentError {
    AgentError::Protocol {
        detail: detail.to_owned(),
    }
}

/// A reply to a context request (`ContextReady`, `Ack`).
pub(crate) fn on_reply(id: RequestId, reply: Reply, routes: &SharedRoutes) {
    match lock(routes).replies.remove(&id) {
        Some(route) => {
            let _ = route.send(Ok(reply));
        }
        None => tracing::debug!(id, "a reply nobody waits for ignored"),
    }
}

/// An `Error` for `id`, if it answers a context request or an execution not yet
/// accepted. `false` if nobody waits for it.
pub(crate) fn on_error(
    id: RequestId,
    error: AgentError,
    routes: &SharedRoutes,
) -> Result<(), AgentError> {
    let mut routes = lock(routes);
    if let Some(route) = routes.replies.remove(&id) {
        let _ = route.send(Err(error));
        return Ok(());
    }
    let pending = routes.code.get(&id).is_some_and(|r| r.accepted.is_some());
    if pending {
        let mut route = routes.code.remove(&id).expect("checked above");
        if let Some(accepted) = route.accepted.take() {
            let _ = accepted.send(Err(error));
        }
        return Ok(());
    }
    Err(error)
}

pub(crate) fn on_accepted(id: RequestId, routes: &SharedRoutes) -> Result<(), AgentError> {
    let mut routes = lock(routes);
    let Some(route) = routes.code.get_mut(&id) else {
        tracing::debug!(id, "ExecutionAccepted for an unknown execution ignored");
        return Ok(());
    };
    let accepted = route
        .accepted
        .take()
        .ok_or_else(|| protocol("a second ExecutionAccepted"))?;
    let _ = accepted.send(Ok(()));
    Ok(())
}

/// Whether `id` is an execution of code.
pub(crate) fn is_code(id: RequestId, routes: &SharedRoutes) -> bool {
    lock(routes).code.contains_key(&id)
}

/// Output or result bytes of an execution.
pub(crate) async fn on_data(
    id: RequestId,
    stream: Stream,
    mut data: Vec<u8>,
    routes: &SharedRoutes,
) -> Result<(), AgentError> {
    let sender = {
        let mut routes = lock(routes);
        let Some(route) = routes.code.get_mut(&id) else {
            return Ok(());
        };
        if route.accepted.is_some() {
            return Err(protocol("execution output before ExecutionAccepted"));
        }
        let index = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::Result => {
                if route.result.len() + data.len() > MAX_RESULT_WIRE {
                    return Err(protocol("a result over the size cap"));
                }
                route.result.extend_from_slice(&data);
                return Ok(());
            }
            Stream::Stdin | Stream::File => {
                return Err(protocol(
                    "the agent sent stdin or file data for an execution",
                ))
            }
        };
        let keep = usize::try_from(route.room[index])
            .unwrap_or(usize::MAX)
            .min(data.len());
        if keep < data.len() {
            route.truncated[index] = true;
            data.truncate(keep);
        }
        route.room[index] -= keep as u64;
        route.events.clone()
    };
    if data.is_empty() {
        return Ok(());
    }
    let event = match stream {
        Stream::Stderr => CodeEvent::Stderr(data),
        _ => CodeEvent::Stdout(data),
    };
    // Backpressure point, as for execs.
    let _ = sender.send(event).await;
    Ok(())
}

/// `ExecutionResult`: the bundle received on the result stream is complete.
pub(crate) async fn on_result(
    id: RequestId,
    is_main_result: bool,
    truncated: bool,
    routes: &SharedRoutes,
) -> Result<(), AgentError> {
    let (json, sender) = {
        let mut routes = lock(routes);
        let Some(route) = routes.code.get_mut(&id) else {
            return Ok(());
        };
        if route.accepted.is_some() {
            return Err(protocol("a result before ExecutionAccepted"));
        }
        let json = std::mem::take(&mut route.result);
        if route.results >= HOST_MAX_RESULTS
            || route.result_bytes.saturating_add(json.len()) > HOST_MAX_RESULTS_BYTES
        {
            return Ok(());
        }
        route.results += 1;
        route.result_bytes += json.len();
        (json, route.events.clone())
    };
    let bundle = parse_bundle(&json)
        .map_err(|_| protocol("a result bundle is not a JSON map of strings"))?;
    // The agent is not trusted to have applied the caps.
    let (data, replaced) = match check_bundle(bundle) {
        Ok(bundle) => (bundle, false),
        Err(replacement) => (replacement, true),
    };
    let result = ExecutionResult {
        data,
        is_main_result,
        truncated: truncated || replaced,
    };
    let _ = sender.send(CodeEvent::Result(result)).await;
    Ok(())
}

pub(crate) async fn on_execution_error(
    report: ErrorReport,
    routes: &SharedRoutes,
) -> Result<(), AgentError> {
    let Some(sender) = events_of(report.id, routes)? else {
        return Ok(());
    };
    let ErrorReport {
        mut name,
        mut value,
        mut traceback,
        ..
    } = report;
    truncate_text(&mut name, MAX_ERROR_NAME);
    truncate_text(&mut value, MAX_ERROR_VALUE);
    truncate_text(&mut traceback, MAX_TRACEBACK);
    let error = ExecutionError {
        name,
        value,
        traceback,
    };
    let _ = sender.send(CodeEvent::Error(error)).await;
    Ok(())
}

pub(crate) async fn on_done(
    report: ExecutionReport,
    routes: &SharedRoutes,
) -> Result<(), AgentError> {
    let Some(route) = lock(routes).code.remove(&report.id) else {
        return Ok(());
    };
    if route.accepted.is_some() {
        return Err(protocol("ExecutionDone before ExecutionAccepted"));
    }
    let summary = ExecutionSummary {
        execution_count: report.execution_count,
        outcome: report.outcome,
        duration: Duration::from_micros(report.duration_us),
        restarted: report.restarted,
        stdout_truncated: report.stdout_truncated || route.truncated[0],
        stderr_truncated: report.stderr_truncated || route.truncated[1],
    };
    let _ = route.events.send(CodeEvent::Done(summary)).await;
    Ok(())
}

fn events_of(
    id: RequestId,
    routes: &SharedRoutes,
) -> Result<Option<mpsc::Sender<CodeEvent>>, AgentError> {
    let routes = lock(routes);
    let Some(route) = routes.code.get(&id) else {
        return Ok(None);
    };
    if route.accepted.is_some() {
        return Err(protocol("an execution event before ExecutionAccepted"));
    }
    Ok(Some(route.events.clone()))
}
