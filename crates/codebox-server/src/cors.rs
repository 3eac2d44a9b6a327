//! CORS, installed only when `server.cors_allowed_origins` is non-empty: without
//! it the server sends no CORS header at all and browsers keep their
//! same-origin default.
//!
//! Credentials travel in headers (`X-API-Key`, `Authorization`), never cookies,
//! so `Access-Control-Allow-Credentials` is never sent.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const ALLOWED_METHODS: &str = "GET, POST, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str = "content-type, x-api-key, authorization, x-request-id";
const EXPOSED_HEADERS: &str = "x-request-id, retry-after";
const PREFLIGHT_MAX_AGE_SECONDS: &str = "600";

/// The configured origins; `*` allows any origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsOrigins(Arc<Vec<String>>);

impl CorsOrigins {
    pub fn new(origins: &[String]) -> Self {
        Self(Arc::new(origins.to_vec()))
    }

    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.0.iter().any(|allowed| allowed == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        let origin_text = origin.to_str().ok()?;
        self.0
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin_text))
            .then(|| origin.clone())
    }
}

/// Answers preflights of allowed origins and decorates their responses.
pub async fn cors(State(origins): State<CorsOrigins>, request: Request, next: Next) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| origins.allow(origin));
    let Some(allow_origin) = allowed else {
        return next.run(request).await;
    };
    if is_preflight(request.method(), request.headers()) {
        let mut response = StatusCode::NO_CONTENT.into_response();
        preflight_headers(response.headers_mut(), allow_origin);
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn preflight_headers(headers: &mut HeaderMap, allow_origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECONDS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_are_allowed() {
        let origins = CorsOrigins::new(&["https://app.example".to_owned()]);
        let allowed = origins.allow(&HeaderValue::from_static("https://app.example"));
        assert_eq!(
            allowed,
            Some(HeaderValue::from_static("https://app.example"))
        );
        assert!(origins
            .allow(&HeaderValue::from_static("https://evil.example"))
            .is_none());
        assert!(!CorsOrigins::default().is_enabled());
    }

    #[test]
    fn wildcard_allows_any_origin() {
        let origins = CorsOrigins::new(&["*".to_owned()]);
        assert_eq!(
            origins.allow(&HeaderValue::from_static("https://any.example")),
            Some(HeaderValue::from_static("*"))
        );
    }
}
