//! [`AgentConnection`]'s code-execution requests: contexts and executions.

use std::time::Duration;

use codebox_protocol::{
    encode_data, ContextSpec, ExecuteSpec, HostMessage, InvalidCode, RequestId, Stream,
    MAX_OUTPUT_LIMIT, MAX_TIMEOUT_MS,
};
use tokio::sync::oneshot;

use super::code::{CodeRequest, CodeStream, ContextInfo, ContextRequest};
use super::code_reader::{CodeRoute, Reply};
use super::connection::{encode, AgentConnection};
use super::error::AgentError;
use super::reader::lock;

/// How long a runner may take to start (IPython with preloaded libraries is slow),
/// and how long the agent may take to accept an execution or answer a request.
const CONTEXT_TIMEOUT: Duration = Duration::from_secs(90);
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered per execution between the reader and a slow consumer.
const CODE_EVENT_CAPACITY: usize = 16;

impl AgentConnection {
    /// Creates a context and waits until its interpreter is ready (a python runner
    /// with IPython takes a few hundred milliseconds). `sandbox_env` goes under the
    /// request's env.
    pub async fn create_context(
        &self,
        request: &ContextRequest,
        sandbox_env: &std::collections::BTreeMap<String, String>,
    ) -> Result<ContextInfo, AgentError> {
        let id = self.next_request_id();
        let mut env = sandbox_env.clone();
        env.extend(request.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let spec = ContextSpec {
            id,
            context: request.context.clone(),
            language: request.language,
            cwd: request.cwd.clone(),
            env,
        };
        spec.validate().map_err(invalid)?;
        let reply = self
            .request(id, HostMessage::CreateContext(spec), CONTEXT_TIMEOUT)
            .await?;
        let info = ContextInfo {
            context: request.context.clone(),
            language: request.language,
            cwd: request.cwd.clone(),
            pid: ready_pid(reply)?,
        };
        self.context_registry()
            .insert(info.context.clone(), info.clone());
        Ok(info)
    }

    /// The contexts created through this connection and not destroyed.
    pub fn list_contexts(&self) -> Vec<ContextInfo> {
        self.context_registry().values().cloned().collect()
    }

    /// Queues `request` on its context. Returns once the agent accepted it; the
    /// stream then delivers output, results, at most one error, and `Done`.
    /// Executions of one context run in order; dropping the stream cancels this one.
    pub async fn execute(&self, request: &CodeRequest) -> Result<CodeStream, AgentError> {
        let id = self.next_request_id();
        let spec = execute_spec(id, request);
        spec.validate().map_err(invalid)?;
        if request.code.contains('\0') {
            return Err(invalid(InvalidCode::NulByte { field: "the code" }));
        }
        let (sender, stream) = CodeStream::channel(CODE_EVENT_CAPACITY);
        let (accepted_tx, accepted_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let limit = spec.output_limit;
        {
            let mut routes = lock(self.routes());
            if routes.closed {
                return Err(AgentError::Closed);
            }
            routes.code.insert(
                id,
                CodeRoute {
                    accepted: Some(accepted_tx),
                    events: sender.events,
                    room: [limit, limit],
                    truncated: [false, false],
                    result: Vec::new(),
                    results: 0,
                    result_bytes: 0,
                    _done: done_tx,
                },
            );
        }
        let mut guard = CancelGuard {
            connection: self,
            id,
            armed: true,
        };
        let mut frames = Vec::with_capacity(request.code.len() + 256);
        encode(&HostMessage::Execute(spec), &mut frames)?;
        encode_data(id, Stream::Stdin, request.code.as_bytes(), &mut frames);
        self.write_bytes(&frames).await?;
        match tokio::time::timeout(ACCEPT_TIMEOUT, accepted_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                guard.armed = false;
                return Err(error);
            }
            Ok(Err(_)) => return Err(AgentError::Closed),
            Err(_) => {
                return Err(AgentError::Timeout {
                    operation: "accepting an execution",
                    timeout: ACCEPT_TIMEOUT,
                })
            }
        }
        guard.armed = false;
        self.watch_code_cancel(id, sender.cancelled, done_rx);
        Ok(stream)
    }

    /// Interrupts the running execution of `context`, if any (it ends `interrupted`;
    /// if it ignores SIGINT for 2 s its runner is restarted).
    pub async fn interrupt(&self, context: &str) -> Result<(), AgentError> {
        let id = self.next_request_id();
        let message = HostMessage::Interrupt {
            id,
            context: context.to_owned(),
        };
        self.request(id, message, ACCEPT_TIMEOUT).await.map(drop)
    }

    /// Kills the context's runner (ending its running execution as `interrupted`,
    /// queued ones run afterwards) and waits for a fresh one.
    pub async fn restart_context(&self, context: &str) -> Result<ContextInfo, AgentError> {
        let id = self.next_request_id();
        let message = HostMessage::RestartContext {
            id,
            context: context.to_owned(),
        };
        let pid = ready_pid(self.request(id, message, CONTEXT_TIMEOUT).await?)?;
        let mut registry = self.context_registry();
        let info = registry.get_mut(context).ok_or(AgentError::Closed)?;
        info.pid = pid;
        Ok(info.clone())
    }

    /// Kills the context's runner and forgets the context; returns once its
    /// processes are gone. Its executions end `interrupted`.
    pub async fn destroy_context(&self, context: &str) -> Result<(), AgentError> {
        let id = self.next_request_id();
        let message = HostMessage::DestroyContext {
            id,
            context: context.to_owned(),
        };
        self.request(id, message, CONTEXT_TIMEOUT).await?;
        self.context_registry().remove(context);
        Ok(())
    }

    /// Sends a request answered by one reply (`ContextReady`, `Ack`, ...) and waits
    /// for it.
    pub(super) async fn request(
        &self,
        id: RequestId,
        message: HostMessage,
        timeout: Duration,
    ) -> Result<Reply, AgentError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut routes = lock(self.routes());
            if routes.closed {
                return Err(AgentError::Closed);
            }
            routes.replies.insert(id, reply_tx);
        }
        let removed = |connection: &Self| lock(connection.routes()).replies.remove(&id);
        if let Err(error) = self.send(&message).await {
            removed(self);
            return Err(error);
        }
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(AgentError::Closed),
            Err(_) => {
                removed(self);
                Err(AgentError::Timeout {
                    operation: "a request",
                    timeout,
                })
            }
        }
    }

    fn watch_code_cancel(
        &self,
        id: RequestId,
        cancelled: oneshot::Receiver<()>,
        done: oneshot::Receiver<()>,
    ) {
        let connection = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancelled => {
                    tracing::debug!(id, "code stream dropped: cancelling the execution");
                    let _ = connection.send(&HostMessage::Kill { id }).await;
                }
                _ = done => {}
            }
        });
    }
}

/// Cancels an execution whose `execute()` future was dropped before it returned.
struct CancelGuard<'a> {
    connection: &'a AgentConnection,
    id: RequestId,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        lock(self.connection.routes()).code.remove(&self.id);
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

fn invalid(source: InvalidCode) -> AgentError {
    AgentError::InvalidCode { source }
}

fn ready_pid(reply: Reply) -> Result<u32, AgentError> {
    match reply {
        Reply::Ready { pid } => Ok(pid),
        _ => Err(AgentError::Protocol {
            detail: "another reply where ContextReady was due".into(),
        }),
    }
}

/// The wire form of a code request, limits clamped to what the protocol allows.
fn execute_spec(id: RequestId, request: &CodeRequest) -> ExecuteSpec {
    ExecuteSpec {
        id,
        context: request.context.clone(),
        code_len: request.code.len() as u64,
        timeout_ms: u64::try_from(request.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_TIMEOUT_MS),
        env: request.env.clone(),
        output_limit: u64::try_from(request.output_limit)
            .unwrap_or(u64::MAX)
            .min(MAX_OUTPUT_LIMIT),
    }
}
