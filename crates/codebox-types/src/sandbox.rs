//! The sandbox vocabulary: resources, lifecycle states, why a sandbox ended, and
//! the runtimes (templates) a server offers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bounds from the product brief; the config can narrow them, never widen them.
pub const MIN_CPU: f64 = 0.1;
pub const MAX_CPU: f64 = 16.0;
pub const MIN_MEMORY_MB: u64 = 128;
pub const MAX_MEMORY_MB: u64 = 32768;

/// What a sandbox may consume. `cpu` in cores, `memory` in MiB (swap is always 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpu: f64,
    pub memory: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu: 1.0,
            memory: 512,
        }
    }
}

/// Lifecycle of a sandbox as stored and reported.
///
/// `creating` -> `running` -> `terminated`; `failed` when creation did not finish.
/// `creating` and `running` are the live states counted against quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxStatus {
    Creating,
    Running,
    Terminated,
    Failed,
}

impl SandboxStatus {
    pub const LIVE: [SandboxStatus; 2] = [SandboxStatus::Creating, SandboxStatus::Running];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxStatus::Creating => "creating",
            SandboxStatus::Running => "running",
            SandboxStatus::Terminated => "terminated",
            SandboxStatus::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "creating" => Some(SandboxStatus::Creating),
            "running" => Some(SandboxStatus::Running),
            "terminated" => Some(SandboxStatus::Terminated),
            "failed" => Some(SandboxStatus::Failed),
            _ => None,
        }
    }

    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a sandbox ended: reported with `SANDBOX_GONE` (410).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminationReason {
    /// Deleted through the API.
    Killed,
    /// Its lifetime ran out.
    Timeout,
    /// The whole sandbox was killed for exceeding its memory.
    Oom,
    /// The server shut down while it ran.
    ServerShutdown,
    /// Found without its runtime after a server restart.
    ServerRestart,
    /// The in-sandbox agent died or broke protocol.
    AgentLost,
    /// The node it ran on stopped heartbeating (scale-out deployments).
    NodeLost,
    /// Creation failed.
    CreateFailed,
}

impl TerminationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationReason::Killed => "killed",
            TerminationReason::Timeout => "timeout",
            TerminationReason::Oom => "oom",
            TerminationReason::ServerShutdown => "server_shutdown",
            TerminationReason::ServerRestart => "server_restart",
            TerminationReason::AgentLost => "agent_lost",
            TerminationReason::NodeLost => "node_lost",
            TerminationReason::CreateFailed => "create_failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            TerminationReason::Killed,
            TerminationReason::Timeout,
            TerminationReason::Oom,
            TerminationReason::ServerShutdown,
            TerminationReason::ServerRestart,
            TerminationReason::AgentLost,
            TerminationReason::NodeLost,
            TerminationReason::CreateFailed,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == value)
    }
}

impl fmt::Display for TerminationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A runtime (template) a server offers, as listed by `GET /api/v1/runtimes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// Canonical name, e.g. `python3`.
    pub name: String,
    /// Default language of code run in it, e.g. `python`.
    pub language: String,
    /// Exact version of the interpreter, e.g. `3.11.2`.
    pub version: String,
    /// Other names that select it, e.g. `python3.11`.
    pub aliases: Vec<String>,
}

impl RuntimeInfo {
    /// Whether `requested` names this runtime (canonical name or alias).
    pub fn answers_to(&self, requested: &str) -> bool {
        self.name == requested || self.aliases.iter().any(|alias| alias == requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        for status in [
            SandboxStatus::Creating,
            SandboxStatus::Running,
            SandboxStatus::Terminated,
            SandboxStatus::Failed,
        ] {
            assert_eq!(SandboxStatus::parse(status.as_str()), Some(status));
        }
        assert!(SandboxStatus::Running.is_live());
        assert!(!SandboxStatus::Terminated.is_live());
    }

    #[test]
    fn reason_round_trips_through_serde() {
        let json = serde_json::to_string(&TerminationReason::ServerRestart).expect("serialises");
        assert_eq!(json, "\"server_restart\"");
        assert_eq!(
            TerminationReason::parse("server_restart"),
            Some(TerminationReason::ServerRestart)
        );
    }
}
