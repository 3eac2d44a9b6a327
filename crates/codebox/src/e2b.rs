//! Wires the E2B gateway (`codebox-e2b`) in front of the native router, and
//! its optional HTTPS listener (`e2b.tls.*`). See docs/e2b-compat.md.

use std::future::Future;

use anyhow::Context as _;
use axum::Router;
use codebox_config::CodeboxConfig;
use codebox_e2b::{E2bSettings, E2bState};
use codebox_server::AppState;
use tokio::net::TcpListener;

/// The native router, with the E2B surface in front of it when `e2b.enabled`.
pub(crate) fn wrap(config: &CodeboxConfig, state: AppState, native: Router) -> Router {
    if !config.e2b.enabled {
        return native;
    }
    let settings = E2bSettings::from_config(config);
    tracing::info!(domain = settings.domain.as_deref(), envd_version = %settings.envd_version,
        "E2B API enabled");
    codebox_e2b::router(native, E2bState::new(state, settings))
}

/// Binds and spawns the E2B HTTPS listener when `e2b.tls.listen` is set; a
/// bad certificate or a busy address fails the start.
pub(crate) async fn spawn_tls(
    config: &CodeboxConfig,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let tls = &config.e2b.tls;
    let (true, Some(address), Some(cert), Some(key)) =
        (config.e2b.enabled, &tls.listen, &tls.cert, &tls.key)
    else {
        return Ok(None);
    };
    let acceptor = codebox_e2b::tls::acceptor(cert, key)
        .with_context(|| format!("cannot set up TLS for {address}"))?;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (e2b.tls.listen)"))?;
    let limits = codebox_server::connection_limits(&config.server);
    Ok(Some(tokio::spawn(async move {
        if let Err(error) =
            codebox_e2b::tls::serve_tls(listener, acceptor, router, limits, shutdown).await
        {
            tracing::error!(error = %error, "the E2B TLS listener failed");
        }
    })))
}
