//! [`AppState`]: what every handler and middleware shares, and the settings the
//! server reads from the configuration once at start.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::FromRef;
use codebox_config::{CodeboxConfig, RateLimitsConfig};
use codebox_core::Core;
use codebox_store::{RateLimiter, RedisHealth};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::cors::CorsOrigins;
use crate::json::BodyLimits;
use crate::metrics::{ExternalCounter, HttpMetrics};
use crate::middleware::RequestTimeout;
use crate::serve::ConnectionLimits;

/// The server's slice of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Longest pause while reading a request body (`server.idle_timeout`).
    pub body_stall_timeout: Duration,
    pub cors_allowed_origins: Vec<String>,
    pub rate_limits: RateLimitsConfig,
    /// Serve `/metrics` on the API listener (off when disabled or when a separate
    /// `monitoring.metrics_port` is configured: then use [`crate::metrics_router`]).
    pub metrics_on_api_port: bool,
}

impl ServerSettings {
    pub fn from_config(config: &CodeboxConfig) -> Self {
        Self {
            max_body_bytes: usize::try_from(config.server.max_body_bytes).unwrap_or(usize::MAX),
            request_timeout: config.server.request_timeout,
            body_stall_timeout: config.server.idle_timeout,
            cors_allowed_origins: config.server.cors_allowed_origins.clone(),
            rate_limits: config.rate_limits.clone(),
            metrics_on_api_port: config.monitoring.enabled
                && config.monitoring.metrics_port.is_none(),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self::from_config(&CodeboxConfig::default())
    }
}

/// Connection limits from `server.*`.
pub fn connection_limits(config: &codebox_config::ServerConfig) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
        max_header_bytes: usize::try_from(config.max_header_bytes).unwrap_or(usize::MAX),
        ..ConnectionLimits::default()
    }
}

/// Shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) core: Arc<Core>,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) settings: Arc<ServerSettings>,
    pub(crate) http_metrics: HttpMetrics,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) openapi: Arc<serde_json::Value>,
    pub(crate) docs_html: Arc<str>,
    pub(crate) cors: CorsOrigins,
    /// Turns `true` when graceful shutdown starts: open execution streams end.
    pub(crate) streams_closing: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("core", &self.core)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state and the metrics registry: the HTTP families and the
    /// core's, in one registry served at `/metrics`.
    pub fn new(core: Arc<Core>, settings: ServerSettings, limiter: Arc<dyn RateLimiter>) -> Self {
        let mut registry = Registry::default();
        let http_metrics = HttpMetrics::register(&mut registry);
        core.metrics().register(&mut registry);
        let openapi = crate::routes::openapi_document();
        let docs_html = crate::docs_page::render(&openapi);
        Self {
            core,
            limiter,
            http_metrics,
            registry: Arc::new(Mutex::new(registry)),
            openapi: Arc::new(openapi),
            docs_html: docs_html.into(),
            cors: CorsOrigins::new(&settings.cors_allowed_origins),
            settings: Arc::new(settings),
            streams_closing: Arc::new(watch::channel(false).0),
        }
    }

    /// Exports a counter kept elsewhere, read at scrape time (B's
    /// `RedisHealth` failure count as `redis_failures_total`).
    pub fn with_external_counter(
        self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register_collector(Box::new(ExternalCounter::new(name, help, read)));
        self
    }

    /// Exports metrics read elsewhere at scrape time (codebox-node's
    /// per-node capacity gauges).
    pub fn with_collector(
        self,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) -> Self {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register_collector(collector);
        self
    }

    /// Exports `RedisHealth`'s failure count as `redis_failures_total`.
    pub fn with_redis_health(self, health: Arc<RedisHealth>) -> Self {
        self.with_external_counter(
            "redis_failures",
            "Redis operations that failed or timed out (requests degraded to the database or a local limiter)",
            move || health.failures(),
        )
    }

    /// Ends every open execution stream with a final `end` event (reason
    /// `server_shutdown`) and interrupts its code. Call when graceful shutdown
    /// starts, so draining does not wait for long-running cells.
    pub fn close_streams(&self) {
        self.streams_closing.send_replace(true);
    }

    pub(crate) fn stream_closing(&self) -> watch::Receiver<bool> {
        self.streams_closing.subscribe()
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// The metrics in the text exposition format.
    pub fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        crate::metrics::encode_registry(&registry)
    }
}

impl FromRef<AppState> for HttpMetrics {
    fn from_ref(state: &AppState) -> Self {
        state.http_metrics.clone()
    }
}

impl FromRef<AppState> for BodyLimits {
    fn from_ref(state: &AppState) -> Self {
        BodyLimits {
            max_bytes: state.settings.max_body_bytes,
            stall_timeout: state.settings.body_stall_timeout,
        }
    }
}

impl FromRef<AppState> for RequestTimeout {
    fn from_ref(state: &AppState) -> Self {
        RequestTimeout(state.settings.request_timeout)
    }
}

impl FromRef<AppState> for CorsOrigins {
    fn from_ref(state: &AppState) -> Self {
        state.cors.clone()
    }
}
