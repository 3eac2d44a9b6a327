//! Route handlers: extract, call the core, wrap the answer in the envelope.
//! No business rule lives here; validation and ownership are the core's.

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use codebox_core::{
    CommandResult, CreateSandboxRequest, ExecutionView, ListSandboxesQuery, PageQuery,
    RunCommandRequest, SandboxView, SetTimeoutRequest,
};
use codebox_types::ErrorCode;
use serde::Serialize;
use serde_json::json;

use crate::auth::AuthenticatedUser;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::metrics::METRICS_CONTENT_TYPE;
use crate::state::AppState;

/// `{"success": true, "data": ...}` with a status.
#[derive(Debug)]
pub struct Success<T>(pub StatusCode, pub T);

/// The wire shape of a success.
#[derive(Serialize)]
struct SuccessEnvelope<T> {
    success: bool,
    data: T,
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        let envelope = SuccessEnvelope {
            success: true,
            data: self.1,
        };
        (self.0, Json(envelope)).into_response()
    }
}

pub(crate) fn ok<T: Serialize>(data: T) -> Success<T> {
    Success(StatusCode::OK, data)
}

/// The `{id}` of a sandbox route, as the client sent it. Recorded in the
/// request span; the core answers `NOT_FOUND` for anything that is not one of
/// the caller's sandboxes, malformed ids included.
#[derive(Debug, Clone)]
pub struct SandboxPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SandboxPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A path that does not even decode is no sandbox of anyone's.
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        if id.parse::<codebox_types::SandboxId>().is_ok() {
            tracing::Span::current().record("sandbox_id", id.as_str());
        }
        Ok(SandboxPath(id))
    }
}

pub async fn create_sandbox(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    ApiJson(request): ApiJson<CreateSandboxRequest>,
) -> Result<Success<SandboxView>, ApiError> {
    let record = state.core.create_sandbox(&user, request).await?;
    tracing::Span::current().record("sandbox_id", tracing::field::display(&record.id));
    Ok(Success(StatusCode::CREATED, record.into()))
}

#[derive(Debug, Serialize)]
pub struct SandboxList {
    sandboxes: Vec<SandboxView>,
    next_cursor: Option<String>,
}

