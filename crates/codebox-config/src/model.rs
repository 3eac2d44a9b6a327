//! The configuration tree in the product brief's YAML shape. Every struct denies
//! unknown fields and carries its defaults in code (`Default`), so an empty file
//! and no environment give a working single-node server.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::{ConnectionUrl, Secret};
use crate::units;

/// The whole effective configuration of a codebox process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeboxConfig {
    /// Holds the SQLite database, the runtime root, generated secrets and the
    /// bootstrap admin key.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub logging: LoggingConfig,
    pub monitoring: MonitoringConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub rate_limits: RateLimitsConfig,
    pub runtime: RuntimeConfig,
    pub retention: RetentionConfig,
    pub templates: TemplatesConfig,
    /// What `codebox serve` runs: `all` (the API and the sandboxes, one
    /// machine) or `api` (the API only; sandboxes run on `codebox node`
    /// processes registered in Postgres). See docs/scale-out.md.
    pub role: Role,
    /// The sandbox node (`codebox node`) and how the API reaches nodes.
    pub node: NodeConfig,
    /// The E2B-compatible API (docs/e2b-compat.md).
    pub e2b: crate::e2b::E2bConfig,
}

impl Default for CodeboxConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./.codebox"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            logging: LoggingConfig::default(),
            monitoring: MonitoringConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            runtime: RuntimeConfig::default(),
            retention: RetentionConfig::default(),
            templates: TemplatesConfig::default(),
            role: Role::default(),
            node: NodeConfig::default(),
            e2b: crate::e2b::E2bConfig::default(),
        }
    }
}

/// What `codebox serve` runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The API and the sandboxes in one process (one machine).
    #[default]
    All,
    /// The API only: sandboxes are placed on registered nodes (needs Postgres).
    Api,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
        }
    }
}

/// A sandbox node: its internal listener, identity, capacity, heartbeat; and
/// the API side's view of nodes (`lost_after`, the shared `secret`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name of this node; unset: the host name.
    pub id: Option<String>,
    /// Address the node's internal API binds (`codebox node`). Sandboxes cannot
    /// reach it (their network namespace has only `lo`); keep it on a private
    /// network that only the API replicas reach.
    pub listen: String,
    /// `host:port` the API replicas dial; unset: `listen`.
    pub advertise: Option<String>,
    /// Shared secret between API replicas and nodes (at least 32 characters);
    /// sent as a bearer token on every API->node request. Required for
    /// `codebox node` and `serve --role api`.
    pub secret: Option<Secret>,
    /// How often a node refreshes its row (and reconciles its sandboxes).
    #[serde(with = "units::duration")]
    pub heartbeat_interval: Duration,
    /// A node whose last heartbeat is older than this is marked lost by the
    /// API; its sandboxes end as `node_lost`.
    #[serde(with = "units::duration")]
    pub lost_after: Duration,
    /// Free-form labels recorded with the node (shown in `codebox node list`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// CPU cores offered to sandboxes; 0: 4 x the host's cores (a sandbox's
    /// `cpu` is a quota that sandboxes can share).
    pub capacity_cpu: f64,
    /// Memory offered to sandboxes in MiB; 0: the host's total memory.
    pub capacity_memory_mb: u64,
    /// Most sandboxes placed on this node; 0: `runtime.max_sandboxes`.
    pub capacity_slots: u32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: None,
            listen: "127.0.0.1:3100".to_owned(),
            advertise: None,
            secret: None,
            heartbeat_interval: Duration::from_secs(5),
            lost_after: Duration::from_secs(30),
            labels: std::collections::BTreeMap::new(),
            capacity_cpu: 0.0,
            capacity_memory_mb: 0,
            capacity_slots: 0,
        }
    }
}

/// The HTTP listener and its connection-level limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// A client must send its full request head within this time (slowloris).
    #[serde(with = "units::duration")]
    pub header_read_timeout: Duration,
    /// Upper bound for one non-streaming request; longer than the longest
    /// execution (`limits.max_exec_timeout`) so commands are not cut short.
    #[serde(with = "units::duration")]
    pub request_timeout: Duration,
    /// An idle keep-alive connection is closed after this time.
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,
    /// Open connections beyond this wait in the accept queue.
    pub max_connections: usize,
    /// Largest request body accepted (the code itself is also capped by
    /// `limits.max_code_size`).
    #[serde(with = "units::size")]
    pub max_body_bytes: u64,
    /// Largest request head (request line and headers).
    #[serde(with = "units::size")]
    pub max_header_bytes: u64,
    /// Origins allowed by CORS; empty means CORS is off.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 3000,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(330),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_body_bytes: 2 << 20,
            max_header_bytes: 16 << 10,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// The metadata database. No URL: SQLite at `<data_dir>/codebox.db`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://...` / `postgresql://...` for Postgres, `sqlite://path` for
    /// another SQLite file. The password is redacted when printed.
    pub url: Option<ConnectionUrl>,
    pub pool_size: u32,
    /// How long to wait for a pooled connection before answering 503: short, so
    /// a hung database fails requests fast instead of piling them up.
    #[serde(with = "units::duration")]
    pub connection_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 20,
            connection_timeout: Duration::from_secs(5),
        }
    }
}

