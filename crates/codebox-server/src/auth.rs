//! Authentication and rate limiting, one middleware.
//!
//! Public routes (`/health`, `/ready`, `/metrics`, `/openapi.json`, `/docs`) pass
//! untouched and are not rate limited (probes and scrapers poll them). Every
//! other request, including one to an unknown path, must carry `X-API-Key` or
//! `Authorization: Bearer <JWT>`; credentials in the query string are never read.
//!
//! - Missing or invalid credentials count against the client IP's budget (the
//!   brief's 100 per 15 minutes): over it `429`, else `401`.
//! - Valid credentials count against the user's request budget, and creates
//!   against the user's create budget.
//! - If the credentials cannot be checked (database down) the answer is `503`:
//!   authentication fails closed.
//!
//! The client IP is the socket peer. `X-Forwarded-For` is never trusted: behind
//! a proxy every client shares the proxy's budget (see docs/api.md).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codebox_core::{CoreError, User};
use codebox_store::RateDecision;

use crate::error::ApiError;
use crate::routes::{is_public_path, CREATE_SANDBOX_PATH};
use crate::state::AppState;

/// The user a request authenticated as, in the request's extensions.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser(pub User);

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedUser {
    type Rejection = ApiError;

    /// Fails closed: a handler reached without the middleware answers 401.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthenticatedUser>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

/// What a request presented.
#[derive(Debug, PartialEq, Eq)]
enum Credentials<'a> {
    Missing,
    ApiKey(&'a str),
    Bearer(&'a str),
    /// Present but unusable: repeated, both kinds at once, not text, wrong scheme.
    Malformed,
}

fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let mut keys = headers.get_all("x-api-key").iter();
    let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
    let key = keys.next();
    let authorization = authorizations.next();
    if keys.next().is_some() || authorizations.next().is_some() {
        return Credentials::Malformed;
    }
    match (key, authorization) {
        (None, None) => Credentials::Missing,
        (Some(key), None) => key
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map_or(Credentials::Malformed, Credentials::ApiKey),
        (None, Some(value)) => bearer_token(value.to_str().ok()),
        (Some(_), Some(_)) => Credentials::Malformed,
    }
}

/// `Bearer <token>`, scheme case-insensitive (RFC 7235).
fn bearer_token(value: Option<&str>) -> Credentials<'_> {
    let Some((scheme, token)) = value.and_then(|value| value.trim().split_once(' ')) else {
        return Credentials::Malformed;
    };
    let token = token.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
        Credentials::Bearer(token)
    } else {
        Credentials::Malformed
    }
}

/// The middleware: see the module documentation.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    if route.as_deref().is_some_and(is_public_path) {
        return next.run(request).await;
    }
    let client = client_key(&request);
    let outcome = match credentials(request.headers()) {
        Credentials::ApiKey(key) => state.core.authenticate_api_key(key).await,
        Credentials::Bearer(token) => state.core.authenticate_jwt(token).await,
        Credentials::Missing | Credentials::Malformed => Err(CoreError::Unauthorized),
    };
    match outcome {
        Ok(user) => {
            let is_create =
                request.method() == Method::POST && route.as_deref() == Some(CREATE_SANDBOX_PATH);
            if let Err(error) = charge_user(&state, &user, is_create).await {
                return error.into_response();
            }
            tracing::Span::current().record("user_id", tracing::field::display(&user.id));
            let mut request = request;
            request.extensions_mut().insert(AuthenticatedUser(user));
            next.run(request).await
        }
        Err(CoreError::Unauthorized) => {
            if let Err(error) = charge_anonymous(&state, &client).await {
                return error.into_response();
            }
            // Logged only within the IP's budget, so a flood cannot flood the logs.
            tracing::info!(target: "audit", client = %client,
                route = route.as_deref().unwrap_or("unmatched"), "authentication failed");
            // An unknown path stays a 404 for everyone: nothing to protect.
            if route.is_none() {
                return next.run(request).await;
            }
            ApiError::unauthorized().into_response()
        }
        Err(_) if route.is_none() => next.run(request).await,
        // The credentials could not be checked: fail closed.
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// For another front door of the same service (the E2B gateway): charges
/// `user`'s request budget, and the create budget for a create, exactly like
/// the native API does. `Err` is the `Retry-After` once a budget is spent.
pub async fn charge_authenticated(
    state: &AppState,
    user: &User,
    is_create: bool,
) -> Result<(), Duration> {
    charge_user(state, user, is_create)
        .await
        .map_err(|error| error.retry_after().unwrap_or(Duration::from_secs(1)))
}

/// For another front door: charges the budget of the socket peer in
/// `extensions` (`ConnectInfo`) for missing or failed credentials.
pub async fn charge_unauthenticated(
    state: &AppState,
    extensions: &axum::http::Extensions,
) -> Result<(), Duration> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let client = peer.map_or_else(|| "unknown".to_owned(), ip_key);
    charge_anonymous(state, &client)
        .await
        .map_err(|error| error.retry_after().unwrap_or(Duration::from_secs(1)))
}

