//! The registry of every environment variable codebox reads. Each one is a
//! documented constant here and an entry of [`REGISTRY`]; `docs/configuration.md`
//! is checked against this table by a test, so a variable cannot exist without
//! being documented. The seed's names (`DATABASE_URL`, `JWT_SECRET`, ...) are
//! kept as they are; everything else is `CODEBOX_*`.

use std::path::PathBuf;

use crate::model::{CodeboxConfig, ContextLanguage, LogFormat, Role};
use crate::secret::{ConnectionUrl, Secret};
use crate::units::{parse_duration, parse_size};

/// Sets one config value from a variable's text, or says why it cannot.
type Apply = fn(&mut CodeboxConfig, &str) -> Result<(), String>;

/// One environment variable: its name, the config key it sets, its doc, and how
/// its value is applied.
#[derive(Clone, Copy)]
pub struct EnvVar {
    pub name: &'static str,
    /// The config key path it overrides, or `-` when it is not a config key.
    pub key: &'static str,
    pub doc: &'static str,
    apply: Option<Apply>,
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl EnvVar {
    /// Sets the config value from the variable's text.
    pub(crate) fn apply(&self, config: &mut CodeboxConfig, value: &str) -> Result<(), String> {
        match self.apply {
            Some(apply) => apply(config, value),
            None => Ok(()),
        }
    }
}

fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("expected a number, got {value:?}"))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false, got {value:?}")),
    }
}

fn duration(value: &str) -> Result<std::time::Duration, String> {
    parse_duration(value).map_err(|error| error.to_string())
}

