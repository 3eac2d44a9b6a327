//! [`LinuxRuntime`]'s stateful code execution: each `Runtime` code method is the
//! matching request of the sandbox's agent connection (`agent::code_client`), with
//! the sandbox's env passed under a new context's own.
//!
//! This file only routes: contexts, queues, interrupts and timeouts are enforced by
//! the agent (and every answer is re-checked by the agent client). It must not touch
//! the jail, cgroups or the pool.

use codebox_types::SandboxId;

use super::LinuxRuntime;
use crate::{CodeRequest, CodeStream, ContextInfo, ContextRequest, RuntimeError};

impl LinuxRuntime {
    pub(super) async fn code_create_context(
        &self,
        id: &SandboxId,
        request: ContextRequest,
    ) -> Result<ContextInfo, RuntimeError> {
        let (agent, sandbox_env) = self.agent_of(id)?;
        let info = agent.create_context(&request, &sandbox_env).await?;
        tracing::debug!(sandbox_id = %id, context = %info.context,
            language = info.language.as_str(), pid = info.pid, "context created");
        Ok(info)
    }

    pub(super) fn code_list_contexts(
        &self,
        id: &SandboxId,
    ) -> Result<Vec<ContextInfo>, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        let mut contexts = agent.list_contexts();
        contexts.sort_by(|a, b| a.context.cmp(&b.context));
        Ok(contexts)
    }

    pub(super) async fn code_execute(
        &self,
        id: &SandboxId,
        request: CodeRequest,
    ) -> Result<CodeStream, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        Ok(agent.execute(&request).await?)
    }

    pub(super) async fn code_interrupt(
        &self,
        id: &SandboxId,
        context: &str,
    ) -> Result<(), RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        Ok(agent.interrupt(context).await?)
    }

    pub(super) async fn code_restart(
        &self,
        id: &SandboxId,
        context: &str,
    ) -> Result<ContextInfo, RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        Ok(agent.restart_context(context).await?)
    }

    pub(super) async fn code_destroy_context(
        &self,
        id: &SandboxId,
        context: &str,
    ) -> Result<(), RuntimeError> {
        let (agent, _) = self.agent_of(id)?;
        Ok(agent.destroy_context(context).await?)
    }
}
