//! `codebox users ...`, `codebox keys ...` and `codebox config print`. They
//! operate on the database directly, so they work while the server is down.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use codebox_config::CodeboxConfig;
use codebox_core::{Accounts, ApiKeyRecord};
use codebox_store::{PoolSettings, Store};
use time::format_description::well_known::Rfc3339;

use crate::bootstrap::{ensure_data_dir, resolve_secrets};
use crate::cli::{ConfigCommand, KeysCommand, UsersCommand};

/// Writes one block of output to stdout (the place for what a command prints
/// for the operator; logs go to stderr).
pub fn say(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}

/// Pool settings from `database.*`.
pub fn pool_settings(config: &CodeboxConfig) -> PoolSettings {
    PoolSettings {
        max_connections: config.database.pool_size,
        acquire_timeout: config.database.connection_timeout,
        connect_timeout: config.database.connection_timeout,
        ..PoolSettings::default()
    }
}

/// Opens (and migrates) the configured store: Postgres for a `postgres://`
/// URL, otherwise SQLite (in the data directory unless the URL names a file).
pub async fn open_store(config: &CodeboxConfig) -> anyhow::Result<Arc<dyn Store>> {
    if config.database.url.is_none() {
        ensure_data_dir(&config.data_dir)?;
    }
    let url = config.database.url.as_ref().map(|url| url.expose());
    codebox_store::open_store(url, &config.data_dir, &pool_settings(config))
        .await
        .with_context(|| match &config.database.url {
            Some(url) => format!("cannot open the database {}", url.redacted()),
            None => format!("cannot open the database in {}", config.data_dir.display()),
        })
}

async fn accounts(config: &CodeboxConfig) -> anyhow::Result<Accounts> {
    let store = open_store(config).await?;
    let secrets = resolve_secrets(config)?;
    Ok(Accounts::new(store, secrets, config.auth.jwt_leeway))
}

pub async fn users(command: UsersCommand, config: &CodeboxConfig) -> anyhow::Result<()> {
    let accounts = accounts(config).await?;
    match command {
        UsersCommand::Create { name, admin, .. } => {
            let user = accounts
                .create_user(&name, admin)
                .await
                .with_context(|| format!("cannot create user {name:?}"))?;
            say(&format!("created user {} (id {})\n", user.name, user.id))
        }
        UsersCommand::List { .. } => {
            let mut text = format!("{:<26}  {:<24}  {:<5}  CREATED\n", "ID", "NAME", "ADMIN");
            for user in accounts.list_users().await.context("cannot list users")? {
                text.push_str(&format!(
                    "{:<26}  {:<24}  {:<5}  {}\n",
                    user.id,
                    user.name,
                    user.is_admin,
                    timestamp(user.created_at)
                ));
            }
            say(&text)
        }
    }
}

pub async fn keys(command: KeysCommand, config: &CodeboxConfig) -> anyhow::Result<()> {
    let accounts = accounts(config).await?;
    match command {
        KeysCommand::Create { user, name, .. } => {
            let owner = accounts
                .user_by_name(&user)
                .await
                .with_context(|| format!("no user named {user:?}"))?;
            let (key, record) = accounts
                .create_api_key(&owner, name)
                .await
                .context("cannot create the API key")?;
            say(&format!(
                "{key}\n# key id {} for user {}: shown once, store it now\n",
                record.id, owner.name
            ))
        }
        KeysCommand::List { user, .. } => {
            let owner = match user {
                Some(name) => Some(
                    accounts
                        .user_by_name(&name)
                        .await
                        .with_context(|| format!("no user named {name:?}"))?,
                ),
                None => None,
            };
            let records = accounts
                .list_api_keys(owner.as_ref())
                .await
                .context("cannot list API keys")?;
            say(&render_keys(&records))
        }
        KeysCommand::Revoke { id, .. } => {
            accounts
                .revoke_api_key(&id)
                .await
                .with_context(|| format!("cannot revoke key {id:?}"))?;
            say(&format!("revoked key {id}\n"))
        }
    }
}

fn render_keys(records: &[ApiKeyRecord]) -> String {
    let mut text = format!(
        "{:<26}  {:<26}  {:<12}  {:<16}  {:<27}  STATE\n",
        "ID", "USER ID", "PREFIX", "NAME", "CREATED"
    );
    for record in records {
        let state = match record.revoked_at {
            Some(at) => format!("revoked {}", timestamp(at)),
            None => "active".to_owned(),
        };
        text.push_str(&format!(
            "{:<26}  {:<26}  {:<12}  {:<16}  {:<27}  {}\n",
            record.id,
            record.user_id,
            record.prefix,
            record.name.as_deref().unwrap_or("-"),
            timestamp(record.created_at),
            state
        ));
    }
    text
}

fn timestamp(at: time::OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

pub fn config(command: ConfigCommand, config: &CodeboxConfig) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Print { .. } => say(&config.to_redacted_yaml()),
    }
}
