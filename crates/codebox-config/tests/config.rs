//! Loading the configuration end to end: layering, substitution, errors, redaction,
//! and the documentation of every environment variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use codebox_config::{
    docs, env, from_yaml_str, load, CliOverrides, CodeboxConfig, ConfigError, ContextLanguage,
    Environment, LogFormat,
};

fn environment(pairs: &[(&str, &str)]) -> Environment {
    Environment::from_pairs(pairs.iter().copied())
}

fn yaml(text: &str, pairs: &[(&str, &str)]) -> Result<CodeboxConfig, ConfigError> {
    from_yaml_str(text, Path::new("test.yaml"), &environment(pairs))
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("codebox.yaml");
    std::fs::write(&path, text).expect("writes the config file");
    path
}

#[test]
fn empty_everything_gives_the_defaults() {
    let config = load(&Environment::default(), &CliOverrides::default()).expect("loads");
    assert_eq!(config, CodeboxConfig::default());
    assert_eq!(config.server.port, 3000);
    assert_eq!(config.server.host, "127.0.0.1");
    assert_eq!(config.limits.max_sandboxes_per_user, 10);
    assert_eq!(config.limits.default_exec_timeout, Duration::from_secs(30));
    assert_eq!(config.limits.max_code_size, 1 << 20);
    assert_eq!(config.rate_limits.anonymous_per_ip.requests, 100);
    assert_eq!(
        config.rate_limits.anonymous_per_ip.window,
        Duration::from_secs(900)
    );
    assert!(!config.retention.store_code);
}

#[test]
fn layers_apply_in_order_defaults_file_env_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        &dir,
        "server: {port: 4000, host: 0.0.0.0}\nlimits: {max_sandboxes_per_user: 3, max_code_size: 2MiB}\n",
    );
    let env = environment(&[
        ("CODEBOX_CONFIG", path.to_str().expect("utf-8 path")),
        ("CODEBOX_PORT", "5000"),
        ("MAX_SANDBOXES_PER_USER", "7"),
    ]);
    let from_env = load(&env, &CliOverrides::default()).expect("loads");
    assert_eq!(from_env.server.port, 5000, "env beats file");
    assert_eq!(from_env.server.host, "0.0.0.0", "file beats defaults");
    assert_eq!(from_env.limits.max_sandboxes_per_user, 7);
    assert_eq!(from_env.limits.max_code_size, 2 << 20);
    let cli = CliOverrides {
        port: Some(6000),
        data_dir: Some(PathBuf::from("/tmp/x")),
        ..CliOverrides::default()
    };
    let from_cli = load(&env, &cli).expect("loads");
    assert_eq!(from_cli.server.port, 6000, "CLI beats env");
    assert_eq!(from_cli.data_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn cli_config_path_beats_the_env_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(&dir, "server: {port: 4100}\n");
    let env = environment(&[("CODEBOX_CONFIG", "/nonexistent/codebox.yaml")]);
    let cli = CliOverrides {
        config_path: Some(path),
        ..CliOverrides::default()
    };
    assert_eq!(load(&env, &cli).expect("loads").server.port, 4100);
    let missing = load(&env, &CliOverrides::default()).expect_err("file missing");
    assert!(
        missing.to_string().contains("/nonexistent/codebox.yaml"),
        "{missing}"
    );
}

#[test]
fn seed_style_file_with_substitution() {
    let text = r#"
server:   { port: 3000, host: "0.0.0.0" }
database: { url: ${DATABASE_URL}, pool_size: 20, connection_timeout: 30s }
redis:    { url: "${REDIS_URL}", max_connections: 50 }
logging:  { level: info, format: json }
monitoring: { enabled: true, metrics_port: ${METRICS_PORT:-9090} }
"#;
    let config = yaml(
        text,
        &[
            (
                "DATABASE_URL",
                "postgresql://user:pass@localhost:5432/codeint",
            ),
            ("REDIS_URL", "redis://localhost:6379"),
        ],
    )
    .expect("parses");
    assert_eq!(
        config.database.url.as_ref().map(|url| url.expose()),
        Some("postgresql://user:pass@localhost:5432/codeint")
    );
    assert!(config.uses_postgres());
    assert_eq!(config.database.connection_timeout, Duration::from_secs(30));
    assert_eq!(
        config.monitoring.metrics_port,
        Some(9090),
        "a whole ${{}} becomes a number"
    );
    assert_eq!(config.logging.format, LogFormat::Json);
}

