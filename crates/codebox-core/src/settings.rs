//! What the core needs from the configuration, resolved once at start: limits,
//! the secrets (already generated or loaded by the binary), retention.

use std::fmt;
use std::time::Duration;

use codebox_config::CodeboxConfig;
use codebox_runtime::SandboxLimits;
use codebox_types::Resources;

/// Request bounds the core enforces.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreLimits {
    pub max_sandboxes_per_user: u32,
    pub default_exec_timeout: Duration,
    pub max_exec_timeout: Duration,
    pub default_sandbox_lifetime: Duration,
    pub max_sandbox_lifetime: Duration,
    pub max_code_size: u64,
    pub max_output_bytes: u64,
    /// Largest file upload.
    pub max_upload_bytes: u64,
    pub max_metadata_entries: usize,
    pub max_metadata_key_len: usize,
    pub max_metadata_value_len: usize,
    pub max_env_vars: usize,
    pub max_env_key_len: usize,
    pub max_env_value_len: usize,
    pub default_resources: Resources,
    pub max_cpu: f64,
    pub max_memory_mb: u64,
}

/// Retention of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    pub executions: Duration,
    pub tombstones: Duration,
    pub purge_interval: Duration,
    /// Keep the code and (capped) output of each execution with its record
    /// (`retention.store_code`, off by default); purged with the record.
    pub store_code: bool,
}

/// Key material. `Debug` never shows it.
#[derive(Clone)]
pub struct Secrets {
    /// Key of the HMAC-SHA256 under which API keys are stored.
    pub api_key_secret: Vec<u8>,
    /// HS256 key for JWTs; `None` disables JWT authentication.
    pub jwt_secret: Option<Vec<u8>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("api_key_secret", &codebox_config::REDACTED)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| codebox_config::REDACTED),
            )
            .finish()
    }
}

/// Everything [`crate::Core::new`] is configured with.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub limits: CoreLimits,
    pub secrets: Secrets,
    /// Clock skew tolerated on JWT `exp`/`nbf`.
    pub jwt_leeway: Duration,
    /// Per-sandbox limits passed to the runtime.
    pub sandbox_limits: SandboxLimits,
    /// Outbound network for new sandboxes.
    pub network: bool,
    pub retention: RetentionSettings,
    /// How often the reaper looks for expired sandboxes.
    pub reaper_interval: Duration,
}

const DAY: Duration = Duration::from_secs(86_400);

impl CoreSettings {
    /// Settings from the effective config and the resolved secrets.
    pub fn from_config(config: &CodeboxConfig, secrets: Secrets) -> Self {
        let limits = &config.limits;
        Self {
            limits: CoreLimits {
                max_sandboxes_per_user: limits.max_sandboxes_per_user,
                default_exec_timeout: limits.default_exec_timeout,
                max_exec_timeout: limits.max_exec_timeout,
                default_sandbox_lifetime: limits.default_sandbox_lifetime,
                max_sandbox_lifetime: limits.max_sandbox_lifetime,
                max_code_size: limits.max_code_size,
                max_output_bytes: limits.max_output_bytes,
                max_upload_bytes: limits.max_upload_bytes,
                max_metadata_entries: limits.max_metadata_entries,
                max_metadata_key_len: limits.max_metadata_key_len,
                max_metadata_value_len: limits.max_metadata_value_len,
                max_env_vars: limits.max_env_vars,
                max_env_key_len: limits.max_env_key_len,
                max_env_value_len: limits.max_env_value_len,
                default_resources: Resources {
                    cpu: limits.default_cpu,
                    memory: limits.default_memory_mb,
                },
                max_cpu: limits.max_cpu,
                max_memory_mb: limits.max_memory_mb,
            },
            secrets,
            jwt_leeway: config.auth.jwt_leeway,
            sandbox_limits: Self::sandbox_limits_from_config(config),
            network: config.runtime.network,
            retention: RetentionSettings {
                executions: DAY * config.retention.executions_days,
                tombstones: DAY * config.retention.tombstone_days,
                purge_interval: config.retention.purge_interval,
                store_code: config.retention.store_code,
            },
            reaper_interval: Duration::from_secs(1),
        }
    }

    /// Per-sandbox limits from `runtime.*` (also given to the runtime for its
    /// warm pool, so pooled sandboxes match what creates ask for).
    pub fn sandbox_limits_from_config(config: &CodeboxConfig) -> SandboxLimits {
        SandboxLimits {
            pids: config.runtime.pids,
            open_files: config.runtime.open_files,
            workspace_bytes: config.runtime.disk,
            workspace_inodes: config.runtime.disk_inodes,
            tmp_bytes: config.runtime.tmp_size,
        }
    }

    /// The defaults of the config with the given secrets (tests, tools).
    pub fn with_defaults(secrets: Secrets) -> Self {
        Self::from_config(&CodeboxConfig::default(), secrets)
    }
}
