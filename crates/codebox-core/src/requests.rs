//! The request bodies of the core's operations, used directly as JSON bodies by
//! the HTTP layer (`deny_unknown_fields` everywhere), and their validation. Each
//! check names the offending field.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_types::{sandbox, Resources, RuntimeInfo, SandboxStatus};
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::settings::CoreLimits;

/// `POST /api/v1/sandboxes`. Only `runtime` is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// A runtime name or alias from [`crate::Core::runtimes`].
    pub runtime: String,
    pub resources: Option<Resources>,
    /// Lifetime in seconds; the configured default when absent.
    pub timeout: Option<u64>,
    pub metadata: Option<BTreeMap<String, String>>,
    /// Environment of every command in the sandbox.
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// `POST /api/v1/sandboxes/{id}/timeout`: the sandbox now expires `timeout`
/// seconds from now (never beyond its hard maximum lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTimeoutRequest {
    pub timeout: u64,
}

/// `POST /api/v1/sandboxes/{id}/commands`: `bash -c cmd` as `user`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCommandRequest {
    pub cmd: String,
    /// Seconds; the configured default when absent.
    pub timeout: Option<u64>,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    pub stdin: Option<String>,
}

/// `GET /api/v1/sandboxes` parameters, already split out of the query string:
/// `status=running`, `metadata.KEY=VALUE` pairs, `cursor`, `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSandboxesQuery {
    pub status: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// A page size request (executions listing and similar).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Default and largest page sizes of listings.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 100;

/// The page size to use: default when absent, 1..=MAX otherwise.
pub fn page_limit(limit: Option<u32>) -> Result<u32, CoreError> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(limit) if (1..=MAX_PAGE_SIZE).contains(&limit) => Ok(limit),
        Some(_) => Err(CoreError::validation(
            "limit",
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        )),
    }
}

/// The runtime that answers to `requested`; otherwise a 400 listing the names.
pub fn resolve_runtime(
    requested: &str,
    available: &[RuntimeInfo],
) -> Result<RuntimeInfo, CoreError> {
    if let Some(found) = available.iter().find(|info| info.answers_to(requested)) {
        return Ok(found.clone());
    }
    let mut names: Vec<&str> = available
        .iter()
        .flat_map(|info| {
            std::iter::once(info.name.as_str()).chain(info.aliases.iter().map(String::as_str))
        })
        .collect();
    names.sort_unstable();
    let shown = if requested.len() > 64 {
        "(too long)"
    } else {
        requested
    };
    Err(CoreError::validation(
        "runtime",
        format!("unknown runtime {shown:?}; available: {}", names.join(", ")),
    ))
}

/// The resources to use: validated against the brief's bounds and the config.
pub fn validate_resources(
    resources: Option<Resources>,
    limits: &CoreLimits,
) -> Result<Resources, CoreError> {
    let Some(resources) = resources else {
        return Ok(limits.default_resources);
    };
    let max_cpu = limits.max_cpu.min(sandbox::MAX_CPU);
    if !resources.cpu.is_finite() || !(sandbox::MIN_CPU..=max_cpu).contains(&resources.cpu) {
        return Err(CoreError::validation(
            "resources.cpu",
            format!("must be between {} and {max_cpu}", sandbox::MIN_CPU),
        ));
    }
    let max_memory = limits.max_memory_mb.min(sandbox::MAX_MEMORY_MB);
    if !(sandbox::MIN_MEMORY_MB..=max_memory).contains(&resources.memory) {
        return Err(CoreError::validation(
            "resources.memory",
            format!(
                "must be between {} and {max_memory} (MiB)",
                sandbox::MIN_MEMORY_MB
            ),
        ));
    }
    Ok(resources)
}