/// Charges the client IP's budget for missing or failed credentials; `429`
/// once it is spent.
async fn charge_anonymous(state: &AppState, client: &str) -> Result<(), ApiError> {
    let limits = &state.settings.rate_limits;
    if !limits.enabled {
        return Ok(());
    }
    let key = format!("ip:{client}");
    let limit = limits.anonymous_per_ip;
    let decision = state
        .limiter
        .check(&key, limit.requests, limit.window)
        .await;
    if decision.allowed {
        Ok(())
    } else {
        // Debug only: every request of a flood lands here.
        tracing::debug!(client = %key, "rate limited: unauthenticated traffic");
        Err(rate_limited(&decision))
    }
}

/// Charges the user's request budget, and the create budget for creates.
async fn charge_user(state: &AppState, user: &User, is_create: bool) -> Result<(), ApiError> {
    let limits = &state.settings.rate_limits;
    if !limits.enabled {
        return Ok(());
    }
    let mut budgets = vec![("requests", limits.per_user_requests)];
    if is_create {
        budgets.push(("creates", limits.per_user_creates));
    }
    for (kind, limit) in budgets {
        let key = format!("user:{}:{kind}", user.id);
        let decision = state
            .limiter
            .check(&key, limit.requests, limit.window)
            .await;
        if !decision.allowed {
            tracing::debug!(user_id = %user.id, kind, "rate limited: user budget");
            return Err(rate_limited(&decision));
        }
    }
    Ok(())
}

fn rate_limited(decision: &RateDecision) -> ApiError {
    ApiError::rate_limited(decision.retry_after.max(Duration::from_secs(1)))
}

/// The rate-limit identity of the socket peer. IPv6 clients are keyed by their
/// /64, which one subscriber usually holds whole; IPv4-mapped addresses count
/// as IPv4.
fn client_key(request: &Request) -> String {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    match peer {
        Some(ip) => ip_key(ip),
        // Only in-process tests reach the router without a socket.
        None => "unknown".to_owned(),
    }
}

fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let segments = v6.segments();
                format!(
                    "{:x}:{:x}:{:x}:{:x}::/64",
                    segments[0], segments[1], segments[2], segments[3]
                )
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
                HeaderValue::from_str(value).expect("valid value"),
            );
        }
        headers
    }

    #[test]
    fn reads_each_kind_of_credentials() {
        assert_eq!(credentials(&headers(&[])), Credentials::Missing);
        assert_eq!(
            credentials(&headers(&[("x-api-key", "cbx_abc")])),
            Credentials::ApiKey("cbx_abc")
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "bearer a.b.c")])),
            Credentials::Bearer("a.b.c")
        );
    }

    #[test]
    fn ambiguous_or_odd_credentials_are_malformed() {
        for pairs in [
            &[("x-api-key", "a"), ("x-api-key", "b")][..],
            &[("x-api-key", "a"), ("authorization", "Bearer t")][..],
            &[("authorization", "Basic dXNlcjpwYXNz")][..],
            &[("authorization", "Bearer")][..],
            &[("x-api-key", "  ")][..],
        ] {
            assert_eq!(
                credentials(&headers(pairs)),
                Credentials::Malformed,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("valid");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("valid");
        assert_eq!(ip_key(a), ip_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("valid");
        assert_eq!(ip_key(mapped), "192.0.2.7");
    }
}
