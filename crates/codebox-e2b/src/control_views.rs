//! The control plane's JSON shapes, as E2B's OpenAPI spells them (`Sandbox`,
//! `SandboxDetail`, `ListedSandbox`, `SandboxMetric`), and the template names.

use std::collections::BTreeMap;

use codebox_core::SandboxRecord;
use codebox_runtime::SandboxStats;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::tokens::TokenKind;
use crate::E2bState;

/// `clientID` is deprecated in E2B but still required by the Python SDK.
const CLIENT_ID: &str = "codebox";

/// E2B template names and the codebox runtimes they run on.
pub const TEMPLATES: &[(&str, &str)] = &[
    // E2B's `base`: commands and files, no Jupyter.
    ("base", "bash"),
    // The code-interpreter SDK's default: the python3 template with the data stack.
    ("code-interpreter-v1", "python3"),
];

/// The runtime of an E2B template name.
pub fn runtime_of_template(template: &str) -> Option<&'static str> {
    TEMPLATES
        .iter()
        .find(|(name, _)| *name == template)
        .map(|(_, runtime)| *runtime)
}

/// The E2B template name of a sandbox's runtime (native sandboxes of other
/// runtimes show their runtime name).
pub fn template_of_runtime(runtime: &str) -> String {
    TEMPLATES
        .iter()
        .find(|(_, name)| *name == runtime)
        .map_or_else(
            || runtime.to_owned(),
            |(template, _)| (*template).to_owned(),
        )
}

/// `Sandbox`: the answer of create and connect.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxView {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub alias: String,
    pub envd_version: String,
    pub envd_access_token: String,
    pub traffic_access_token: String,
    pub domain: Option<String>,
}

impl SandboxView {
    pub fn new(state: &E2bState, record: &SandboxRecord) -> Self {
        let id = record.id.as_str();
        let template = template_of_runtime(&record.runtime);
        Self {
            alias: template.clone(),
            template_id: template,
            sandbox_id: id.to_owned(),
            client_id: CLIENT_ID,
            envd_version: state.settings().envd_version.clone(),
            envd_access_token: state.tokens().mint(TokenKind::Envd, id),
            traffic_access_token: state.tokens().mint(TokenKind::Traffic, id),
            domain: reported_domain(state),
        }
    }
}

/// The `domain` the SDKs build sandbox URLs from. Without a configured domain
/// codebox answers a name under `.invalid` (RFC 6761: never resolves) rather
/// than `null`: with `null` an SDK that lacks `E2B_SANDBOX_URL` falls back to
/// E2B's own cloud and would send the user's code and files there. With this
/// the request fails at name resolution, naming the fix.
pub const UNCONFIGURED_DOMAIN: &str = "set-e2b-sandbox-url.invalid";

pub fn reported_domain(state: &E2bState) -> Option<String> {
    Some(
        state
            .settings()
            .domain
            .clone()
            .unwrap_or_else(|| UNCONFIGURED_DOMAIN.to_owned()),
    )
}

/// `SandboxDetail` (`GET /sandboxes/{id}`) and, without the token,
/// `ListedSandbox` (the listings).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetailView {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub alias: String,
    pub started_at: String,
    pub end_at: String,
    pub envd_version: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub state: &'static str,
    pub metadata: BTreeMap<String, String>,
    pub domain: Option<String>,
    /// Sandboxes have no network: the truth, whatever the create asked.
    pub allow_internet_access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
}

impl SandboxDetailView {
    pub fn new(state: &E2bState, record: &SandboxRecord, with_token: bool) -> Self {
        let id = record.id.as_str();
        let template = template_of_runtime(&record.runtime);
        Self {
            alias: template.clone(),
            template_id: template,
            sandbox_id: id.to_owned(),
            client_id: CLIENT_ID,
            started_at: rfc3339(record.created_at),
            end_at: rfc3339(record.expires_at),
            envd_version: state.settings().envd_version.clone(),
            cpu_count: cpu_count(record.resources.cpu),
            memory_mb: record.resources.memory,
            disk_size_mb: state.settings().disk_size_mb,
            state: "running",
            metadata: record.metadata.clone(),
            domain: reported_domain(state),
            allow_internet_access: false,
            envd_access_token: with_token.then(|| state.tokens().mint(TokenKind::Envd, id)),
        }
    }
}

/// E2B counts whole cores: fractional quotas round up, never below one.
fn cpu_count(cpu: f64) -> u32 {
    if cpu.is_finite() && cpu > 1.0 {
        // Bounded by the configured maximum (16), so the cast is exact.
        cpu.ceil().min(f64::from(u16::MAX)) as u32
    } else {
        1
    }
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// `SandboxMetric`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricView {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    /// Average since the sandbox started, in percent of its CPU quota.
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

impl MetricView {
    pub fn new(record: &SandboxRecord, stats: &SandboxStats, now: OffsetDateTime) -> Self {
        let cpu_count = cpu_count(record.resources.cpu);
        let uptime_usec = (now - record.created_at).whole_microseconds().max(1) as f64;
        let quota_cores = (stats.cpu_limit_millicores as f64 / 1000.0).max(0.001);
        let pct = stats.cpu_usage_usec as f64 / (uptime_usec * quota_cores) * 100.0;
        Self {
            timestamp: rfc3339(now),
            timestamp_unix: now.unix_timestamp(),
            cpu_count,
            cpu_used_pct: (pct.clamp(0.0, 100.0) * 100.0).round() / 100.0,
            mem_used: stats.memory_bytes,
            mem_total: stats.memory_limit_bytes,
            mem_cache: 0,
            disk_used: stats.disk_bytes,
            disk_total: stats.disk_limit_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_map_both_ways() {
        assert_eq!(runtime_of_template("base"), Some("bash"));
        assert_eq!(runtime_of_template("code-interpreter-v1"), Some("python3"));
        assert_eq!(runtime_of_template("python3"), None);
        assert_eq!(template_of_runtime("python3"), "code-interpreter-v1");
        assert_eq!(template_of_runtime("bash"), "base");
        assert_eq!(template_of_runtime("node"), "node");
    }

    #[test]
    fn cpu_counts_are_whole_cores() {
        assert_eq!(cpu_count(0.5), 1);
        assert_eq!(cpu_count(1.0), 1);
        assert_eq!(cpu_count(1.5), 2);
        assert_eq!(cpu_count(f64::NAN), 1);
    }
}