#[test]
fn substituted_values_cannot_inject_yaml() {
    let config = yaml(
        "logging: {level: \"${LEVEL}\"}\n",
        &[("LEVEL", "debug\nserver: {port: 1}")],
    )
    .expect("parses");
    assert_eq!(config.logging.level, "debug\nserver: {port: 1}");
    assert_eq!(config.server.port, 3000);
}

#[test]
fn unset_variable_names_the_variable_and_key() {
    let error = yaml("database: {url: ${NOPE}}\n", &[]).expect_err("unset");
    let message = error.to_string();
    assert!(
        message.contains("NOPE") && message.contains("database.url"),
        "{message}"
    );
}

#[test]
fn unknown_keys_are_errors_naming_the_key_path() {
    for (text, key) in [
        ("server: {prot: 1}\n", "server.prot"),
        ("limits: {max_sandboxes: 1}\n", "limits.max_sandboxes"),
        (
            "rate_limits: {anonymous_per_ip: {requests: 1, window: 1m, burst: 2}}\n",
            "rate_limits.anonymous_per_ip.burst",
        ),
        ("sever: {port: 1}\n", "sever"),
    ] {
        let error = yaml(text, &[]).expect_err("unknown key");
        match &error {
            ConfigError::Key { key: found, .. } => assert_eq!(found, key, "{error}"),
            other => panic!("expected a key error for {text:?}, got {other:?}"),
        }
        assert!(error.to_string().contains(key), "{error}");
    }
}

#[test]
fn wrong_types_and_units_name_the_key() {
    let error = yaml("server: {port: banana}\n", &[]).expect_err("bad type");
    assert!(error.to_string().contains("server.port"), "{error}");
    let error = yaml("limits: {max_exec_timeout: 5 parsecs}\n", &[]).expect_err("bad unit");
    assert!(
        error.to_string().contains("limits.max_exec_timeout"),
        "{error}"
    );
}

#[test]
fn durations_in_yaml() {
    let config = yaml(
        "limits: {max_exec_timeout: 10m, default_exec_timeout: 500ms, max_sandbox_lifetime: 2d}\nrate_limits: {per_user_creates: {requests: 5, window: 1h}}\n",
        &[],
    )
    .expect("parses");
    assert_eq!(config.limits.max_exec_timeout, Duration::from_secs(600));
    assert_eq!(
        config.limits.default_exec_timeout,
        Duration::from_millis(500)
    );
    assert_eq!(
        config.limits.max_sandbox_lifetime,
        Duration::from_secs(172_800)
    );
    assert_eq!(
        config.rate_limits.per_user_creates.window,
        Duration::from_secs(3600)
    );
}

#[test]
fn bad_env_values_name_the_variable() {
    let error = load(
        &environment(&[("CODEBOX_PORT", "http")]),
        &CliOverrides::default(),
    )
    .expect_err("bad port");
    assert!(error.to_string().contains("CODEBOX_PORT"), "{error}");
    let error = load(
        &environment(&[("DEFAULT_TIMEOUT", "30s")]),
        &CliOverrides::default(),
    )
    .expect_err("DEFAULT_TIMEOUT is milliseconds");
    assert!(error.to_string().contains("DEFAULT_TIMEOUT"), "{error}");
}

