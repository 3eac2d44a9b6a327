//! The client commands of the binary (`run`, `sandbox`, `exec`, `files`,
//! `shell`): they talk to a codebox server over its public HTTP API, like an
//! SDK would, and never touch the database or the runtime.
//!
//! The server is `CODEBOX_API_URL` with `CODEBOX_API_KEY`; without them, the
//! local server of the configuration (`server.port`, `data_dir`, from the
//! same defaults < file < environment layers `serve` uses) and the
//! `admin.key` that `serve` wrote on its first start. Every failure is one
//! [`ClientError`], printed as one line, with an exit code per kind (see
//! [`exit`]): scripts can tell "the server said no" from "no server".

pub mod exec;
pub mod files;
pub mod http;
pub mod output;
pub mod run;
pub mod sandbox;
pub mod shell;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use codebox_config::{CliOverrides, Environment, LogFormat, LoggingConfig};

use crate::bootstrap::ADMIN_KEY_FILE;
use crate::cli::OutputFormat;
use crate::client::http::{ApiClient, ApiError, ApiUrl};

/// Environment variable: base URL of the server (`http://host:port[/prefix]`).
pub const API_URL_VAR: &str = codebox_config::env::CODEBOX_API_URL;
/// Environment variable: the API key (`cbx_...`) the client sends.
pub const API_KEY_VAR: &str = codebox_config::env::CODEBOX_API_KEY;

/// The exit codes of the client commands (documented in docs/cli.md).
pub mod exit {
    /// The code raised or timed out (`run`), or a command failed to start.
    pub const FAILED: u8 = 1;
    /// Bad arguments or client configuration (clap uses 2 too).
    pub const USAGE: u8 = 2;
    /// The server refused the request (`NOT_FOUND`, `VALIDATION_ERROR`, ...).
    pub const API: u8 = 3;
    /// The credentials were refused (`UNAUTHORIZED`) or none were found.
    pub const AUTH: u8 = 4;
    /// No server answered, or it answered something that is not the API.
    pub const UNREACHABLE: u8 = 5;
    /// A local file could not be read or written.
    pub const LOCAL: u8 = 6;
    /// `exec`: the command outlived its `--timeout` (like timeout(1)).
    pub const TIMED_OUT: u8 = 124;
    /// Interrupted by Ctrl-C (128 + SIGINT).
    pub const INTERRUPTED: u8 = 130;
}

/// The client commands (flattened into the binary's command list).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Run a file in a new sandbox: output streams as it arrives, images are
    /// saved as out-1.png, ...; exits non-zero if the code raised.
    Run(RunArgs),
    /// Create, list, inspect and kill sandboxes.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Run a command in a sandbox, streaming its output; exits with its exit code.
    Exec(ExecArgs),
    /// Copy files into and out of a sandbox (streamed), and list them.
    #[command(subcommand)]
    Files(FilesCommand),
    /// An interactive terminal in a sandbox (a login shell as `user`).
    Shell(ShellArgs),
}

