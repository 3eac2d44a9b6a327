//! What the core returns, shaped for JSON: the HTTP layer serialises these as the
//! `data` of its envelope. Timestamps are RFC 3339.

use std::collections::BTreeMap;

use codebox_store::{ExecutionRecord, SandboxRecord};
use codebox_types::{Resources, SandboxStatus, TerminationReason};
use serde::Serialize;
use time::OffsetDateTime;

/// A sandbox as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxView {
    pub id: String,
    pub status: SandboxStatus,
    pub runtime: String,
    pub resources: Resources,
    pub isolation: String,
    pub metadata: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_reason: Option<TerminationReason>,
}

impl From<SandboxRecord> for SandboxView {
    fn from(record: SandboxRecord) -> Self {
        Self {
            id: record.id.to_string(),
            status: record.status,
            runtime: record.runtime,
            resources: record.resources,
            isolation: record.isolation,
            metadata: record.metadata,
            created_at: record.created_at,
            expires_at: record.expires_at,
            ended_at: record.ended_at,
            termination_reason: record.termination_reason,
        }
    }
}

/// The result of `run_command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandResult {
    /// Output decoded as UTF-8 (invalid sequences replaced).
    pub stdout: String,
    pub stderr: String,
    /// The exit status; `128 + signal` when killed by a signal, as shells report.
    pub exit_code: i32,
    pub timed_out: bool,
    /// Either stream hit `limits.max_output_bytes`.
    pub truncated: bool,
    pub duration_ms: u64,
}

/// One recorded execution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionView {
    pub id: String,
    pub sandbox_id: String,
    /// The context of a code execution; `null` for a command.
    pub context_id: Option<String>,
    pub language: String,
    pub status: String,
    pub exit_code: Option<i32>,
    /// The context's execution counter for a code execution; `null` for a command.
    pub execution_count: Option<i64>,
    pub duration_ms: u64,
    pub code_size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The code, when `retention.store_code` is on (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `{"stdout", "stderr", "text"?, "error"?: {"name", "value"}, "truncated"}`,
    /// at most 64 KiB of text, when `retention.store_code` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
}

impl From<ExecutionRecord> for ExecutionView {
    fn from(record: ExecutionRecord) -> Self {
        Self {
            id: record.id.to_string(),
            sandbox_id: record.sandbox_id.to_string(),
            context_id: record.context_id,
            language: record.language,
            status: record.status,
            exit_code: record.exit_code,
            execution_count: record.execution_count,
            duration_ms: record.duration_ms,
            code_size: record.code_size,
            created_at: record.created_at,
            code: record.code,
            output: record
                .output
                .and_then(|text| serde_json::from_str(&text).ok()),
        }
    }
}

/// One dependency's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub ok: bool,
    /// A short, client-safe reason when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `/ready`: database, Redis (when configured) and runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyReport {
    pub ready: bool,
    pub checks: Vec<CheckResult>,
}

/// What `reconcile` found and fixed at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Leftovers of a crashed run the runtime cleaned up on its own.
    pub runtime_leftovers: usize,
    /// Live rows whose sandbox was gone, now `server_restart`.
    pub ended: usize,
    /// Runtime sandboxes without a live row, destroyed.
    pub destroyed: usize,
}

/// `GET /api/v1/sandboxes/{id}/metrics`: usage from the sandbox's cgroup and
/// workspace, with the limits it runs under.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxMetricsView {
    /// CPU time used since the sandbox started, in microseconds.
    pub cpu_usage_usec: u64,
    /// Cores the sandbox may use.
    pub cpu_limit: f64,
    pub memory_used_bytes: u64,
    pub memory_peak_bytes: u64,
    pub memory_limit_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_limit_bytes: u64,
    pub pids: u64,
    pub pids_limit: u64,
}

impl From<codebox_runtime::SandboxStats> for SandboxMetricsView {
    fn from(stats: codebox_runtime::SandboxStats) -> Self {
        Self {
            cpu_usage_usec: stats.cpu_usage_usec,
            cpu_limit: stats.cpu_limit_millicores as f64 / 1000.0,
            memory_used_bytes: stats.memory_bytes,
            memory_peak_bytes: stats.memory_peak_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            disk_used_bytes: stats.disk_bytes,
            disk_limit_bytes: stats.disk_limit_bytes,
            pids: stats.pids,
            pids_limit: stats.pids_limit,
        }
    }
}
