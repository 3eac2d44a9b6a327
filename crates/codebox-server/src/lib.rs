//! codebox's HTTP API: the axum router, the tower layers around it
//! (request id, metrics, panic containment, timeouts, CORS, authentication and
//! rate limits), the hardened hyper server loop, and the OpenAPI document.
//!
//! This crate owns the wire: envelopes, status codes, headers, and the one place
//! a [`codebox_core::CoreError`] becomes an [`ApiError`]. It holds no business
//! rule (validation, quotas and ownership are `codebox-core`'s), no SQL and no
//! syscalls.
//!
//! The binary wires it as:
//! ```text
//! let state = AppState::new(core, ServerSettings::from_config(&config), limiter);
//! serve(listener, router(state), &config.server, shutdown).await
//! ```

mod auth;
mod code_handlers;
mod cors;
mod docs_page;
mod error;
mod file_handlers;
mod file_routes;
mod handlers;
mod json;
mod metrics;
mod middleware;
pub mod openapi;
mod openapi_code;
mod openapi_files;
mod process_handlers;
mod process_routes;
mod pty_handlers;
mod request_id;
mod routes;
mod serve;
mod state;

use std::future::Future;

pub use auth::{charge_authenticated, charge_unauthenticated, AuthenticatedUser};
pub use error::{ApiError, ErrorBody, ErrorEnvelope, INTERNAL_MESSAGE};
pub use json::{parse_json, ApiJson, BodyLimits};
pub use metrics::{HttpMetrics, METRICS_CONTENT_TYPE};
pub use middleware::SLOW_REQUEST;
pub use request_id::{RequestId, MAX_REQUEST_ID_LEN};
pub use routes::{metrics_router, openapi_document, route_docs, router};
pub use serve::{serve_with_limits, ConnectionLimits};
pub use state::{connection_limits, AppState, ServerSettings};

/// Serves `router` on `listener` with the connection limits of `config`
/// until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    config: &codebox_config::ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with_limits(listener, router, connection_limits(config), shutdown).await
}
