//! The request-wide layers: request id, span, metrics, slow-request warning and
//! the final error envelope ([`observe`]); panic containment
//! ([`catch_panic`]); the per-request time bound ([`request_timeout`]).

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codebox_types::ErrorCode;
use futures_util::FutureExt;
use tracing::Instrument;

use crate::error::{code_for_status, default_message, ApiError, PendingError};
use crate::metrics::{HttpMetrics, UNMATCHED_ROUTE};
use crate::request_id::{RequestId, REQUEST_ID_HEADER};

/// Requests slower than this are logged as a warning (the brief's 1 s).
pub const SLOW_REQUEST: Duration = Duration::from_secs(1);

/// The time bound of one request (from `server.request_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout(pub Duration);

/// Outermost layer: gives the request its id and span, turns every error
/// response into the envelope with that id, records metrics, warns when slow.
pub async fn observe(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = RequestId::from_headers(request.headers());
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || UNMATCHED_ROUTE.to_owned(),
        |path| path.as_str().to_owned(),
    );
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(|agent| agent.chars().take(200).collect::<String>())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        request_id = request_id.as_str(),
        method = %method,
        route = %route,
        user_id = tracing::field::Empty,
        sandbox_id = tracing::field::Empty,
    );
    let mut request = request;
    request.extensions_mut().insert(request_id.clone());
    let response = next.run(request).instrument(span.clone()).await;
    let mut response = span.in_scope(|| finish_envelope(response, &request_id));
    response
        .headers_mut()
        .insert(&REQUEST_ID_HEADER, request_id.header_value());
    let elapsed = started.elapsed();
    metrics.observe(&method, &route, response.status(), elapsed);
    log_completion(
        &span,
        &method,
        &route,
        response.status(),
        elapsed,
        &user_agent,
    );
    response
}

fn log_completion(
    span: &tracing::Span,
    method: &Method,
    route: &str,
    status: StatusCode,
    elapsed: Duration,
    user_agent: &str,
) {
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    if elapsed > SLOW_REQUEST {
        tracing::warn!(parent: span, method = %method, route, status = status.as_u16(),
            duration_ms, user_agent, "slow request");
    } else {
        tracing::debug!(parent: span, status = status.as_u16(), duration_ms, "request finished");
    }
}

/// Writes the final error body with the request id, and wraps any bare error
/// status (axum's own 405, for instance) in the envelope.
fn finish_envelope(response: Response, request_id: &RequestId) -> Response {
    let status = response.status();
    let pending = response.extensions().get::<PendingError>().cloned();
    let error = match pending {
        Some(PendingError(error)) => error,
        None if status.is_client_error() || status.is_server_error() => {
            let code = code_for_status(status);
            ApiError::new(code, default_message(code))
        }
        None => return response,
    };
    log_error(&error);
    let (mut parts, _) = response.into_parts();
    parts.status = error.status();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.extensions.remove::<PendingError>();
    Response::from_parts(
        parts,
        Body::from(error.body_bytes(Some(request_id.as_str()))),
    )
}

fn log_error(error: &ApiError) {
    let internal = error.internal_chain();
    if error.status().is_server_error() {
        tracing::error!(
            code = error.code().as_str(),
            internal = internal.as_deref(),
            message = error.message(),
            "request failed"
        );
    } else {
        // Client mistakes are the client's to see; at debug they cannot flood the logs.
        tracing::debug!(
            code = error.code().as_str(),
            internal = internal.as_deref(),
            message = error.message(),
            "request rejected"
        );
    }
}

/// A panicking handler becomes a `500` envelope with no internals, and the
/// connection stays usable.
pub async fn catch_panic(request: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            tracing::error!(panic = %message, "handler panicked");
            ApiError::new(ErrorCode::InternalError, crate::error::INTERNAL_MESSAGE).into_response()
        }
    }
}

/// Bounds a request; on expiry the handler future is dropped (which cancels a
/// running command) and the client gets `504 TIMEOUT`.
pub async fn request_timeout(
    State(RequestTimeout(limit)): State<RequestTimeout>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!("the request did not finish within {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// The fallback for paths no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}