/// Redis: cache-aside for sandbox lookups and shared rate-limit counters.
/// Optional; its loss degrades to the database and a local limiter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: Option<ConnectionUrl>,
    /// Accepted for the seed's file shape; codebox multiplexes every Redis
    /// command over one connection, so this only caps nothing today.
    pub max_connections: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 50,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing` filter: `info`, `debug`, `codebox_core=debug,info`, ...
    pub level: String,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Serve Prometheus metrics at `/metrics`.
    pub enabled: bool,
    /// A separate port for `/metrics`; unset serves it on the API port.
    pub metrics_port: Option<u16>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            metrics_port: None,
        }
    }
}

/// Credentials of the service. Unset secrets are generated at first start and
/// kept in `<data_dir>/secrets` (mode 0600) so API keys survive restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Key of the HMAC-SHA256 under which API keys are stored.
    pub api_key_secret: Option<Secret>,
    /// HS256 key for `Authorization: Bearer` JWTs.
    pub jwt_secret: Option<Secret>,
    /// Becomes the admin API key when the database is empty.
    pub bootstrap_api_key: Option<Secret>,
    /// Clock skew tolerated on a JWT's `exp`/`nbf`; capped at 5 minutes.
    #[serde(with = "units::duration")]
    pub jwt_leeway: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_key_secret: None,
            jwt_secret: None,
            bootstrap_api_key: None,
            jwt_leeway: Duration::from_secs(30),
        }
    }
}

/// Per-request and per-user bounds. Defaults are the security requirements'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Live (creating or running) sandboxes per user.
    pub max_sandboxes_per_user: u32,
    /// Execution timeout when a request gives none.
    #[serde(with = "units::duration")]
    pub default_exec_timeout: Duration,
    #[serde(with = "units::duration")]
    pub max_exec_timeout: Duration,
    /// Sandbox lifetime when a create gives no `timeout`.
    #[serde(with = "units::duration")]
    pub default_sandbox_lifetime: Duration,
    /// Hard cap of a sandbox's total lifetime, extensions included.
    #[serde(with = "units::duration")]
    pub max_sandbox_lifetime: Duration,
    /// Largest command or code cell.
    #[serde(with = "units::size")]
    pub max_code_size: u64,
    /// Output kept per stream per execution; beyond it `truncated` is set.
    #[serde(with = "units::size")]
    pub max_output_bytes: u64,
    /// Largest file upload (`PUT .../files`); the sandbox's disk limit also applies.
    #[serde(with = "units::size")]
    pub max_upload_bytes: u64,
    pub max_metadata_entries: usize,
    pub max_metadata_key_len: usize,
    pub max_metadata_value_len: usize,
    pub max_env_vars: usize,
    pub max_env_key_len: usize,
    pub max_env_value_len: usize,
    /// CPU cores when a create gives no `resources`.
    pub default_cpu: f64,
    /// Memory (MiB) when a create gives no `resources`.
    pub default_memory_mb: u64,
    /// Narrows the brief's 0.1..=16 cores; can never widen it.
    pub max_cpu: f64,
    /// Narrows the brief's 128..=32768 MiB; can never widen it.
    pub max_memory_mb: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sandboxes_per_user: 10,
            default_exec_timeout: Duration::from_secs(30),
            max_exec_timeout: Duration::from_secs(300),
            default_sandbox_lifetime: Duration::from_secs(300),
            max_sandbox_lifetime: Duration::from_secs(24 * 3600),
            max_code_size: 1 << 20,
            max_output_bytes: 1 << 20,
            max_upload_bytes: 100 << 20,
            max_metadata_entries: 32,
            max_metadata_key_len: 64,
            max_metadata_value_len: 512,
            max_env_vars: 64,
            max_env_key_len: 128,
            max_env_value_len: 4096,
            default_cpu: 1.0,
            default_memory_mb: 512,
            max_cpu: 16.0,
            max_memory_mb: 32768,
        }
    }
}

/// `requests` per `window`, a fixed window counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    #[serde(with = "units::duration")]
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Off only for benchmarks and tests.
    pub enabled: bool,
    /// Unauthenticated and failed-auth traffic, per client IP (the brief's
    /// 100 per 15 minutes).
    pub anonymous_per_ip: RateLimit,
    /// Every authenticated request, per user.
    pub per_user_requests: RateLimit,
    /// Sandbox creates, per user.
    pub per_user_creates: RateLimit,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            anonymous_per_ip: RateLimit {
                requests: 100,
                window: Duration::from_secs(15 * 60),
            },
            per_user_requests: RateLimit {
                requests: 1000,
                window: Duration::from_secs(60),
            },
            per_user_creates: RateLimit {
                requests: 60,
                window: Duration::from_secs(60),
            },
        }
    }
}

/// The Linux sandbox runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The in-sandbox agent binary; unset: `codebox-agent` next to the
    /// `codebox` executable.
    pub agent_path: Option<PathBuf>,
    /// Root of the runtime's per-sandbox state; unset: `<data_dir>/runtime`.
    pub root_dir: Option<PathBuf>,
    /// The cgroup under which every sandbox cgroup is created. `recover` at
    /// start destroys whatever it finds there, so two codebox instances on one
    /// host need different names.
    pub cgroup_parent: String,
    /// Warm sandboxes kept ready per runtime (0 disables the pool).
    pub pool_size: u32,
    /// Most sandboxes this host runs at once (admission control).
    pub max_sandboxes: u32,
    /// Processes and threads per sandbox.
    pub pids: u32,
    /// `RLIMIT_NOFILE` per process.
    pub open_files: u64,
    #[serde(with = "units::size")]
    pub disk: u64,
    pub disk_inodes: u64,
    #[serde(with = "units::size")]
    pub tmp_size: u64,
    /// Outbound network for sandboxes. Only `false` (loopback only) is
    /// implemented; `true` is refused at start.
    pub network: bool,
    /// Languages whose default context every warm sandbox starts before it is
    /// claimed, so the first execution pays no interpreter start. Each costs
    /// one idle interpreter per warm sandbox; `[]` starts none.
    pub pool_prestart_contexts: Vec<ContextLanguage>,
}

/// A language of code contexts (`POST .../execute` `language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextLanguage {
    Python,
    Javascript,
    Typescript,
    Bash,
}

