//! Layering: defaults < YAML file < environment < CLI flags. The environment is
//! read once into an [`Environment`] snapshot (tests build their own; nothing
//! ever calls `set_var`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use codebox_types::sandbox as codebox_bounds;

use crate::env::{self, REGISTRY};
use crate::model::{CodeboxConfig, ContextLanguage};

/// Why the configuration could not be loaded. Messages name the file, the key
/// path or the variable so an operator can fix it from one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    /// An unknown key, a wrong type or a bad unit, at `key`.
    #[error("config file {path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("config file {path}: key `{key}` uses ${{{variable}}}, which is not set")]
    UnsetVariable {
        path: PathBuf,
        key: String,
        variable: String,
    },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    #[error("invalid configuration: `{key}` {message}")]
    Invalid { key: &'static str, message: String },
}

/// A snapshot of the process environment, taken once at start.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    /// The current process environment (non-UTF-8 variables are skipped).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(name, value)| {
                    Some((name.into_string().ok()?, value.into_string().ok()?))
                })
                .collect(),
        }
    }

    /// An explicit environment, for tests.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Values given on the command line: the highest layer.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub config_path: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    /// `serve --role`.
    pub role: Option<crate::model::Role>,
}

/// Loads the effective configuration.
pub fn load(environment: &Environment, cli: &CliOverrides) -> Result<CodeboxConfig, ConfigError> {
    let file = cli
        .config_path
        .clone()
        .or_else(|| environment.get(env::CODEBOX_CONFIG).map(PathBuf::from));
    let mut config = match file {
        Some(path) => from_file(&path, environment)?,
        None => CodeboxConfig::default(),
    };
    apply_environment(&mut config, environment)?;
    apply_cli(&mut config, cli);
    validate(&config)?;
    Ok(config)
}

/// Reads a YAML file over the defaults, substituting `${VAR}` from `environment`.
pub fn from_file(path: &Path, environment: &Environment) -> Result<CodeboxConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    from_yaml_str(&text, path, environment)
}

/// Parses YAML text (named `path` in errors) over the defaults.
pub fn from_yaml_str(
    text: &str,
    path: &Path,
    environment: &Environment,
) -> Result<CodeboxConfig, ConfigError> {
    let placeholders = Placeholders::extract(text);
    let mut value: Value =
        serde_yaml::from_str(&placeholders.text).map_err(|source| ConfigError::Yaml {
            path: path.to_owned(),
            source,
        })?;
    if value.is_null() {
        return Ok(CodeboxConfig::default());
    }
    substitute(&mut value, &mut Vec::new(), &placeholders, environment).map_err(
        |(key, variable)| ConfigError::UnsetVariable {
            path: path.to_owned(),
            key,
            variable,
        },
    )?;
    let mut config: CodeboxConfig = serde_path_to_error::deserialize(value).map_err(|error| {
        let key = error.path().to_string();
        ConfigError::Key {
            path: path.to_owned(),
            key: unknown_field_path(&key, error.inner()),
            message: error.into_inner().to_string(),
        }
    })?;
    normalize(&mut config);
    Ok(config)
}

/// `url: ${DATABASE_URL:-}` with the variable unset means "no URL".
fn normalize(config: &mut CodeboxConfig) {
    for url in [&mut config.database.url, &mut config.redis.url] {
        if url
            .as_ref()
            .is_some_and(|url| url.expose().trim().is_empty())
        {
            *url = None;
        }
    }
    // `preload: ""` (or `${PRELOAD:-}` unset) means no preload.
    if config
        .templates
        .python3
        .preload
        .as_ref()
        .is_some_and(|code| code.trim().is_empty())
    {
        config.templates.python3.preload = None;
    }
}

/// serde reports an unknown field at its parent's path; append the field's
/// own name so the error names the full key (`server.prot`, not `server`).
fn unknown_field_path(parent: &str, error: &serde_yaml::Error) -> String {
    let message = error.to_string();
    let field = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    match (field, parent) {
        (Some(field), "." | "") => field.to_owned(),
        (Some(field), parent) if parent.rsplit('.').next() != Some(field) => {
            format!("{parent}.{field}")
        }
        _ => parent.to_owned(),
    }
}

