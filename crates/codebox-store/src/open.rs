//! Choosing and opening a store from configuration, and the pool settings
//! both backends share.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::{PostgresStore, SqliteStore, Store, StoreError};

/// The configured database URL is not one this build can open.
#[derive(Debug, thiserror::Error)]
#[error("unsupported database URL scheme (expected postgres://, postgresql:// or sqlite:)")]
struct UnsupportedUrl;

/// Opens the configured store and migrates it.
///
/// - `postgres://...` or `postgresql://...`: [`PostgresStore`];
/// - `sqlite:PATH` or `sqlite://PATH`: [`SqliteStore`] at `PATH`
///   (`sqlite::memory:`: a private in-memory database);
/// - `None`: [`SqliteStore`] at `<data_dir>/codebox.db` (the directory is
///   created, mode 0700, if missing).
pub async fn open_store(
    database_url: Option<&str>,
    data_dir: &Path,
    settings: &PoolSettings,
) -> Result<Arc<dyn Store>, StoreError> {
    match database_url.map(str::trim) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PostgresStore::connect(url, settings).await?))
        }
        Some(url) if url.starts_with("sqlite:") => {
            let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            if path == ":memory:" {
                return Ok(Arc::new(SqliteStore::open_in_memory().await?));
            }
            Ok(Arc::new(
                SqliteStore::open_with(Path::new(path), settings).await?,
            ))
        }
        Some(_) => Err(StoreError::Internal {
            operation: "open",
            source: Box::new(UnsupportedUrl),
        }),
        None => {
            create_private_dir(data_dir).await?;
            let path = data_dir.join("codebox.db");
            Ok(Arc::new(SqliteStore::open_with(&path, settings).await?))
        }
    }
}

async fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
        .create(dir)
        .await
        .map_err(|source| StoreError::Unavailable {
            operation: "open",
            source: Box::new(source),
        })
}

/// Bounds on a store's connection pool. A dependency that is down or hung
/// must cost a request at most about `acquire_timeout` (+ `statement_timeout`)
/// before it fails as `Unavailable`.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub max_connections: u32,
    /// How long a request waits for a free connection.
    pub acquire_timeout: Duration,
    /// How long opening one connection may take (Postgres).
    pub connect_timeout: Duration,
    /// Longest a statement may run (Postgres `statement_timeout`) or wait for
    /// a lock (SQLite `busy_timeout`).
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            // Short: when the database is down a request should get its 503
            // quickly rather than hold a connection slot of the server.
            acquire_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn default_is_sqlite_in_the_data_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let store = open_store(None, &data_dir, &PoolSettings::default())
            .await
            .expect("open");
        store.ping().await.expect("ping");
        assert!(data_dir.join("codebox.db").exists());
    }

    #[tokio::test]
    async fn sqlite_urls_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("explicit.db");
        let url = format!("sqlite://{}", path.display());
        let store = open_store(Some(&url), dir.path(), &PoolSettings::default())
            .await
            .expect("open");
        store.ping().await.expect("ping");
        assert!(path.exists());
    }

    #[tokio::test]
    async fn sqlite_memory_url_creates_no_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_store(
            Some("sqlite::memory:"),
            dir.path(),
            &PoolSettings::default(),
        )
        .await
        .expect("open");
        store.ping().await.expect("ping");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_without_echoing_the_url() {
        let dir = tempfile::tempdir().expect("temp dir");
        let result = open_store(
            Some("mysql://root:secret@db/x"),
            dir.path(),
            &PoolSettings::default(),
        )
        .await;
        let error = result.err().expect("refused");
        assert!(!error.to_string().contains("secret"));
        assert!(matches!(error, StoreError::Internal { .. }));
    }
}