impl ContextLanguage {
    /// The name used in the API and in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Javascript => "javascript",
            Self::Typescript => "typescript",
            Self::Bash => "bash",
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            agent_path: None,
            root_dir: None,
            cgroup_parent: "codebox".to_owned(),
            pool_size: 2,
            max_sandboxes: 100,
            pids: 256,
            open_files: 1024,
            disk: 1 << 30,
            disk_inodes: 100_000,
            tmp_size: 256 << 20,
            network: false,
            pool_prestart_contexts: vec![ContextLanguage::Python],
        }
    }
}

/// How long history is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub executions_days: u32,
    /// Ended sandboxes keep answering 410 with their reason this long, then 404.
    pub tombstone_days: u32,
    /// Keep executed code and its output (capped at 64 KiB) with each execution
    /// record; off by default (only the code's size is recorded). Kept content
    /// is purged with the record after `executions_days`.
    pub store_code: bool,
    /// How often the purge runs.
    #[serde(with = "units::duration")]
    pub purge_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            executions_days: 30,
            tombstone_days: 7,
            store_code: false,
            purge_interval: Duration::from_secs(3600),
        }
    }
}

/// The language templates (`python3`, `node`) bind-mounted read-only into
/// sandboxes. A template that is missing or failed to build never blocks
/// serving: sandboxes then run on the host's plain interpreters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatesConfig {
    /// Build missing or stale templates in the background when `serve` starts.
    pub build_on_start: bool,
    /// The templates built at start and mounted into sandboxes.
    pub enabled: Vec<String>,
    /// Holds the built templates (`templates/`) and the pip/npm download caches
    /// (`cache/`); unset: the data directory.
    pub root_dir: Option<PathBuf>,
    /// Settings of the `python3` template.
    pub python3: Python3TemplateConfig,
}

/// Settings of the `python3` template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Python3TemplateConfig {
    /// Python run in the prestarted python context of every warm sandbox
    /// before it is claimed (e.g. `import numpy, pandas, matplotlib`), so the
    /// first cell finds those modules imported. Runs only on the template's
    /// interpreter (not while the template is unbuilt); needs `python` in
    /// `runtime.pool_prestart_contexts`. Costs memory in every warm sandbox.
    pub preload: Option<String>,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        Self {
            build_on_start: true,
            enabled: vec!["python3".to_owned(), "node".to_owned()],
            root_dir: None,
            python3: Python3TemplateConfig::default(),
        }
    }
}

impl CodeboxConfig {
    /// The SQLite file used when `database.url` is unset.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("codebox.db")
    }

    /// The runtime root: `runtime.root_dir` or `<data_dir>/runtime`.
    pub fn runtime_root(&self) -> PathBuf {
        self.runtime
            .root_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("runtime"))
    }

    /// Where templates and their caches live: `templates.root_dir` or the data
    /// directory.
    pub fn templates_root(&self) -> PathBuf {
        self.templates
            .root_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone())
    }

    /// Whether the database is Postgres.
    pub fn uses_postgres(&self) -> bool {
        self.database
            .url
            .as_ref()
            .and_then(ConnectionUrl::scheme)
            .is_some_and(|scheme| scheme == "postgres" || scheme == "postgresql")
    }
}