#[test]
fn inconsistent_limits_are_rejected() {
    let error = load(
        &environment(&[("DEFAULT_TIMEOUT", "600000")]),
        &CliOverrides::default(),
    )
    .expect_err("default above max");
    assert!(
        error.to_string().contains("default_exec_timeout"),
        "{error}"
    );
    let error = yaml("limits: {max_cpu: 64}\n", &[]).and_then(|config| {
        codebox_config::validate(&config)?;
        Ok(config)
    });
    assert!(error.is_err(), "cpu beyond the brief's bound");
    let kept = yaml("retention: {store_code: true}\n", &[]).expect("parses");
    codebox_config::validate(&kept).expect("keeping code is implemented");
    assert!(kept.retention.store_code);
    let config = yaml("runtime: {network: true}\n", &[]).expect("parses");
    let error = codebox_config::validate(&config).expect_err("not implemented");
    assert!(error.to_string().contains("must be false"), "{error}");
}

#[test]
fn prestart_contexts_and_the_python3_preload_from_yaml_and_env() {
    let defaults = CodeboxConfig::default();
    assert_eq!(
        defaults.runtime.pool_prestart_contexts,
        [ContextLanguage::Python]
    );
    assert_eq!(defaults.templates.python3.preload, None);
    let config = yaml(
        "runtime: {pool_prestart_contexts: [python, bash]}
\
         templates:\n  python3:\n    preload: |\n      import numpy\n      import pandas as pd\n",
        &[],
    )
    .expect("parses");
    codebox_config::validate(&config).expect("consistent");
    assert_eq!(
        config.runtime.pool_prestart_contexts,
        [ContextLanguage::Python, ContextLanguage::Bash]
    );
    assert_eq!(
        config.templates.python3.preload.as_deref(),
        Some("import numpy\nimport pandas as pd\n")
    );
    // The environment beats the file; empty turns both off.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(&dir, "templates: {python3: {preload: 'import numpy'}}\n");
    let path = path.to_str().expect("utf-8 path");
    let env = environment(&[
        ("CODEBOX_CONFIG", path),
        ("CODEBOX_PYTHON3_PRELOAD", "import matplotlib"),
        ("CODEBOX_POOL_PRESTART_CONTEXTS", "python,typescript"),
    ]);
    let loaded = load(&env, &CliOverrides::default()).expect("loads");
    assert_eq!(
        loaded.templates.python3.preload.as_deref(),
        Some("import matplotlib")
    );
    assert_eq!(
        loaded.runtime.pool_prestart_contexts,
        [ContextLanguage::Python, ContextLanguage::Typescript]
    );
    let env = environment(&[
        ("CODEBOX_CONFIG", path),
        ("CODEBOX_PYTHON3_PRELOAD", " \n"),
        ("CODEBOX_POOL_PRESTART_CONTEXTS", ""),
    ]);
    let loaded = load(&env, &CliOverrides::default()).expect("loads");
    assert_eq!(loaded.templates.python3.preload, None);
    assert!(loaded.runtime.pool_prestart_contexts.is_empty());
    // `${VAR:-}` unset means no preload, like an empty URL.
    let config = yaml("templates: {python3: {preload: '${PRELOAD:-}'}}\n", &[]).expect("parses");
    assert_eq!(config.templates.python3.preload, None);
}

#[test]
fn bad_prestart_and_preload_settings_name_their_key() {
    for (text, key) in [
        (
            "runtime: {pool_prestart_contexts: [ruby]}\n",
            "runtime.pool_prestart_contexts",
        ),
        (
            "templates: {python3: {prelaod: x}}\n",
            "templates.python3.prelaod",
        ),
        (
            "templates: {python3: {preload: [1]}}\n",
            "templates.python3.preload",
        ),
    ] {
        let error = yaml(text, &[]).expect_err("refused");
        assert!(error.to_string().contains(key), "{text}: {error}");
    }
    let error = load(
        &environment(&[("CODEBOX_POOL_PRESTART_CONTEXTS", "python,cobol")]),
        &CliOverrides::default(),
    )
    .expect_err("cobol is no language");
    assert!(
        error.to_string().contains("CODEBOX_POOL_PRESTART_CONTEXTS"),
        "{error}"
    );
    // A preload that could never run is refused rather than ignored.
    for (pairs, needs) in [
        (
            [
                ("CODEBOX_PYTHON3_PRELOAD", "import numpy"),
                ("CODEBOX_TEMPLATES_ENABLED", "node"),
            ],
            "templates.enabled",
        ),
        (
            [
                ("CODEBOX_PYTHON3_PRELOAD", "import numpy"),
                ("CODEBOX_POOL_PRESTART_CONTEXTS", "bash"),
            ],
            "runtime.pool_prestart_contexts",
        ),
        (
            [
                ("CODEBOX_PYTHON3_PRELOAD", "import numpy\0"),
                ("CODEBOX_POOL_SIZE", "2"),
            ],
            "NUL",
        ),
    ] {
        let error = load(&environment(&pairs), &CliOverrides::default())
            .expect_err("a preload that cannot run");
        let message = error.to_string();
        assert!(
            message.contains("templates.python3.preload") && message.contains(needs),
            "{message}"
        );
    }
}

