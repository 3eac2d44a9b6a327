//! [`LinuxRuntime`]'s background processes: each `Runtime` process method is the
//! matching request of the sandbox's agent connection (`agent::process_client`),
//! with the sandbox's env under a new process's own. The agent runs, supervises
//! and kills them; this file only routes, and must not touch the jail, cgroups
//! or the pool. It keeps "no such process" apart so the API can answer 404.

use codebox_protocol::ErrorCode;
use codebox_types::SandboxId;

use super::LinuxRuntime;
use crate::agent::AgentError;
use crate::{
    ProcessInfo, ProcessRequest, PtyInput, PtyRequest, PtySession, RuntimeError, Subscription,
};

/// An agent error as the runtime's, with an unknown pid kept apart.
fn process_error(pid: u32) -> impl FnOnce(AgentError) -> RuntimeError {
    move |error| match error.code() {
        Some(ErrorCode::UnknownProcess) => RuntimeError::UnknownProcess { pid },
        _ => error.into(),
    }
}

impl LinuxRuntime {
    pub(super) async fn process_start(
        &self,
        id: &SandboxId,
        request: ProcessRequest,
    ) -> Result<u32, RuntimeError> {
        let (agent, sandbox_env) = self.agent_of(id)?;
        let pid = agent.start_process(&request, &sandbox_env).await?;
        tracing::debug!(sandbox_id = %id, pid, tag = ?request.tag, "background process started");
        Ok(pid)
    }

    pub(super) async fn process_list(
        &self,
        id: &SandboxId,
    ) -> Result<Vec<ProcessInfo>, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        let mut processes = agent.list_processes().await?;
        processes.sort_by_key(|process| process.pid);
        Ok(processes)
    }

    pub(super) async fn process_write_stdin(
        &self,
        id: &SandboxId,
        pid: u32,
        data: &[u8],
    ) -> Result<(), RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        agent
            .write_process_stdin(pid, data)
            .await
            .map_err(process_error(pid))
    }

    pub(super) async fn process_close_stdin(
        &self,
        id: &SandboxId,
        pid: u32,
    ) -> Result<(), RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        agent
            .close_process_stdin(pid)
            .await
            .map_err(process_error(pid))
    }

    pub(super) async fn process_signal(
        &self,
        id: &SandboxId,
        pid: u32,
        signal: &str,
    ) -> Result<(), RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        agent
            .signal_process(pid, signal)
            .await
            .map_err(process_error(pid))
    }

    pub(super) async fn process_subscribe(
        &self,
        id: &SandboxId,
        pid: u32,
    ) -> Result<Subscription, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        agent
            .subscribe_process(pid)
            .await
            .map_err(process_error(pid))
    }

    pub(super) async fn pty_open(
        &self,
        id: &SandboxId,
        request: PtyRequest,
    ) -> Result<PtySession, RuntimeError> {
        let (agent, sandbox_env) = self.agent_of(id)?;
        let terminal = agent.open_pty(&request, &sandbox_env).await?;
        tracing::debug!(sandbox_id = %id, pid = terminal.pid, "terminal opened");
        Ok(PtySession {
            pid: terminal.pid,
            output: terminal.output,
            input: PtyInput::new(std::sync::Arc::new(terminal.input)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_process_is_kept_apart() {
        let unknown = AgentError::Refused {
            code: ErrorCode::UnknownProcess,
            message: "no such process".into(),
        };
        assert!(matches!(
            process_error(7)(unknown),
            RuntimeError::UnknownProcess { pid: 7 }
        ));
        assert!(matches!(
            process_error(7)(AgentError::Closed),
            RuntimeError::AgentLost { .. }
        ));
    }
}
