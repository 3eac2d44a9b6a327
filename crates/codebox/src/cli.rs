//! The command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// codebox: a self-hosted Code Interpreter that runs untrusted code in Linux sandboxes.
#[derive(Debug, Parser)]
#[command(name = "codebox", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
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
