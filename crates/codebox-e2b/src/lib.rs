//! codebox's E2B gateway: the official, unmodified E2B SDKs work against
//! codebox. This crate owns the addressing (by `Host` in the subdomain mode, by
//! `E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers in the one-URL mode), the E2B
//! control plane (`/sandboxes`, `/v2/sandboxes`), the code-interpreter surface
//! (port 49999: `/execute`, `/contexts`), the per-sandbox tokens that guard the
//! sandbox ports, and the optional TLS listener. The envd surface (port 49983)
//! is `codebox-envd`'s; this crate authenticates requests for it and hands
//! them over with an [`codebox_envd::EnvdTarget`].
//!
//! Everything is a translation onto `codebox-core` (the same quotas,
//! ownership, rate limits and sandboxes as the native API); this crate holds no
//! business rule of its own beyond E2B's wire contracts, no SQL and no
//! syscalls. See docs/e2b-compat.md.
//!
//! The binary wires it as:
//! ```text
//! let e2b = E2bState::new(app_state.clone(), E2bSettings::from_config(&config));
//! let router = codebox_e2b::router(codebox_server::router(app_state), e2b);
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use codebox_config::CodeboxConfig;
use codebox_core::Core;
use codebox_server::AppState;
use tower::ServiceExt;
use tracing::Instrument;

mod control;
mod control_views;
mod error;
mod gateway;
mod interpreter;
mod results;
mod routing;
pub mod tls;
mod tokens;

pub use error::E2bError;
pub use routing::{destination, Destination, SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER};
pub use tokens::{SandboxTokens, TokenKind};

/// The envd port of an E2B sandbox.
pub const ENVD_PORT: u16 = 49983;
/// The code-interpreter (Jupyter) port of an E2B sandbox.
pub const INTERPRETER_PORT: u16 = 49999;

/// The gateway's slice of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct E2bSettings {
    /// The sandbox domain of the subdomain mode, if configured.
    pub domain: Option<String>,
    /// The `envdVersion` reported to the SDKs.
    pub envd_version: String,
    /// Largest JSON body of a control-plane or code-interpreter request.
    pub max_body_bytes: usize,
    /// `diskSizeMB` reported for every sandbox (the workspace limit).
    pub disk_size_mb: u64,
}

impl E2bSettings {
    pub fn from_config(config: &CodeboxConfig) -> Self {
        Self {
            domain: config.e2b.domain.clone(),
            envd_version: config
                .e2b
                .envd_version
                .clone()
                .unwrap_or_else(|| codebox_envd::ENVD_VERSION.to_owned()),
            max_body_bytes: usize::try_from(config.server.max_body_bytes).unwrap_or(usize::MAX),
            disk_size_mb: config.runtime.disk >> 20,
        }
    }
}

impl Default for E2bSettings {
    fn default() -> Self {
        Self::from_config(&CodeboxConfig::default())
    }
}

/// Shared by every E2B request. Cheap to clone.
#[derive(Clone)]
pub struct E2bState {
    inner: Arc<Inner>,
}

struct Inner {
    app: AppState,
    tokens: SandboxTokens,
    settings: E2bSettings,
    envd: Router,
}

impl std::fmt::Debug for E2bState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2bState")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl E2bState {
    /// The gateway over the same service as `app` (its core, limiter and
    /// settings), with tokens keyed from the service's `API_KEY_SECRET`.
    pub fn new(app: AppState, settings: E2bSettings) -> Self {
        let core = Arc::clone(app.core());
        let tokens = SandboxTokens::new(&core.settings().secrets.api_key_secret);
        let envd = codebox_envd::router(core);
        Self {
            inner: Arc::new(Inner {
                app,
                tokens,
                settings,
                envd,
            }),
        }
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        self.inner.app.core()
    }

    pub(crate) fn app(&self) -> &AppState {
        &self.inner.app
    }

    pub fn tokens(&self) -> &SandboxTokens {
        &self.inner.tokens
    }

    pub fn settings(&self) -> &E2bSettings {
        &self.inner.settings
    }

    pub(crate) fn envd(&self) -> Router {
        self.inner.envd.clone()
    }
}

/// The native router with the E2B surface in front of it: each request goes
/// where [`destination`] says.
pub fn router(native: Router, state: E2bState) -> Router {
    let dispatch = Dispatch {
        control: control::router(state.clone()),
        interpreter: interpreter::router(state.clone()),
        native,
        state,
    };
    let service = tower::service_fn(move |request: Request| {
        let dispatch = dispatch.clone();
        async move { Ok::<_, Infallible>(dispatch.handle(request).await) }
    });
    Router::new().fallback_service(service)
}

#[derive(Clone)]
struct Dispatch {
    native: Router,
    control: Router,
    interpreter: Router,
    state: E2bState,
}

impl Dispatch {
    async fn handle(self, request: Request) -> Response {
        let domain = self.state.settings().domain.as_deref();
        let target = destination(request.uri(), request.headers(), domain);
        let router = match &target {
            Destination::Native => return oneshot(self.native, request).await,
            Destination::Control => Some(self.control),
            Destination::Sandbox { .. } | Destination::Unroutable(_) => None,
        };
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let span = match &target {
            Destination::Sandbox { id, port } => {
                tracing::info_span!("e2b", %method, path = %path, sandbox_id = %id, port = *port)
            }
            _ => tracing::info_span!("e2b", %method, path = %path),
        };
        let response = async move {
            match (router, target) {
                (Some(control), _) => oneshot(control, request).await,
                (None, Destination::Sandbox { id, port }) => {
                    gateway::sandbox_request(&self.state, self.interpreter, &id, port, request)
                        .await
                }
                (None, Destination::Unroutable(message)) => {
                    E2bError::not_found(message).into_response()
                }
                (None, _) => E2bError::internal("unreachable destination").into_response(),
            }
        }
        .instrument(span.clone())
        .await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(parent: &span, status = response.status().as_u16(), duration_ms, "e2b request finished");
        response
    }
}

async fn oneshot(router: Router, request: Request) -> Response {
    match router.oneshot(request.map(Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
