//! The command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::client::ClientCommand;

/// codebox: a self-hosted Code Interpreter that runs untrusted code in Linux sandboxes.
#[derive(Debug, Parser)]
#[command(
    name = "codebox",
    version,
    about,
    propagate_version = true,
    after_help = "Client commands (run, sandbox, exec, files, shell) talk to the server at \
                  CODEBOX_API_URL with CODEBOX_API_KEY (default: the local server and its \
                  admin.key). See docs/cli.md for exit codes."
)]
pub struct Cli {
    /// Output format: `text` for people, `json` for programs (client commands
    /// and `template list`).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Commands,
}

/// What commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the HTTP API server.
    Serve(ServeArgs),
    /// Manage users (works while the server is down).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API keys (works while the server is down).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build and list the language templates (python3, node) mounted into sandboxes.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Run a sandbox node for `serve --role api` replicas (needs Postgres), or
    /// drain or list nodes. See docs/scale-out.md.
    Node(NodeArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

/// Where the configuration and the data live; shared by every command.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// YAML config file (overrides CODEBOX_CONFIG).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides CODEBOX_DATA_DIR and the file).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address to bind (overrides CODEBOX_HOST and the file).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to bind (overrides CODEBOX_PORT and the file).
    #[arg(long)]
    pub port: Option<u16>,
    /// `all` (API and sandboxes, one machine) or `api` (API only, sandboxes on
    /// `codebox node` processes; overrides CODEBOX_ROLE).
    #[arg(long, value_parser = parse_role)]
    pub role: Option<codebox_config::Role>,
}

fn parse_role(value: &str) -> Result<codebox_config::Role, String> {
    match value {
        "all" => Ok(codebox_config::Role::All),
        "api" => Ok(codebox_config::Role::Api),
        other => Err(format!("expected all or api, got {other:?}")),
    }
}

/// `codebox node [drain|list]`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub action: Option<NodeAction>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Stop placing sandboxes on a node and wait until its sandboxes end.
    Drain {
        /// The node (default: this host's node.id).
        #[arg(long)]
        node: Option<String>,
        /// Give up waiting after this many seconds (the node stays draining).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List the registered nodes: state, address, usage, heartbeat age.
    List {
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user.
    Create {
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List users.
    List {
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a user and print it once.
    Create {
        /// The user's name.
        #[arg(long)]
        user: String,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List API keys (never the keys themselves).
    List {
        /// Only this user's keys.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Revoke an API key by its id.
    Revoke {
        id: String,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as YAML, secrets redacted.
    Print {
        #[command(flatten)]
        common: CommonArgs,
        /// Also apply these serve flags.
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Build a template (default: every one in `templates.enabled`) unless it is
    /// already current. Progress goes to stderr; Ctrl-C cancels cleanly.
    Build {
        /// `python3` or `node`.
        name: Option<String>,
        /// Rebuild even when the template is current.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List the templates: state, mount point, size, versions.
    List {
        #[command(flatten)]
        common: CommonArgs,
    },
}