/// `${...}` expressions swapped for plain-word tokens before parsing. The seed
/// writes `{ url: ${DATABASE_URL} }`, which is not valid YAML as it stands (`{`
/// and `}` are flow indicators), so the expressions are taken out of the text,
/// the text is parsed, and values are put back into string scalars only: a
/// variable's value can never inject YAML structure.
struct Placeholders {
    text: String,
    prefix: String,
    expressions: Vec<String>,
}

impl Placeholders {
    fn extract(source: &str) -> Self {
        let mut prefix = "__codebox_var_".to_owned();
        while source.contains(&prefix) {
            prefix.push('_');
        }
        let mut text = String::with_capacity(source.len());
        let mut expressions = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("${") {
            let Some(length) = rest[start..].find('}') else {
                break;
            };
            text.push_str(&rest[..start]);
            text.push_str(&format!("{prefix}{}__", expressions.len()));
            expressions.push(rest[start + 2..start + length].to_owned());
            rest = &rest[start + length + 1..];
        }
        text.push_str(rest);
        Self {
            text,
            prefix,
            expressions,
        }
    }

    /// Expands every token in `scalar`; `Err(variable)` for an unset one.
    /// `whole` tells whether the scalar was exactly one token.
    fn expand(&self, scalar: &str, environment: &Environment) -> Result<(String, bool), String> {
        let mut out = String::with_capacity(scalar.len());
        let mut rest = scalar;
        let mut tokens = 0;
        while let Some(start) = rest.find(&self.prefix) {
            out.push_str(&rest[..start]);
            let after = &rest[start + self.prefix.len()..];
            let digits = after.find("__").unwrap_or(after.len());
            let index: usize = after[..digits].parse().map_err(|_| scalar.to_owned())?;
            let expression = self
                .expressions
                .get(index)
                .ok_or_else(|| scalar.to_owned())?;
            out.push_str(&evaluate(expression, environment)?);
            tokens += 1;
            rest = after.get(digits + 2..).unwrap_or("");
        }
        let whole = tokens == 1 && scalar.starts_with(&self.prefix) && rest.is_empty();
        out.push_str(rest);
        Ok((out, whole))
    }
}

/// `VAR` or `VAR:-default`.
fn evaluate(expression: &str, environment: &Environment) -> Result<String, String> {
    let (name, default) = match expression.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (expression, None),
    };
    match (environment.get(name), default) {
        (Some(value), _) => Ok(value.to_owned()),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(name.to_owned()),
    }
}

