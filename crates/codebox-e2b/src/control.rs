//! The E2B control plane (`/sandboxes`, `/v2/sandboxes`) on top of the core:
//! create, connect/resume, kill, timeout, detail, list, metrics and pause.
//!
//! `X-API-Key` takes codebox API keys (a Bearer JWT works too); the native
//! quotas and rate limits apply unchanged. Unknown body fields are refused, and
//! so are E2B options codebox cannot honour (`autoPause`, `autoResume`,
//! `network`, `mcp`, `iam`, `volumeMounts`): a clear 400 beats a silently ignored
//! setting. `allow_internet_access` is accepted because every older SDK sends
//! it by default; sandboxes have no network and the detail says so.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use codebox_core::{
    CoreError, CreateSandboxRequest, ListSandboxesQuery, SandboxRecord, SetTimeoutRequest, User,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::control_views::{
    runtime_of_template, template_of_runtime, MetricView, SandboxDetailView, SandboxView, TEMPLATES,
};
use crate::error::E2bError;
use crate::E2bState;

/// The control plane's routes, behind its authentication.
pub fn router(state: E2bState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/sandboxes", post(create_sandbox).get(list_sandboxes))
        .route("/v2/sandboxes", post(create_sandbox).get(list_sandboxes))
        .route("/sandboxes/{id}", get(get_sandbox).delete(kill_sandbox))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/connect", post(connect_sandbox))
        .route("/v2/sandboxes/{id}/connect", post(connect_sandbox))
        .route("/sandboxes/{id}/resume", post(connect_sandbox))
        .route("/sandboxes/{id}/pause", post(pause_sandbox))
        .route("/sandboxes/{id}/metrics", get(sandbox_metrics))
        .fallback(|| async { E2bError::not_found("no such route") })
        .layer(from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// The user a control-plane request authenticated as.
#[derive(Debug, Clone)]
struct ControlUser(User);

impl<S: Send + Sync> FromRequestParts<S> for ControlUser {
    type Rejection = E2bError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ControlUser>()
            .cloned()
            .ok_or_else(|| E2bError::unauthorized("missing API key"))
    }
}

enum Credentials<'a> {
    Missing,
    ApiKey(&'a str),
    Bearer(&'a str),
    Malformed,
}

fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let keys: Vec<_> = headers.get_all("x-api-key").iter().collect();
    let authorizations: Vec<_> = headers.get_all(header::AUTHORIZATION).iter().collect();
    match (keys.as_slice(), authorizations.as_slice()) {
        ([], []) => Credentials::Missing,
        ([key], []) => match key.to_str().map(str::trim) {
            Ok(key) if !key.is_empty() => Credentials::ApiKey(key),
            _ => Credentials::Malformed,
        },
        ([], [value]) => {
            let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.trim().split_once(' '))
            else {
                return Credentials::Malformed;
            };
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                Credentials::Bearer(token.trim())
            } else {
                Credentials::Malformed
            }
        }
        _ => Credentials::Malformed,
    }
}

fn is_create(method: &Method, path: &str) -> bool {
    method == Method::POST && (path == "/sandboxes" || path == "/v2/sandboxes")
}

/// `X-API-Key` (or a Bearer JWT) and the native rate limits. `/health` is open.
async fn authenticate(State(state): State<E2bState>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let core = state.core();
    let outcome = match credentials(request.headers()) {
        Credentials::ApiKey(key) => core.authenticate_api_key(key).await,
        Credentials::Bearer(token) => core.authenticate_jwt(token).await,
        Credentials::Missing | Credentials::Malformed => Err(CoreError::Unauthorized),
    };
    match outcome {
        Ok(user) => {
            let create = is_create(request.method(), request.uri().path());
            if let Err(retry_after) =
                codebox_server::charge_authenticated(state.app(), &user, create).await
            {
                return E2bError::rate_limited(retry_after).into_response();
            }
            tracing::Span::current().record("user_id", tracing::field::display(&user.id));
            let mut request = request;
            request.extensions_mut().insert(ControlUser(user));
            next.run(request).await
        }
        Err(CoreError::Unauthorized) => {
            if let Err(retry_after) =
                codebox_server::charge_unauthenticated(state.app(), request.extensions()).await
            {
                return E2bError::rate_limited(retry_after).into_response();
            }
            tracing::info!(target: "audit", path = request.uri().path(), "e2b authentication failed");
            E2bError::unauthorized(
                "invalid or missing API key: send a codebox API key as X-API-Key",
            )
            .into_response()
        }
        // The credentials could not be checked: fail closed.
        Err(error) => E2bError::from(error).into_response(),
    }
}

