//! The `codebox` binary: `serve` runs the API server over the Linux sandbox
//! runtime; `users`, `keys` and `config` are operator commands that work on the
//! database and configuration directly; `template` builds and lists the language
//! templates mounted into sandboxes; `run`, `sandbox`, `exec`, `files` and
//! `shell` are client commands that talk to a server over its HTTP API
//! (`client`).
//!
//! This crate only wires: configuration comes from `codebox-config`, lifecycle
//! rules from `codebox-core`, HTTP from `codebox-server`, persistence from
//! `codebox-store`, sandboxes from `codebox-runtime`, language templates from
//! `codebox-template`. It never uses the fake runtime. Errors reach the
//! operator as one line on stderr and a non-zero exit.

mod admin;
mod bootstrap;
mod cli;
mod client;
mod dependencies;
mod e2b;
mod logging;
mod node;
mod serve;
mod templates;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use codebox_config::{CliOverrides, CodeboxConfig, Environment, LogFormat, LoggingConfig};

use crate::cli::{
    Cli, Commands, CommonArgs, ConfigCommand, KeysCommand, NodeAction, NodeArgs, OutputFormat,
    TemplateCommand, UsersCommand,
};

fn main() -> ExitCode {
    let Cli { output, command } = Cli::parse();
    // Client commands have their own error format and exit codes.
    let command = match command {
        Commands::Client(command) => return client::main(command, output),
        command => command,
    };
    match run(Cli { output, command }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One readable line: the context chain, no backtrace or Debug dump.
            let _ = writeln!(std::io::stderr(), "codebox: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let json_capable = matches!(
        cli.command,
        Commands::Template(TemplateCommand::List { .. })
    );
    if cli.output == OutputFormat::Json && !json_capable {
        anyhow::bail!("--output json is supported by the client commands and `template list` only");
    }
    let environment = Environment::from_process();
    let overrides = overrides(&cli.command);
    let config = codebox_config::load(&environment, &overrides)?;
    if let Commands::Config(command) = cli.command {
        return admin::config(command, &config);
    }
    // Operator commands print their results on stdout; their logs are only
    // warnings, as text, unless the server itself runs.
    let logging = match &cli.command {
        Commands::Serve(_) | Commands::Node(NodeArgs { action: None, .. }) => {
            config.logging.clone()
        }
        _ => LoggingConfig {
            level: "warn".to_owned(),
            format: LogFormat::Text,
        },
    };
    logging::init(&logging)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::anyhow!("cannot start the async runtime: {error}"))?;
    runtime.block_on(dispatch(cli.command, config, cli.output))
}

async fn dispatch(
    command: Commands,
    config: CodeboxConfig,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
        Commands::Serve(_) => serve::serve(config).await,
        Commands::Users(command) => admin::users(command, &config).await,
        Commands::Keys(command) => admin::keys(command, &config).await,
        Commands::Config(command) => admin::config(command, &config),
        Commands::Template(command) => templates::run(command, &config, output).await,
        Commands::Node(NodeArgs { action, .. }) => match action {
            None => node::run_node(config).await,
            Some(NodeAction::Drain {
                node, timeout_secs, ..
            }) => node::drain(&config, node, std::time::Duration::from_secs(timeout_secs)).await,
            Some(NodeAction::List { .. }) => node::list(&config).await,
        },
        Commands::Client(_) => anyhow::bail!("client commands run through client::main"),
    }
}

/// The CLI layer of the configuration.
fn overrides(command: &Commands) -> CliOverrides {
    let from_common = |common: &CommonArgs| CliOverrides {
        config_path: common.config.clone(),
        data_dir: common.data_dir.clone(),
        ..CliOverrides::default()
    };
    match command {
        Commands::Serve(args) => CliOverrides {
            host: args.host.clone(),
            port: args.port,
            role: args.role,
            ..from_common(&args.common)
        },
        Commands::Node(NodeArgs { action, common }) => match action {
            None => from_common(common),
            Some(NodeAction::Drain { common, .. } | NodeAction::List { common }) => {
                from_common(common)
            }
        },
        Commands::Config(ConfigCommand::Print { common, host, port }) => CliOverrides {
            host: host.clone(),
            port: *port,
            ..from_common(common)
        },
        Commands::Users(UsersCommand::Create { common, .. } | UsersCommand::List { common })
        | Commands::Keys(
            KeysCommand::Create { common, .. }
            | KeysCommand::List { common, .. }
            | KeysCommand::Revoke { common, .. },
        )
        | Commands::Template(
            TemplateCommand::Build { common, .. } | TemplateCommand::List { common },
        ) => from_common(common),
        Commands::Client(_) => CliOverrides::default(),
    }
}