/// A timeout in whole seconds within 1..=max; `default` when absent.
pub fn validate_seconds(
    field: &str,
    seconds: Option<u64>,
    default: Duration,
    max: Duration,
) -> Result<Duration, CoreError> {
    let Some(seconds) = seconds else {
        return Ok(default);
    };
    if seconds == 0 || seconds > max.as_secs() {
        return Err(CoreError::validation(
            field,
            format!("must be between 1 and {} seconds", max.as_secs()),
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// Bounds of a string map (metadata or env).
#[derive(Debug, Clone, Copy)]
pub struct MapBounds {
    pub max_entries: usize,
    pub max_key_len: usize,
    pub max_value_len: usize,
    /// Keys must be shell variable names.
    pub env_names: bool,
}

/// Checks a map's size, key and value lengths, NULs and (for env) names.
pub fn validate_map(
    field: &str,
    map: Option<BTreeMap<String, String>>,
    bounds: MapBounds,
) -> Result<BTreeMap<String, String>, CoreError> {
    let map = map.unwrap_or_default();
    if map.len() > bounds.max_entries {
        return Err(CoreError::validation(
            field,
            format!("at most {} entries", bounds.max_entries),
        ));
    }
    for (key, value) in &map {
        let key_field = || format!("{field}.{}", printable_key(key));
        if key.is_empty() || key.len() > bounds.max_key_len {
            return Err(CoreError::validation(
                key_field(),
                format!("keys must be 1 to {} bytes", bounds.max_key_len),
            ));
        }
        if bounds.env_names && !is_env_name(key) {
            return Err(CoreError::validation(
                key_field(),
                "names must match [A-Za-z_][A-Za-z0-9_]*",
            ));
        }
        if key.contains('\0') || value.contains('\0') {
            return Err(CoreError::validation(key_field(), "must not contain NUL"));
        }
        if value.len() > bounds.max_value_len {
            return Err(CoreError::validation(
                key_field(),
                format!("values must be at most {} bytes", bounds.max_value_len),
            ));
        }
    }
    Ok(map)
}

/// Keys echoed in error messages are bounded and control-free.
fn printable_key(key: &str) -> String {
    key.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A listing's `status` filter.
pub fn parse_status(status: Option<&str>) -> Result<Option<SandboxStatus>, CoreError> {
    status
        .map(|value| {
            SandboxStatus::parse(value).ok_or_else(|| {
                CoreError::validation(
                    "status",
                    "must be one of creating, running, terminated, failed",
                )
            })
        })
        .transpose()
}

/// A command's cwd: absolute, bounded, no NUL. (The runtime resolves it inside
/// the sandbox; this only rejects what can never be valid.)
pub fn validate_cwd(cwd: Option<String>) -> Result<Option<String>, CoreError> {
    match cwd {
        Some(path) if !path.starts_with('/') || path.contains('\0') || path.len() > 4096 => Err(
            CoreError::validation("cwd", "must be an absolute path of at most 4096 bytes"),
        ),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, aliases: &[&str]) -> RuntimeInfo {
        RuntimeInfo {
            name: name.to_owned(),
            language: "x".to_owned(),
            version: "1".to_owned(),
            aliases: aliases.iter().map(|alias| (*alias).to_owned()).collect(),
        }
    }

    #[test]
    fn unknown_runtime_lists_available() {
        let available = [info("python3", &["python3.11"]), info("bash", &[])];
        assert_eq!(
            resolve_runtime("python3.11", &available)
                .map(|found| found.name)
                .ok(),
            Some("python3".to_owned())
        );
        let error = resolve_runtime("cobol", &available).expect_err("unknown");
        let message = error.to_string();
        assert!(message.contains("bash, python3, python3.11"), "{message}");
        assert!(matches!(error, CoreError::Validation { field, .. } if field == "runtime"));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("PATH"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A B"));
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(None).ok(), Some(DEFAULT_PAGE_SIZE));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(MAX_PAGE_SIZE + 1)).is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let parsed: Result<CreateSandboxRequest, _> =
            serde_json::from_str(r#"{"runtime":"bash","extra":1}"#);
        assert!(parsed.is_err());
        let parsed: Result<RunCommandRequest, _> = serde_json::from_str(r#"{"cmd":"ls","x":1}"#);
        assert!(parsed.is_err());
    }
}
