//! The one configuration tree of codebox and how it is assembled: defaults in
//! code < a YAML file (`--config` / `CODEBOX_CONFIG`, with `${VAR}` substitution)
//! < environment variables < command-line flags.
//!
//! This crate owns the config types, the duration and size grammar, secret
//! redaction, and the registry of every environment variable ([`env`]), from
//! which `docs/configuration.md` is checked. It reads the environment once, into
//! a snapshot, and never writes it; it opens no connections and knows nothing of
//! HTTP, SQL or sandboxes.

pub mod docs;
mod e2b;
pub mod env;
mod load;
mod model;
pub mod secret;
pub mod units;

pub use e2b::{E2bConfig, E2bTlsConfig};
pub use load::{
    from_file, from_yaml_str, load, validate, CliOverrides, ConfigError, Environment,
    MIN_NODE_SECRET_LEN,
};
pub use model::{
    AuthConfig, CodeboxConfig, ContextLanguage, DatabaseConfig, LimitsConfig, LogFormat,
    LoggingConfig, MonitoringConfig, NodeConfig, Python3TemplateConfig, RateLimit,
    RateLimitsConfig, RedisConfig, RetentionConfig, Role, RuntimeConfig, ServerConfig,
    TemplatesConfig,
};
pub use secret::{ConnectionUrl, Secret, REDACTED};

impl CodeboxConfig {
    /// The effective configuration as YAML, secrets and URL passwords redacted
    /// (`codebox config print`).
    pub fn to_redacted_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("the config tree always serialises")
    }
}