fn size(value: &str) -> Result<u64, String> {
    parse_size(value).map_err(|error| error.to_string())
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn non_blank(value: &str) -> Option<String> {
    (!value.trim().is_empty()).then(|| value.to_owned())
}

fn context_language(name: &str) -> Result<ContextLanguage, String> {
    [
        ContextLanguage::Python,
        ContextLanguage::Javascript,
        ContextLanguage::Typescript,
        ContextLanguage::Bash,
    ]
    .into_iter()
    .find(|language| language.as_str() == name)
    .ok_or_else(|| {
        format!("unknown language {name:?} (expected python, javascript, typescript or bash)")
    })
}

macro_rules! env_vars {
    ($( $(#[doc = $doc:literal])+ $name:ident = $key:literal => $apply:expr; )+) => {
        $(
            $(#[doc = $doc])+
            pub const $name: &str = stringify!($name);
        )+

        /// Every variable, in documentation order.
        pub static REGISTRY: &[EnvVar] = &[
            $(EnvVar {
                name: $name,
                key: $key,
                doc: concat!($($doc, "\n"),+),
                apply: $apply,
            },)+
        ];
    };
}

env_vars! {
    /// Path of the YAML config file (like `--config`).
    CODEBOX_CONFIG = "-" => None;
    /// Client commands (`run`, `sandbox`, `exec`, `files`, `shell`): base URL of
    /// the server, `http://host:port` (default: the local server of this
    /// configuration).
    CODEBOX_API_URL = "-" => None;
    /// Client commands: the API key they send (default: `admin.key` in the
    /// data directory).
    CODEBOX_API_KEY = "-" => None;
    /// Directory for the SQLite database, the runtime root, generated secrets and
    /// `admin.key`.
    CODEBOX_DATA_DIR = "data_dir" => Some(|c, v| { c.data_dir = PathBuf::from(v); Ok(()) });
    /// Address the HTTP server binds.
    CODEBOX_HOST = "server.host" => Some(|c, v| { c.server.host = v.to_owned(); Ok(()) });
    /// Port the HTTP server binds.
    CODEBOX_PORT = "server.port" => Some(|c, v| { c.server.port = number(v)?; Ok(()) });
    /// Time a client has to send its request head (e.g. `10s`).
    CODEBOX_HEADER_READ_TIMEOUT = "server.header_read_timeout" =>
        Some(|c, v| { c.server.header_read_timeout = duration(v)?; Ok(()) });
    /// Upper bound of one non-streaming request (e.g. `330s`).
    CODEBOX_REQUEST_TIMEOUT = "server.request_timeout" =>
        Some(|c, v| { c.server.request_timeout = duration(v)?; Ok(()) });
    /// Idle keep-alive connections are closed after this (e.g. `60s`).
    CODEBOX_IDLE_TIMEOUT = "server.idle_timeout" =>
        Some(|c, v| { c.server.idle_timeout = duration(v)?; Ok(()) });
    /// Most open HTTP connections.
    CODEBOX_MAX_CONNECTIONS = "server.max_connections" =>
        Some(|c, v| { c.server.max_connections = number(v)?; Ok(()) });
    /// Largest request body (e.g. `2MiB`).
    CODEBOX_MAX_BODY_BYTES = "server.max_body_bytes" =>
        Some(|c, v| { c.server.max_body_bytes = size(v)?; Ok(()) });
    /// Comma-separated CORS origins; empty turns CORS off.
    CODEBOX_CORS_ALLOWED_ORIGINS = "server.cors_allowed_origins" => Some(|c, v| {
        c.server.cors_allowed_origins = v
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(())
    });
    /// Database URL: `postgres://user:pass@host:5432/db` for Postgres; unset or
    /// empty for SQLite in the data directory.
    DATABASE_URL = "database.url" =>
        Some(|c, v| { c.database.url = non_empty(v).map(ConnectionUrl::new); Ok(()) });
    /// Connections in the database pool.
    CODEBOX_DATABASE_POOL_SIZE = "database.pool_size" =>
        Some(|c, v| { c.database.pool_size = number(v)?; Ok(()) });
    /// Wait for a pooled database connection before answering 503 (e.g. `5s`).
    CODEBOX_DATABASE_CONNECTION_TIMEOUT = "database.connection_timeout" =>
        Some(|c, v| { c.database.connection_timeout = duration(v)?; Ok(()) });
    /// Redis URL (`redis://host:6379`); unset or empty runs without Redis.
    REDIS_URL = "redis.url" =>
        Some(|c, v| { c.redis.url = non_empty(v).map(ConnectionUrl::new); Ok(()) });
    /// Log filter (`info`, `debug`, `codebox_core=debug,info`).
    CODEBOX_LOG_LEVEL = "logging.level" =>
        Some(|c, v| { c.logging.level = v.to_owned(); Ok(()) });
    /// Log format: `json` or `text`.
    CODEBOX_LOG_FORMAT = "logging.format" => Some(|c, v| {
        c.logging.format = match v.trim() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => return Err(format!("expected json or text, got {other:?}")),
        };
        Ok(())
    });
    /// Serve Prometheus metrics (`true`/`false`).
    CODEBOX_METRICS_ENABLED = "monitoring.enabled" =>
        Some(|c, v| { c.monitoring.enabled = boolean(v)?; Ok(()) });
    /// Key of the HMAC under which API keys are stored. Unset: generated once and
    /// kept in `<data_dir>/secrets`. Changing it invalidates every API key.
    API_KEY_SECRET = "auth.api_key_secret" =>
        Some(|c, v| { c.auth.api_key_secret = non_empty(v).map(Secret::new); Ok(()) });
    /// HS256 key for Bearer JWTs. Unset: generated once and kept in
    /// `<data_dir>/secrets`.
    JWT_SECRET = "auth.jwt_secret" =>
        Some(|c, v| { c.auth.jwt_secret = non_empty(v).map(Secret::new); Ok(()) });
    /// On first start with an empty database, this value becomes the admin API
    /// key (for automation and Kubernetes secrets).
    CODEBOX_BOOTSTRAP_API_KEY = "auth.bootstrap_api_key" =>
        Some(|c, v| { c.auth.bootstrap_api_key = non_empty(v).map(Secret::new); Ok(()) });
    /// Live sandboxes per user.
    MAX_SANDBOXES_PER_USER = "limits.max_sandboxes_per_user" =>
        Some(|c, v| { c.limits.max_sandboxes_per_user = number(v)?; Ok(()) });
    /// Default execution timeout in MILLISECONDS (the seed's unit), e.g. `30000`.
    DEFAULT_TIMEOUT = "limits.default_exec_timeout" => Some(|c, v| {
        c.limits.default_exec_timeout = std::time::Duration::from_millis(number(v)?);
        Ok(())
    });
    /// Longest execution timeout a request may ask for (e.g. `300s`).
    CODEBOX_MAX_EXEC_TIMEOUT = "limits.max_exec_timeout" =>
        Some(|c, v| { c.limits.max_exec_timeout = duration(v)?; Ok(()) });
    /// Sandbox lifetime when a create gives no timeout (e.g. `300s`).
    CODEBOX_DEFAULT_SANDBOX_LIFETIME = "limits.default_sandbox_lifetime" =>
        Some(|c, v| { c.limits.default_sandbox_lifetime = duration(v)?; Ok(()) });
    /// Hard cap of a sandbox's total lifetime (e.g. `24h`).
    CODEBOX_MAX_SANDBOX_LIFETIME = "limits.max_sandbox_lifetime" =>
        Some(|c, v| { c.limits.max_sandbox_lifetime = duration(v)?; Ok(()) });
    /// Largest command or code cell in BYTES (the seed's unit), e.g. `1048576`.
    MAX_CODE_SIZE = "limits.max_code_size" =>
        Some(|c, v| { c.limits.max_code_size = number(v)?; Ok(()) });
    /// Output kept per stream per execution (e.g. `1MiB`).
    CODEBOX_MAX_OUTPUT_BYTES = "limits.max_output_bytes" =>
        Some(|c, v| { c.limits.max_output_bytes = size(v)?; Ok(()) });
    /// Largest file upload (e.g. `100MiB`); the sandbox's disk limit also applies.
    CODEBOX_MAX_UPLOAD_BYTES = "limits.max_upload_bytes" =>
        Some(|c, v| { c.limits.max_upload_bytes = size(v)?; Ok(()) });
    /// Turn rate limiting off (`false`) for benchmarks and tests.
    CODEBOX_RATE_LIMITS_ENABLED = "rate_limits.enabled" =>
        Some(|c, v| { c.rate_limits.enabled = boolean(v)?; Ok(()) });
    /// Path of the in-sandbox agent binary.
    CODEBOX_AGENT_PATH = "runtime.agent_path" =>
        Some(|c, v| { c.runtime.agent_path = non_empty(v).map(PathBuf::from); Ok(()) });
    /// Root of the runtime's per-sandbox state.
    CODEBOX_RUNTIME_ROOT = "runtime.root_dir" =>
        Some(|c, v| { c.runtime.root_dir = non_empty(v).map(PathBuf::from); Ok(()) });
    /// Cgroup under which sandbox cgroups live; one per codebox instance on a
    /// host (start-up destroys whatever it finds there).
    CODEBOX_CGROUP_PARENT = "runtime.cgroup_parent" =>
        Some(|c, v| { c.runtime.cgroup_parent = v.trim().to_owned(); Ok(()) });
    /// Warm sandboxes kept ready per runtime.
    CODEBOX_POOL_SIZE = "runtime.pool_size" =>
        Some(|c, v| { c.runtime.pool_size = number(v)?; Ok(()) });
    /// Most sandboxes this host runs at once.
    CODEBOX_MAX_HOST_SANDBOXES = "runtime.max_sandboxes" =>
        Some(|c, v| { c.runtime.max_sandboxes = number(v)?; Ok(()) });
    /// Comma-separated languages (`python,javascript,typescript,bash`) whose
    /// default context every warm sandbox starts before it is claimed; empty
    /// starts none.
    CODEBOX_POOL_PRESTART_CONTEXTS = "runtime.pool_prestart_contexts" => Some(|c, v| {
        c.runtime.pool_prestart_contexts = v
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(context_language)
            .collect::<Result<_, _>>()?;
        Ok(())
    });
    /// Build missing or stale language templates in the background when `serve`
    /// starts (`true`/`false`).
    CODEBOX_TEMPLATES_BUILD_ON_START = "templates.build_on_start" =>
        Some(|c, v| { c.templates.build_on_start = boolean(v)?; Ok(()) });
    /// Comma-separated templates to build and mount (`python3,node`); empty
    /// mounts none.
    CODEBOX_TEMPLATES_ENABLED = "templates.enabled" => Some(|c, v| {
        c.templates.enabled = v
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(())
    });
    /// Directory holding the built templates and their download caches.
    CODEBOX_TEMPLATES_DIR = "templates.root_dir" =>
        Some(|c, v| { c.templates.root_dir = non_empty(v).map(PathBuf::from); Ok(()) });
    /// Python run in the warm sandboxes' prestarted python context when the
    /// python3 template is mounted (e.g. `import numpy, pandas, matplotlib`);
    /// empty or blank runs none.
    CODEBOX_PYTHON3_PRELOAD = "templates.python3.preload" =>
        Some(|c, v| { c.templates.python3.preload = non_blank(v); Ok(()) });
    /// What `serve` runs: `all` (API and sandboxes) or `api` (API only; needs
    /// Postgres and `codebox node` processes).
    CODEBOX_ROLE = "role" => Some(|c, v| {
        c.role = match v.trim() {
            "all" => Role::All,
            "api" => Role::Api,
            other => return Err(format!("expected all or api, got {other:?}")),
        };
        Ok(())
    });
    /// This node's unique name (`codebox node`); unset: the host name.
    CODEBOX_NODE_ID = "node.id" =>
        Some(|c, v| { c.node.id = non_empty(v); Ok(()) });
    /// Address the node's internal API binds (e.g. `10.0.0.5:3100`).
    CODEBOX_NODE_LISTEN = "node.listen" =>
        Some(|c, v| { c.node.listen = v.trim().to_owned(); Ok(()) });
    /// `host:port` API replicas dial to reach this node; unset: `node.listen`.
    CODEBOX_NODE_ADVERTISE = "node.advertise" =>
        Some(|c, v| { c.node.advertise = non_empty(v); Ok(()) });
    /// Shared API<->node secret (at least 32 characters).
    CODEBOX_NODE_SECRET = "node.secret" =>
        Some(|c, v| { c.node.secret = non_empty(v).map(Secret::new); Ok(()) });
    /// How often a node heartbeats (e.g. `5s`).
    CODEBOX_NODE_HEARTBEAT_INTERVAL = "node.heartbeat_interval" =>
        Some(|c, v| { c.node.heartbeat_interval = duration(v)?; Ok(()) });
    /// A node silent for this long is lost; its sandboxes end as `node_lost` (e.g. `30s`).
    CODEBOX_NODE_LOST_AFTER = "node.lost_after" =>
        Some(|c, v| { c.node.lost_after = duration(v)?; Ok(()) });
    /// Comma-separated `key=value` labels of this node.
    CODEBOX_NODE_LABELS = "node.labels" => Some(|c, v| {
        c.node.labels = v
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                    .ok_or_else(|| format!("expected key=value, got {pair:?}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    });
    /// CPU cores this node offers to sandboxes; 0: 4 x the host's cores.
    CODEBOX_NODE_CAPACITY_CPU = "node.capacity_cpu" =>
        Some(|c, v| { c.node.capacity_cpu = number(v)?; Ok(()) });
    /// Memory in MiB this node offers to sandboxes; 0: the host's total.
    CODEBOX_NODE_CAPACITY_MEMORY_MB = "node.capacity_memory_mb" =>
        Some(|c, v| { c.node.capacity_memory_mb = number(v)?; Ok(()) });
    /// Most sandboxes placed on this node; 0: `runtime.max_sandboxes`.
    CODEBOX_NODE_CAPACITY_SLOTS = "node.capacity_slots" =>
        Some(|c, v| { c.node.capacity_slots = number(v)?; Ok(()) });
    /// Serve the E2B-compatible API next to the native one (`true`/`false`).
    CODEBOX_E2B_ENABLED = "e2b.enabled" =>
        Some(|c, v| { c.e2b.enabled = boolean(v)?; Ok(()) });
    /// The E2B sandbox domain `D` (`api.D`, `{port}-{id}.D`); unset or empty:
    /// one-URL mode only.
    CODEBOX_E2B_DOMAIN = "e2b.domain" =>
        Some(|c, v| { c.e2b.domain = non_empty(v.trim()); Ok(()) });
    /// The `envdVersion` reported to the E2B SDKs (`X.Y.Z`); unset: the highest
    /// implemented.
    CODEBOX_E2B_ENVD_VERSION = "e2b.envd_version" =>
        Some(|c, v| { c.e2b.envd_version = non_empty(v.trim()); Ok(()) });
    /// Address of the E2B HTTPS listener (e.g. `0.0.0.0:443`); unset: none.
    CODEBOX_E2B_TLS_LISTEN = "e2b.tls.listen" =>
        Some(|c, v| { c.e2b.tls.listen = non_empty(v.trim()); Ok(()) });
    /// PEM certificate chain of the E2B HTTPS listener.
    CODEBOX_E2B_TLS_CERT = "e2b.tls.cert" =>
        Some(|c, v| { c.e2b.tls.cert = non_empty(v).map(PathBuf::from); Ok(()) });
    /// PEM private key of the E2B HTTPS listener.
    CODEBOX_E2B_TLS_KEY = "e2b.tls.key" =>
        Some(|c, v| { c.e2b.tls.key = non_empty(v).map(PathBuf::from); Ok(()) });
    /// Days executions are kept.
    CODEBOX_RETENTION_EXECUTIONS_DAYS = "retention.executions_days" =>
        Some(|c, v| { c.retention.executions_days = number(v)?; Ok(()) });
    /// Days ended sandboxes keep answering 410 before they are purged.
    CODEBOX_RETENTION_TOMBSTONE_DAYS = "retention.tombstone_days" =>
        Some(|c, v| { c.retention.tombstone_days = number(v)?; Ok(()) });
}

/// The registry entry for `name`.
pub fn lookup(name: &str) -> Option<&'static EnvVar> {
    REGISTRY.iter().find(|var| var.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let seed = [
            DATABASE_URL,
            REDIS_URL,
            API_KEY_SECRET,
            JWT_SECRET,
            MAX_SANDBOXES_PER_USER,
            DEFAULT_TIMEOUT,
            MAX_CODE_SIZE,
        ];
        let mut names: Vec<&str> = REGISTRY.iter().map(|var| var.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len(), "duplicate names");
        for var in REGISTRY {
            assert!(
                var.name.starts_with("CODEBOX_") || seed.contains(&var.name),
                "{} is neither a seed name nor CODEBOX_*",
                var.name
            );
            assert!(!var.doc.trim().is_empty());
        }
    }

    #[test]
    fn prestart_contexts_are_a_list_of_known_languages() {
        let var = lookup(CODEBOX_POOL_PRESTART_CONTEXTS).expect("registered");
        let mut config = CodeboxConfig::default();
        var.apply(&mut config, " bash, python ,").expect("applies");
        assert_eq!(
            config.runtime.pool_prestart_contexts,
            [ContextLanguage::Bash, ContextLanguage::Python]
        );
        var.apply(&mut config, "").expect("empty is none");
        assert!(config.runtime.pool_prestart_contexts.is_empty());
        let error = var
            .apply(&mut config, "python,ruby")
            .expect_err("ruby is no language");
        assert!(error.contains("\"ruby\""), "{error}");
    }

    #[test]
    fn default_timeout_is_milliseconds() {
        let mut config = CodeboxConfig::default();
        lookup(DEFAULT_TIMEOUT)
            .expect("registered")
            .apply(&mut config, "2500")
            .expect("applies");
        assert_eq!(
            config.limits.default_exec_timeout,
            std::time::Duration::from_millis(2500)
        );
    }
}