/// A language of a code context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Language {
    Python,
    Javascript,
    Typescript,
    Bash,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Typescript => "typescript",
            Language::Bash => "bash",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The file to run, or `-` to read the code from standard input.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// The sandbox runtime.
    #[arg(long, default_value = "python3")]
    pub runtime: String,
    /// The code's language (default: from the file extension, else the runtime's).
    #[arg(long, value_enum)]
    pub language: Option<Language>,
    /// Leave the sandbox running and print its id.
    #[arg(long)]
    pub keep: bool,
    /// Where image results are written (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Seconds the code may run (server default 30, at most 300).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox and print its id.
    Create(CreateArgs),
    /// List your sandboxes, newest first.
    List {
        /// Only sandboxes in this state (creating, running, terminated, failed).
        #[arg(long)]
        status: Option<String>,
        /// Only sandboxes with this label (repeatable).
        #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        /// At most this many (default: all).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one sandbox.
    Info {
        /// The sandbox id.
        id: String,
    },
    /// Kill sandboxes (every process, every resource).
    Kill {
        /// The sandbox ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The sandbox runtime.
    #[arg(long, default_value = "python3")]
    pub runtime: String,
    /// CPU cores (0.1-16).
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory in MiB (128-32768).
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Lifetime in seconds (server default 300).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// A label (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    /// An environment variable of every command (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The sandbox id.
    pub id: String,
    /// Seconds the command may run (default: as long as the sandbox).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Absolute working directory (default /home/user).
    #[arg(long)]
    pub cwd: Option<String>,
    /// An environment variable (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    pub env: Vec<(String, String)>,
    /// The command: one word runs through `bash -c` (pipes work), several run
    /// as an argv without a shell.
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Upload a local file (or `-`: standard input) into the sandbox.
    Put {
        /// The sandbox id.
        id: String,
        /// The local file, or `-`.
        #[arg(value_name = "LOCAL|-")]
        local: PathBuf,
        /// Path in the sandbox (relative paths start at /home/user; default:
        /// the local file's name).
        remote: Option<String>,
    },
    /// Download a file from the sandbox.
    Get {
        /// The sandbox id.
        id: String,
        /// Path in the sandbox.
        remote: String,
        /// Where to write it, or `-` for standard output (default: its name,
        /// in the current directory).
        #[arg(value_name = "LOCAL|-")]
        local: Option<PathBuf>,
    },
    /// List a directory of the sandbox.
    Ls {
        /// The sandbox id.
        id: String,
        /// The directory (default /home/user).
        path: Option<String>,
        /// Levels to descend (1-16).
        #[arg(long, default_value_t = 1)]
        depth: u32,
    },
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The sandbox id.
    pub id: String,
}

/// `KEY=VALUE`.
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Everything that can go wrong in a client command.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with its error envelope.
    #[error("{0}")]
    Api(Box<ApiError>),
    /// No server answered at the URL.
    #[error("cannot reach the codebox server at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered something that is not the codebox API.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Bad arguments or client configuration.
    #[error("{0}")]
    Usage(String),
    /// No API key was given or found.
    #[error("{0}")]
    NoCredentials(String),
    /// A local file or stream failed.
    #[error("{what}")]
    Local {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

impl ClientError {
    pub fn local(what: impl Into<String>, source: std::io::Error) -> ClientError {
        ClientError::Local {
            what: what.into(),
            source,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api(error) if error.code == "UNAUTHORIZED" => exit::AUTH,
            ClientError::Api(_) => exit::API,
            ClientError::NoCredentials(_) => exit::AUTH,
            ClientError::Unreachable { .. } | ClientError::Protocol(_) => exit::UNREACHABLE,
            ClientError::Usage(_) => exit::USAGE,
            ClientError::Local { .. } => exit::LOCAL,
            ClientError::Interrupted => exit::INTERRUPTED,
        }
    }

    /// One line: the message, then the root cause (an OS error, ...) when
    /// there is one; never a debug dump.
    pub fn render(&self) -> String {
        let mut line = self.to_string();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        let mut root = None;
        while let Some(error) = cause {
            root = Some(error);
            cause = error.source();
        }
        if let Some(root) = root {
            line.push_str(": ");
            line.push_str(&root.to_string());
        }
        line.replace('\n', " ")
    }

    /// The machine-readable form (`--output json`).
    pub fn to_json(&self) -> serde_json::Value {
        let code = match self {
            ClientError::Api(error) => error.code.as_str(),
            ClientError::Unreachable { .. } => "CLIENT_UNREACHABLE",
            ClientError::Protocol(_) => "CLIENT_PROTOCOL_ERROR",
            ClientError::Usage(_) => "CLIENT_USAGE_ERROR",
            ClientError::NoCredentials(_) => "CLIENT_NO_CREDENTIALS",
            ClientError::Local { .. } => "CLIENT_LOCAL_ERROR",
            ClientError::Interrupted => "CLIENT_INTERRUPTED",
        };
        let mut error = serde_json::json!({"code": code, "message": self.render()});
        if let ClientError::Api(api) = self {
            error["message"] = serde_json::Value::from(api.message.clone());
            error["status"] = serde_json::Value::from(api.status);
            for (name, value) in [
                ("request_id", &api.request_id),
                ("field", &api.field),
                ("reason", &api.reason),
            ] {
                if let Some(value) = value {
                    error[name] = serde_json::Value::from(value.clone());
                }
            }
        }
        serde_json::json!({ "error": error })
    }
}

/// Runs a client command to its exit code. Errors are one line on stderr
/// (`error: CODE: message (request id ...)`), or one JSON object with
/// `--output json`.
pub fn main(command: ClientCommand, output: OutputFormat) -> ExitCode {
    // Only warnings from libraries, as text, never mixed into the output.
    let _ = crate::logging::init(&LoggingConfig {
        level: "warn".to_owned(),
        format: LogFormat::Text,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {error}"
            );
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(command, output));
    // Background reads of stdin (shell, files put) must not keep us alive.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let line = match output {
                OutputFormat::Json => error.to_json().to_string(),
                OutputFormat::Text => format!("error: {}", error.render()),
            };
            let _ = writeln!(std::io::stderr(), "{line}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs one command; `Ok` carries the exit code (a command's own, for `exec`).
async fn dispatch(command: ClientCommand, output: OutputFormat) -> Result<u8, ClientError> {
    let api = connect()?;
    match command {
        ClientCommand::Run(args) => run::run(&api, args, output).await,
        ClientCommand::Sandbox(command) => sandbox::run(&api, command, output).await.map(|()| 0),
        ClientCommand::Exec(args) => exec::run(&api, args, output).await,
        ClientCommand::Files(command) => files::run(&api, command, output).await.map(|()| 0),
        ClientCommand::Shell(args) => shell::run(&api, args).await,
    }
}

/// The server and key from the environment, falling back to the local
/// server of the configuration and its `admin.key`.
fn connect() -> Result<ApiClient, ClientError> {
    let url = std::env::var(API_URL_VAR)
        .ok()
        .filter(|url| !url.trim().is_empty());
    let key = std::env::var(API_KEY_VAR)
        .ok()
        .filter(|key| !key.trim().is_empty());
    let config = if url.is_none() || key.is_none() {
        let environment = Environment::from_process();
        Some(
            codebox_config::load(&environment, &CliOverrides::default()).map_err(|error| {
                ClientError::Usage(format!(
                    "cannot read the configuration for the local server's defaults \
                     (set {API_URL_VAR} and {API_KEY_VAR} to skip it): {error}"
                ))
            })?,
        )
    } else {
        None
    };
    let url = match (url, &config) {
        (Some(url), _) => ApiUrl::parse(url.trim())?,
        (None, Some(config)) => ApiUrl::local(&config.server.host, config.server.port),
        (None, None) => {
            return Err(ClientError::Usage(format!("{API_URL_VAR} is not set")));
        }
    };
    let key = match (key, &config) {
        (Some(key), _) => key.trim().to_owned(),
        (None, Some(config)) => read_admin_key(&config.data_dir.join(ADMIN_KEY_FILE))?,
        (None, None) => {
            return Err(ClientError::NoCredentials(format!(
                "{API_KEY_VAR} is not set"
            )));
        }
    };
    Ok(ApiClient::new(url, key))
}

fn read_admin_key(path: &std::path::Path) -> Result<String, ClientError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(ClientError::NoCredentials(format!(
            "no API key: {} is empty; set {API_KEY_VAR}",
            path.display()
        ))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(ClientError::NoCredentials(format!(
                "no API key: set {API_KEY_VAR} (or run where the server's {} exists)",
                path.display()
            )))
        }
        Err(error) => Err(ClientError::NoCredentials(format!(
            "no API key: cannot read {} ({error}); set {API_KEY_VAR}",
            path.display()
        ))),
    }
}

/// Waits for Ctrl-C; never resolves if the handler cannot be installed
/// (the default handler then ends the process, which is the same outcome).
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(key_value("a="), Ok(("a".into(), String::new())));
        assert!(key_value("=b").is_err());
        assert!(key_value("ab").is_err());
    }

    #[test]
    fn errors_render_as_one_line_with_their_root_cause() {
        let error = ClientError::local(
            "cannot read data.csv",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(error.render(), "cannot read data.csv: entity not found");
        assert_eq!(error.exit_code(), exit::LOCAL);
        let json = error.to_json();
        assert_eq!(json["error"]["code"], "CLIENT_LOCAL_ERROR");
    }

    #[test]
    fn a_missing_admin_key_names_the_variable_and_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("admin.key");
        let error = read_admin_key(&path).expect_err("missing");
        let text = error.render();
        assert!(
            text.contains(API_KEY_VAR) && text.contains("admin.key"),
            "{text}"
        );
        assert_eq!(error.exit_code(), exit::AUTH);
        std::fs::write(&path, "cbx_abc\n").expect("writes");
        assert_eq!(read_admin_key(&path).expect("reads"), "cbx_abc");
    }
}
