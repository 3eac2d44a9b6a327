//! The `codebox` binary: `serve` runs the API server over the Linux sandbox
//! runtime; `users`, `keys` and `config` are operator commands that work on the
//! database and configuration directly; `template` builds and lists the language
//! templates mounted into sandboxes.
//!
//! This crate only wires: configuration comes from `codebox-config`, lifecycle
//! rules from `codebox-core`, HTTP from `codebox-server`, persistence from
//! `codebox-store`, sandboxes from `codebox-runtime`, language templates from
//! `codebox-template`. It never uses the fake runtime. Errors reach the
//! operator as one line on stderr and a non-zero exit.

mod admin;
mod bootstrap;
mod cli;
mod dependencies;
mod logging;
mod serve;
mod templates;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use codebox_config::{CliOverrides, CodeboxConfig, Environment, LogFormat, LoggingConfig};

use crate::cli::{
    Cli, Commands, CommonArgs, ConfigCommand, KeysCommand, TemplateCommand, UsersCommand,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One readable line: the context chain, no backtrace or Debug dump.
            let _ = writeln!(std::io::stderr(), "codebox: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let environment = Environment::from_process();
    let overrides = overrides(&cli.command);
    let config = codebox_config::load(&environment, &overrides)?;
    if let Commands::Config(command) = cli.command {
        return admin::config(command, &config);
    }
    // Operator commands print their results on stdout; their logs are only
    // warnings, as text, unless the server itself runs.
    let logging = match &cli.command {
        Commands::Serve(_) => config.logging.clone(),
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
    runtime.block_on(dispatch(cli.command, config))
}

async fn dispatch(command: Commands, config: CodeboxConfig) -> anyhow::Result<()> {
    match command {
        Commands::Serve(_) => serve::serve(config).await,
        Commands::Users(command) => admin::users(command, &config).await,
        Commands::Keys(command) => admin::keys(command, &config).await,
        Commands::Config(command) => admin::config(command, &config),
        Commands::Template(command) => templates::run(command, &config).await,
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
            ..from_common(&args.common)
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
    }
}