/// A JSON body parsed strictly, with E2B-shaped errors; an empty body is the
/// type's default (connect and pause bodies are optional).
struct E2bJson<T>(T);

impl<T: DeserializeOwned + Default> FromRequest<E2bState> for E2bJson<T> {
    type Rejection = E2bError;

    async fn from_request(request: Request, state: &E2bState) -> Result<Self, Self::Rejection> {
        let limit = state.settings().max_body_bytes;
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| {
                E2bError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over {limit} bytes"),
                )
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(E2bJson(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(E2bJson)
            .map_err(|error| E2bError::bad_request(format!("invalid request body: {error}")))
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `NewSandbox` (v1 and v2 shapes, old and new SDKs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    auto_pause: Option<bool>,
    auto_pause_memory: Option<bool>,
    auto_resume: Option<serde_json::Value>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    /// Old SDKs: whether an envd token is issued. codebox always issues one.
    secure: Option<bool>,
    network: Option<serde_json::Value>,
    mcp: Option<serde_json::Value>,
    iam: Option<serde_json::Value>,
    volume_mounts: Option<serde_json::Value>,
}

impl NewSandbox {
    /// Refuses what codebox cannot do, naming the field.
    fn check_supported(&self) -> Result<(), E2bError> {
        let set = |value: &Option<serde_json::Value>| {
            value.as_ref().is_some_and(|value| match value {
                serde_json::Value::Null => false,
                serde_json::Value::Object(map) => {
                    !map.is_empty() && map.get("enabled") != Some(&serde_json::Value::Bool(false))
                }
                serde_json::Value::Array(items) => !items.is_empty(),
                _ => true,
            })
        };
        let unsupported = if self.auto_pause == Some(true) || self.auto_pause_memory == Some(true) {
            Some("autoPause: codebox cannot pause sandboxes (no memory snapshots); a sandbox ends at its timeout")
        } else if set(&self.auto_resume) {
            Some("autoResume: codebox cannot pause or resume sandboxes")
        } else if set(&self.network) {
            Some("network: sandboxes have no outbound network in codebox")
        } else if set(&self.mcp) {
            Some("mcp: MCP gateways are not supported by codebox")
        } else if set(&self.iam) {
            Some("iam: workload identities are not supported by codebox")
        } else if set(&self.volume_mounts) {
            Some("volumeMounts: volumes are not supported by codebox")
        } else {
            None
        };
        match unsupported {
            Some(message) => Err(E2bError::bad_request(message)),
            None => Ok(()),
        }
    }
}

fn unknown_template(template: &str) -> E2bError {
    let shown: String = template.chars().take(64).collect();
    let known: Vec<&str> = TEMPLATES.iter().map(|(name, _)| *name).collect();
    E2bError::not_found(format!(
        "template '{shown}' not found; codebox offers: {}",
        known.join(", ")
    ))
}

async fn create_sandbox(
    State(state): State<E2bState>,
    ControlUser(user): ControlUser,
    E2bJson(body): E2bJson<NewSandbox>,
) -> Result<Response, E2bError> {
    body.check_supported()?;
    let template = body.template_id.as_deref().unwrap_or("base");
    let runtime = runtime_of_template(template).ok_or_else(|| unknown_template(template))?;
    if body.allow_internet_access == Some(true) {
        tracing::debug!(
            "allow_internet_access requested; codebox sandboxes have no outbound network"
        );
    }
    let _ = body.secure;
    let request = CreateSandboxRequest {
        runtime: runtime.to_owned(),
        resources: None,
        timeout: body.timeout,
        metadata: body.metadata,
        env_vars: body.env_vars,
    };
    let record = state.core().create_sandbox(&user, request).await?;
    tracing::info!(sandbox_id = %record.id, template, "e2b sandbox created");
    Ok((StatusCode::CREATED, Json(SandboxView::new(&state, &record))).into_response())
}

/// The sandbox of `id` for `user`; ended and unknown are both E2B's 404.
async fn live_sandbox(state: &E2bState, user: &User, id: &str) -> Result<SandboxRecord, E2bError> {
    state
        .core()
        .get_sandbox(user, id)
        .await
        .map_err(|error| match error {
            CoreError::NotFound | CoreError::Gone { .. } => {
                E2bError::not_found(format!("sandbox {} not found", shorten(id)))
            }
            other => other.into(),
        })
}

fn shorten(id: &str) -> String {
    id.chars().take(64).collect()
}

async fn get_sandbox(
    State(state): State<E2bState>,
    ControlUser(user): ControlUser,
    Path(id): Path<String>,
) -> Result<Json<SandboxDetailView>, E2bError> {
    let record = live_sandbox(&state, &user, &id).await?;
    Ok(Json(SandboxDetailView::new(&state, &record, true)))
}

async fn kill_sandbox(
    State(state): State<E2bState>,
    ControlUser(user): ControlUser,
    Path(id): Path<String>,
) -> Result<StatusCode, E2bError> {
    match state.core().delete_sandbox(&user, &id).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(CoreError::NotFound | CoreError::Gone { .. }) => Err(E2bError::not_found(format!(
            "sandbox {} not found",
            shorten(&id)
        ))),
        Err(other) => Err(other.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutBody {
    timeout: Option<u64>,
}

async fn set_timeout(
    State(state): State<E2bState>,
    ControlUser(user): ControlUser,
    Path(id): Path<String>,
    E2bJson(body): E2bJson<TimeoutBody>,
) -> Result<StatusCode, E2bError> {
    let timeout = body
        .timeout
        .ok_or_else(|| E2bError::bad_request("timeout: required (seconds)"))?;
    live_sandbox(&state, &user, &id).await?;
    state
        .core()
        .set_timeout(&user, &id, SetTimeoutRequest { timeout })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connect (v1, v2) and resume bodies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConnectBody {
    timeout: Option<u64>,
    /// v2: resume from a memory snapshot; nothing is ever paused here.
    memory: Option<bool>,
    auto_pause: Option<bool>,
}

/// A running sandbox is simply returned; a `timeout` extends its life when it
/// ends later than the current one (it never shortens it).
async fn connect_sandbox(
    State(state): State<E2bState>,
    ControlUser(user): ControlUser,
    Path(id): Path<String>,
    E2bJson(body): E2bJson<ConnectBody>,
) -> Result<Json<SandboxView>, E2bError> {
    if body.auto_pause == Some(true) {
        return Err(E2bError::bad_request(
            "autoPause: codebox cannot pause sandboxes",
        ));
    }
    let _ = body.memory;
    let mut record = live_sandbox(&state, &user, &id).await?;
    if let Some(timeout) = body.timeout {
        let wanted = OffsetDateTime::now_utc() + std::time::Duration::from_secs(timeout);
        if wanted > record.expires_at {
            record = state
                .core()
                .set_timeout(&user, &id, SetTimeoutRequest { timeout })
                .await?;
        }
    }
    Ok(Json(SandboxView::new(&state, &record)))
}

/// codebox cannot snapshot a sandbox's memory: pausing is refused with 501
/// and the sandbox keeps running (the SDK raises; it only treats 409 as
/// "already paused").
async fn pause_sandbox(
    State(state): State<E2bState>,
    ControlUser(user): ControlUser,
    Path(id): Path<String>,
) -> Result<StatusCode, E2bError> {
    live_sandbox(&state, &user, &id).await?;
    Err(E2bError::new(
        StatusCode::NOT_IMPLEMENTED,
        "codebox cannot pause sandboxes: it has no memory snapshots; the sandbox keeps running \
         until its timeout (extend it with set_timeout)",
    ))
}

async fn sandbox_metrics(
    State(state): State<E2bState>,
    ControlUser(user): ControlUser,
    Path(id): Path<String>,
) -> Result<Json<Vec<MetricView>>, E2bError> {
    let record = live_sandbox(&state, &user, &id).await?;
    let stats = state.core().sandbox_stats(&user, &id).await?;
    let now = OffsetDateTime::now_utc();
    Ok(Json(vec![MetricView::new(&record, &stats, now)]))
}

/// A listing's parameters (v1 and v2).
#[derive(Debug, Default, PartialEq)]
struct ListParams {
    metadata: Vec<(String, String)>,
    /// `false` when only `paused` was asked for: nothing is ever paused.
    running: bool,
    template: Option<String>,
    started_after: Option<OffsetDateTime>,
    next_token: Option<String>,
    limit: Option<u32>,
}

fn parse_list_query(query: Option<&str>) -> Result<ListParams, E2bError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| E2bError::bad_request("malformed query string"))?;
    let mut params = ListParams {
        running: true,
        ..ListParams::default()
    };
    let mut states: Vec<String> = Vec::new();
    for (key, value) in pairs {
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "metadata" => {
                params.metadata = serde_urlencoded::from_str(&value)
                    .map_err(|_| E2bError::bad_request("metadata: expected k=v&k2=v2"))?;
            }
            "state" => states.extend(value.split(',').map(|s| s.trim().to_owned())),
            "template" => params.template = Some(value),
            "nextToken" => params.next_token = Some(value),
            "limit" => {
                params.limit = Some(value.parse().map_err(|_| {
                    E2bError::bad_request("limit: must be an integer between 1 and 100")
                })?)
            }
            "startedAfter" => {
                params.started_after = Some(
                    OffsetDateTime::parse(&value, &Rfc3339)
                        .map_err(|_| E2bError::bad_request("startedAfter: expected RFC 3339"))?,
                )
            }
            "order" if value.eq_ignore_ascii_case("desc") => {}
            "order" => {
                return Err(E2bError::bad_request(
                    "order: only desc (newest first) is supported",
                ))
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(E2bError::bad_request(format!(
                    "unsupported query parameter {shown:?}"
                )));
            }
        }
    }
    for item in &states {
        if item != "running" && item != "paused" {
            return Err(E2bError::bad_request(
                "state: expected running and/or paused",
            ));
        }
    }
    if !states.is_empty() {
        params.running = states.iter().any(|item| item == "running");
    }
    Ok(params)
}

async fn list_sandboxes(
    State(state): State<E2bState>,
    ControlUser(user): ControlUser,
    request: Request<Body>,
) -> Result<Response, E2bError> {
    let params = parse_list_query(request.uri().query())?;
    if !params.running {
        return Ok(Json(Vec::<SandboxDetailView>::new()).into_response());
    }
    let query = ListSandboxesQuery {
        status: Some("running".to_owned()),
        metadata: params.metadata.clone(),
        cursor: params.next_token.clone(),
        limit: params.limit,
    };
    let page = state.core().list_sandboxes(&user, query).await?;
    let now = OffsetDateTime::now_utc();
    let items: Vec<SandboxDetailView> = page
        .items
        .iter()
        // A row the reaper has not ended yet is already over.
        .filter(|record| record.expires_at > now)
        .filter(|record| {
            params
                .template
                .as_ref()
                .is_none_or(|template| template_of_runtime(&record.runtime) == *template)
        })
        .filter(|record| {
            params
                .started_after
                .is_none_or(|after| record.created_at > after)
        })
        .map(|record| SandboxDetailView::new(&state, record, false))
        .collect();
    let mut response = Json(items).into_response();
    if let Some(cursor) = page.next_cursor {
        if let Ok(value) = HeaderValue::from_str(&cursor) {
            response.headers_mut().insert("x-next-token", value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_parse_like_the_sdks_send_them() {
        let params = parse_list_query(Some(
            "metadata=user%3Dalice%26env%3Ddev&state=running,paused&limit=10&nextToken=abc&order=",
        ))
        .expect("parses");
        assert_eq!(
            params.metadata,
            vec![
                ("user".to_owned(), "alice".to_owned()),
                ("env".to_owned(), "dev".to_owned())
            ]
        );
        assert!(params.running);
        assert_eq!(params.limit, Some(10));
        assert_eq!(params.next_token.as_deref(), Some("abc"));
        assert!(
            !parse_list_query(Some("state=paused"))
                .expect("parses")
                .running
        );
        assert!(parse_list_query(Some("state=dead")).is_err());
        assert!(parse_list_query(Some("order=asc")).is_err());
        assert!(parse_list_query(Some("bogus=1")).is_err());
        assert!(parse_list_query(Some("bogus=")).is_ok());
        assert!(parse_list_query(None).expect("parses").running);
    }

    #[test]
    fn unsupported_create_options_are_refused() {
        let parse = |json: &str| serde_json::from_str::<NewSandbox>(json).expect("parses");
        assert!(parse(
            r#"{"templateID":"base","autoPause":false,"allow_internet_access":true,"secure":true}"#
        )
        .check_supported()
        .is_ok());
        assert!(parse(r#"{"autoPause":true}"#).check_supported().is_err());
        assert!(parse(r#"{"network":{"allowOut":["1.1.1.1"]}}"#)
            .check_supported()
            .is_err());
        assert!(parse(r#"{"autoResume":{"enabled":false}}"#)
            .check_supported()
            .is_ok());
        assert!(parse(r#"{"volumeMounts":[]}"#).check_supported().is_ok());
        assert!(serde_json::from_str::<NewSandbox>(r#"{"bogus":1}"#).is_err());
    }
}