#[test]
fn secrets_are_redacted_in_debug_and_print() {
    let env = environment(&[
        ("API_KEY_SECRET", "api-secret-value"),
        ("JWT_SECRET", "jwt-secret-value"),
        ("CODEBOX_BOOTSTRAP_API_KEY", "cbx_bootstrap-value-123456789"),
        ("DATABASE_URL", "postgres://app:db-password@db:5432/codebox"),
        ("REDIS_URL", "redis://:redis-password@cache:6379"),
    ]);
    let config = load(&env, &CliOverrides::default()).expect("loads");
    let printed = config.to_redacted_yaml();
    let debugged = format!("{config:?}");
    for secret in [
        "api-secret-value",
        "jwt-secret-value",
        "bootstrap-value",
        "db-password",
        "redis-password",
    ] {
        assert!(
            !printed.contains(secret),
            "{secret} in config print:\n{printed}"
        );
        assert!(!debugged.contains(secret), "{secret} in Debug");
    }
    assert!(
        printed.contains("postgres://app:[redacted]@db:5432/codebox"),
        "{printed}"
    );
    assert_eq!(
        config
            .auth
            .jwt_secret
            .as_ref()
            .map(|secret| secret.expose()),
        Some("jwt-secret-value")
    );
}

#[test]
fn printed_defaults_parse_back() {
    let printed = CodeboxConfig::default().to_redacted_yaml();
    let parsed = yaml(&printed, &[]).expect("print output is a valid config file");
    assert_eq!(parsed, CodeboxConfig::default());
}

#[test]
fn every_env_var_is_documented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let document = std::fs::read_to_string(&path).unwrap_or_default();
    let expected = docs::splice_reference(&document);
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).expect("writes docs/configuration.md");
        return;
    }
    for var in env::REGISTRY {
        assert!(
            document.contains(&format!("`{}`", var.name)),
            "{} is not documented in docs/configuration.md (run UPDATE_DOCS=1 cargo test -p codebox-config)",
            var.name
        );
    }
    assert!(
        document == expected,
        "docs/configuration.md is out of date: run UPDATE_DOCS=1 cargo test -p codebox-config"
    );
}

#[test]
fn the_example_file_is_valid_and_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/codebox.example.yaml");
    let text = std::fs::read_to_string(&path).expect("config/codebox.example.yaml exists");
    let config = from_yaml_str(&text, &path, &Environment::default()).expect("parses");
    assert_eq!(config, CodeboxConfig::default());
}

#[test]
fn the_env_example_uses_only_registered_variables_and_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.env.example");
    let text = std::fs::read_to_string(&path).expect(".env.example exists");
    let pairs: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once('=').expect("NAME=VALUE lines");
            (name.to_owned(), value.to_owned())
        })
        .collect();
    assert!(pairs.len() >= 7, "the seed's variables are all there");
    for (name, _) in &pairs {
        assert!(env::lookup(name).is_some(), "{name} is not in the registry");
    }
    let config = load(&Environment::from_pairs(pairs), &CliOverrides::default()).expect("loads");
    assert!(config.uses_postgres());
    assert_eq!(config.limits.default_exec_timeout, Duration::from_secs(30));
}
