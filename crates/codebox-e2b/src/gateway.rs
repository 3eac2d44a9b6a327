//! Requests addressed to a sandbox port: the token check, the owner lookup and
//! the hand-over to envd (49983) or the code interpreter (49999).
//!
//! Order matters: the token is checked first (a keyed hash, no database), so a
//! client without the token learns nothing about which ids exist; only then
//! is the sandbox looked up. A failed check counts against the client IP's
//! failed-auth budget, an accepted request against the owner's request budget,
//! like the native API.
//!
//! - 49983 (envd): `X-Access-Token` must be the sandbox's envd token, except on
//!   `GET /health` and `GET`/`POST /files`, where envd itself accepts the token
//!   or a signed URL (a present but wrong token is refused here all the same).
//! - 49999 (code interpreter): `E2B-Traffic-Access-Token` (current SDKs) or
//!   `X-Access-Token` (older SDKs) must be the sandbox's token of that kind.
//!   Current SDKs send no `X-Access-Token` on `/contexts`, so the traffic token
//!   is what guards that port.

use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use codebox_core::{CoreError, User};
use codebox_envd::EnvdTarget;

use crate::error::E2bError;
use crate::tokens::TokenKind;
use crate::{oneshot, E2bState, ENVD_PORT, INTERPRETER_PORT};

pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// The sandbox a code-interpreter request acts on, and its owner, as a
/// request extension for the interpreter's handlers.
#[derive(Debug, Clone)]
pub struct SandboxOwner {
    pub sandbox_id: String,
    pub owner: User,
}

pub async fn sandbox_request(
    state: &E2bState,
    interpreter: Router,
    id: &str,
    port: u16,
    request: Request,
) -> Response {
    // Checked on the head only: the body is not `Sync` and is not read here.
    let (parts, body) = request.into_parts();
    match port {
        ENVD_PORT => match authorize_envd(state, id, &parts).await {
            Ok(owner) => {
                let mut request = Request::from_parts(parts, body);
                request.extensions_mut().insert(EnvdTarget {
                    sandbox_id: id.to_owned(),
                    owner,
                    access_token: state.tokens().mint(TokenKind::Envd, id),
                });
                oneshot(state.envd(), request).await
            }
            Err(error) => error.into_response(),
        },
        INTERPRETER_PORT => match authorize_interpreter(state, id, &parts).await {
            Ok(owner) => {
                let mut request = Request::from_parts(parts, body);
                request.extensions_mut().insert(SandboxOwner {
                    sandbox_id: id.to_owned(),
                    owner,
                });
                oneshot(interpreter, request).await
            }
            Err(error) => error.into_response(),
        },
        other => E2bError::sandbox_unreachable(
            id,
            format!(
                "the sandbox is running but port {other} is not open: codebox serves \
                 {ENVD_PORT} (envd) and {INTERPRETER_PORT} (code interpreter)"
            ),
        )
        .into_response(),
    }
}

/// Single-valued header text; a repeated header is refused as ambiguous.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    match first {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| ()),
    }
}

/// Routes envd itself guards (token or signed URL), as the real envd does.
fn envd_open_route(method: &Method, path: &str) -> bool {
    (method == Method::GET && path == "/health")
        || ((method == Method::GET || method == Method::POST) && path == "/files")
}

async fn authorize_envd(state: &E2bState, id: &str, request: &Parts) -> Result<User, E2bError> {
    let token = single_header(&request.headers, ACCESS_TOKEN_HEADER);
    let accepted = match token {
        Ok(Some(token)) => state.tokens().verify(TokenKind::Envd, id, token),
        Ok(None) => envd_open_route(&request.method, request.uri.path()),
        Err(()) => false,
    };
    if !accepted {
        return Err(refuse(state, request, "missing or invalid X-Access-Token").await);
    }
    admit(state, id).await
}

async fn authorize_interpreter(
    state: &E2bState,
    id: &str,
    request: &Parts,
) -> Result<User, E2bError> {
    let headers = &request.headers;
    let traffic = single_header(headers, TRAFFIC_TOKEN_HEADER);
    let access = single_header(headers, ACCESS_TOKEN_HEADER);
    let accepted = match (traffic, access) {
        (Ok(traffic), Ok(access)) => {
            traffic.is_some_and(|token| state.tokens().verify(TokenKind::Traffic, id, token))
                || access.is_some_and(|token| state.tokens().verify(TokenKind::Envd, id, token))
        }
        _ => false,
    };
    if !accepted {
        return Err(refuse(
            state,
            request,
            "missing or invalid E2B-Traffic-Access-Token",
        )
        .await);
    }
    admit(state, id).await
}

/// A refused token: 401, or 429 once the client IP's failed-auth budget is spent.
async fn refuse(state: &E2bState, request: &Parts, message: &'static str) -> E2bError {
    if let Err(retry_after) =
        codebox_server::charge_unauthenticated(state.app(), &request.extensions).await
    {
        return E2bError::rate_limited(retry_after);
    }
    tracing::info!(target: "audit", "e2b sandbox token refused");
    E2bError::unauthorized(message)
}

/// The owner of the live sandbox `id`, charged for the request.
async fn admit(state: &E2bState, id: &str) -> Result<User, E2bError> {
    let owner = match state.core().live_sandbox_owner(id).await {
        Ok((_, owner)) => owner,
        Err(CoreError::NotFound) => {
            return Err(E2bError::sandbox_unreachable(
                id,
                "the sandbox was not found",
            ))
        }
        Err(CoreError::Gone { reason }) => {
            return Err(E2bError::sandbox_unreachable(
                id,
                format!("the sandbox has ended ({reason})"),
            ))
        }
        Err(other) => return Err(other.into()),
    };
    tracing::Span::current().record("user_id", tracing::field::display(&owner.id));
    if let Err(retry_after) = codebox_server::charge_authenticated(state.app(), &owner, false).await
    {
        return Err(E2bError::rate_limited(retry_after));
    }
    Ok(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_envd_routes_are_exactly_healths_and_files() {
        assert!(envd_open_route(&Method::GET, "/health"));
        assert!(envd_open_route(&Method::GET, "/files"));
        assert!(envd_open_route(&Method::POST, "/files"));
        assert!(!envd_open_route(&Method::POST, "/health"));
        assert!(!envd_open_route(&Method::DELETE, "/files"));
        assert!(!envd_open_route(&Method::POST, "/files/compose"));
        assert!(!envd_open_route(&Method::POST, "/process.Process/Start"));
        assert!(!envd_open_route(&Method::GET, "/envs"));
    }
}
