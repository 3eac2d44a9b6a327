//! The E2B envd surface (E2B's in-sandbox daemon, port 49983) of codebox: the
//! Connect-protocol `process.Process` and `filesystem.Filesystem` services
//! (JSON codec, written by hand) and the plain `/files`, `/health`, `/envs` and
//! `/metrics` routes, all on top of `codebox-core`: every sandbox operation
//! goes through [`Core`] with the sandbox's owner as the user, and every path
//! is resolved inside the sandbox by its agent. Nothing here touches the host.
//!
//! The gateway (crate `codebox-e2b`) routes a request here after it resolved
//! the sandbox and checked the access token (`X-Access-Token`) where envd
//! demands it: every RPC. `/health` needs none, and `/files` takes the token
//! *or* a signed URL, which this crate checks against
//! [`EnvdTarget::access_token`]. The gateway inserts an [`EnvdTarget`] as a
//! request extension; a request without one is refused (`internal`).
//!
//! See `docs/envd.md` for what is implemented and how it differs from envd.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use codebox_core::Core;
use http_body_util::BodyExt;

mod connect;
mod errors;
mod filesystem;
mod http;
mod process;
mod proto;
mod state;
mod users;

pub use connect::{Code, RpcError, CONNECT_JSON, MAX_MESSAGE_BYTES};
pub use http::{signature, Operation};

/// The highest envd version whose behaviour this crate implements: default
/// user without credentials (0.4.0), `CloseStdin` (0.5.2), octet-stream and
/// gzip uploads (0.5.7). Not yet: `X-Metadata-*` file metadata (0.6.2), which
/// a higher version would make the SDKs send.
pub const ENVD_VERSION: &str = "0.5.7";

/// Inserted by the gateway as a request extension after it checked the sandbox and token.
#[derive(Debug, Clone)]
pub struct EnvdTarget {
    pub sandbox_id: String,
    pub owner: codebox_store::User,
    /// The sandbox's envd access token (empty when none was issued): checks
    /// `/files` credentials and signatures.
    pub access_token: String,
}

/// Handlers take the target through this name.
pub(crate) type Target = EnvdTarget;

impl<S: Send + Sync> FromRequestParts<S> for EnvdTarget {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<EnvdTarget>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "an envd request arrived without its sandbox");
            RpcError::new(Code::Internal, "the request was not routed to a sandbox").into_response()
        })
    }
}

/// A request message body waits at most this long between chunks.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads a request body of at most one message (plus its envelope header).
pub(crate) async fn read_body(body: Body) -> Result<Bytes, RpcError> {
    let limited = http_body_util::Limited::new(body, MAX_MESSAGE_BYTES + 5);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(RpcError::new(
            Code::DeadlineExceeded,
            "the request body stalled",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(RpcError::new(
            Code::ResourceExhausted,
            format!("the request is over {MAX_MESSAGE_BYTES} bytes"),
        )),
        Ok(Err(error)) => Err(RpcError::new(
            Code::Canceled,
            format!("reading the request failed: {error}"),
        )),
    }
}

async fn unknown_method() -> Response {
    RpcError::new(Code::Unimplemented, "no such envd method or route").into_response()
}

/// The envd router, fully stated (no state left to provide).
pub fn router(core: Arc<Core>) -> Router {
    let state = Arc::new(state::EnvdState::new(core));
    Router::new()
        .route("/process.Process/Start", post(process::start))
        .route("/process.Process/Connect", post(process::connect_process))
        .route("/process.Process/List", post(process::list))
        .route("/process.Process/SendInput", post(process::send_input))
        .route("/process.Process/StreamInput", post(process::stream_input))
        .route("/process.Process/SendSignal", post(process::send_signal))
        .route("/process.Process/CloseStdin", post(process::close_stdin))
        .route("/process.Process/Update", post(process::update))
        .route("/filesystem.Filesystem/Stat", post(filesystem::stat))
        .route("/filesystem.Filesystem/MakeDir", post(filesystem::make_dir))
        .route("/filesystem.Filesystem/Move", post(filesystem::move_path))
        .route("/filesystem.Filesystem/ListDir", post(filesystem::list_dir))
        .route("/filesystem.Filesystem/Remove", post(filesystem::remove))
        .route(
            "/filesystem.Filesystem/WatchDir",
            post(filesystem::watch_dir),
        )
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(filesystem::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(filesystem::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(filesystem::remove_watcher),
        )
        .route("/files", get(http::download).post(http::upload))
        .route("/health", get(http::health))
        .route("/envs", get(http::envs))
        .route("/metrics", get(http::metrics))
        .fallback(unknown_method)
        .with_state(state)
}