pub async fn list_sandboxes(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    RawQuery(query): RawQuery,
) -> Result<Success<SandboxList>, ApiError> {
    let query = parse_list_query(query.as_deref().unwrap_or_default())?;
    let page = state.core.list_sandboxes(&user, query).await?;
    Ok(ok(SandboxList {
        sandboxes: page.items.into_iter().map(SandboxView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub async fn get_sandbox(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
) -> Result<Success<SandboxView>, ApiError> {
    let record = state.core.get_sandbox(&user, &id).await?;
    Ok(ok(record.into()))
}

/// Kills the sandbox; answers its final view (`terminated`, `killed`).
pub async fn delete_sandbox(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
) -> Result<Success<SandboxView>, ApiError> {
    let record = state.core.delete_sandbox(&user, &id).await?;
    Ok(ok(record.into()))
}

pub async fn set_timeout(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    ApiJson(request): ApiJson<SetTimeoutRequest>,
) -> Result<Success<SandboxView>, ApiError> {
    let record = state.core.set_timeout(&user, &id, request).await?;
    Ok(ok(record.into()))
}

pub async fn run_command(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    ApiJson(request): ApiJson<RunCommandRequest>,
) -> Result<Success<CommandResult>, ApiError> {
    let result = state.core.run_command(&user, &id, request).await?;
    Ok(ok(result))
}

#[derive(Debug, Serialize)]
pub struct ExecutionList {
    executions: Vec<ExecutionView>,
    next_cursor: Option<String>,
}

pub async fn list_executions(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    RawQuery(query): RawQuery,
) -> Result<Success<ExecutionList>, ApiError> {
    let query = parse_page_query(query.as_deref().unwrap_or_default())?;
    let page = state.core.list_executions(&user, &id, query).await?;
    Ok(ok(ExecutionList {
        executions: page.items.into_iter().map(ExecutionView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub async fn list_runtimes(
    State(state): State<AppState>,
    _user: AuthenticatedUser,
) -> Success<serde_json::Value> {
    ok(json!({"runtimes": state.core.runtimes()}))
}

pub async fn health() -> Success<serde_json::Value> {
    ok(json!({"status": "ok"}))
}

/// How long a prober is told to wait when not ready.
const NOT_READY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// `200` with the report when every check passes, else `503` with
/// `Retry-After` and the same report under `data`.
pub async fn ready(State(state): State<AppState>) -> Response {
    let report = state.core.check_ready().await;
    if report.ready {
        return ok(report).into_response();
    }
    let failing: Vec<&str> = report
        .checks
        .iter()
        .filter(|check| !check.ok)
        .map(|check| check.name)
        .collect();
    let error = ApiError::service_unavailable(
        format!("not ready: {} unavailable", failing.join(", ")),
        NOT_READY_RETRY_AFTER,
    )
    .with_data(json!(report));
    error.into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.settings.metrics_on_api_port {
        return Err(ApiError::new(ErrorCode::NotFound, "no such route"));
    }
    metrics_text(&state)
}

/// The exposition, for the API port or a separate metrics port.
pub fn metrics_text(state: &AppState) -> Result<Response, ApiError> {
    let text = state.encode_metrics().map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        )],
        text,
    )
        .into_response())
}

pub async fn openapi(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.openapi.as_ref().clone())
}

pub async fn docs(State(state): State<AppState>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // The page has no script and loads nothing: say so to the browser.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
            ),
        ],
        state.docs_html.to_string(),
    )
        .into_response()
}

/// `status`, `cursor`, `limit` and `metadata.KEY=VALUE` pairs; any other
/// parameter is a validation error (unknown fields are never ignored).
fn parse_list_query(raw: &str) -> Result<ListSandboxesQuery, ApiError> {
    let mut query = ListSandboxesQuery::default();
    for (name, value) in query_pairs(raw)? {
        match name.as_str() {
            "status" => query.status = Some(value),
            "cursor" => query.cursor = Some(value),
            "limit" => query.limit = Some(parse_limit(&value)?),
            _ => match name.strip_prefix("metadata.") {
                Some(key) if !key.is_empty() => query.metadata.push((key.to_owned(), value)),
                _ => return Err(unknown_parameter(&name)),
            },
        }
    }
    Ok(query)
}

fn parse_page_query(raw: &str) -> Result<PageQuery, ApiError> {
    let mut query = PageQuery::default();
    for (name, value) in query_pairs(raw)? {
        match name.as_str() {
            "cursor" => query.cursor = Some(value),
            "limit" => query.limit = Some(parse_limit(&value)?),
            _ => return Err(unknown_parameter(&name)),
        }
    }
    Ok(query)
}

fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw)
        .map_err(|_| ApiError::new(ErrorCode::ValidationError, "the query string is malformed"))
}

fn parse_limit(value: &str) -> Result<u32, ApiError> {
    value.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::ValidationError,
            "limit: must be a positive integer",
        )
        .with_field("limit")
    })
}

fn unknown_parameter(name: &str) -> ApiError {
    let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    ApiError::new(
        ErrorCode::ValidationError,
        format!("unknown query parameter {shown:?}"),
    )
    .with_field(shown)
}

/// `GET /api/v1/sandboxes/{id}/metrics`.
pub async fn sandbox_metrics(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
) -> Result<Success<codebox_core::SandboxMetricsView>, ApiError> {
    let stats = state.core.sandbox_stats(&user, &id).await?;
    Ok(ok(stats.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_splits_metadata_filters() {
        let query = parse_list_query("status=running&metadata.team=a%20b&limit=5&cursor=xyz")
            .expect("valid");
        assert_eq!(query.status.as_deref(), Some("running"));
        assert_eq!(query.metadata, vec![("team".to_owned(), "a b".to_owned())]);
        assert_eq!(query.limit, Some(5));
        assert_eq!(query.cursor.as_deref(), Some("xyz"));
    }

    #[test]
    fn unknown_or_bad_parameters_are_rejected() {
        for raw in ["api_key=cbx_x", "metadata.=x", "limit=ten", "limit=-1"] {
            let error = parse_list_query(raw).expect_err(raw);
            assert_eq!(error.code(), ErrorCode::ValidationError, "{raw}");
        }
        assert!(parse_page_query("status=running").is_err());
    }
}