/// Puts the variables' values back into every string scalar. A scalar that is
/// exactly one `${VAR}` is re-read as a YAML scalar so `port: ${PORT}` becomes
/// a number.
fn substitute(
    value: &mut Value,
    path: &mut Vec<String>,
    placeholders: &Placeholders,
    environment: &Environment,
) -> Result<(), (String, String)> {
    match value {
        Value::String(text) if text.contains(&placeholders.prefix) => {
            let (replaced, whole) = placeholders
                .expand(text, environment)
                .map_err(|variable| (path.join("."), variable))?;
            *value = if whole {
                scalar(replaced)
            } else {
                Value::String(replaced)
            };
        }
        Value::Mapping(mapping) => {
            for (key, child) in mapping.iter_mut() {
                path.push(key.as_str().unwrap_or("?").to_owned());
                substitute(child, path, placeholders, environment)?;
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                path.push(index.to_string());
                substitute(child, path, placeholders, environment)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn scalar(text: String) -> Value {
    match serde_yaml::from_str::<Value>(&text) {
        Ok(parsed @ (Value::Bool(_) | Value::Number(_))) => parsed,
        _ => Value::String(text),
    }
}

fn apply_environment(
    config: &mut CodeboxConfig,
    environment: &Environment,
) -> Result<(), ConfigError> {
    for var in REGISTRY {
        if let Some(value) = environment.get(var.name) {
            var.apply(config, value)
                .map_err(|message| ConfigError::Env {
                    name: var.name,
                    message,
                })?;
        }
    }
    Ok(())
}

fn apply_cli(config: &mut CodeboxConfig, cli: &CliOverrides) {
    if let Some(host) = &cli.host {
        config.server.host.clone_from(host);
    }
    if let Some(port) = cli.port {
        config.server.port = port;
    }
    if let Some(data_dir) = &cli.data_dir {
        config.data_dir.clone_from(data_dir);
    }
    if let Some(role) = cli.role {
        config.role = role;
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Cross-field checks that serde cannot express.
pub fn validate(config: &CodeboxConfig) -> Result<(), ConfigError> {
    let limits = &config.limits;
    if limits.default_exec_timeout.is_zero()
        || limits.default_exec_timeout > limits.max_exec_timeout
    {
        return Err(invalid(
            "limits.default_exec_timeout",
            "must be above zero and at most limits.max_exec_timeout",
        ));
    }
    if limits.default_sandbox_lifetime.is_zero()
        || limits.default_sandbox_lifetime > limits.max_sandbox_lifetime
    {
        return Err(invalid(
            "limits.default_sandbox_lifetime",
            "must be above zero and at most limits.max_sandbox_lifetime",
        ));
    }
    if !(codebox_bounds::MIN_CPU..=codebox_bounds::MAX_CPU).contains(&limits.max_cpu)
        || !(codebox_bounds::MIN_CPU..=limits.max_cpu).contains(&limits.default_cpu)
    {
        return Err(invalid(
            "limits.max_cpu",
            "and limits.default_cpu must lie within 0.1..=16 with default <= max",
        ));
    }
    if !(codebox_bounds::MIN_MEMORY_MB..=codebox_bounds::MAX_MEMORY_MB)
        .contains(&limits.max_memory_mb)
        || !(codebox_bounds::MIN_MEMORY_MB..=limits.max_memory_mb)
            .contains(&limits.default_memory_mb)
    {
        return Err(invalid(
            "limits.max_memory_mb",
            "and limits.default_memory_mb must lie within 128..=32768 with default <= max",
        ));
    }
    if limits.max_code_size == 0 || limits.max_output_bytes == 0 {
        return Err(invalid(
            "limits.max_code_size",
            "and max_output_bytes must be above zero",
        ));
    }
    if limits.max_upload_bytes == 0 {
        return Err(invalid("limits.max_upload_bytes", "must be above zero"));
    }
    if let Some((key, message)) = config.e2b.problem() {
        return Err(invalid(key, &message));
    }
    if config.auth.jwt_leeway > std::time::Duration::from_secs(300) {
        return Err(invalid("auth.jwt_leeway", "must be at most 5m"));
    }
    // Accepted keys whose other value is not implemented: refuse loudly rather
    // than run with a setting that silently does nothing.
    if config.runtime.network {
        return Err(invalid(
            "runtime.network",
            "must be false: outbound network for sandboxes is not implemented yet",
        ));
    }
    validate_preload(config)?;
    validate_node(config)?;
    if config.server.max_connections == 0 {
        return Err(invalid("server.max_connections", "must be above zero"));
    }
    if config.database.pool_size == 0 {
        return Err(invalid("database.pool_size", "must be above zero"));
    }
    for (key, limit) in [
        (
            "rate_limits.anonymous_per_ip",
            &config.rate_limits.anonymous_per_ip,
        ),
        (
            "rate_limits.per_user_requests",
            &config.rate_limits.per_user_requests,
        ),
        (
            "rate_limits.per_user_creates",
            &config.rate_limits.per_user_creates,
        ),
    ] {
        if limit.requests == 0 || limit.window.is_zero() {
            return Err(invalid(key, "needs requests and window above zero"));
        }
    }
    Ok(())
}

/// Shortest accepted `node.secret`: a bearer secret must not be guessable.
pub const MIN_NODE_SECRET_LEN: usize = 32;

/// The node keys: a usable heartbeat, a lost timeout well above it, a strong
/// secret when one is set (`codebox node` and `serve --role api` also require one).
fn validate_node(config: &CodeboxConfig) -> Result<(), ConfigError> {
    let node = &config.node;
    if node.heartbeat_interval.is_zero() {
        return Err(invalid("node.heartbeat_interval", "must be above zero"));
    }
    if node.lost_after < node.heartbeat_interval * 2 {
        return Err(invalid(
            "node.lost_after",
            "must be at least twice node.heartbeat_interval",
        ));
    }
    if let Some(secret) = &node.secret {
        if secret.expose().len() < MIN_NODE_SECRET_LEN {
            return Err(invalid(
                "node.secret",
                format!("must be at least {MIN_NODE_SECRET_LEN} characters"),
            ));
        }
    }
    if let Some(id) = &node.id {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(invalid(
                "node.id",
                "must be 1 to 64 characters of [A-Za-z0-9._-]",
            ));
        }
    }
    if !(node.capacity_cpu >= 0.0 && node.capacity_cpu.is_finite()) {
        return Err(invalid("node.capacity_cpu", "must be 0 (auto) or above"));
    }
    Ok(())
}

/// A preload must be able to run: the python3 template mounted, a prestarted
/// python context to run in, no NUL (it travels in an environment variable).
fn validate_preload(config: &CodeboxConfig) -> Result<(), ConfigError> {
    let Some(code) = &config.templates.python3.preload else {
        return Ok(());
    };
    if code.contains('\0') {
        return Err(invalid("templates.python3.preload", "must not contain NUL"));
    }
    if !config
        .templates
        .enabled
        .iter()
        .any(|name| name == "python3")
    {
        return Err(invalid(
            "templates.python3.preload",
            "needs python3 in templates.enabled (the host's plain python has no libraries to preload)",
        ));
    }
    if !config
        .runtime
        .pool_prestart_contexts
        .contains(&ContextLanguage::Python)
    {
        return Err(invalid(
            "templates.python3.preload",
            "needs python in runtime.pool_prestart_contexts (it runs in the prestarted context)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn node_keys_are_validated_and_role_comes_from_env_or_cli() {
        let load_env = |pairs: &[(&str, &str)]| load(&environment(pairs), &CliOverrides::default());
        let config = load_env(&[
            ("CODEBOX_ROLE", "api"),
            ("CODEBOX_NODE_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret"),
            ("CODEBOX_NODE_LABELS", "zone=a, disk=ssd"),
            ("CODEBOX_NODE_LOST_AFTER", "2s"),
            ("CODEBOX_NODE_HEARTBEAT_INTERVAL", "500ms"),
        ])
        .expect("valid");
        assert_eq!(config.role, crate::model::Role::Api);
        assert_eq!(
            config.node.labels.get("disk").map(String::as_str),
            Some("ssd")
        );
        let cli = CliOverrides {
            role: Some(crate::model::Role::All),
            ..CliOverrides::default()
        };
        let overridden = load(&environment(&[("CODEBOX_ROLE", "api")]), &cli).expect("valid");
        assert_eq!(overridden.role, crate::model::Role::All, "CLI beats env");
        for (pairs, key) in [
            (vec![("CODEBOX_NODE_SECRET", "short")], "node.secret"),
            (vec![("CODEBOX_NODE_ID", "bad id/..")], "node.id"),
            (
                vec![
                    ("CODEBOX_NODE_HEARTBEAT_INTERVAL", "5s"),
                    ("CODEBOX_NODE_LOST_AFTER", "6s"),
                ],
                "node.lost_after",
            ),
            (vec![("CODEBOX_ROLE", "node")], "CODEBOX_ROLE"),
            (
                vec![("CODEBOX_NODE_LABELS", "novalue")],
                "CODEBOX_NODE_LABELS",
            ),
        ] {
            let error = load_env(&pairs).expect_err("refused");
            assert!(error.to_string().contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn placeholders_expand_with_defaults() {
        let env = environment(&[("A", "x")]);
        let placeholders = Placeholders::extract("k: ${A}-${B:-y}-z\nj: ${A}\nopen: ${A");
        assert!(!placeholders.text.contains("${A}"));
        assert!(placeholders.text.contains("open: ${A"));
        let token = |index: usize| format!("{}{index}__", placeholders.prefix);
        let mixed = format!("{}-{}-z", token(0), token(1));
        assert_eq!(
            placeholders.expand(&mixed, &env),
            Ok(("x-y-z".to_owned(), false))
        );
        assert_eq!(
            placeholders.expand(&token(2), &env),
            Ok(("x".to_owned(), true))
        );
        let missing = Placeholders::extract("${MISSING}");
        let token = format!("{}0__", missing.prefix);
        assert_eq!(missing.expand(&token, &env), Err("MISSING".to_owned()));
    }

    #[test]
    fn unknown_field_path_appends_the_field() {
        let error = serde_yaml::from_str::<crate::model::ServerConfig>("prot: 1")
            .expect_err("unknown field");
        assert_eq!(unknown_field_path("server", &error), "server.prot");
        assert_eq!(unknown_field_path(".", &error), "prot");
    }
}
